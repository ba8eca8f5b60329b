"""One-line messages: what every refusal, alert and error column is cut to.

Why one helper: a reason shown to an operator comes from files, providers and
exceptions that may carry newlines, control characters or a page of HTML; a
log line, a CSV cell and a Slack field all need it flat and bounded the same way.
"""

from __future__ import annotations

import re

# Unicode whitespace too (no-break space, line and paragraph separators), as str.split sees it.
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x20\x7f-\x9f]+")


def one_line(text: object, limit: int | None = None, empty: str = "") -> str:
    """``text`` with every run of whitespace or control characters as one space,
    stripped, ``empty`` when nothing is left, cut to ``limit`` characters with an ellipsis."""
    line = _CONTROL_OR_SPACE.sub(" ", str(text)).strip() or empty
    if limit is not None and len(line) > limit:
        return line[: limit - 1] + "…"
    return line


def has_control_or_space(value: str) -> bool:
    return _CONTROL_OR_SPACE.search(value) is not None

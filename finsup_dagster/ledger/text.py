"""Text fields from outside: what a name, an id or a description may hold.

Control characters (terminal escapes among them) are refused rather than
stored: they would be written as they are into logs, reports and terminals.
A lone surrogate (``\\ud800`` from JSON) is no character and cannot be stored
as UTF-8.
"""

from __future__ import annotations

import re
from typing import Any

from finsup_dagster.ledger.errors import InvalidInput

# C0 controls, DEL and C1 controls (U+0080-U+009F, where ESC's 8-bit CSI lives).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SURROGATE = re.compile("[\ud800-\udfff]")  # also used by files.py on whole JSON records


def clean_text(value: Any, name: str, *, max_len: int = 128) -> str:
    """The stripped text of a required field, or InvalidInput naming what is wrong."""
    text = optional_text(value, name, max_len=max_len)
    if text is None:
        raise InvalidInput(f"{name} is missing")
    return text


def optional_text(value: Any, name: str, *, max_len: int = 128, secret: bool = False) -> str | None:
    """As ``clean_text``, but an absent or blank field is None.

    ``secret`` fields (a tax id) are never quoted back in the error.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        shown = "" if secret else f" {value!r:.40}"
        raise InvalidInput(f"{name} must be text, got {type(value).__name__}{shown}")
    text = value.strip()
    if not text:
        return None
    if len(text) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len} characters")
    if _CONTROL.search(text):
        raise InvalidInput(f"{name} contains control characters (such as terminal escapes)")
    if SURROGATE.search(text):
        raise InvalidInput(f"{name} is not valid Unicode text")
    return text

"""JSON with money amounts written as numbers digit for digit, never through a float.

Payoneer's API takes and returns ``amount`` as a JSON number. ``json`` can only
write a number from an int or a float; a Decimal goes through here instead,
so ``Decimal("10.50")`` is sent as ``10.50`` exactly.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def dumps_exact(obj: Any) -> str:
    """``json.dumps`` where every Decimal value is written as its literal number."""
    literals: dict[str, str] = {}

    def default(value: object) -> object:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"{value} is not a JSON number")
            marker = f"\x00decimal{len(literals)}\x00"
            literals[json.dumps(marker)] = format(value, "f")
            return marker
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(obj, default=default, separators=(",", ":"))
    for quoted, literal in literals.items():
        text = text.replace(quoted, literal)
    return text


def loads_exact(text: str | bytes) -> Any:
    """``json.loads`` that keeps every non-integer number as a Decimal (no float anywhere)."""
    return json.loads(text, parse_float=Decimal)

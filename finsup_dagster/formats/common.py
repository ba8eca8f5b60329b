"""What every landed-file parser shares: the result type, the row shapes, reading and refusing.

A file is refused whole with ``MalformedFile`` (or its ``FooterMismatch``) only
for what makes the file itself untrustworthy: unreadable, not the format, a
footer or summary that disagrees with the body, a DOCTYPE/entity, a required
element missing. The caller quarantines a refused file, so a half-read
settlement file never reaches the books. What is about one row (a repeated
transaction id or reference) never refuses the file: the row is read, a note
names it and the row it repeats, and the reconciliation turns it into an
exception. Messages are one line and start with the file name, then where in
the file, then what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from finsup_dagster.ledger import clock, money
from finsup_dagster.ledger.errors import FooterMismatch, InvalidInput, MalformedFile
from finsup_dagster.text import one_line

SETTLEMENT_COLUMNS: tuple[str, ...] = (
    "row_number",
    "record_ref",
    "settler_ref",
    "gateway",
    "gateway_txn_id",
    "batch_ref",
    "batch_net_minor",
    "event_code",
    "kind",
    "direction",
    "gross_minor",
    "currency",
    "fee_minor",
    "fee_currency",
    "settled_on",
    "occurred_at",
    "description",
    "raw",
)

REVENUE_COLUMNS: tuple[str, ...] = (
    "row_number",
    "record_ref",
    "source",
    "external_id",
    "amount",
    "currency",
    "occurred_at",
    "kind",
    "status",
    "raw",
)

SETTLEMENT_KINDS = ("sale", "refund", "chargeback", "other")
DIRECTIONS = ("credit", "debit")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SIGNED = re.compile(r"^(-?)(\d+(?:\.\d+)?)$")


@dataclass
class Parsed:
    """The rows of one file, how many records were skipped as not settlement/revenue, and why."""

    rows: list[dict[str, object]]
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def malformed(name: str, where: str | None, reason: object) -> MalformedFile:
    prefix = f"{name}: {where}: " if where else f"{name}: "
    return MalformedFile(one_line(prefix + str(reason)))


def mismatch(name: str, where: str | None, reason: object) -> FooterMismatch:
    prefix = f"{name}: {where}: " if where else f"{name}: "
    return FooterMismatch(one_line(prefix + str(reason)))


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (a BOM is allowed, PayPal writes one), not empty, not binary."""
    name = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise malformed(name, None, "no such file") from None
    except IsADirectoryError:
        raise malformed(name, None, "is a directory, not a file") from None
    except OSError as exc:
        raise malformed(name, None, f"cannot be read ({exc.strerror or exc})") from None
    return decode_text(data, name)


def decode_text(data: bytes, name: str) -> str:
    if not data.strip():
        raise malformed(name, None, "file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise malformed(
            name, None, f"is not UTF-8 text (bad byte at offset {exc.start}); re-export it as UTF-8"
        ) from None
    if "\x00" in text:
        raise malformed(name, None, "contains NUL bytes: a binary file, not text")
    return text


def raw_json(record: Mapping[str, object]) -> str:
    """The source record as compact JSON, for auditors; key order is the file's own."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def check_date(text: str) -> str:
    """A calendar date as YYYY-MM-DD, checked (2026-02-30 is refused)."""
    value = text.strip()
    if not _DATE.match(value):
        raise InvalidInput(f"date {text!r} is not YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"date {text!r} is not a calendar date") from None
    return value


def signed_minor(text: str, currency: str) -> int:
    """A decimal that may be negative or zero (fees can be returned or absent) in minor units."""
    match = _SIGNED.match(text.strip())
    if match is None:
        raise InvalidInput(f"amount {text!r} is not a decimal number")
    sign, digits = match.groups()
    if not digits.replace(".", "").strip("0"):
        money.exponent(currency)  # to_minor refuses zero, but "0.00" is a real fee of nothing
        return 0
    minor = money.to_minor(digits, currency)
    return -minor if sign else minor


def settlement_row(
    *,
    row_number: int,
    record_ref: str,
    settler_ref: str | None,
    gateway: str | None,
    gateway_txn_id: str | None,
    batch_ref: str | None,
    batch_net_minor: int | None,
    event_code: str | None,
    kind: str,
    direction: str,
    gross_minor: int,
    currency: str,
    fee_minor: int,
    fee_currency: str,
    settled_on: str,
    occurred_at: str | None,
    description: str | None,
    raw: str,
) -> dict[str, object]:
    """One settlement row; the invariants every format promises are checked here, once."""
    if kind not in SETTLEMENT_KINDS:
        raise InvalidInput(f"kind {kind!r} is not one of {', '.join(SETTLEMENT_KINDS)}")
    if direction not in DIRECTIONS:
        raise InvalidInput(f"direction {direction!r} is not credit or debit")
    if gross_minor <= 0:
        raise InvalidInput(f"gross amount must be positive, got {gross_minor} minor units")
    if not record_ref:
        raise InvalidInput("record has no reference")
    if batch_net_minor is not None and batch_ref is None:
        raise InvalidInput("batch net amount given without a batch reference")
    return {
        "row_number": row_number,
        # Unique in the file: the row's line id for people (with the file name).
        "record_ref": record_ref,
        # The settler's own reference for the row, as written; may repeat in a file.
        "settler_ref": settler_ref or None,
        # Who settled the line, lower-case (matched against an event's source);
        # None when the file does not say (a bank statement).
        "gateway": (gateway or "").strip().lower() or None,
        "gateway_txn_id": gateway_txn_id or None,
        "batch_ref": batch_ref or None,
        "batch_net_minor": batch_net_minor,
        "event_code": event_code or None,
        "kind": kind,
        "direction": direction,
        "gross_minor": gross_minor,
        "currency": money.normalise_currency(currency),
        "fee_minor": fee_minor,
        "fee_currency": money.normalise_currency(fee_currency),
        "settled_on": check_date(settled_on),
        "occurred_at": clock.parse_instant(occurred_at) if occurred_at else None,
        "description": description or None,
        "raw": raw,
    }


def count_note(what: str, counts: Mapping[str, int]) -> str:
    """``skipped 3 records: 2 T0400, 1 T2101`` – tells an auditor what was left out and why."""
    total = sum(counts.values())
    detail = ", ".join(f"{n} {key}" for key, n in sorted(counts.items()))
    return f"skipped {total} {what}: {detail}"


def as_int(value: object, what: str) -> int:
    """Writers take rows as dicts of objects; an amount that is not an int is a caller bug."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int in minor units, got {value!r}")
    return value


def as_opt_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)

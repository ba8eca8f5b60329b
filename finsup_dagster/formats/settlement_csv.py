"""The finsup settlement CSV: a documented, gateway-neutral settlement file.

Header, exactly and in this order::

    settlement_id,gateway,gateway_txn_id,kind,amount,currency,fee,fee_currency,
    settled_on,occurred_at,batch_ref,batch_net_amount,description

One line per settled gateway transaction:

- ``settlement_id`` (required): the settler's id for the line, ``settler_ref``.
  ``record_ref`` is the same id, or ``<id>#<line>`` for a line repeating an
  earlier line's id: such a line is read like any other, with a note naming both
  lines (the reconciliation reports the repeat of a settled transaction as a
  ``duplicate_settlement``).
- ``gateway`` (required): who settled it, e.g. ``paypal``; lower-cased, it must
  equal the revenue event's ``source`` for the line to match it.
- ``gateway_txn_id`` (optional): the gateway transaction this line settles.
- ``kind``: ``sale``, ``refund``, ``chargeback`` or ``other``. The kind gives the
  direction: a sale is money in (credit), everything else money out (debit).
- ``amount``: positive decimal in major units ("12.50"; "1500" for JPY). Never signed.
- ``fee``: optional, blank = 0; positive = a fee charged to us, negative = a fee
  given back. ``fee_currency`` blank = ``currency``.
- ``settled_on``: ``YYYY-MM-DD``. ``occurred_at`` (optional): ISO 8601 with an offset.
- ``batch_ref`` / ``batch_net_amount`` (optional): set when one bank credit settles
  many lines; the net amount needs a batch ref.
- ``description`` (optional): free text.

A line that cannot be read (wrong field count, a blank required field, an amount
or date that is not one) refuses the file, naming the line: the file has no
footer to say what such a line was worth, so no part of it is trusted. A file
with only the header is valid and means "nothing settled".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from finsup_dagster.formats.common import (
    Parsed,
    as_int,
    as_opt_str,
    malformed,
    raw_json,
    read_text,
    settlement_row,
    signed_minor,
)
from finsup_dagster.ledger import clock, money
from finsup_dagster.ledger.errors import InvalidInput

HEADER: tuple[str, ...] = (
    "settlement_id",
    "gateway",
    "gateway_txn_id",
    "kind",
    "amount",
    "currency",
    "fee",
    "fee_currency",
    "settled_on",
    "occurred_at",
    "batch_ref",
    "batch_net_amount",
    "description",
)

_DIRECTION = {"sale": "credit", "refund": "debit", "chargeback": "debit", "other": "debit"}


def parse_settlement_csv(path: Path) -> Parsed:
    return parse_settlement_text(read_text(path), path.name)


def parse_settlement_text(text: str, name: str) -> Parsed:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise malformed(
                name, "line 1", f"header must be exactly {','.join(HEADER)} (got {header!r:.120})"
            )
        rows: list[dict[str, object]] = []
        seen: dict[str, int] = {}
        notes: list[str] = []
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue  # a blank line carries nothing; refusing the file for it helps nobody
            if len(fields) != len(HEADER):
                raise malformed(
                    name, f"line {line}", f"has {len(fields)} fields, the header has {len(HEADER)}"
                )
            record = dict(zip(HEADER, fields, strict=True))
            try:
                row = _row(line, record)
            except InvalidInput as exc:
                raise malformed(name, f"line {line}", exc) from None
            ref = str(row["record_ref"])
            if ref in seen:  # about this line, not the file: it lands, noted
                row["record_ref"] = f"{ref}#{line}"
                notes.append(
                    f"{name}: line {line}: settlement_id {ref} repeats line {seen[ref]} "
                    "(both land; the reconciliation settles one)"
                )
            else:
                seen[ref] = line
            rows.append(row)
    except csv.Error as exc:
        raise malformed(name, f"line {reader.line_num}", f"is not valid CSV ({exc})") from None
    return Parsed(rows=rows, notes=notes)


def _row(line: int, rec: Mapping[str, str]) -> dict[str, object]:
    def text(key: str) -> str:
        return rec[key].strip()

    for required in ("settlement_id", "gateway", "kind", "amount", "currency", "settled_on"):
        if not text(required):
            raise InvalidInput(f"{required} is blank")
    kind = text("kind").lower()
    if kind not in _DIRECTION:
        raise InvalidInput(f"kind {text('kind')!r} is not one of sale, refund, chargeback, other")
    currency = money.normalise_currency(text("currency"))
    fee_currency = money.normalise_currency(text("fee_currency") or currency)
    batch_ref = text("batch_ref") or None
    net_text = text("batch_net_amount")
    if net_text and batch_ref is None:
        raise InvalidInput("batch_net_amount is set but batch_ref is blank")
    return settlement_row(
        row_number=line,
        record_ref=text("settlement_id"),
        settler_ref=text("settlement_id"),
        gateway=text("gateway"),
        gateway_txn_id=text("gateway_txn_id") or None,
        batch_ref=batch_ref,
        batch_net_minor=signed_minor(net_text, currency) if net_text else None,
        event_code=None,
        kind=kind,
        direction=_DIRECTION[kind],
        gross_minor=money.to_minor(text("amount"), currency),
        currency=currency,
        fee_minor=signed_minor(text("fee"), fee_currency) if text("fee") else 0,
        fee_currency=fee_currency,
        settled_on=text("settled_on"),
        occurred_at=text("occurred_at") or None,
        description=text("description") or None,
        raw=raw_json(rec),
    )


def write_settlement_csv(
    path: Path, rows: Iterable[Mapping[str, object]], *, gateway: str = "paypal"
) -> Path:
    """Writes settlement rows (``SETTLEMENT_COLUMNS`` dicts) so the parser reads them back.

    ``row_number``, ``raw`` and ``event_code`` are not written (the file has no
    place for them); a row may carry its own ``gateway``.
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        currency = str(row["currency"])
        fee_currency = str(row.get("fee_currency") or currency)
        fee = as_int(row.get("fee_minor") or 0, "fee_minor")
        net = row.get("batch_net_minor")
        occurred = as_opt_str(row.get("occurred_at"))
        writer.writerow(
            [
                row.get("settler_ref") or row["record_ref"],
                row.get("gateway") or gateway,
                row.get("gateway_txn_id") or "",
                row["kind"],
                money.format_minor(as_int(row["gross_minor"], "gross_minor"), currency),
                currency,
                money.format_minor(fee, fee_currency) if fee else "",
                fee_currency if fee_currency != currency else "",
                row["settled_on"],
                clock.parse_instant(occurred) if occurred else "",
                row.get("batch_ref") or "",
                money.format_minor(as_int(net, "batch_net_minor"), currency)
                if net is not None
                else "",
                row.get("description") or "",
            ]
        )
    path.write_text(out.getvalue(), encoding="utf-8")
    return path

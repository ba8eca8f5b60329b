"""A page of PayPal's Transaction Search API (``GET /v1/reporting/transactions``) as revenue rows.

The body is JSON::

    {"transaction_details": [{"transaction_info": {
         "transaction_id": "5TY05013RG002845M",
         "transaction_event_code": "T0006",
         "transaction_initiation_date": "2026-11-20T09:15:00+0000",
         "transaction_amount": {"currency_code": "USD", "value": "120.00"},
         "fee_amount": {"currency_code": "USD", "value": "-3.78"},
         "transaction_status": "S", ...}, "payer_info": {...}, ...}, ...],
     "account_number": "...", "page": 1, "total_pages": 3, "total_items": 250, ...}

Each transaction becomes one row of ``REVENUE_COLUMNS``: ``source`` ``paypal``,
``external_id`` and ``record_ref`` the transaction id, ``amount`` the value as
PayPal gives it without its sign ("-120.00" → "120.00"; checked with
``money.to_minor``), ``occurred_at`` the initiation date in canonical UTC (PayPal's
``+0000`` offsets are rewritten as ``+00:00``), ``kind`` from the event code and
the sign as ``paypal_codes`` describes, ``status`` from ``transaction_status``:
S → confirmed, P → projected, V → reversed.

Skipped and counted (with a note): denied or failed transactions (F, D), event
codes that are not revenue (withdrawals, holds, conversions, payments we sent),
and zero amounts. Fees are not emitted: they are reconciled from the settlement
files, which state what was actually deducted.

A page is refused whole (``MalformedFile``) when it is not JSON, lacks
``transaction_details``, has a transaction without an id, amount or valid time,
uses an unknown status code, or carries an amount as a JSON number (a float has
already lost cents). When the response says it is the only page, ``total_items``
must equal the transactions on it, else ``FooterMismatch``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from finsup_dagster.formats.common import (
    Parsed,
    as_opt_str,
    count_note,
    decode_text,
    malformed,
    mismatch,
    raw_json,
    read_text,
)
from finsup_dagster.formats.paypal_codes import DEFAULT_CODE, revenue_kind
from finsup_dagster.ledger import clock, money
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.text import one_line

SOURCE = "paypal"
STATUS = {"S": "confirmed", "P": "projected", "V": "reversed"}
STATUS_CODE = {v: k for k, v in STATUS.items()}
SKIPPED_STATUS = {"F": "failed", "D": "denied"}
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")
_VALUE = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def parse_transactions_file(path: Path) -> Parsed:
    """A saved response body (``.json``) of one Transaction Search page."""
    return parse_page(read_text(path), path.name)


def parse_page(body: bytes | str, name: str) -> Parsed:
    text = decode_text(body, name) if isinstance(body, bytes) else body
    if not text.strip():
        raise malformed(name, None, "file is empty")
    try:
        page = json.loads(text, parse_float=_JsonNumber, parse_constant=_refuse_constant)
    except InvalidInput as exc:
        raise malformed(name, None, exc) from None
    except (ValueError, RecursionError) as exc:
        raise malformed(name, None, f"is not valid JSON ({one_line(exc)})") from None
    if not isinstance(page, dict) or not isinstance(page.get("transaction_details"), list):
        raise malformed(
            name, None, "is not a transaction search page (no transaction_details list)"
        )
    details: list[object] = page["transaction_details"]
    _check_paging(name, page, len(details))
    parsed = Parsed(rows=[])
    skipped: Counter[str] = Counter()
    seen: dict[str, int] = {}
    for number, detail in enumerate(details, 1):
        where = f"transaction {number}"
        info = detail.get("transaction_info") if isinstance(detail, dict) else None
        if not isinstance(info, dict):
            raise malformed(name, where, "has no transaction_info object")
        try:
            row, reason = _row(number, info)
        except InvalidInput as exc:
            tid = info.get("transaction_id")
            raise malformed(
                name, f"{where} ({tid})" if isinstance(tid, str) else where, exc
            ) from None
        if row is None:
            skipped[reason] += 1
            continue
        ref = str(row["external_id"])
        if ref in seen:
            # About this transaction, not the page: the ledger keeps one event (the same
            # one again changes nothing) or rejects a conflicting repeat by its row.
            parsed.notes.append(
                f"{name}: {where}: transaction_id {ref} repeats transaction {seen[ref]}"
            )
        else:
            seen[ref] = number
        parsed.rows.append(row)
    parsed.skipped = sum(skipped.values())
    if skipped:
        parsed.notes.append(count_note("transactions", skipped))
    return parsed


class _JsonNumber(str):
    """A JSON fraction kept as its text: an amount written as one is refused, never floated."""


def _refuse_constant(text: str) -> object:
    raise InvalidInput(f"has {text}, which is not JSON")


def _check_paging(name: str, page: Mapping[str, object], on_page: int) -> None:
    number, pages, items = page.get("page"), page.get("total_pages"), page.get("total_items")
    for key, value in (("page", number), ("total_pages", pages), ("total_items", items)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise malformed(name, None, f"{key} is {value!r}, not a whole number")
    if isinstance(number, int) and isinstance(pages, int) and pages and number > pages:
        raise malformed(name, None, f"page {number} is past total_pages {pages}")
    if pages in (0, 1) and isinstance(items, int) and items != on_page:
        raise mismatch(
            name, None, f"total_items says {items} transactions, the only page has {on_page}"
        )


def _text(info: Mapping[str, object], key: str) -> str:
    value = info.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{key} is missing or not a string")
    return value.strip()


def _row(number: int, info: Mapping[str, object]) -> tuple[dict[str, object] | None, str]:
    txn = _text(info, "transaction_id")
    code = _text(info, "transaction_event_code")
    status_code = _text(info, "transaction_status").upper()
    if status_code in SKIPPED_STATUS:
        return None, f"status {status_code} ({SKIPPED_STATUS[status_code]})"
    if status_code not in STATUS:
        raise InvalidInput(f"transaction_status {status_code!r} is not one of S, P, V, F, D")
    amount = info.get("transaction_amount")
    if not isinstance(amount, dict):
        raise InvalidInput("transaction_amount is missing")
    currency = money.normalise_currency(amount.get("currency_code"))
    value = amount.get("value")
    if isinstance(value, _JsonNumber | int | float):
        raise InvalidInput(f'transaction_amount value {value} is a JSON number; expected "{value}"')
    if not isinstance(value, str) or not _VALUE.match(value.strip()):
        raise InvalidInput(f"transaction_amount value {value!r} is not a decimal string")
    value = value.strip()
    magnitude = value.lstrip("+-")
    if not magnitude.replace(".", "").strip("0"):
        return None, "zero amount"
    kind = revenue_kind(code, not value.startswith("-"))
    if kind is None:
        return None, f"event {code}"
    money.to_minor(magnitude, currency)  # refuses too many decimals for the currency
    occurred = _text(info, "transaction_initiation_date")
    row: dict[str, object] = {
        "row_number": number,
        "record_ref": txn,
        "source": SOURCE,
        "external_id": txn,
        "amount": magnitude,
        "currency": currency,
        "occurred_at": clock.parse_instant(_COMPACT_OFFSET.sub(r"\1:\2", occurred)),
        "kind": kind,
        "status": STATUS[status_code],
        "raw": raw_json(info),
    }
    return row, ""


def write_transactions_page(
    path: Path,
    transactions: Iterable[Mapping[str, object]],
    page: int = 1,
    total_pages: int = 1,
    *,
    total_items: int | None = None,
) -> Path:
    """Writes revenue rows (``REVENUE_COLUMNS`` dicts) as one Transaction Search response page.

    Event codes come from the kind (sale T0006, refund T1107, chargeback T1106),
    refunds and chargebacks get a negative value, times PayPal's ``+0000`` form.
    ``total_items`` defaults to the rows on this page.
    """
    details = []
    for row in transactions:
        kind = str(row["kind"])
        currency = str(row["currency"])
        amount = str(row["amount"])
        money.to_minor(amount, currency)
        occurred = clock.parse_instant(as_opt_str(row["occurred_at"]))
        info = {
            "transaction_id": str(row["external_id"]),
            "transaction_event_code": DEFAULT_CODE[kind],
            "transaction_initiation_date": occurred[:19] + "+0000",
            "transaction_updated_date": occurred[:19] + "+0000",
            "transaction_amount": {
                "currency_code": currency,
                "value": amount if kind == "sale" else f"-{amount}",
            },
            "transaction_status": STATUS_CODE[str(row["status"])],
        }
        if occurred[20:26] != "000000":
            raise ValueError(f"PayPal times have whole seconds; {occurred} has a fraction")
        details.append({"transaction_info": info})
    body = {
        "transaction_details": details,
        "account_number": "FINSUPSAMPLE",
        "page": page,
        "total_items": len(details) if total_items is None else total_items,
        "total_pages": total_pages,
    }
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return path

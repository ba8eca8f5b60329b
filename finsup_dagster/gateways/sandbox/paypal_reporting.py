"""PayPal's Transaction Search API (``GET /v1/reporting/transactions``) in the sandbox.

The transactions are read from ``data_dir`` on every request, so a test or
the demo can append to the file between calls and see the change without
restarting anything.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.gateways.sandbox.paypal_common import bearer_refusal, paypal_error, paypal_time
from finsup_dagster.gateways.sandbox.state import SandboxState, random_id
from finsup_dagster.ledger.money import format_minor, normalise_currency

PAYPAL_TRANSACTIONS_FILE = "paypal_transactions.jsonl"
PAYPAL_ACCOUNT_NUMBER = "FINSUPSANDBOX"  # 13 characters, like a PayPal payer id
PAYPAL_MAX_RANGE = timedelta(days=31)
PAYPAL_MAX_PAGE_SIZE = 500
PAYPAL_DEFAULT_PAGE_SIZE = 100


def reporting_routes(state: SandboxState) -> list[BaseRoute]:
    async def transactions(request: Request) -> Response:
        refusal = bearer_refusal(request, state, "paypal")
        if refusal is not None:
            return refusal
        return _search(request, state)

    return [Route("/v1/reporting/transactions", transactions, methods=["GET"])]


def _invalid_request(field_name: str, value: str | None, issue: str) -> JSONResponse:
    return paypal_error(
        400,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        [{"field": field_name, "value": value or "", "location": "query", "issue": issue}],
    )


def _parse_query_time(name: str, raw: str | None) -> datetime | JSONResponse:
    if not raw:
        return _invalid_request(name, raw, f"{name} is required")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return _invalid_request(name, raw, f"{name} is not an ISO 8601 date-time")
    if parsed.tzinfo is None:
        return _invalid_request(name, raw, f"{name} must carry a time zone offset")
    return parsed.astimezone(UTC)


def _parse_query_int(name: str, raw: str | None, default: int, high: int) -> int | JSONResponse:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return _invalid_request(name, raw, f"{name} must be an integer")
    if not 1 <= value <= high:
        return _invalid_request(name, raw, f"{name} must be between 1 and {high}")
    return value


def _search(request: Request, state: SandboxState) -> Response:
    q = request.query_params
    start = _parse_query_time("start_date", q.get("start_date"))
    if isinstance(start, JSONResponse):
        return start
    end = _parse_query_time("end_date", q.get("end_date"))
    if isinstance(end, JSONResponse):
        return end
    if end <= start:
        return _invalid_request("end_date", q.get("end_date"), "end_date must be after start_date")
    if end - start > PAYPAL_MAX_RANGE:
        return _invalid_request("end_date", q.get("end_date"), "Date range is greater than 31 days")
    page = _parse_query_int("page", q.get("page"), 1, 10**6)
    if isinstance(page, JSONResponse):
        return page
    page_size = _parse_query_int(
        "page_size", q.get("page_size"), PAYPAL_DEFAULT_PAGE_SIZE, PAYPAL_MAX_PAGE_SIZE
    )
    if isinstance(page_size, JSONResponse):
        return page_size
    status_filter = q.get("transaction_status")
    if status_filter is not None and status_filter not in {"D", "P", "S", "V"}:
        return _invalid_request(
            "transaction_status", status_filter, "transaction_status must be D, P, S or V"
        )
    id_filter = q.get("transaction_id")

    try:
        rows = _load_paypal_transactions(state.data_dir)
    except ValueError as exc:
        return paypal_error(500, "INTERNAL_SERVICE_ERROR", f"sandbox data: {exc}")
    selected = sorted(
        (
            (at, info)
            for at, info in rows
            if start <= at < end
            and (status_filter is None or info.get("transaction_status") == status_filter)
            and (id_filter is None or info.get("transaction_id") == id_filter)
        ),
        key=lambda pair: (pair[0], str(pair[1].get("transaction_id", ""))),
    )
    total_items = len(selected)
    total_pages = math.ceil(total_items / page_size)
    chunk = selected[(page - 1) * page_size : page * page_size]
    body = {
        "transaction_details": [{"transaction_info": info} for _, info in chunk],
        "account_number": PAYPAL_ACCOUNT_NUMBER,
        "start_date": paypal_time(start),
        "end_date": paypal_time(end),
        "last_refreshed_datetime": paypal_time(datetime.now(UTC).replace(microsecond=0)),
        "page": page,
        "total_items": total_items,
        "total_pages": total_pages,
        "links": _page_links(request, page, total_pages),
    }
    return JSONResponse(body, headers={"Paypal-Debug-Id": secrets.token_hex(7)})


def _page_links(request: Request, page: int, total_pages: int) -> list[dict[str, str]]:
    def href(n: int) -> str:
        return str(request.url.include_query_params(page=n))

    links = [{"href": href(page), "rel": "self", "method": "GET"}]
    if total_pages:
        links.append({"href": href(1), "rel": "first", "method": "GET"})
    if page < total_pages:
        links.append({"href": href(page + 1), "rel": "next", "method": "GET"})
    if 1 < page <= total_pages:
        links.append({"href": href(page - 1), "rel": "previous", "method": "GET"})
    if total_pages:
        links.append({"href": href(total_pages), "rel": "last", "method": "GET"})
    return links


def _load_paypal_transactions(data_dir: Path) -> list[tuple[datetime, dict[str, Any]]]:
    path = data_dir / PAYPAL_TRANSACTIONS_FILE
    if not path.exists():
        return []
    rows: list[tuple[datetime, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                info = json.loads(line)
                at = datetime.fromisoformat(info["transaction_initiation_date"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path.name} line {number}: {type(exc).__name__}") from None
            if at.tzinfo is None:
                raise ValueError(f"{path.name} line {number}: date has no offset")
            rows.append((at.astimezone(UTC), info))
    return rows


# --------------------------------------------------------------------------- data helpers


def paypal_transaction_id() -> str:
    """A random 17-character id shaped like PayPal's (e.g. ``5TY05013RG002845M``)."""
    return random_id(17)


def transaction_info(
    *,
    at: datetime,
    amount_minor: int,
    currency: str = "USD",
    event_code: str = "T0006",
    status: str = "S",
    transaction_id: str | None = None,
    fee_minor: int | None = None,
    updated_at: datetime | None = None,
    reference_id: str | None = None,
    invoice_id: str | None = None,
) -> dict[str, Any]:
    """A PayPal ``transaction_info`` dict as the Transaction Search API returns it.

    ``amount_minor`` is the positive size of the payment in minor units; the
    sign follows the event: a sale (T0006) is money in, a refund (T1107) is
    money out and printed negative. When ``fee_minor`` is None a sale carries
    a 2.9% fee (negative, as PayPal prints it) and a refund carries none.
    """
    if amount_minor <= 0:
        raise ValueError(f"amount_minor must be positive, got {amount_minor}")
    if status not in {"D", "P", "S", "V"}:
        raise ValueError(f"status must be D, P, S or V, got {status!r}")
    code = normalise_currency(currency)
    refund = event_code == "T1107"
    if fee_minor is None and not refund:
        fee_minor = -((amount_minor * 29 + 500) // 1000)
    info: dict[str, Any] = {
        "transaction_id": transaction_id or paypal_transaction_id(),
        "transaction_event_code": event_code,
        "transaction_initiation_date": paypal_time(at),
        "transaction_updated_date": paypal_time(updated_at or at),
        "transaction_amount": {
            "currency_code": code,
            "value": format_minor(-amount_minor if refund else amount_minor, code),
        },
        "transaction_status": status,
    }
    if fee_minor:
        info["fee_amount"] = {"currency_code": code, "value": format_minor(fee_minor, code)}
    if reference_id:
        info["paypal_reference_id"] = reference_id
        info["paypal_reference_id_type"] = "TXN"
    if invoice_id:
        info["invoice_id"] = invoice_id
    return info


def append_transactions(data_dir: Path, transactions: Iterable[dict[str, Any]]) -> int:
    """Appends ``transaction_info`` dicts to the PayPal data file; returns how many."""
    lines = [json.dumps(t, sort_keys=True, separators=(",", ":")) + "\n" for t in transactions]
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / PAYPAL_TRANSACTIONS_FILE).open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
    return len(lines)

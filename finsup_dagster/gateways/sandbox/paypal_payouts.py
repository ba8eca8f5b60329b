"""PayPal's Payouts API v1 in the sandbox: create a batch, read it and its items, cancel.

Shapes follow developer.paypal.com/api/payments.payouts-batch/v1: a create
answers 201 with ``batch_header.payout_batch_id`` and ``batch_status``
PENDING; a ``sender_batch_id`` used in the last 30 days is refused (400
``USER_BUSINESS_ERROR``) naming the duplicate and linking the original
payout; more than 15,000 items is a 400; only an UNCLAIMED item can be
cancelled. Amounts must be written exactly to the currency's exponent
(``"1500"`` JPY, ``"10.50"`` USD, ``"1.250"`` KWD).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.gateways.sandbox.outcomes import (
    PAYPAL_STATUS,
    Outcome,
    paypal_batch_status,
    paypal_tag,
)
from finsup_dagster.gateways.sandbox.paypal_common import (
    bearer_refusal,
    lookup_route,
    paypal_error,
    paypal_time,
)
from finsup_dagster.gateways.sandbox.state import PayPalBatch, PayPalItem, SandboxState, random_id
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.money import format_minor, to_minor

PAYOUTS_DOCS = "https://developer.paypal.com/docs/api/payments.payouts-batch/v1/#error-"
PAYPAL_MAX_PAYOUT_ITEMS = 15_000
DUPLICATE_WINDOW_SECONDS = 30 * 24 * 3600
RECIPIENT_TYPES = frozenset({"EMAIL", "PHONE", "PAYPAL_ID"})


def payouts_routes(state: SandboxState) -> list[BaseRoute]:
    def paypal_only(request: Request) -> Response | None:
        return bearer_refusal(request, state, "paypal")

    async def create(request: Request) -> Response:
        refusal = paypal_only(request)
        if refusal is not None:
            return refusal
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _malformed("body", "Request body is not valid JSON.")
        return _create(body, state, _base(request))

    def batch_answer(request: Request, batch: PayPalBatch) -> Response:
        return JSONResponse(_batch_body(batch, state, _base(request)))

    def item_answer(request: Request, found: tuple[PayPalBatch, PayPalItem]) -> Response:
        batch, item = found
        return JSONResponse(_item_body(batch, item, state, _base(request)))

    def cancel_answer(request: Request, found: tuple[PayPalBatch, PayPalItem]) -> Response:
        batch, item = found
        current = _item_outcome(item, state)
        if current != "unclaimed":
            return paypal_error(
                400,
                "ITEM_ALREADY_PROCESSED" if current != "pending" else "ITEM_NOT_UNCLAIMED",
                f"Only UNCLAIMED payout items can be cancelled; this one is "
                f"{PAYPAL_STATUS[current]}.",
                docs=PAYOUTS_DOCS,
            )
        item.outcome.override = "cancelled"
        return JSONResponse(_item_body(batch, item, state, _base(request)))

    def find_batch(batch_id: str) -> PayPalBatch | None:
        return state.paypal_batches.get(batch_id)

    find_item = partial(_find_item, state)
    no_batch = partial(_not_found, "payout_batch_id")
    no_item = partial(_not_found, "payout_item_id")
    get_batch = lookup_route(state, paypal_only, "batch_id", find_batch, no_batch, batch_answer)
    get_item = lookup_route(state, paypal_only, "item_id", find_item, no_item, item_answer)
    cancel_item = lookup_route(state, paypal_only, "item_id", find_item, no_item, cancel_answer)

    return [
        Route("/v1/payments/payouts", create, methods=["POST"]),
        Route("/v1/payments/payouts/{batch_id}", get_batch, methods=["GET"]),
        Route("/v1/payments/payouts-item/{item_id}", get_item, methods=["GET"]),
        Route("/v1/payments/payouts-item/{item_id}/cancel", cancel_item, methods=["POST"]),
    ]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _malformed(field: str, issue: str) -> JSONResponse:
    return paypal_error(
        400,
        "VALIDATION_ERROR",
        "Invalid request - see details.",
        [{"field": field, "location": "body", "issue": issue}],
        docs=PAYOUTS_DOCS,
    )


def _not_found(field: str, value: str) -> JSONResponse:
    return paypal_error(
        404,
        "INVALID_RESOURCE_ID",
        "Requested resource ID was not found.",
        [{"field": field, "value": value, "location": "path", "issue": "not found"}],
        docs=PAYOUTS_DOCS,
    )


def _create(body: Any, state: SandboxState, base: str) -> Response:
    if not isinstance(body, dict):
        return _malformed("body", "Request body must be a JSON object.")
    header = body.get("sender_batch_header")
    if not isinstance(header, dict):
        return _malformed("sender_batch_header", "sender_batch_header is required.")
    sender_batch_id = header.get("sender_batch_id")
    if sender_batch_id is not None and (
        not isinstance(sender_batch_id, str) or not 1 <= len(sender_batch_id) <= 256
    ):
        return _malformed("sender_batch_header.sender_batch_id", "Must be 1-256 characters.")
    items = body.get("items")
    if not isinstance(items, list) or not items:
        return _malformed("items", "At least one payout item is required.")
    if len(items) > PAYPAL_MAX_PAYOUT_ITEMS:
        return _malformed(
            "items",
            f"{len(items)} items: a payout holds at most {PAYPAL_MAX_PAYOUT_ITEMS:,} items.",
        )
    parsed: list[tuple[str, str, str, str, str, str]] = []
    for n, item in enumerate(items):
        checked = _check_item(n, item, header.get("recipient_type"))
        if isinstance(checked, JSONResponse):
            return checked
        parsed.append(checked)

    now_wall, now = time.time(), time.monotonic()
    with state.lock:
        if sender_batch_id is not None:
            original_id = state.paypal_by_sender_id.get(sender_batch_id)
            original = state.paypal_batches.get(original_id or "")
            if original is not None and now_wall - original.created_wall < DUPLICATE_WINDOW_SECONDS:
                return _duplicate(sender_batch_id, original, base)
        batch_id = random_id(13)
        batch = PayPalBatch(batch_id, dict(header), now_wall, now, [])
        for n, (rtype, receiver, value, currency, sender_item_id, note) in enumerate(parsed):
            item = PayPalItem(
                payout_item_id=random_id(13),
                transaction_id=random_id(17),
                sender_item_id=sender_item_id,
                recipient_type=rtype,
                receiver=receiver,
                value=value,
                currency=currency,
                note=note,
                outcome=Outcome(paypal_tag(receiver), now),
            )
            batch.items.append(item)
            state.paypal_items[item.payout_item_id] = (batch_id, n)
        state.paypal_batches[batch_id] = batch
        if sender_batch_id is not None:
            state.paypal_by_sender_id[sender_batch_id] = batch_id
    answer = {
        "batch_header": {
            "sender_batch_header": dict(header),
            "payout_batch_id": batch_id,
            "batch_status": "PENDING",
        },
        "links": [_link(f"{base}/v1/payments/payouts/{batch_id}", "self")],
    }
    return JSONResponse(answer, status_code=201)


def _check_item(
    n: int, item: Any, default_type: Any
) -> tuple[str, str, str, str, str, str] | JSONResponse:
    where = f"items[{n}]"
    if not isinstance(item, dict):
        return _malformed(where, "Each item must be an object.")
    rtype = item.get("recipient_type", default_type)
    if rtype not in RECIPIENT_TYPES:
        return _malformed(f"{where}.recipient_type", "Must be EMAIL, PHONE or PAYPAL_ID.")
    receiver = item.get("receiver")
    if not isinstance(receiver, str) or not receiver.strip():
        return _malformed(f"{where}.receiver", "receiver is required.")
    amount = item.get("amount")
    if not isinstance(amount, dict):
        return _malformed(f"{where}.amount", "amount {value, currency} is required.")
    value, currency = amount.get("value"), amount.get("currency")
    if not isinstance(currency, str) or not isinstance(value, str):
        return _malformed(f"{where}.amount", "amount.value and amount.currency must be strings.")
    try:
        exact = format_minor(to_minor(value, currency), currency) == value
    except InvalidInput as exc:
        return _malformed(f"{where}.amount", str(exc))
    if not exact:
        return _malformed(
            f"{where}.amount.value",
            f"{value!r} is not written with the exact decimals {currency} uses.",
        )
    sender_item_id = item.get("sender_item_id", "")
    if not isinstance(sender_item_id, str) or len(sender_item_id) > 63:
        return _malformed(f"{where}.sender_item_id", "Must be a string of at most 63 characters.")
    note = item.get("note", "")
    return rtype, receiver, value, currency, sender_item_id, note if isinstance(note, str) else ""


def _duplicate(sender_batch_id: str, original: PayPalBatch, base: str) -> JSONResponse:
    href = f"{base}/v1/payments/payouts/{original.payout_batch_id}"
    return paypal_error(
        400,
        "USER_BUSINESS_ERROR",
        f"Batch with given sender_batch_id {sender_batch_id} already exists.",
        [
            {
                "field": "sender_batch_header.sender_batch_id",
                "value": sender_batch_id,
                "location": "body",
                "issue": f"Batch with given sender_batch_id {sender_batch_id} already exists",
                "link": [_link(href, "self")],
            }
        ],
        docs=PAYOUTS_DOCS,
        links=[_link(href, "self")],
    )


def _link(href: str, rel: str) -> dict[str, str]:
    return {"href": href, "rel": rel, "method": "GET", "encType": "application/json"}


def _find_item(state: SandboxState, item_id: str) -> tuple[PayPalBatch, PayPalItem] | None:
    where = state.paypal_items.get(item_id)
    if where is None:
        return None
    batch = state.paypal_batches[where[0]]
    return batch, batch.items[where[1]]


def _item_outcome(item: PayPalItem, state: SandboxState) -> str:
    current = item.outcome.at(time.monotonic(), state.outcome_delay)
    old, item.last_seen = item.last_seen, current
    state.seen("paypal", item.payout_item_id, PAYPAL_STATUS[old], PAYPAL_STATUS[current])
    return current


def _time(monotonic_at: float, batch: PayPalBatch) -> str:
    wall = batch.created_wall + (monotonic_at - batch.created)
    return paypal_time(datetime.fromtimestamp(wall, UTC))


def _item_body(
    batch: PayPalBatch, item: PayPalItem, state: SandboxState, base: str
) -> dict[str, Any]:
    outcome = _item_outcome(item, state)
    body: dict[str, Any] = {
        "payout_item_id": item.payout_item_id,
        "transaction_status": PAYPAL_STATUS[outcome],
        "payout_batch_id": batch.payout_batch_id,
        "payout_item_fee": {"currency": item.currency, "value": format_minor(0, item.currency)},
        "payout_item": {
            "recipient_type": item.recipient_type,
            "amount": {"value": item.value, "currency": item.currency},
            "receiver": item.receiver,
            "sender_item_id": item.sender_item_id,
        },
        "links": [
            _link(f"{base}/v1/payments/payouts-item/{item.payout_item_id}", "item"),
            _link(f"{base}/v1/payments/payouts/{batch.payout_batch_id}", "batch"),
        ],
    }
    if item.note:
        body["payout_item"]["note"] = item.note
    if outcome not in {"pending", "denied", "blocked"}:
        body["transaction_id"] = item.transaction_id
        body["time_processed"] = _time(batch.created + state.outcome_delay, batch)
    return body


def _batch_body(batch: PayPalBatch, state: SandboxState, base: str) -> dict[str, Any]:
    items = [_item_body(batch, item, state, base) for item in batch.items]
    outcomes = [item.last_seen for item in batch.items]
    elapsed = time.monotonic() - batch.created
    header: dict[str, Any] = {
        "payout_batch_id": batch.payout_batch_id,
        "batch_status": paypal_batch_status(outcomes, elapsed, state.outcome_delay),
        "time_created": _time(batch.created, batch),
        "sender_batch_header": batch.sender_batch_header,
    }
    currencies = {item.currency for item in batch.items}
    if len(currencies) == 1:
        (currency,) = currencies
        total = sum(to_minor(item.value, currency) for item in batch.items)
        header["amount"] = {"currency": currency, "value": format_minor(total, currency)}
        header["fees"] = {"currency": currency, "value": format_minor(0, currency)}
    if header["batch_status"] in {"SUCCESS", "DENIED"}:
        header["time_completed"] = _time(batch.created + state.outcome_delay, batch)
    return {
        "batch_header": header,
        "items": items,
        "total_items": len(items),
        "total_pages": 1,
        "links": [_link(f"{base}/v1/payments/payouts/{batch.payout_batch_id}", "self")],
    }

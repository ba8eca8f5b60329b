"""PayPal Payouts API v1 behind :class:`~finsup_dagster.gateways.payouts.PayoutGateway`.

Request mapping (docs/gateways.md): the request's ``idempotency_key`` is the
``sender_batch_header.sender_batch_id``; each line is an EMAIL item with
``sender_item_id`` = finsup's item id and ``amount.value`` written from the
integer minor units with the currency's exact decimals (``format_minor``,
never a float). PayPal refuses a ``sender_batch_id`` used in the last 30
days and links the original: ``submit_batch`` follows that link (its path
only, against our own base URL, so the token never goes to a host taken
from an answer) and returns the original with ``read_back=True``, after
checking it holds the same items.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from finsup_dagster.gateways.exact_json import dumps_exact
from finsup_dagster.gateways.http_client import Answer, GatewayHttp, HttpGateway, RetryPolicy
from finsup_dagster.gateways.payouts import (
    GatewayBatch,
    GatewayItem,
    GatewayRefused,
    PayoutRequest,
    create_refused,
)
from finsup_dagster.ledger.money import format_minor

PAYPAL_MAX_ITEMS = 15_000
PAGE_SIZE = 1000
BATCH_PATH = "/v1/payments/payouts"
ITEM_PATH = "/v1/payments/payouts-item"


class PayPalPayouts(HttpGateway):
    """PayPal Payouts over httpx: OAuth token cached, transient failures retried."""

    name = "paypal"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        email_subject: str = "You have a payout",
        client: httpx.Client | None = None,
    ) -> None:
        self._http = GatewayHttp(
            "PayPal payouts",
            base_url,
            base_url.rstrip("/") + "/v1/oauth2/token",
            client_id,
            client_secret,
            token_form={"grant_type": "client_credentials"},
            timeout=timeout,
            retry=retry or RetryPolicy(),
            client=client,
        )
        self.email_subject = email_subject

    def __repr__(self) -> str:
        return f"PayPalPayouts({self._http.base_url!r})"

    # ------------------------------------------------------------------ PayoutGateway

    def find_batch(
        self, request: PayoutRequest, gateway_batch_id: str | None
    ) -> GatewayBatch | None:
        """With a stored id, the batch as PayPal holds it (None on 404).

        Without one, None: PayPal cannot be searched by ``sender_batch_id``,
        and its create is idempotent by it, so submitting is the way to ask.
        """
        if gateway_batch_id is None:
            return None
        batch = self._read_batch(gateway_batch_id, missing_ok=True)
        if batch is None:
            return None
        self._check_same(request, batch)
        return batch

    def submit_batch(self, request: PayoutRequest) -> GatewayBatch:
        if not request.lines:
            raise GatewayRefused(f"PayPal payouts: batch {request.batch_id} has no items")
        if len(request.lines) > PAYPAL_MAX_ITEMS:
            raise GatewayRefused(
                f"PayPal payouts: batch {request.batch_id} has {len(request.lines)} items; "
                f"PayPal takes at most {PAYPAL_MAX_ITEMS:,} in one payout"
            )
        try:
            answer = self._http.call(
                "POST",
                BATCH_PATH,
                content=json.dumps(self.payload(request), separators=(",", ":")),
                what=f"creating batch {request.batch_id}",
            )
        except GatewayRefused as exc:  # a 4xx the layer could not read (an HTML page)
            raise create_refused(exc) from None
        if answer.status in {200, 201}:
            return self._batch(answer, items=())
        original = _duplicate_link(answer)
        if original is None:
            raise create_refused(self._http.refused(answer, "", BATCH_PATH))
        batch = self._read_batch(original.rsplit("/", 1)[-1], missing_ok=False)
        assert batch is not None
        self._check_same(request, batch)
        return GatewayBatch(batch.gateway_batch_id, batch.status, batch.items, batch.raw, True)

    def get_batch(self, gateway_batch_id: str) -> GatewayBatch:
        batch = self._read_batch(gateway_batch_id, missing_ok=False)
        assert batch is not None
        return batch

    def get_item(self, gateway_item_id: str) -> GatewayItem:
        path = f"{ITEM_PATH}/{quote(gateway_item_id, safe='')}"
        answer = self._http.call("GET", path, what=f"reading item {gateway_item_id}")
        return self._item_answer(answer, path)

    def cancel_item(self, gateway_item_id: str) -> GatewayItem:
        path = f"{ITEM_PATH}/{quote(gateway_item_id, safe='')}/cancel"
        answer = self._http.call("POST", path, what=f"cancelling item {gateway_item_id}")
        return self._item_answer(answer, path)

    # ------------------------------------------------------------------ mapping

    def payload(self, request: PayoutRequest) -> dict[str, Any]:
        """The create body for ``request`` (public so tests and docs can show it)."""
        return {
            "sender_batch_header": {
                "sender_batch_id": request.idempotency_key,
                "recipient_type": "EMAIL",
                "email_subject": self.email_subject,
            },
            "items": [
                {
                    "recipient_type": "EMAIL",
                    "amount": {
                        "value": format_minor(line.amount_minor, line.currency),
                        "currency": line.currency,
                    },
                    "receiver": line.receiver,
                    "sender_item_id": str(line.item_id),
                }
                for line in request.lines
            ],
        }

    def _read_batch(self, gateway_batch_id: str, *, missing_ok: bool) -> GatewayBatch | None:
        path = f"{BATCH_PATH}/{quote(gateway_batch_id, safe='')}"
        items: list[GatewayItem] = []
        raws: list[str] = []
        page, first = 1, None
        while True:
            answer = self._http.call(
                "GET",
                f"{path}?page={page}&page_size={PAGE_SIZE}&total_required=true",
                what=f"reading batch {gateway_batch_id}",
            )
            if answer.status == 404 and missing_ok:
                return None
            if answer.status != 200:
                raise self._http.refused(answer, "", path)
            first = first or answer
            raws.append(answer.raw)
            body = answer.body
            listed = body.get("items", [])
            if not isinstance(listed, list):
                raise self._garbage(answer, path, "items is not a list")
            items.extend(self._item(entry, answer, path) for entry in listed)
            total_pages = body.get("total_pages", 1)
            if not isinstance(total_pages, int) or page >= total_pages or not listed:
                break
            page += 1
        raw = raws[0] if len(raws) == 1 else "[" + ",".join(raws) + "]"
        batch = self._batch(first, items=tuple(items))
        return GatewayBatch(batch.gateway_batch_id, batch.status, batch.items, raw)

    def _batch(self, answer: Answer, *, items: Iterable[GatewayItem]) -> GatewayBatch:
        body = answer.body
        header = body.get("batch_header")
        if not isinstance(header, dict):
            raise self._garbage(answer, BATCH_PATH, "no batch_header")
        batch_id, status = header.get("payout_batch_id"), header.get("batch_status")
        if not isinstance(batch_id, str) or not batch_id or not isinstance(status, str):
            raise self._garbage(answer, BATCH_PATH, "no payout_batch_id or batch_status")
        return GatewayBatch(batch_id, status, tuple(items), answer.raw)

    def _item(self, entry: Any, answer: Answer, path: str) -> GatewayItem:
        if not isinstance(entry, dict):
            raise self._garbage(answer, path, "an item is not an object")
        item_id, status = entry.get("payout_item_id"), entry.get("transaction_status")
        if not isinstance(item_id, str) or not isinstance(status, str):
            raise self._garbage(answer, path, "an item has no payout_item_id or transaction_status")
        payout_item = entry.get("payout_item")
        sender_item_id = (
            payout_item.get("sender_item_id") if isinstance(payout_item, dict) else None
        )
        ours = (
            int(sender_item_id)
            if isinstance(sender_item_id, str) and sender_item_id.isdigit()
            else None
        )
        return GatewayItem(ours, item_id, status, dumps_exact(entry))

    def _item_answer(self, answer: Answer, path: str) -> GatewayItem:
        if answer.status != 200:
            raise self._http.refused(answer, "", path)
        return self._item(answer.body, answer, path)

    def _garbage(self, answer: Answer, path: str, why: str) -> GatewayRefused:
        return GatewayRefused(
            f"PayPal payouts: {answer.status} answer on {path} is not a payout ({why})",
            raw=answer.raw,
            status_code=answer.status,
        )

    def _check_same(self, request: PayoutRequest, batch: GatewayBatch) -> None:
        """A batch read back under our key must hold exactly our items (by sender_item_id)."""
        held = {item.item_id for item in batch.items}
        wanted = {line.item_id for line in request.lines}
        if held != wanted:
            raise GatewayRefused(
                f"PayPal payouts: batch {batch.gateway_batch_id} under sender_batch_id "
                f"{request.idempotency_key} holds {len(held)} items, not the "
                f"{len(wanted)} of batch {request.batch_id}",
                raw=batch.raw,
            )


def _duplicate_link(answer: Answer) -> str | None:
    """The path of the original payout a duplicate ``sender_batch_id`` refusal links to."""
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status != 400 or body.get("name") != "USER_BUSINESS_ERROR":
        return None
    links: list[Any] = list(body.get("links") or [])
    for detail in body.get("details") or []:
        if isinstance(detail, dict):
            links.extend(detail.get("link") or [])
    for link in links:
        href = link.get("href") if isinstance(link, dict) else None
        if isinstance(href, str):
            path = httpx.URL(href).path
            prefix = BATCH_PATH + "/"
            if path.startswith(prefix) and "/" not in path[len(prefix) :] and path != prefix:
                return path
    return None

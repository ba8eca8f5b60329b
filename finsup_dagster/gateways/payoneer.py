"""Payoneer mass payouts (API v4) behind :class:`~finsup_dagster.gateways.payouts.PayoutGateway`.

Request mapping (docs/gateways.md): each line is one payment with
``client_reference_id`` = ``f"{idempotency_key}-{item_id}"``, ``payee_id`` =
the line's receiver, ``amount`` a JSON number written digit for digit from
the minor units (never a float) and ``currency``. Payoneer has no batch id:
``gateway_batch_id`` is the idempotency key, and a batch is read by asking
the status of each of its references. A reused reference is refused, so
sending again is always safe: a refused chunk is read back (and whatever of
it Payoneer does not hold is sent again once).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from finsup_dagster.gateways.exact_json import dumps_exact
from finsup_dagster.gateways.http_client import Answer, GatewayHttp, HttpGateway, RetryPolicy
from finsup_dagster.gateways.payouts import (
    GatewayBatch,
    GatewayItem,
    GatewayRefused,
    PayoutLine,
    PayoutRequest,
    create_refused,
)
from finsup_dagster.ledger.money import format_minor

CHUNK = 500  # payments per mass payout request
DUPLICATE_REFERENCE_CODE = 10302
# Payoneer's words for a payment that may still move on its own.
IN_FLIGHT = frozenset({"Pending", "On Hold", "Processing"})


class PayoneerPayouts(HttpGateway):
    """Payoneer mass payouts over httpx: OAuth token cached, transient failures retried."""

    name = "payoneer"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        program_id: str,
        *,
        auth_url: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not program_id:
            raise ValueError("program_id is required")
        token_base = (auth_url or base_url).rstrip("/")
        self._http = GatewayHttp(
            "Payoneer",
            base_url,
            token_base + "/api/v2/oauth2/token",
            client_id,
            client_secret,
            token_form={"grant_type": "client_credentials", "scope": "read write"},
            timeout=timeout,
            retry=retry or RetryPolicy(),
            client=client,
        )
        self.program_id = program_id
        self._known: dict[str, tuple[str, ...]] = {}  # key -> references, for get_batch

    def __repr__(self) -> str:
        return f"PayoneerPayouts({self._http.base_url!r}, program_id={self.program_id!r})"

    @staticmethod
    def reference(request: PayoutRequest, line: PayoutLine) -> str:
        return f"{request.idempotency_key}-{line.item_id}"

    # ------------------------------------------------------------------ PayoutGateway

    def find_batch(
        self, request: PayoutRequest, gateway_batch_id: str | None
    ) -> GatewayBatch | None:
        """The batch when Payoneer holds every one of its references, else None.

        Short of every item counts as not held: submitting again is safe, as
        each reference already used is refused and read back.
        """
        refs = self._remember(request)
        items = [self._status(ref, missing_ok=True) for ref in refs]
        if any(item is None for item in items):
            return None
        held = tuple(item for item in items if item is not None)
        return GatewayBatch(request.idempotency_key, _batch_status(held), held)

    def submit_batch(self, request: PayoutRequest) -> GatewayBatch:
        if not request.lines:
            raise GatewayRefused(f"Payoneer: batch {request.batch_id} has no items")
        self._remember(request)
        items: list[GatewayItem] = []
        read_back = False
        lines = list(request.lines)
        for start in range(0, len(lines), CHUNK):
            chunk = lines[start : start + CHUNK]
            try:
                got, was_read_back = self._submit_chunk(request, chunk)
            except GatewayRefused as exc:
                # Only the first chunk's own refusal proves nothing was taken.
                if start > 0 or read_back:
                    exc.nothing_accepted = False
                raise
            items.extend(got)
            read_back = read_back or was_read_back
        status = _batch_status(tuple(items)) if read_back else "PENDING"
        return GatewayBatch(request.idempotency_key, status, tuple(items), read_back=read_back)

    def get_batch(self, gateway_batch_id: str) -> GatewayBatch:
        refs = self._known.get(gateway_batch_id)
        if refs is None:
            raise GatewayRefused(
                f"Payoneer: no batch id to read for {gateway_batch_id}: Payoneer knows payments "
                "by reference; ask find_batch(request, ...) instead"
            )
        held = tuple(self._item_or_refuse(ref) for ref in refs)
        return GatewayBatch(gateway_batch_id, _batch_status(held), held)

    def get_item(self, gateway_item_id: str) -> GatewayItem:
        return self._item_or_refuse(gateway_item_id)

    def cancel_item(self, gateway_item_id: str) -> GatewayItem:
        path = f"{self._program}/payouts/{quote(gateway_item_id, safe='')}/cancel"
        answer = self._http.call("POST", path, what=f"cancelling payment {gateway_item_id}")
        if answer.status != 200:
            raise self._http.refused(answer, "", path)
        return self._item(gateway_item_id, answer, path)

    # ------------------------------------------------------------------ mapping

    @property
    def _program(self) -> str:
        return f"/v4/programs/{quote(self.program_id, safe='')}"

    def payload(self, request: PayoutRequest, lines: list[PayoutLine]) -> dict[str, Any]:
        """The mass payout body for ``lines`` (amounts as Decimals: see exact_json)."""
        return {
            "Payments": [
                {
                    "client_reference_id": self.reference(request, line),
                    "payee_id": line.receiver,
                    "amount": Decimal(format_minor(line.amount_minor, line.currency)),
                    "currency": line.currency,
                    "description": f"finsup payout batch {request.batch_id}",
                }
                for line in lines
            ]
        }

    def _remember(self, request: PayoutRequest) -> tuple[str, ...]:
        refs = tuple(self.reference(request, line) for line in request.lines)
        self._known[request.idempotency_key] = refs
        return refs

    def _post(self, request: PayoutRequest, lines: list[PayoutLine]) -> Answer:
        return self._http.call(
            "POST",
            f"{self._program}/masspayouts",
            content=dumps_exact(self.payload(request, lines)),
            what=f"creating batch {request.batch_id}",
        )

    def _submit_chunk(
        self, request: PayoutRequest, lines: list[PayoutLine]
    ) -> tuple[list[GatewayItem], bool]:
        path = f"{self._program}/masspayouts"
        try:
            answer = self._post(request, lines)
        except GatewayRefused as exc:  # an answer the layer could not read
            raise create_refused(exc) from None
        if answer.status == 200:
            return self._created(request, lines, answer), False
        if not _is_duplicate(answer):
            raise create_refused(self._http.refused(answer, "", path))
        # Some or all of these references are held already: read them back and
        # send what is missing once more.
        found = {
            line.item_id: self._status(self.reference(request, line), missing_ok=True)
            for line in lines
        }
        missing = [line for line in lines if found[line.item_id] is None]
        if missing:
            again = self._post(request, missing)
            if again.status != 200:
                raise self._http.refused(again, "(after reading back a duplicate)", path)
            for line, item in zip(missing, self._created(request, missing, again), strict=True):
                found[line.item_id] = item
        return [item for item in found.values() if item is not None], True

    def _created(
        self, request: PayoutRequest, lines: list[PayoutLine], answer: Answer
    ) -> list[GatewayItem]:
        body = answer.body
        listed = body.get("payments") if isinstance(body.get("payments"), list) else []
        payout_ids = {p.get("client_reference_id"): p for p in listed if isinstance(p, dict)}
        items = []
        for line in lines:
            ref = self.reference(request, line)
            entry = payout_ids.get(ref, {"client_reference_id": ref})
            items.append(GatewayItem(line.item_id, ref, "Pending", dumps_exact(entry)))
        return items

    def _status(self, ref: str, *, missing_ok: bool) -> GatewayItem | None:
        path = f"{self._program}/payouts/{quote(ref, safe='')}/status"
        answer = self._http.call("GET", path, what=f"reading payment {ref}")
        if answer.status == 404 and missing_ok:
            return None
        if answer.status != 200:
            raise self._http.refused(answer, "", path)
        return self._item(ref, answer, path)

    def _item_or_refuse(self, ref: str) -> GatewayItem:
        item = self._status(ref, missing_ok=False)
        assert item is not None
        return item

    def _item(self, ref: str, answer: Answer, path: str) -> GatewayItem:
        result = answer.body.get("result")
        status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(status, str) or not status:
            raise GatewayRefused(
                f"Payoneer: {answer.status} answer on {path} has no result.status",
                raw=answer.raw,
                status_code=answer.status,
            )
        suffix = ref.rsplit("-", 1)[-1]
        return GatewayItem(int(suffix) if suffix.isdigit() else None, ref, status, answer.raw)


def _is_duplicate(answer: Answer) -> bool:
    body = answer.body if isinstance(answer.body, dict) else {}
    details = body.get("error_details")
    code = details.get("code") if isinstance(details, dict) else None
    return answer.status == 400 and code == DUPLICATE_REFERENCE_CODE


def _batch_status(items: tuple[GatewayItem, ...]) -> str:
    """Payoneer has no batch status: PROCESSING while any payment may move, else COMPLETED."""
    return "PROCESSING" if any(item.status in IN_FLIGHT for item in items) else "COMPLETED"

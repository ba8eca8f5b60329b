"""The sandbox's webhooks: item status changes POSTed, signed, to a configured URL per provider.

Why a thread: the sandbox's statuses move lazily, worked out on each read
(``outcomes``). A sender that only saw reads would stay silent while nobody
polls, which is exactly when webhooks matter. So one daemon thread refreshes
every item each ``tick`` (the refresh is a read: ``state.seen`` reports each
move to :meth:`WebhookSender.on_status_change`), then delivers what is due.

Delivery is PayPal's: a non-2xx answer or no answer at all is retried with
exponential backoff (``retry_initial`` doubling up to ``retry_max``) until
``max_attempts``; the event is then given up and listed as such. Each
attempt is signed afresh (a new timestamp, as PayPal's transmission time is
per transmission) with both schemes:

- ``X-Finsup-Timestamp`` / ``X-Finsup-Signature``: HMAC-SHA256 over
  ``timestamp.body`` with the provider's webhook secret (``webhook_signing``);
- PayPal only: the ``PAYPAL-TRANSMISSION-*`` headers. The signature is an
  HMAC standing in for PayPal's certificate signature; the sandbox's
  ``POST /v1/notifications/verify-webhook-signature`` answers SUCCESS for a
  transmission it sent, with the same event, and FAILURE for anything else.

Controls (``/_sandbox/webhooks``): list what was sent; send the next N
events twice (duplicates); hold the next N and deliver them in reverse
(out of order); replay one event again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.gateways.exact_json import dumps_exact
from finsup_dagster.gateways.sandbox.faults import CONTROL_PREFIX
from finsup_dagster.gateways.sandbox.outcomes import PAYPAL_STATUS, paypal_batch_status
from finsup_dagster.gateways.sandbox.paypal_common import bearer_refusal, paypal_error, paypal_time
from finsup_dagster.gateways.sandbox.state import (
    PayoneerPayment,
    PayPalBatch,
    PayPalItem,
    SandboxState,
    random_id,
)
from finsup_dagster.gateways.webhook_names import (
    PAYPAL_BATCH_PREFIX,
    PAYPAL_ITEM_EVENTS,
    PAYPAL_TRANSMISSION_HEADERS,
    PAYPAL_VERIFY_PATH,
    payoneer_event_type,
)
from finsup_dagster.gateways.webhook_signing import signed_headers

log = logging.getLogger("finsup.sandbox.webhooks")

WEBHOOKS_PREFIX = f"{CONTROL_PREFIX}/webhooks"
# PayPal's transaction_status -> the item event it sends (PENDING sends none).
PAYPAL_ITEM_EVENT = {status: name for name, status in PAYPAL_ITEM_EVENTS.items()}
PAYPAL_CANCELED = "PAYMENT.PAYOUTS-ITEM.CANCELED"
PAYPAL_BATCH_EVENTS = {"PROCESSING", "SUCCESS", "DENIED"}
AUTH_ALGO = "SHA256withRSA"


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how the sandbox delivers. ``urls``/``secrets``: provider -> value.

    Defaults follow PayPal's spirit (retries over a long time) scaled to a
    demo; tests pass tiny waits.
    """

    urls: Mapping[str, str]
    secrets: Mapping[str, str] = field(repr=False, default_factory=dict)
    paypal_webhook_id: str = ""
    tick: float = 0.5
    retry_initial: float = 2.0
    retry_max: float = 300.0
    max_attempts: int = 10
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.tick <= 0 or self.retry_initial <= 0:
            raise ValueError("max_attempts, tick and retry_initial must be positive")


@dataclass
class Outgoing:
    """One event to deliver (a duplicate or a replay is another Outgoing with the same body)."""

    seq: int
    provider: str
    event_id: str
    event_type: str
    body: bytes
    due: float  # monotonic
    attempts: list[dict[str, Any]] = field(default_factory=list)
    delivered: bool = False
    gave_up: bool = False
    copy_of: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "provider": self.provider,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "body": json.loads(self.body),
            "attempts": list(self.attempts),
            "delivered": self.delivered,
            "gave_up": self.gave_up,
            "copy_of": self.copy_of,
        }


class WebhookSender:
    def __init__(self, state: SandboxState, config: WebhookConfig) -> None:
        self.state = state
        self.config = config
        self.lock = threading.Lock()
        self.outbox: list[Outgoing] = []  # everything ever queued, in order
        self.held: list[Outgoing] = []  # out of order: released reversed once full
        self.hold_target = 0
        self.duplicate_next = 0
        self.batch_status: dict[str, str] = {}  # PayPal batch id -> last batch event sent
        self._seq = 0
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=httpx.Timeout(config.timeout))
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.wait(self.config.tick):
            try:
                self.refresh()
                self.deliver_due()
            except Exception:  # the sender must outlive one bad tick
                log.exception("sandbox webhooks: tick failed")

    # ------------------------------------------------------------------ noticing changes

    def refresh(self) -> None:
        """Reads every item, so moves are seen (and hooked) without a client polling."""
        from finsup_dagster.gateways.sandbox.payoneer import _outcome
        from finsup_dagster.gateways.sandbox.paypal_payouts import _item_outcome

        with self.state.lock:
            for batch in list(self.state.paypal_batches.values()):
                outcomes = [_item_outcome(item, self.state) for item in batch.items]
                self._batch_moved(batch, outcomes)
            for payment in list(self.state.payoneer_payments.values()):
                _outcome(payment, self.state)

    def _batch_moved(self, batch: PayPalBatch, outcomes: list[str]) -> None:
        if "paypal" not in self.config.urls:
            return
        elapsed = time.monotonic() - batch.created
        status = paypal_batch_status(outcomes, elapsed, self.state.outcome_delay)
        if status not in PAYPAL_BATCH_EVENTS or self.batch_status.get(batch.payout_batch_id) == (
            status
        ):
            return
        self.batch_status[batch.payout_batch_id] = status
        resource = {
            "batch_header": {
                "payout_batch_id": batch.payout_batch_id,
                "batch_status": status,
                "sender_batch_header": batch.sender_batch_header,
            }
        }
        self._queue("paypal", _paypal_event(PAYPAL_BATCH_PREFIX + status, "payouts", resource))

    def on_status_change(self, provider: str, item_id: str, old: str, new: str) -> None:
        """``state.seen``'s hook (called under the state's lock): queues the item's event."""
        if provider not in self.config.urls:
            return
        if provider == "paypal":
            where = self.state.paypal_items.get(item_id)
            if where is None:
                return
            batch = self.state.paypal_batches[where[0]]
            item = batch.items[where[1]]
            cancelled = item.outcome.override == "cancelled"
            name = PAYPAL_CANCELED if cancelled else PAYPAL_ITEM_EVENT.get(new)
            if name is not None:
                resource = _paypal_item(batch, item, new)
                self._queue("paypal", _paypal_event(name, "payouts_item", resource))
        elif provider == "payoneer":
            payment = self.state.payoneer_payments.get(item_id)
            if payment is not None and new != "Pending":
                self._queue("payoneer", self._payoneer_event(payment, new))

    def _payoneer_event(self, payment: PayoneerPayment, status: str) -> dict[str, Any]:
        return {
            "event_id": f"EVT-{uuid.uuid4()}",
            "event_type": payoneer_event_type(status),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "program_id": self.state.payoneer_program_id,
            "payout": {
                "client_reference_id": payment.client_reference_id,
                "payout_id": payment.payout_id,
                "payee_id": payment.payee_id,
                "amount": Decimal(payment.amount),
                "currency": payment.currency,
                "status": status,
            },
        }

    # ------------------------------------------------------------------ queueing

    def _queue(self, provider: str, event: dict[str, Any]) -> None:
        body = dumps_exact(event).encode()
        event_id = str(event.get("id") or event.get("event_id"))
        with self.lock:
            first = self._new(provider, event_id, str(event["event_type"]), body, None)
            queued = [first]
            if self.duplicate_next > 0:
                self.duplicate_next -= 1
                queued.append(
                    self._new(provider, first.event_id, first.event_type, body, first.seq)
                )
            if self.hold_target > 0:
                self.held.extend(queued)
                # Counted in events, not deliveries: a duplicate rides with its original.
                if sum(o.copy_of is None for o in self.held) >= self.hold_target:
                    self._release_held()
            else:
                self.outbox.extend(queued)

    def _new(
        self, provider: str, event_id: str, event_type: str, body: bytes, copy_of: int | None
    ) -> Outgoing:
        self._seq += 1
        return Outgoing(
            self._seq, provider, event_id, event_type, body, time.monotonic(), [], copy_of=copy_of
        )

    def _release_held(self) -> None:
        now = time.monotonic()
        for n, held in enumerate(reversed(self.held)):
            held.due = now + n * 1e-6  # delivered in this (reversed) order
            self.outbox.append(held)
        self.held, self.hold_target = [], 0

    # ------------------------------------------------------------------ delivering

    def deliver_due(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = sorted(
                (o for o in self.outbox if not o.delivered and not o.gave_up and o.due <= now),
                key=lambda o: (o.due, o.seq),
            )
        for outgoing in due:
            self._attempt(outgoing)

    def _attempt(self, outgoing: Outgoing) -> None:
        url = self.config.urls[outgoing.provider]
        headers = {"Content-Type": "application/json", **self.sign(outgoing)}
        record: dict[str, Any] = {"time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        try:
            resp = self._http.post(url, content=outgoing.body, headers=headers)
            record["status"] = resp.status_code
            ok = 200 <= resp.status_code < 300
        except httpx.HTTPError as exc:
            record["error"] = type(exc).__name__
            ok = False
        with self.lock:
            outgoing.attempts.append(record)
            if ok:
                outgoing.delivered = True
            elif len(outgoing.attempts) >= self.config.max_attempts:
                outgoing.gave_up = True
            else:
                wait = self.config.retry_initial * 2 ** (len(outgoing.attempts) - 1)
                outgoing.due = time.monotonic() + min(wait, self.config.retry_max)

    def sign(self, outgoing: Outgoing) -> dict[str, str]:
        now = time.time()
        secret = self.config.secrets.get(outgoing.provider, "")
        headers = signed_headers(secret, int(now), outgoing.body)
        if outgoing.provider == "paypal":
            headers |= self.transmission(outgoing.body, now, secret)
        return headers

    def transmission(self, body: bytes, now: float, secret: str) -> dict[str, str]:
        """PayPal's transmission headers for ``body``, remembered for the verify call."""
        transmission_id = str(uuid.uuid4())
        sent_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        signed = f"{transmission_id}|{sent_at}|{self.config.paypal_webhook_id}|{zlib.crc32(body)}"
        mac = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
        sig = base64.b64encode(mac).decode()
        with self.state.lock:
            self.state.webhook_transmissions[transmission_id] = {
                "sig": sig,
                "time": sent_at,
                "event": json.loads(body),
            }
        return {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": sent_at,
            "PAYPAL-TRANSMISSION-SIG": sig,
            "PAYPAL-AUTH-ALGO": AUTH_ALGO,
            "PAYPAL-CERT-URL": f"https://api-m.sandbox.paypal.com/v1/notifications/certs/CERT-{random_id(8)}",
        }

    # ------------------------------------------------------------------ controls

    def listing(self) -> list[dict[str, Any]]:
        with self.lock:
            return [o.as_dict() for o in [*self.outbox, *self.held]]

    def replay(self, event_id: str) -> Outgoing | None:
        with self.lock:
            original = next((o for o in self.outbox if o.event_id == event_id), None)
            if original is None:
                return None
            again = self._new(
                original.provider,
                original.event_id,
                original.event_type,
                original.body,
                original.seq,
            )
            self.outbox.append(again)
            return again


def _paypal_event(event_type: str, resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"WH-{random_id(17)}-{random_id(17)}",
        "event_version": "1.0",
        "create_time": paypal_time(datetime.now(UTC)),
        "resource_type": resource_type,
        "event_type": event_type,
        "summary": f"Payouts {event_type.rsplit('.', 1)[-1].lower()}",
        "resource": resource,
    }


def _paypal_item(batch: PayPalBatch, item: PayPalItem, status: str) -> dict[str, Any]:
    """The item as ``GET /v1/payments/payouts-item/{id}`` shows it, at ``status``."""
    resource: dict[str, Any] = {
        "payout_item_id": item.payout_item_id,
        "transaction_status": status,
        "payout_batch_id": batch.payout_batch_id,
        "payout_item": {
            "recipient_type": item.recipient_type,
            "amount": {"value": item.value, "currency": item.currency},
            "receiver": item.receiver,
            "sender_item_id": item.sender_item_id,
        },
    }
    if status not in {PAYPAL_STATUS["pending"], "DENIED", "BLOCKED"}:
        resource["transaction_id"] = item.transaction_id
    return resource


def _count(body: Any) -> int | str:
    count = body.get("count", 1) if isinstance(body, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return "count must be a positive integer"
    return count


def webhook_routes(state: SandboxState) -> list[BaseRoute]:
    """The verify-webhook-signature API, and the ``/_sandbox/webhooks`` controls."""

    def sender() -> WebhookSender | None:
        return state.webhooks if isinstance(state.webhooks, WebhookSender) else None

    async def verify(request: Request) -> Response:
        refusal = bearer_refusal(request, state, "paypal")
        if refusal is not None:
            return refusal
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        missing = [
            name
            for name in (*PAYPAL_TRANSMISSION_HEADERS.values(), "webhook_id", "webhook_event")
            if not isinstance(body, dict) or not body.get(name)
        ]
        if missing:
            details = [
                {"field": n, "location": "body", "issue": "MISSING_REQUIRED_PARAMETER"}
                for n in missing
            ]
            return paypal_error(400, "VALIDATION_ERROR", "Invalid request - see details.", details)
        assert isinstance(body, dict)
        with state.lock:
            sent = state.webhook_transmissions.get(str(body["transmission_id"]))
        genuine = (
            sent is not None
            and hmac.compare_digest(str(body["transmission_sig"]), sent["sig"])
            and body["transmission_time"] == sent["time"]
            and body["webhook_id"] == state.paypal_webhook_id
            and body["webhook_event"] == sent["event"]
        )
        return JSONResponse({"verification_status": "SUCCESS" if genuine else "FAILURE"})

    def control(handler: Any) -> Any:
        async def route(request: Request) -> Response:
            found = sender()
            if found is None:
                return JSONResponse({"error": "webhooks are not configured"}, status_code=409)
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return JSONResponse({"error": "body must be JSON"}, status_code=400)
            result: Response = handler(request, found, body)
            return result

        return route

    def listing(request: Request, found: WebhookSender, body: Any) -> Response:
        return JSONResponse({"urls": dict(found.config.urls), "events": found.listing()})

    def duplicates(request: Request, found: WebhookSender, body: Any) -> Response:
        count = _count(body)
        if isinstance(count, str):
            return JSONResponse({"error": count}, status_code=400)
        with found.lock:
            found.duplicate_next += count
        return JSONResponse({"duplicate_next": found.duplicate_next}, status_code=201)

    def out_of_order(request: Request, found: WebhookSender, body: Any) -> Response:
        count = _count(body)
        if isinstance(count, str):
            return JSONResponse({"error": count}, status_code=400)
        with found.lock:
            found.hold_target = max(count, 2)
        return JSONResponse({"hold_next": found.hold_target}, status_code=201)

    def release(request: Request, found: WebhookSender, body: Any) -> Response:
        with found.lock:
            released = len(found.held)
            found._release_held()
        return JSONResponse({"released": released})

    def replay(request: Request, found: WebhookSender, body: Any) -> Response:
        again = found.replay(request.path_params["event_id"])
        if again is None:
            return JSONResponse({"error": "no such event"}, status_code=404)
        return JSONResponse({"seq": again.seq}, status_code=201)

    p = WEBHOOKS_PREFIX
    return [
        Route(PAYPAL_VERIFY_PATH, verify, methods=["POST"]),
        Route(p, control(listing), methods=["GET"]),
        Route(f"{p}/duplicates", control(duplicates), methods=["POST"]),
        Route(f"{p}/out-of-order", control(out_of_order), methods=["POST"]),
        Route(f"{p}/release", control(release), methods=["POST"]),
        Route(f"{p}/{{event_id}}/replay", control(replay), methods=["POST"]),
    ]

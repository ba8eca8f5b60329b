"""PayPal's webhooks: the events finsup reads, and PayPal's own signature verification.

Events (developer.paypal.com/api/rest/webhooks/event-names/#payouts):

- ``PAYMENT.PAYOUTSBATCH.PROCESSING|SUCCESS|DENIED``: the batch as a whole.
  Kept, nothing applied (``kind="batch"``): every item has its own event,
  and the batch status is derived from the items.
- ``PAYMENT.PAYOUTS-ITEM.<X>`` (SUCCEEDED, FAILED, UNCLAIMED, RETURNED,
  BLOCKED, REFUNDED, HELD, CANCELED, DENIED): ``resource`` is the payout
  item as ``GET /v1/payments/payouts-item/{id}`` answers it. Its
  ``transaction_status`` is the provider's word (the same word a poll reads,
  so webhooks and polls share ``ITEM_STATUS_FROM_PROVIDER``); when absent,
  the event name gives it. ``payout_item.sender_item_id`` is finsup's item
  id (``paypal_payouts.PayPalPayouts.payload`` sends it).

Verification in production (``FINSUP_PAYPAL_WEBHOOK_VERIFY=api``): PayPal
signs with its certificate; ``POST /v1/notifications/verify-webhook-signature``
with the ``PAYPAL-*`` transmission headers, our webhook id and the event
answers ``{"verification_status": "SUCCESS" | "FAILURE"}``. The call uses
the same OAuth client-credentials session as the payouts client
(``http_client.GatewayHttp``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from finsup_dagster.gateways.http_client import GatewayHttp, RetryPolicy
from finsup_dagster.gateways.payouts import GatewayError
from finsup_dagster.gateways.webhook_events import (
    MAX_EVENT_ID,
    MAX_EVENT_TYPE,
    MAX_RESOURCE_ID,
    MalformedEvent,
    ParsedEvent,
    text_field,
)
from finsup_dagster.gateways.webhook_names import (
    PAYPAL_BATCH_EVENTS,
    PAYPAL_BATCH_PREFIX,
    PAYPAL_ITEM_EVENTS,
    PAYPAL_TRANSMISSION_HEADERS,
    PAYPAL_VERIFY_PATH,
)
from finsup_dagster.gateways.webhook_signing import ACCEPTED, Verdict
from finsup_dagster.ledger.payout_status import StatusReport

GATEWAY = "paypal"
BATCH_PREFIX = PAYPAL_BATCH_PREFIX
BATCH_EVENTS = PAYPAL_BATCH_EVENTS
ITEM_EVENTS = PAYPAL_ITEM_EVENTS
EVENT_TYPE_KEY = "event_type"
VERIFY_PATH = PAYPAL_VERIFY_PATH
TRANSMISSION_HEADERS = PAYPAL_TRANSMISSION_HEADERS
TIME_HEADER = "paypal-transmission-time"


def parse(event: Any) -> ParsedEvent:
    """A PayPal webhook body (parsed JSON) as a :class:`ParsedEvent`; MalformedEvent if not one."""
    if not isinstance(event, dict):
        raise MalformedEvent("a PayPal event is a JSON object")
    event_id = text_field(event, "id", MAX_EVENT_ID)
    event_type = text_field(event, EVENT_TYPE_KEY, MAX_EVENT_TYPE)
    assert event_id is not None and event_type is not None
    resource = event.get("resource")
    if event_type in BATCH_EVENTS:
        header = resource.get("batch_header") if isinstance(resource, dict) else None
        batch_id = header.get("payout_batch_id") if isinstance(header, dict) else None
        resource_id = batch_id[:MAX_RESOURCE_ID] if isinstance(batch_id, str) else None
        return ParsedEvent(event_id, event_type, resource_id, "batch")
    if event_type not in ITEM_EVENTS:
        return ParsedEvent(event_id, event_type, None, "unknown")
    if not isinstance(resource, dict):
        raise MalformedEvent(f"{event_type} has no resource object")
    gateway_item_id = text_field(resource, "payout_item_id", MAX_RESOURCE_ID, required=False)
    status = resource.get("transaction_status")
    if not isinstance(status, str) or not status:
        status = ITEM_EVENTS[event_type]
    payout_item = resource.get("payout_item")
    sender_item_id = payout_item.get("sender_item_id") if isinstance(payout_item, dict) else None
    item_id = (
        int(sender_item_id)
        if isinstance(sender_item_id, str) and sender_item_id.isdigit()
        else None
    )
    if item_id is None and gateway_item_id is None:
        raise MalformedEvent(f"{event_type} names neither payout_item_id nor sender_item_id")
    report = StatusReport(
        gateway=GATEWAY,
        provider_status=status,
        item_id=item_id,
        gateway_item_id=gateway_item_id,
        source="webhook",
    )
    return ParsedEvent(event_id, event_type, gateway_item_id, "item", (report,))


def transmission_time(headers: Mapping[str, str]) -> float | None:
    """``PAYPAL-TRANSMISSION-TIME`` as unix seconds (None when absent or unreadable)."""
    text = {k.lower(): v for k, v in headers.items()}.get(TIME_HEADER, "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class PayPalApiVerifier:
    """Asks PayPal whether a webhook is genuine (``verify-webhook-signature``).

    The event is sent back byte for byte as it arrived (spliced into the
    request, not re-serialised): PayPal's signature covers the body's CRC32,
    so a re-encoded event (other spacing, other number formatting) would fail.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        webhook_id: str,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not webhook_id:
            raise ValueError("PayPal webhook verification needs FINSUP_PAYPAL_WEBHOOK_ID")
        self.webhook_id = webhook_id
        # Short: a webhook waits on this call, and PayPal retries one we fail.
        self._http = GatewayHttp(
            "PayPal webhooks",
            base_url,
            base_url.rstrip("/") + "/v1/oauth2/token",
            client_id,
            client_secret,
            token_form={"grant_type": "client_credentials"},
            timeout=timeout,
            retry=retry or RetryPolicy(attempts=2, total_seconds=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def request_body(self, headers: Mapping[str, str], raw_event: bytes) -> str | None:
        """The verify request, or None when a transmission header is missing."""
        lowered = {k.lower(): v for k, v in headers.items()}
        fields: dict[str, str] = {}
        for header, name in TRANSMISSION_HEADERS.items():
            value = lowered.get(header, "").strip()
            if not value:
                return None
            fields[name] = value
        fields["webhook_id"] = self.webhook_id
        head = json.dumps(fields, separators=(",", ":"))
        return head[:-1] + ',"webhook_event":' + raw_event.decode("utf-8") + "}"

    def verify(self, headers: Mapping[str, str], raw_event: bytes) -> Verdict:
        """SUCCESS -> accepted; FAILURE or a 4xx -> bad_signature; PayPal unreachable -> 503."""
        content = self.request_body(headers, raw_event)
        if content is None:
            return Verdict.refuse("missing_signature")
        try:
            answer = self._http.call(
                "POST", VERIFY_PATH, content=content, what="verifying a webhook"
            )
        except GatewayError:
            # Not the sender's fault: answer 503 so PayPal delivers it again later.
            return Verdict.refuse("verify_unavailable", 503)
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("verification_status") == "SUCCESS":
            return ACCEPTED
        return Verdict.refuse("bad_signature")

"""Payoneer's payout status webhooks, in the shape finsup's sandbox sends (docs/webhooks.md).

Payoneer notifies a payout's status change for each payment of a mass
payout. The body finsup reads::

    {"event_id": "EVT-...", "event_type": "payout.transferred",
     "created_at": "2026-12-07T15:00:00+00:00", "program_id": "100000001",
     "payout": {"client_reference_id": "<idempotency key>-<item id>",
                "payout_id": "123456789", "payee_id": "PAYEE-7",
                "amount": 10.50, "currency": "USD", "status": "Transferred"}}

``payout`` is the payment as ``GET .../payouts/{client_reference_id}/status``
answers it (its ``status`` word is the one polls read); ``event_type`` is
``payout.`` + that word in snake case. finsup's item id is the part of the
``client_reference_id`` after its last ``-`` (``PayoneerPayouts.reference``).
"""

from __future__ import annotations

from typing import Any

from finsup_dagster.gateways.webhook_events import (
    MAX_EVENT_ID,
    MAX_EVENT_TYPE,
    MAX_RESOURCE_ID,
    MalformedEvent,
    ParsedEvent,
    text_field,
)
from finsup_dagster.gateways.webhook_names import (
    PAYONEER_ITEM_EVENTS,
    PAYONEER_STATUS_WORDS,
    payoneer_event_type,
)
from finsup_dagster.ledger.payout_status import StatusReport

GATEWAY = "payoneer"
EVENT_TYPE_KEY = "event_type"
STATUS_WORDS = PAYONEER_STATUS_WORDS
ITEM_EVENTS = PAYONEER_ITEM_EVENTS
event_type_for = payoneer_event_type


def item_id_of(client_reference_id: str) -> int | None:
    """``"pb_1-a1b2-42"`` -> 42: the reference ends in finsup's item id."""
    tail = client_reference_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def parse(event: Any) -> ParsedEvent:
    if not isinstance(event, dict):
        raise MalformedEvent("a Payoneer event is a JSON object")
    event_id = text_field(event, "event_id", MAX_EVENT_ID)
    event_type = text_field(event, EVENT_TYPE_KEY, MAX_EVENT_TYPE)
    assert event_id is not None and event_type is not None
    if event_type not in ITEM_EVENTS:
        return ParsedEvent(event_id, event_type, None, "unknown")
    payout = event.get("payout")
    if not isinstance(payout, dict):
        raise MalformedEvent(f"{event_type} has no payout object")
    reference = text_field(payout, "client_reference_id", MAX_RESOURCE_ID)
    status = text_field(payout, "status", MAX_EVENT_TYPE)
    assert reference is not None and status is not None
    report = StatusReport(
        gateway=GATEWAY,
        provider_status=status,
        item_id=item_id_of(reference),
        # The id the books already hold for a Payoneer item (submission records the
        # reference: Payoneer reads a payment by it), so a webhook and a poll agree.
        gateway_item_id=reference,
        source="webhook",
    )
    return ParsedEvent(event_id, event_type, reference, "item", (report,))

"""What a provider's webhook comes to once parsed: its id and type, and the item statuses it reports.

Each provider's parser (``webhooks_paypal``, ``webhooks_payoneer``) turns a
JSON body into a :class:`ParsedEvent`; the receiver (``finsup_dagster.web``)
stores it and applies its reports. ``kind`` says why an event may carry no
report: a batch-level event (nothing to apply per item) or a type we do not
know (kept and counted, never applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finsup_dagster.ledger.payout_status import StatusReport

MAX_EVENT_ID = 128  # gateway_events.event_id
MAX_EVENT_TYPE = 64  # gateway_events.event_type
MAX_RESOURCE_ID = 128


class MalformedEvent(ValueError):
    """The body is JSON but not an event of this provider (no id, no type, a broken resource)."""


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event_type: str
    resource_id: str | None
    kind: str  # "item" | "batch" | "unknown"
    reports: tuple[StatusReport, ...] = ()


def text_field(obj: dict[str, Any], key: str, limit: int, *, required: bool = True) -> str | None:
    """``obj[key]`` as a non-empty string of at most ``limit`` characters (None if optional)."""
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise MalformedEvent(f"{key} must be a string of 1-{limit} characters")
    return value


def best_effort_type(event: Any, key: str) -> str:
    """The event type of a body being refused, for the row that keeps it (never trusted)."""
    value = event.get(key) if isinstance(event, dict) else None
    return value[:MAX_EVENT_TYPE] if isinstance(value, str) and value else "refused"

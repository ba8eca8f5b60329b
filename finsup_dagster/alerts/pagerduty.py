"""PagerDuty Events API v2: ``trigger`` with a dedup_key per subject, ``resolve`` with the same key.

POST https://events.pagerduty.com/v2/enqueue (configurable) with
``routing_key`` (the integration key: a secret), ``event_action``,
``dedup_key`` and, for a trigger, ``payload.summary/source/severity`` plus
timestamp, component, group, class and custom_details. PagerDuty answers 202;
a trigger sent again under an open dedup_key joins the same incident, so a
reminder never opens a second one. A resolve carries no payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finsup_dagster.alerts.message import RESOLVE, Alert

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024
DEDUP_MAX = 255


def _timestamp(canonical: str) -> str | None:
    """PagerDuty wants ISO 8601; the books' ``...Z`` form is that already."""
    return canonical or None


@dataclass(frozen=True, repr=False)
class PagerDutyChannel:
    routing_key: str
    url: str = DEFAULT_URL
    source: str = "finsup"
    name: str = "pagerduty"

    def __repr__(self) -> str:
        return f"PagerDutyChannel(url={self.url!r}, routing_key=[redacted])"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.routing_key,)

    def body(self, alert: Alert) -> dict[str, Any]:
        event: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": alert.action,
            "dedup_key": alert.key[:DEDUP_MAX],
        }
        if alert.action == RESOLVE:
            return event
        title = f"{'Reminder: ' if alert.reminder else ''}{alert.title}"
        payload: dict[str, Any] = {
            "summary": title[:SUMMARY_MAX],
            "source": self.source,
            "severity": alert.severity,
            "component": "payouts",
            "class": alert.kind,
            "custom_details": {label: value for label, value in alert.fields},
        }
        if group := alert.detail.get("method"):
            payload["group"] = str(group)
        if stamp := _timestamp(alert.occurred_at):
            payload["timestamp"] = stamp
        event["payload"] = payload
        return event

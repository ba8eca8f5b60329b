"""Any HTTP endpoint: the alert as plain JSON, for a team's own router or chat bridge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finsup_dagster.alerts.message import Alert


@dataclass(frozen=True, repr=False)
class WebhookChannel:
    url: str
    name: str = "webhook"

    def __repr__(self) -> str:
        return "WebhookChannel(url=[redacted])"

    @property
    def secrets(self) -> tuple[str, ...]:
        # The URL may carry a token in its path or query: treated as a secret.
        return (self.url,)

    def body(self, alert: Alert) -> dict[str, Any]:
        return {
            "source": "finsup",
            "key": alert.key,
            "kind": alert.kind,
            "action": alert.action,
            "severity": alert.severity,
            "reminder": alert.reminder,
            "title": alert.title,
            "occurred_at": alert.occurred_at,
            "fields": {label: value for label, value in alert.fields},
            "detail": dict(alert.detail),
        }

"""Where alerts go and when a payout counts as stuck, from the environment (docs/alerts.md).

Every channel is off while its variable is empty; any number can be on at once.
The webhook URLs and the routing key are secrets: the resource's repr and
every error line leave them out.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import dagster as dg
from pydantic import Field

from finsup_dagster.alerts.channels import Channel
from finsup_dagster.alerts.dispatch import Dispatcher
from finsup_dagster.alerts.pagerduty import DEFAULT_URL, PagerDutyChannel
from finsup_dagster.alerts.slack import SlackChannel
from finsup_dagster.alerts.webhook import WebhookChannel
from finsup_dagster.gateways.http_client import RetryPolicy
from finsup_dagster.settings import parse_hours


def _hours(value: str, variable: str) -> timedelta:
    return timedelta(hours=parse_hours(value, variable))


class AlertsResource(dg.ConfigurableResource):
    """Alert channels (Slack, PagerDuty, any HTTP endpoint) and the stuck-payout thresholds."""

    slack_webhook_url: str = Field(
        default="", description="FINSUP_ALERT_SLACK_WEBHOOK_URL (a secret; empty: off)"
    )
    pagerduty_routing_key: str = Field(
        default="", description="FINSUP_ALERT_PAGERDUTY_ROUTING_KEY (a secret; empty: off)"
    )
    pagerduty_url: str = Field(
        default=DEFAULT_URL, description="FINSUP_ALERT_PAGERDUTY_URL (Events API v2 enqueue)"
    )
    webhook_url: str = Field(
        default="", description="FINSUP_ALERT_WEBHOOK_URL: any endpoint taking JSON (empty: off)"
    )
    stuck_after_hours: str = Field(
        default="48", description="FINSUP_STUCK_AFTER_HOURS: a payout unresolved this long is stuck"
    )
    remind_after_hours: str = Field(
        default="24", description="FINSUP_ALERT_REMIND_HOURS: an open alert is sent again after"
    )
    timeout_seconds: float = Field(default=3.0, description="Per request to a channel.")
    retry_attempts: int = Field(default=3, description="Tries per alert and channel.")
    retry_total_seconds: float = Field(
        default=8.0, description="Time budget per alert and channel across its tries."
    )

    def __repr__(self) -> str:
        on = ", ".join(c.name for c in self.channels()) or "none"
        return f"AlertsResource(channels: {on})"

    __str__ = __repr__

    @property
    def stuck_after(self) -> timedelta:
        return _hours(self.stuck_after_hours, "FINSUP_STUCK_AFTER_HOURS")

    @property
    def remind_after(self) -> timedelta:
        return _hours(self.remind_after_hours, "FINSUP_ALERT_REMIND_HOURS")

    def channels(self) -> list[Channel]:
        found: list[Channel] = []
        if self.slack_webhook_url.strip():
            found.append(SlackChannel(self.slack_webhook_url.strip()))
        if self.pagerduty_routing_key.strip():
            found.append(
                PagerDutyChannel(
                    self.pagerduty_routing_key.strip(), self.pagerduty_url.strip() or DEFAULT_URL
                )
            )
        if self.webhook_url.strip():
            found.append(WebhookChannel(self.webhook_url.strip()))
        return found

    def dispatcher(
        self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None
    ) -> Dispatcher:
        retry = RetryPolicy(
            attempts=self.retry_attempts,
            total_seconds=self.retry_total_seconds,
            wait_initial=min(0.5, self.retry_total_seconds / 10),
            wait_max=2.0,
            wait_jitter=min(0.5, self.retry_total_seconds / 10),
        )
        return Dispatcher(self.channels(), timeout=self.timeout_seconds, retry=retry, logger=logger)


def alerts_resource_from_env() -> AlertsResource:
    return AlertsResource(
        slack_webhook_url=dg.EnvVar("FINSUP_ALERT_SLACK_WEBHOOK_URL"),
        pagerduty_routing_key=dg.EnvVar("FINSUP_ALERT_PAGERDUTY_ROUTING_KEY"),
        pagerduty_url=dg.EnvVar("FINSUP_ALERT_PAGERDUTY_URL"),
        webhook_url=dg.EnvVar("FINSUP_ALERT_WEBHOOK_URL"),
        stuck_after_hours=dg.EnvVar("FINSUP_STUCK_AFTER_HOURS"),
        remind_after_hours=dg.EnvVar("FINSUP_ALERT_REMIND_HOURS"),
    )

"""Slack incoming webhook: a Block Kit message (header, fields, context) with a plain fallback.

The webhook URL is the credential (anyone holding it can post): it is kept only
in the channel and scrubbed from errors. Slack answers 200 ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finsup_dagster.alerts.message import RESOLVE, Alert

# Block Kit limits: a header's text, a section's field count and each field's text.
HEADER_MAX = 150
FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
ICONS = {"critical": ":rotating_light:", "error": ":warning:", "warning": ":warning:"}


def escape(text: str) -> str:
    """Slack's mrkdwn needs only these three escaped (its own docs)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocks(alert: Alert) -> list[dict[str, Any]]:
    icon = ":white_check_mark:" if alert.action == RESOLVE else ICONS.get(alert.severity, "")
    header = f"{'Reminder: ' if alert.reminder else ''}{alert.title}"
    text = f"{icon} {header}" if icon else header
    out: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(text, HEADER_MAX), "emoji": True},
        }
    ]
    if alert.fields:
        out.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _cut(f"*{escape(label)}*\n{escape(value)}", FIELD_TEXT_MAX),
                    }
                    for label, value in alert.fields[:FIELDS_MAX]
                ],
            }
        )
    out.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"finsup · `{escape(alert.key)}` · {alert.severity} · "
                    "runbook: docs/alerts.md",
                }
            ],
        }
    )
    return out


@dataclass(frozen=True, repr=False)
class SlackChannel:
    url: str
    name: str = "slack"

    def __repr__(self) -> str:
        return "SlackChannel(url=[redacted])"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.url,)

    def body(self, alert: Alert) -> dict[str, Any]:
        prefix = "Reminder: " if alert.reminder else ""
        # ``text`` is what notifications and old clients show; blocks are the message.
        return {"text": f"{prefix}{alert.title}", "blocks": blocks(alert)}

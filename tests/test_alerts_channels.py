"""Alert channels over real sockets: Slack Block Kit, PagerDuty Events v2, any JSON endpoint.

What an operator relies on: each channel gets the body its service expects;
a dead channel (nothing listening, a 500) never stops the others, costs one
try per tick, and is visible as one line that never holds its URL or key.
"""

from __future__ import annotations

import logging

import pytest

from finsup_dagster.alerts.dispatch import Dispatcher
from finsup_dagster.alerts.message import RESOLVE, TRIGGER, Alert
from finsup_dagster.alerts.pagerduty import PagerDutyChannel
from finsup_dagster.alerts.slack import SlackChannel
from finsup_dagster.alerts.webhook import WebhookChannel
from finsup_dagster.gateways.http_client import RetryPolicy
from finsup_dagster.resources.alerts import AlertsResource
from tests.helpers.alert_receiver import Receiver, alert_receiver, closed_port_url

ROUTING_KEY = "R0UTINGKEY-never-shown-0123456789"
FAST = RetryPolicy(attempts=3, total_seconds=3.0, wait_initial=0.01, wait_max=0.02, wait_jitter=0)

STUCK = Alert(
    key="stuck:item:42",
    kind="stuck_item",
    action=TRIGGER,
    title="Payout item 42 (150.00 USD via paypal) is still submitted 49h after batch pb_1",
    severity="error",
    fields=(("Batch", "pb_1"), ("Item", "42"), ("Amount", "150.00 USD <&>")),
    detail={"batch_id": "pb_1", "item_id": 42, "method": "paypal"},
    occurred_at="2026-12-07T10:00:00.000000Z",
)
RESOLVED = Alert(
    key="stuck:item:42",
    kind="stuck_item",
    action=RESOLVE,
    title="Payout item 42 of batch pb_1 is no longer stuck: it is paid",
    severity="info",
)


def dispatcher(receiver: Receiver, **urls: str) -> Dispatcher:
    channels = [
        SlackChannel(urls.get("slack", receiver.url("slack/T000/B000/SECRETPATH"))),
        PagerDutyChannel(ROUTING_KEY, urls.get("pagerduty", receiver.url("pagerduty"))),
        WebhookChannel(urls.get("webhook", receiver.url("webhook?token=SECRETTOKEN"))),
    ]
    return Dispatcher(channels, timeout=2.0, retry=FAST)


def test_each_channel_gets_the_body_its_service_expects() -> None:
    with alert_receiver() as receiver, dispatcher(receiver) as send:
        assert send.send(STUCK) == {"slack": None, "pagerduty": None, "webhook": None}
        assert send.send(RESOLVED) == {"slack": None, "pagerduty": None, "webhook": None}
        [slack, slack_resolved] = receiver.at("slack/T000/B000/SECRETPATH")
        [trigger, resolve] = receiver.at("pagerduty")
        [hook, hook_resolved] = receiver.at("webhook")

    # Slack: a fallback text plus Block Kit blocks (header, fields, context), mrkdwn escaped.
    assert slack["text"] == STUCK.title
    header, fields, context = slack["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert STUCK.title[:100] in header["text"]["text"]
    assert fields["type"] == "section"
    assert {"type": "mrkdwn", "text": "*Amount*\n150.00 USD &lt;&amp;&gt;"} in fields["fields"]
    assert context["type"] == "context" and "stuck:item:42" in context["elements"][0]["text"]
    assert ":white_check_mark:" in slack_resolved["blocks"][0]["text"]["text"]

    # PagerDuty Events v2: trigger with payload, resolve with the same dedup_key and none.
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "stuck:item:42"
    payload = trigger["payload"]
    assert payload["summary"] == STUCK.title
    assert payload["source"] == "finsup" and payload["severity"] == "error"
    assert payload["timestamp"] == STUCK.occurred_at and payload["group"] == "paypal"
    assert payload["custom_details"]["Batch"] == "pb_1"
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "stuck:item:42",
    }

    # Any endpoint: the alert as plain JSON.
    assert hook["key"] == "stuck:item:42" and hook["action"] == "trigger"
    assert hook["fields"]["Item"] == "42" and hook["detail"]["item_id"] == 42
    assert hook_resolved["action"] == "resolve"


def test_a_dead_channel_never_blocks_the_others_and_says_why_without_its_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead_slack = closed_port_url() + "/services/SECRETPATH"
    with alert_receiver() as receiver:
        receiver.on("pagerduty", 500)
        with (
            caplog.at_level(logging.WARNING, logger="finsup.alerts"),
            dispatcher(receiver, slack=dead_slack) as send,
        ):
            first = send.send(STUCK)
            second = send.send(RESOLVED)
        assert first["webhook"] is None and second["webhook"] is None  # the others got both
        assert len(receiver.at("webhook")) == 2
        # PagerDuty answered 500 three times (the retries), then was not tried again this tick.
        assert len(receiver.at("pagerduty")) == 3
    assert (
        first["slack"] is not None and "slack: connection failed (ConnectError)" in first["slack"]
    )
    assert first["pagerduty"] is not None and "pagerduty: answered 500" in first["pagerduty"]
    assert "gave up after 3 attempts" in first["pagerduty"]
    assert second["pagerduty"] == f"not tried: {first['pagerduty']}"
    shown = " ".join([*(e or "" for e in [*first.values(), *second.values()]), caplog.text])
    for secret in ("SECRETPATH", ROUTING_KEY, dead_slack):
        assert secret not in shown
    assert "alert stuck:item:42 not delivered to pagerduty" in caplog.text


def test_a_transient_failure_is_retried_and_a_refusal_is_not() -> None:
    with alert_receiver() as receiver:
        receiver.on("pagerduty", 503, 429, 202)
        receiver.on("webhook", 400)
        with dispatcher(receiver) as send:
            outcome = send.send(STUCK)
        assert outcome["pagerduty"] is None and len(receiver.at("pagerduty")) == 3
        assert outcome["webhook"] is not None and outcome["webhook"].startswith(
            "webhook: refused with 400"
        )
        assert len(receiver.at("webhook")) == 1  # a 4xx is an answer: not retried
        assert "SECRETTOKEN" not in outcome["webhook"]


def test_the_resource_turns_channels_on_from_settings_and_never_shows_a_secret() -> None:
    off = AlertsResource()
    assert off.channels() == [] and off.stuck_after.total_seconds() == 48 * 3600
    on = AlertsResource(
        slack_webhook_url="https://hooks.slack.com/services/T/B/SECRETPATH",
        pagerduty_routing_key=ROUTING_KEY,
        webhook_url=" ",
        remind_after_hours="1.5",
    )
    assert [c.name for c in on.channels()] == ["slack", "pagerduty"]
    assert on.remind_after.total_seconds() == 5400
    assert "SECRETPATH" not in repr(on) and ROUTING_KEY not in repr(on)
    assert all("SECRETPATH" not in repr(c) and ROUTING_KEY not in repr(c) for c in on.channels())
    with pytest.raises(Exception, match="FINSUP_ALERT_REMIND_HOURS must be a number"):
        _ = AlertsResource(remind_after_hours="daily").remind_after

"""Stuck payouts reach a person once, are reminded, and are resolved when they move on.

Real batches submitted to the sandbox, on SQLite and PostgreSQL, alerts sent
to a local receiver over real sockets. The sensor itself is evaluated for
the first ticks; later ticks call ``check_stuck`` with a later ``now``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.alerts.stuck_alerts import check_stuck
from finsup_dagster.ledger import db
from finsup_dagster.ledger.schema import alerts
from finsup_dagster.resources import LedgerResource
from finsup_dagster.resources.alerts import AlertsResource
from finsup_dagster.sensors.alerts import stuck_payouts_sensor
from tests.helpers.alert_receiver import Receiver, alert_receiver, closed_port_url
from tests.helpers.cli import run, run_json
from tests.helpers.stuck import hours_later, move_on, submitted_batch

KEY = "R0UTINGKEY-never-shown-0123456789"
DAY = timedelta(hours=24)


def resource(receiver: Receiver, **overrides: Any) -> AlertsResource:
    settings: dict[str, Any] = {
        "slack_webhook_url": receiver.url("slack/SECRETPATH"),
        "pagerduty_routing_key": KEY,
        "pagerduty_url": receiver.url("pagerduty"),
        "webhook_url": receiver.url("webhook"),
        "stuck_after_hours": "0",  # everything submitted is stuck: no clock to move
        "remind_after_hours": "24",
        "timeout_seconds": 2.0,
        "retry_attempts": 2,
        "retry_total_seconds": 2.0,
        **overrides,
    }
    return AlertsResource(**settings)


def tick(ledger: LedgerResource, alerts_resource: AlertsResource) -> str:
    context = dg.build_sensor_context(resources={"ledger": ledger, "alerts": alerts_resource})
    result = stuck_payouts_sensor.evaluate_tick(context)
    assert result.run_requests == []
    return str(result.skip_message)


def rows(engine: Engine) -> dict[str, Any]:
    with db.read(engine) as conn:
        return {r.key: r for r in conn.execute(sa.select(alerts))}


def test_once_per_item_a_reminder_after_the_period_and_a_resolve_when_it_moves_on(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    batch_id, (ann, bob) = submitted_batch(engine, tmp_path)
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    keys = [f"stuck:item:{ann}", f"stuck:item:{bob}"]
    with alert_receiver() as receiver:
        settings = resource(receiver)
        assert tick(ledger, settings) == "2 stuck, 2 alerted"
        assert tick(ledger, settings) == "2 stuck"  # the second tick: nothing new to say
        assert sorted(t["dedup_key"] for t in receiver.at("pagerduty")) == keys
        assert len(receiver.at("slack/SECRETPATH")) == 2 and len(receiver.at("webhook")) == 2
        state = rows(engine)
        assert sorted(state) == keys
        first = state[keys[0]]
        assert first.kind == "stuck_item" and first.subject_id == str(ann)
        assert first.send_count == 1 and first.last_error is None and first.resolved_at is None
        assert first.last_sent_at == first.opened_at
        assert batch_id in receiver.at("webhook")[0]["title"]

        receiver.clear()
        with alerts_resource_dispatcher(settings) as send:
            early = check_stuck(engine, send, timedelta(0), DAY, hours_later(23))
            assert early.reminded == [] and receiver.requests == []
            later = check_stuck(engine, send, timedelta(0), DAY, hours_later(25))
        assert sorted(later.reminded) == keys
        reminders = receiver.at("slack/SECRETPATH")
        assert all(r["text"].startswith("Reminder: ") for r in reminders)
        assert {t["dedup_key"] for t in receiver.at("pagerduty")} == set(keys)  # same incidents
        assert rows(engine)[keys[0]].send_count == 2

        receiver.clear()
        move_on(engine, ann)
        with alerts_resource_dispatcher(settings) as send:
            moved = check_stuck(engine, send, timedelta(0), DAY, hours_later(26))
            assert moved.resolved == [keys[0]] and moved.reminded == []
            again = check_stuck(engine, send, timedelta(0), DAY, hours_later(27))
            assert again.resolved == [] and again.opened == []
        [resolve] = receiver.at("pagerduty")
        assert resolve == {"routing_key": KEY, "event_action": "resolve", "dedup_key": keys[0]}
        [note] = receiver.at("slack/SECRETPATH")
        assert "no longer stuck: it is paid" in note["text"]
        state = rows(engine)
        assert state[keys[0]].resolved_at is not None and state[keys[1]].resolved_at is None


def alerts_resource_dispatcher(settings: AlertsResource) -> Any:
    return settings.dispatcher()


def test_a_dead_channel_is_recorded_retried_next_tick_and_never_fails_the_tick(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    _, (ann, bob) = submitted_batch(engine, tmp_path)
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    with alert_receiver() as receiver:
        receiver.on("pagerduty", 500)
        dead_slack = closed_port_url()
        settings = resource(receiver, slack_webhook_url=dead_slack)
        line = tick(ledger, settings)
        assert line == "2 stuck, 2 alerted, 2 not delivered everywhere (see alerts.last_error)"
        assert len(receiver.at("webhook")) == 2  # the live channel got every alert
        assert len(receiver.at("pagerduty")) == 2  # one alert's retries; the next not tried
        state = rows(engine)
        for key in (f"stuck:item:{ann}", f"stuck:item:{bob}"):
            error = state[key].last_error
            assert "pagerduty: answered 500" in error and "slack: connection failed" in error
            assert dead_slack not in error and KEY not in error
            assert state[key].last_sent_at is not None  # the webhook took it

        receiver.clear()
        receiver.on("pagerduty", 202)  # PagerDuty is back; Slack still is not
        line = tick(ledger, settings)
        assert line.startswith("2 stuck, 2 retried")
        assert len(receiver.at("pagerduty")) == 2 and receiver.at("webhook") == []
        state = rows(engine)
        assert all(
            "slack: connection failed" in r.last_error and "pagerduty" not in r.last_error
            for r in state.values()
        )


def test_no_channel_configured_is_said_and_nothing_is_recorded(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    submitted_batch(engine, tmp_path)
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    line = tick(ledger, AlertsResource(stuck_after_hours="0"))
    assert line.startswith("no alert channel configured")
    assert rows(engine) == {}


def test_a_tick_sends_at_most_its_limit_and_the_rest_on_the_next(
    engine: Engine, tmp_path: Path
) -> None:
    _, (ann, bob) = submitted_batch(engine, tmp_path)
    with alert_receiver() as receiver, resource(receiver).dispatcher() as send:
        first = check_stuck(engine, send, timedelta(0), DAY, max_alerts=1)
        assert first.opened == [f"stuck:item:{ann}"] and first.deferred == 1
        assert first.line() == "2 stuck, 1 alerted, 1 deferred to the next tick"
        second = check_stuck(engine, send, timedelta(0), DAY, max_alerts=1)
        assert second.opened == [f"stuck:item:{bob}"] and second.deferred == 0
        assert len(receiver.at("pagerduty")) == 2


def test_report_alerts_shows_what_is_open_and_what_failed_to_go_out(
    finsup_env: Path, engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    _, (ann, bob) = submitted_batch(engine, tmp_path)
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    with alert_receiver() as receiver:
        receiver.on("pagerduty", 500)
        tick(ledger, resource(receiver))
    rows = run_json("report-alerts")
    assert sorted(r["key"] for r in rows) == [f"stuck:item:{ann}", f"stuck:item:{bob}"]
    assert all(
        r["pending"] == ["pagerduty"] and r["delivered"] == ["slack", "webhook"] for r in rows
    )
    assert all("pagerduty: " in r["last_error"] and KEY not in r["last_error"] for r in rows)
    table = run("report-alerts", env={**os.environ, "COLUMNS": "300"})
    assert table.returncode == 0 and f"stuck:item:{ann}" in table.stdout

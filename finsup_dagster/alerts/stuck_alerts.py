"""Stuck payouts to people: once per item, a reminder after a while, resolved when it moves on.

One tick (``check_stuck``), three steps, so no HTTP call ever holds the books'
write lock (the money flow never waits for Slack):

1. read: the stuck list (``ledger.stuck``) and the live alerts rows;
2. decide and send, per subject:
   - stuck, no open alert             → trigger to every channel (a new alert);
   - stuck, open, reminder period over → trigger again, marked a reminder;
   - stuck, open, some channel failed → trigger again to those channels only;
   - open, no longer stuck            → resolve to the channels that had the trigger;
   - resolved, a resolve failed       → resolve again to those channels;
3. write: every outcome in one short transaction.

A channel that is down is retried on the next tick (``pending``), never in a
storm: the dispatcher tries it once per tick. At most ``MAX_ALERTS_PER_TICK``
alerts go out per tick (resolves first, then the oldest stuck): a thousand
items stuck at once must not outlast the sensor's time limit or a channel's
rate limit; the rest are simply due on the next tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from finsup_dagster.alerts import state as alert_state
from finsup_dagster.alerts.dispatch import Dispatcher
from finsup_dagster.alerts.message import RESOLVE, TRIGGER, Alert
from finsup_dagster.alerts.state import AlertState
from finsup_dagster.ledger import clock, db
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.stuck import StuckItem, current_status, stuck_items

KINDS = {"item": "stuck_item", "batch": "stuck_batch"}
RUNBOOK = "finsup report-stuck-payouts; runbook in docs/alerts.md"
MAX_ALERTS_PER_TICK = 25


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stuck_alert(s: StuckItem, now: str, reminder: bool = False) -> Alert:
    amount = f"{format_minor(s.amount_minor, s.currency)} {s.currency}"
    if s.kind == "item":
        title = (
            f"Payout item {s.item_id} ({amount} via {s.method}) is still {s.status} "
            f"{s.age_hours:g}h after batch {s.batch_id} was submitted"
        )
    else:
        title = f"Payout batch {s.batch_id} ({amount} via {s.method}) is still submitting after {s.age_hours:g}h"
    fields = [
        ("Batch", s.batch_id),
        ("Item", str(s.item_id) if s.item_id is not None else "whole batch"),
        ("Amount", amount),
        ("Method", s.method),
        ("Status", f"{s.status} since {s.status_changed_at}"),
        ("Provider says", s.provider_status or "nothing yet"),
        ("Provider batch", s.gateway_batch_id or "none yet"),
        ("Provider item", s.gateway_item_id or "none yet"),
        ("Age", f"{s.age_hours:g}h (since {s.since})"),
        ("Next step", RUNBOOK),
    ]
    return Alert(
        key=s.key,
        kind=KINDS[s.kind],
        action=TRIGGER,
        title=title,
        severity="error",
        fields=tuple(fields),
        reminder=reminder,
        detail=s.as_dict(),
        occurred_at=now,
    )


def resolved_alert(previous: AlertState, status: str | None, now: str) -> Alert:
    subject = previous.subject
    what = (
        f"Payout item {previous.subject_id} of batch {subject.get('batch_id', '?')}"
        if previous.kind == KINDS["item"]
        else f"Payout batch {previous.subject_id}"
    )
    return Alert(
        key=previous.key,
        kind=previous.kind,
        action=RESOLVE,
        title=f"{what} is no longer stuck: it is {status or 'gone from the books'}",
        severity="info",
        fields=(("Status now", status or "unknown"), ("Was", str(subject.get("status", "?")))),
        detail={**subject, "status_now": status},
        occurred_at=now,
    )


@dataclass
class TickSummary:
    stuck: int = 0
    opened: list[str] = field(default_factory=list)
    reminded: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> errors line
    deferred: int = 0  # due, but past this tick's limit: sent on the next tick

    def line(self) -> str:
        parts = [f"{self.stuck} stuck"]
        for label, keys in (
            ("alerted", self.opened),
            ("reminded", self.reminded),
            ("retried", self.retried),
            ("resolved", self.resolved),
        ):
            if keys:
                parts.append(f"{len(keys)} {label}")
        if self.deferred:
            parts.append(f"{self.deferred} deferred to the next tick")
        if self.failed:
            parts.append(f"{len(self.failed)} not delivered everywhere (see alerts.last_error)")
        return ", ".join(parts)


@dataclass
class _Step:
    alert: Alert
    state: AlertState
    only: list[str] | None  # None: every channel
    label: str  # opened | reminded | retried | resolved


def check_stuck(
    engine: Engine,
    dispatcher: Dispatcher,
    older_than: timedelta,
    remind_after: timedelta,
    now: datetime | None = None,
    max_alerts: int = MAX_ALERTS_PER_TICK,
) -> TickSummary:
    """One tick of the stuck-payout alerts (see the module's docstring)."""
    moment = now or datetime.now(UTC)
    stamp = clock.canonical(moment)
    with db.read(engine) as conn:
        stuck = stuck_items(conn, older_than, moment)
        live = alert_state.live(conn, KINDS.values())
        stuck_keys = {s.key for s in stuck}
        gone = {
            key: current_status(
                conn, "item" if st.kind == KINDS["item"] else "batch", st.subject_id
            )
            for key, st in live.items()
            if key not in stuck_keys
        }
    # Resolves first (good news closes incidents), then the stuck, oldest first.
    steps = [
        step
        for key, status in gone.items()
        if (step := _for_gone(live[key], status, stamp)) is not None
    ]
    steps += [
        step
        for s in stuck
        if (step := _for_stuck(s, live.get(s.key), dispatcher.names, remind_after, moment, stamp))
    ]
    summary = TickSummary(stuck=len(stuck), deferred=max(len(steps) - max_alerts, 0))
    steps = steps[:max_alerts]
    for step in steps:
        outcome = dispatcher.send(step.alert, step.only) if step.only != [] else {}
        _apply(step, outcome, stamp)
        getattr(summary, step.label).append(step.state.key)
        if step.state.last_error:
            summary.failed[step.state.key] = step.state.last_error
    if steps:
        with db.write(engine) as conn:
            for step in steps:
                alert_state.save(conn, step.state)
    return summary


def _for_stuck(
    s: StuckItem,
    live: AlertState | None,
    channels: list[str],
    remind_after: timedelta,
    now: datetime,
    stamp: str,
) -> _Step | None:
    if live is None or not live.is_open:
        fresh = AlertState(
            key=s.key,
            kind=KINDS[s.kind],
            subject_id=s.subject_id,
            opened_at=stamp,
            last_sent_at=None,
            resolved_at=None,
            # A key seen again after a resolve is a new alert that keeps its history count.
            send_count=live.send_count if live is not None else 0,
            last_error=None,
            subject=s.as_dict(),
        )
        return _Step(stuck_alert(s, stamp), fresh, None, "opened")
    live.subject = s.as_dict()
    if live.last_sent_at is None:  # never reached any channel yet: still the first alert
        return _Step(stuck_alert(s, stamp), live, None, "retried")
    if now - _instant(live.last_sent_at) >= remind_after:
        return _Step(stuck_alert(s, stamp, reminder=True), live, None, "reminded")
    if live.pending:
        only = [c for c in live.pending if c in channels]
        return _Step(stuck_alert(s, stamp), live, only, "retried")
    return None


def _for_gone(live: AlertState, status: str | None, stamp: str) -> _Step | None:
    if live.is_open:
        live.resolved_at = stamp
        live.action = RESOLVE
        live.pending = []
        return _Step(resolved_alert(live, status, stamp), live, list(live.delivered), "resolved")
    if live.action == RESOLVE and live.pending:
        return _Step(resolved_alert(live, status, stamp), live, list(live.pending), "retried")
    return None


def _apply(step: _Step, outcome: dict[str, str | None], stamp: str) -> None:
    """The row after sending: who has it now, who still owes a delivery, when it went out."""
    st = step.state
    ok = [c for c, err in outcome.items() if err is None]
    failed = {c: err for c, err in outcome.items() if err is not None}
    if step.alert.action == TRIGGER:
        if step.only is None:  # the whole trigger went out again: only these have it now
            st.delivered = sorted(
                set(ok) | (set(st.delivered) if step.label != "opened" else set())
            )
        else:
            st.delivered = sorted(set(st.delivered) | set(ok))
        st.action = TRIGGER
    if ok:
        st.send_count += 1
        if step.alert.action == TRIGGER:
            st.last_sent_at = stamp
    st.pending = sorted(failed)
    st.last_error = alert_state.errors_line(failed)

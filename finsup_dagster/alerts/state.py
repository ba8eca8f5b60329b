"""What the books remember of each alert (the ``alerts`` table): opened, sent, resolved, failing.

One row per key. ``detail`` is JSON: ``subject`` (what the alert is about),
``delivered`` (channels that took the current trigger: they get the resolve),
``pending`` (channels whose last delivery failed: tried again next tick) and
``action`` (the last thing said: trigger or resolve). ``last_error`` is set
exactly when ``pending`` is not empty, so the rows still owing a delivery are
found without reading JSON in SQL.

The table is not sealed and not in the transaction log: an alert is a
notification about the books, not a change to them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger.schema import alerts

LAST_ERROR_MAX = 512


@dataclass
class AlertState:
    key: str
    kind: str
    subject_id: str
    opened_at: str
    last_sent_at: str | None
    resolved_at: str | None
    send_count: int
    last_error: str | None
    subject: dict[str, Any] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    action: str = "trigger"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    def detail_json(self) -> str:
        return json.dumps(
            {
                "subject": self.subject,
                "delivered": sorted(self.delivered),
                "pending": sorted(self.pending),
                "action": self.action,
            },
            sort_keys=True,
        )


def _from_row(row: Any) -> AlertState:
    detail = json.loads(row.detail) if row.detail else {}
    return AlertState(
        key=row.key,
        kind=row.kind,
        subject_id=row.subject_id,
        opened_at=row.opened_at,
        last_sent_at=row.last_sent_at,
        resolved_at=row.resolved_at,
        send_count=int(row.send_count),
        last_error=row.last_error,
        subject=detail.get("subject", {}),
        delivered=list(detail.get("delivered", [])),
        pending=list(detail.get("pending", [])),
        action=detail.get("action", "trigger"),
    )


def live(conn: Connection, kinds: Collection[str]) -> dict[str, AlertState]:
    """Alerts of ``kinds`` still open, or owing a delivery (a failed resolve), by key."""
    a = alerts.c
    rows = conn.execute(
        sa.select(alerts).where(
            a.kind.in_(list(kinds)), sa.or_(a.resolved_at.is_(None), a.last_error.is_not(None))
        )
    ).all()
    return {row.key: _from_row(row) for row in rows}


def get(conn: Connection, key: str) -> AlertState | None:
    row = conn.execute(sa.select(alerts).where(alerts.c.key == key)).first()
    return _from_row(row) if row is not None else None


def errors_line(failed: Mapping[str, str]) -> str | None:
    """``slack: …; pagerduty: …`` cut to the column, or None when nothing failed."""
    if not failed:
        return None
    line = "; ".join(error for _, error in sorted(failed.items()))
    return line if len(line) <= LAST_ERROR_MAX else line[: LAST_ERROR_MAX - 1] + "…"


def save(conn: Connection, state: AlertState) -> None:
    """Inserts or replaces the row of ``state.key`` (inside the caller's write transaction)."""
    values = {
        "kind": state.kind,
        "subject_id": state.subject_id[:128],
        "opened_at": state.opened_at,
        "last_sent_at": state.last_sent_at,
        "resolved_at": state.resolved_at,
        "send_count": state.send_count,
        "last_error": state.last_error,
        "detail": state.detail_json(),
    }
    # Writers are serialised (db.write), so a read-then-write cannot race another writer.
    exists = conn.execute(sa.select(alerts.c.key).where(alerts.c.key == state.key)).first()
    if exists is None:
        conn.execute(sa.insert(alerts).values(key=state.key, **values))
    else:
        conn.execute(sa.update(alerts).where(alerts.c.key == state.key).values(**values))


def report(conn: Connection, open_only: bool = True) -> list[dict[str, Any]]:
    """Alerts for a person (newest first): what is open, and what failed to go out."""
    a = alerts.c
    query = sa.select(alerts).order_by(a.opened_at.desc(), a.key)
    if open_only:
        query = query.where(sa.or_(a.resolved_at.is_(None), a.last_error.is_not(None)))
    return [
        {
            "key": s.key,
            "kind": s.kind,
            "opened_at": s.opened_at,
            "last_sent_at": s.last_sent_at,
            "resolved_at": s.resolved_at,
            "send_count": s.send_count,
            "last_error": s.last_error,
            "delivered": s.delivered,
            "pending": s.pending,
        }
        for s in map(_from_row, conn.execute(query).all())
    ]

"""Read-only queries behind the CLI and the assets."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.schema import payout_batches, revenue_events, transaction_log


def transaction_logs(
    conn: Connection,
    since: str | None = None,
    entity_type: str | None = None,
    limit: int = 1000,
    with_seals: bool = False,
) -> list[dict[str, Any]]:
    """The log, oldest first; the ``rows_sealed`` rows only when asked (or by entity row_seals).

    Every write of the books adds a ``rows_sealed`` row (seals.py); a reader of the
    log wants the business actions, an auditor can ask for the seals too.
    """
    t = transaction_log.c
    stmt = sa.select(transaction_log).order_by(t.seq)
    if not with_seals and entity_type != "row_seals":
        stmt = stmt.where(t.action != "rows_sealed")
    if since:
        stmt = stmt.where(t.occurred_at >= since)
    if entity_type:
        stmt = stmt.where(t.entity_type == entity_type)
    rows = conn.execute(stmt.limit(limit)).mappings().all()
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def revenue_counts(conn: Connection) -> list[dict[str, Any]]:
    """Events and minor-unit totals per currency, kind and status."""
    t = revenue_events.c
    rows: Iterable[tuple[str, str, str, int, Any]] = conn.execute(
        sa.select(t.currency, t.kind, t.status, sa.func.count(), sa.func.sum(t.amount_minor))
        .group_by(t.currency, t.kind, t.status)
        .order_by(t.currency, t.kind, t.status)
    )
    return [
        {"currency": c, "kind": k, "status": s, "events": int(n), "amount_minor": int(total)}
        for c, k, s, n, total in rows
    ]


def payout_batches_report(
    conn: Connection, status: str | None = None, batch_id: str | None = None
) -> list[dict[str, Any]]:
    """Every payout batch (or those in ``status``, or the one ``batch_id``), newest first,
    with why it is where it is."""
    b = payout_batches.c
    stmt = sa.select(
        b.id,
        b.method,
        b.currency,
        b.total_minor,
        b.item_count,
        b.status,
        b.status_reason,
        b.gateway_batch_id,
        b.idempotency_key,
        b.submission_attempts,
        b.submitted_at,
        b.updated_at,
    ).order_by(b.updated_at.desc(), b.id)
    if status:
        stmt = stmt.where(b.status == status)
    if batch_id is not None:
        stmt = stmt.where(b.id == batch_id)
    return [
        {
            "batch_id": r.id,
            "method": r.method,
            "currency": r.currency,
            "total_minor": int(r.total_minor),
            "total": format_minor(int(r.total_minor), r.currency),
            "items": int(r.item_count),
            "status": r.status,
            "status_reason": r.status_reason,
            "gateway_batch_id": r.gateway_batch_id,
            "idempotency_key": r.idempotency_key,
            "attempts": int(r.submission_attempts),
            "submitted_at": r.submitted_at,
            "updated_at": r.updated_at,
        }
        for r in conn.execute(stmt)
    ]

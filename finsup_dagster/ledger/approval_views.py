"""Read models of the approvals page: what an approver sees before deciding.

Only reads; every decision goes through ``approvals`` and ``controls``. Amounts
stay integer minor units beside their currency (the page formats them with
``money.format_minor``). No Dagster and no web imports: the page, and anything
else that wants the same view, read from here.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import stuck
from finsup_dagster.ledger.balance import available_minor
from finsup_dagster.ledger.schema import (
    approvals,
    approvers,
    beneficiaries,
    earning_sources,
    earnings,
    payout_batches,
    payout_items,
    revenue_events,
    transaction_log,
)

PENDING = "pending_approval"


def approver_active(conn: Connection, name: str) -> bool:
    """Whether ``name`` is an enrolled, active approver (a session ends when not)."""
    active = conn.execute(sa.select(approvers.c.active).where(approvers.c.name == name)).first()
    return bool(active and active[0])


def _approval_counts(conn: Connection, batch_ids: list[str]) -> dict[str, int]:
    if not batch_ids:
        return {}
    a = approvals.c
    rows: Iterable[tuple[str, int]] = conn.execute(
        sa.select(a.batch_id, sa.func.count())
        .where(a.batch_id.in_(batch_ids), a.decision == "approve")
        .group_by(a.batch_id)
    )
    return {batch_id: int(n) for batch_id, n in rows}


def pending_batches(conn: Connection) -> list[dict[str, Any]]:
    """Batches pending approval, oldest first, with approvals so far and the balance.

    A pending batch has already reserved its total, so the ledger's available
    balance is the balance *after* it; ``available_without_minor`` adds it
    back, which is what the balance would be if it were denied.
    """
    b = payout_batches.c
    rows = conn.execute(
        sa.select(payout_batches).where(b.status == PENDING).order_by(b.created_at, b.id)
    ).all()
    counts = _approval_counts(conn, [r.id for r in rows])
    available: dict[str, int] = {}
    out = []
    for r in rows:
        if r.currency not in available:
            available[r.currency] = available_minor(conn, r.currency)
        approved = counts.get(r.id, 0)
        out.append(
            {
                "batch_id": r.id,
                "method": r.method,
                "currency": r.currency,
                "total_minor": int(r.total_minor),
                "item_count": int(r.item_count),
                "created_by": r.created_by,
                "created_at": r.created_at,
                "approvals": approved,
                "required_approvals": int(r.required_approvals),
                "still_needed": max(0, int(r.required_approvals) - approved),
                "available_after_minor": available[r.currency],
                "available_without_minor": available[r.currency] + int(r.total_minor),
            }
        )
    return out


def batch_detail(conn: Connection, batch_id: str) -> dict[str, Any] | None:
    """One batch: its items (payee, screening, funding events), approvals and log; None if unknown."""
    batch = conn.execute(sa.select(payout_batches).where(payout_batches.c.id == batch_id)).first()
    if batch is None:
        return None
    i, bf = payout_items.c, beneficiaries.c
    items = conn.execute(
        sa.select(
            i.id,
            i.amount_minor,
            i.netted_minor,
            i.destination_masked,
            i.status,
            i.provider_status,
            i.gateway_item_id,
            i.updated_at,
            bf.external_id,
            bf.name,
            bf.kyc_status,
            bf.sanctions_status,
            bf.blocked,
        )
        .join(beneficiaries, bf.id == i.beneficiary_id, isouter=True)
        .where(i.batch_id == batch_id)
        .order_by(i.id)
    ).all()
    funding = _funding(conn, [int(r.id) for r in items])
    a, ap = approvals.c, approvers.c
    history = conn.execute(
        sa.select(ap.name, a.decision, a.reason, a.decided_at)
        .join(approvers, ap.id == a.approver_id)
        .where(a.batch_id == batch_id)
        .order_by(a.decided_at, a.id)
    ).all()
    approved = sum(1 for h in history if h.decision == "approve")
    available = available_minor(conn, batch.currency)
    pending = batch.status == PENDING
    return {
        "batch_id": batch.id,
        "method": batch.method,
        "currency": batch.currency,
        "total_minor": int(batch.total_minor),
        "item_count": int(batch.item_count),
        "status": batch.status,
        "status_reason": batch.status_reason,
        "created_by": batch.created_by,
        "created_at": batch.created_at,
        "updated_at": batch.updated_at,
        "gateway_batch_id": batch.gateway_batch_id,
        "required_approvals": int(batch.required_approvals),
        "approvals": approved,
        "still_needed": max(0, int(batch.required_approvals) - approved) if pending else 0,
        "available_after_minor": available,
        "available_without_minor": available + int(batch.total_minor) if pending else available,
        "items": [
            {
                "item_id": int(r.id),
                "beneficiary": r.external_id,
                "name": r.name,
                "destination": r.destination_masked,
                "amount_minor": int(r.amount_minor),
                "netted_minor": int(r.netted_minor),
                "status": r.status,
                "provider_status": r.provider_status,
                "gateway_item_id": r.gateway_item_id,
                "updated_at": r.updated_at,
                "kyc_status": r.kyc_status,
                "sanctions_status": r.sanctions_status,
                "blocked": bool(r.blocked),
                "funded_by": funding.get(int(r.id), []),
            }
            for r in items
        ],
        "history": [
            {
                "approver": h.name,
                "decision": h.decision,
                "reason": h.reason,
                "decided_at": h.decided_at,
            }
            for h in history
        ],
        "log": recent_log(conn, "payout_batch", batch_id, limit=100),
    }


def _funding(conn: Connection, item_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Per payout item, the revenue events its earnings draw on (earning → sources → events)."""
    if not item_ids:
        return {}
    es, ev = earning_sources.c, revenue_events.c
    rows = conn.execute(
        sa.select(
            earnings.c.payout_item_id,
            earnings.c.external_id.label("earning"),
            es.event_hash,
            es.amount_minor.label("share_minor"),
            ev.source,
            ev.external_id,
            ev.kind,
            ev.amount_minor,
            ev.occurred_at,
            ev.status,
        )
        .join(earning_sources, es.earning_id == earnings.c.id)
        .join(revenue_events, ev.event_hash == es.event_hash)
        .where(earnings.c.payout_item_id.in_(item_ids))
        .order_by(ev.occurred_at, es.event_hash, earnings.c.external_id)
    ).all()
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[int(r.payout_item_id)].append(
            {
                "earning": r.earning,
                "event_hash": r.event_hash,
                "source": r.source,
                "external_id": r.external_id,
                "kind": r.kind,
                "share_minor": int(r.share_minor),
                "amount_minor": int(r.amount_minor),
                "occurred_at": r.occurred_at,
                "status": r.status,
            }
        )
    return out


def other_batches(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Batches past approval (approved, submitted, finished, denied...), newest first,
    with how many of their items are in each status."""
    b = payout_batches.c
    rows = conn.execute(
        sa.select(payout_batches)
        .where(b.status != PENDING)
        .order_by(b.updated_at.desc(), b.id)
        .limit(limit)
    ).all()
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    if rows:
        i = payout_items.c
        counted: Iterable[tuple[str, str, int]] = conn.execute(
            sa.select(i.batch_id, i.status, sa.func.count())
            .where(i.batch_id.in_([r.id for r in rows]))
            .group_by(i.batch_id, i.status)
        )
        for batch_id, status, n in counted:
            statuses[batch_id][status] = int(n)
    return [
        {
            "batch_id": r.id,
            "method": r.method,
            "currency": r.currency,
            "total_minor": int(r.total_minor),
            "item_count": int(r.item_count),
            "status": r.status,
            "status_reason": r.status_reason,
            "gateway_batch_id": r.gateway_batch_id,
            "submitted_at": r.submitted_at,
            "updated_at": r.updated_at,
            "item_statuses": sorted(statuses[r.id].items()),
        }
        for r in rows
    ]


def recent_log(
    conn: Connection,
    entity_type: str | None = None,
    entity_id: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The newest transaction-log rows (business actions, not seals), optionally of one entity."""
    t = transaction_log.c
    stmt = sa.select(transaction_log).where(t.action != "rows_sealed")
    if entity_type:
        stmt = stmt.where(t.entity_type == entity_type)
    if entity_id:
        stmt = stmt.where(t.entity_id == entity_id)
    rows = conn.execute(stmt.order_by(t.seq.desc()).limit(limit)).mappings().all()
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def entity_types(conn: Connection) -> list[str]:
    """The entity types the log holds, for the page's filter."""
    t = transaction_log.c
    return list(
        conn.execute(
            sa.select(t.entity_type)
            .where(t.action != "rows_sealed")
            .distinct()
            .order_by(t.entity_type)
        ).scalars()
    )


def stuck_list(conn: Connection, older_than: timedelta, now: datetime) -> list[dict[str, Any]]:
    """Stuck payouts, the very list ``finsup report-stuck-payouts`` and the sensor read."""
    return [item.as_dict() for item in stuck.stuck_items(conn, older_than, now=now)]

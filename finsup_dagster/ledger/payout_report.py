"""One payout batch as the books hold it: every item, its provider's word, and its funding.

``finsup report-payouts --batch ID --json`` prints this. A finance reader
asks "was it paid, where did the provider say it is, and which revenue paid
for it": each item carries its status, the provider's own status and ids,
amount, payee (destination masked, as stored), its earnings, and the revenue
events that fund them (earnings → earning_sources → revenue_events). The
shape is documented in docs/statuses.md.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger.errors import NotFound
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.schema import (
    beneficiaries,
    earning_sources,
    earnings,
    payout_batches,
    payout_items,
    revenue_events,
)


def payout_report(conn: Connection, batch_id: str) -> dict[str, Any]:
    """The batch ``batch_id`` with its items and their funding; NotFound if there is none."""
    b = payout_batches.c
    batch = conn.execute(sa.select(payout_batches).where(b.id == batch_id)).first()
    if batch is None:
        raise NotFound(f"no payout batch {batch_id!r}")
    i, p = payout_items.c, beneficiaries.c
    items = conn.execute(
        sa.select(
            i.id,
            i.status,
            i.provider_status,
            i.gateway_item_id,
            i.amount_minor,
            i.currency,
            i.netted_minor,
            i.destination_masked,
            i.updated_at,
            p.external_id,
            p.name,
            p.payout_method,
        )
        .select_from(payout_items.outerjoin(beneficiaries, p.id == i.beneficiary_id))
        .where(i.batch_id == batch_id)
        .order_by(i.id)
    ).all()
    ids = [int(r.id) for r in items]
    earned = _earnings(conn, ids)
    funded = _funding(conn, ids)
    return {
        "batch_id": batch.id,
        "method": batch.method,
        "currency": batch.currency,
        "total_minor": int(batch.total_minor),
        "total": format_minor(int(batch.total_minor), batch.currency),
        "status": batch.status,
        "gateway_batch_id": batch.gateway_batch_id,
        "idempotency_key": batch.idempotency_key,
        "submitted_at": batch.submitted_at,
        "updated_at": batch.updated_at,
        "items": [
            {
                "item_id": int(r.id),
                "status": r.status,
                "provider_status": r.provider_status,
                "gateway_batch_id": batch.gateway_batch_id,
                "gateway_item_id": r.gateway_item_id,
                "amount_minor": int(r.amount_minor),
                "amount": format_minor(int(r.amount_minor), r.currency),
                "currency": r.currency,
                "netted_minor": int(r.netted_minor),
                "beneficiary": r.external_id,
                "name": r.name,
                "payout_method": r.payout_method,
                "destination": r.destination_masked,  # masked when batched: never the full one
                "updated_at": r.updated_at,
                "earnings": earned.get(int(r.id), []),
                "funding": funded.get(int(r.id), []),
            }
            for r in items
        ],
    }


def _earnings(conn: Connection, item_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    e = earnings.c
    rows = conn.execute(
        sa.select(e.payout_item_id, e.external_id, e.amount_minor, e.currency, e.status)
        .where(e.payout_item_id.in_(item_ids))
        .order_by(e.payout_item_id, e.id)
    ).all()
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[int(r.payout_item_id)].append(
            {
                "external_id": r.external_id,
                "amount_minor": int(r.amount_minor),
                "currency": r.currency,
                "status": r.status,
            }
        )
    return out


def _funding(conn: Connection, item_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each item's revenue events, once per event however many of its earnings it funds."""
    e, es, ev = earnings.c, earning_sources.c, revenue_events.c
    rows = conn.execute(
        sa.select(
            e.payout_item_id,
            es.event_hash,
            sa.func.sum(es.amount_minor).label("funded_minor"),
            ev.source,
            ev.external_id,
            ev.kind,
            ev.amount_minor,
            ev.currency,
            ev.occurred_at,
            ev.status,
        )
        .join(earning_sources, es.earning_id == e.id)
        .join(revenue_events, ev.event_hash == es.event_hash)
        .where(e.payout_item_id.in_(item_ids))
        .group_by(
            e.payout_item_id,
            es.event_hash,
            ev.source,
            ev.external_id,
            ev.kind,
            ev.amount_minor,
            ev.currency,
            ev.occurred_at,
            ev.status,
        )
        .order_by(e.payout_item_id, ev.occurred_at, es.event_hash)
    ).all()
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[int(r.payout_item_id)].append(
            {
                "event_hash": r.event_hash,
                "source": r.source,
                "external_id": r.external_id,
                "kind": r.kind,
                "amount_minor": int(r.amount_minor),  # the event's whole amount
                "funded_minor": int(r.funded_minor),  # what of it funds this item
                "currency": r.currency,
                "occurred_at": r.occurred_at,
                "status": r.status,
            }
        )
    return out

"""What beneficiaries owe back, and how much of it to net from their next payout item.

A beneficiary's outstanding clawback in a currency is every clawback not
cleared, less what live or paid payout items have already netted. Batching nets
it item by item: an item pays the beneficiary's accrued earnings less as much of
the outstanding amount as still leaves the currency's minimum item, and the
netted part is posted Dr expenses:beneficiary_payouts, Cr
assets:clawback_receivable when the batch is created (given back if the item's
money is released).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger.schema import beneficiaries, clawbacks, earnings, payout_items
from finsup_dagster.ledger.state_machine import ITEM_MONEY_CLASS

_NOT_RELEASED = sorted(s for s, c in ITEM_MONEY_CLASS.items() if c != "released")


def outstanding(conn: Connection, currency: str | None = None) -> dict[tuple[int, str], int]:
    """(beneficiary id, currency) -> minor units still owed back (may be < 0: owed to them)."""
    owed: dict[tuple[int, str], int] = defaultdict(int)
    c = clawbacks.c
    q = sa.select(c.beneficiary_id, c.currency, sa.func.sum(c.amount_minor)).where(
        c.cleared_entry_id.is_(None)
    )
    if currency is not None:
        q = q.where(c.currency == currency)
    sums: Iterable[Any] = conn.execute(q.group_by(c.beneficiary_id, c.currency))
    for ben, cur, amount in sums:
        owed[(int(ben), cur)] += int(amount)
    i = payout_items.c
    n = sa.select(i.beneficiary_id, i.currency, sa.func.sum(i.netted_minor)).where(
        i.netted_minor > 0, i.status.in_(_NOT_RELEASED)
    )
    if currency is not None:
        n = n.where(i.currency == currency)
    netted: Iterable[Any] = conn.execute(n.group_by(i.beneficiary_id, i.currency))
    for ben, cur, amount in netted:
        owed[(int(ben), cur)] -= int(amount)
    return {k: v for k, v in owed.items() if v}


def report(conn: Connection) -> list[dict[str, Any]]:
    """Every clawback with what it was for, and each beneficiary's outstanding amount."""
    c, b = clawbacks.c, beneficiaries.c
    left = outstanding(conn)
    rows = (
        conn.execute(
            sa.select(
                c.id,
                c.beneficiary_id,
                b.external_id.label("ben"),
                earnings.c.external_id,
                c.event_hash,
                c.amount_minor,
                c.currency,
                c.created_at,
                c.cleared_at,
            )
            .join(beneficiaries, b.id == c.beneficiary_id)
            .join(earnings, earnings.c.id == c.earning_id)
            .order_by(c.id)
        )
        .mappings()
        .all()
    )
    return [
        {
            "clawback_id": r["id"],
            "beneficiary": r["ben"],
            "earning": r["external_id"],
            "event_hash": r["event_hash"],
            "amount_minor": int(r["amount_minor"]),
            "currency": r["currency"],
            "created_at": r["created_at"],
            "cleared_at": r["cleared_at"],
            "beneficiary_outstanding_minor": left.get((r["beneficiary_id"], r["currency"]), 0),
        }
        for r in rows
    ]

"""Turning accrued earnings into payout batches, pending approval.

Rules, in order:

1. Only accrued earnings not yet in a batch are considered, oldest first; an
   earning whose funding sale was reversed, refunded or charged back is put
   on hold first (holds.py) and waits for an approver.
2. Beneficiaries who are blocked, not sanctions-``clear`` or not KYC-``verified``
   are reported as ineligible and their earnings wait.
3. Earnings are grouped by payout method and currency, then summed per
   beneficiary into one item. An item below the currency's minimum waits.
4. Items fill batches of at most the currency's maximum batch total (an item
   larger than that waits and is reported), and only while the available
   balance covers them: the rest waits.
5. A beneficiary who owes a clawback has it netted from their item: the item
   pays the earnings less as much of the clawback as still leaves the minimum
   item (clawbacks.py); an item whose earnings the clawback would swallow waits.
6. A batch whose total is above the currency's dual-approval threshold needs
   two approvers.

Everything happens in one books write transaction, and every batch reserves its
total through ``payouts.create_batch``. Earnings claimed by a batch are no longer
accrued, so building again never creates a second batch or item for them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import clawbacks, db, holds
from finsup_dagster.ledger.balance import available_minor
from finsup_dagster.ledger.beneficiaries import ineligibility
from finsup_dagster.ledger.controls import ensure_not_frozen
from finsup_dagster.ledger.masking import mask_destination
from finsup_dagster.ledger.money import amount_for
from finsup_dagster.ledger.payouts import ItemRequest, create_batch
from finsup_dagster.ledger.schema import (
    beneficiaries,
    earning_sources,
    earnings,
    payout_batches,
    payout_items,
    revenue_events,
)


@dataclass(frozen=True)
class BatchPolicy:
    """Per-currency amounts as ``{"USD": "25.00", "*": "10"}`` maps (see money.parse_amount_map)."""

    min_item: dict[str, str] = field(default_factory=dict)
    max_batch_total: dict[str, str] = field(default_factory=dict)
    dual_approval_over: dict[str, str] = field(default_factory=dict)

    def required_approvals(self, currency: str, total_minor: int) -> int:
        threshold = amount_for(self.dual_approval_over, currency)
        return 2 if threshold is not None and total_minor > threshold else 1


@dataclass
class BuildReport:
    batches: list[dict[str, Any]] = field(default_factory=list)
    ineligible: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Item:
    beneficiary_id: int
    beneficiary: str
    destination_masked: str
    amount_minor: int = 0  # the earnings it pays, before netting
    earning_ids: list[int] = field(default_factory=list)
    netted_minor: int = 0


def build_batches(engine: Engine, policy: BatchPolicy, created_by: str) -> BuildReport:
    report = BuildReport()
    with db.write(engine) as conn:
        ensure_not_frozen(conn, "creating payout batches")
        # Whatever path reversed a funding sale, its earnings are held before anything is paid.
        holds.apply_holds(conn, created_by)
        report.held = holds.held_earnings(conn)
        owed = clawbacks.outstanding(conn)
        e, b = earnings.c, beneficiaries.c
        rows = (
            conn.execute(
                sa.select(
                    e.id,
                    e.amount_minor,
                    e.currency,
                    b.id.label("ben_id"),
                    b.external_id,
                    b.payout_method,
                    b.destination,
                    b.kyc_status,
                    b.sanctions_status,
                    b.blocked,
                )
                .join(beneficiaries, b.id == e.beneficiary_id)
                .where(e.status == "accrued", e.payout_item_id.is_(None))
                .order_by(e.earned_at, e.id)
            )
            .mappings()
            .all()
        )
        groups: dict[tuple[str, str], dict[int, _Item]] = defaultdict(dict)
        for row in rows:
            why = ineligibility(row)
            if why:
                report.ineligible.append(
                    {
                        "beneficiary": row["external_id"],
                        "earning_id": row["id"],
                        "currency": row["currency"],
                        "amount_minor": row["amount_minor"],
                        "reason": why,
                    }
                )
                continue
            items = groups[(row["payout_method"], row["currency"])]
            item = items.setdefault(
                row["ben_id"],
                _Item(
                    row["ben_id"],
                    row["external_id"],
                    mask_destination(row["payout_method"], row["destination"]),
                ),
            )
            item.amount_minor += row["amount_minor"]
            item.earning_ids.append(row["id"])

        for (method, currency), items in sorted(groups.items()):
            minimum = amount_for(policy.min_item, currency) or 1
            maximum = amount_for(policy.max_batch_total, currency)
            available = available_minor(conn, currency)
            batches: list[list[_Item]] = []
            open_total = 0
            for item in items.values():
                reason = None
                # Netting leaves at least the minimum item paid: the rest of a clawback
                # waits for the next payout.
                debt = owed.get((item.beneficiary_id, currency), 0)
                item.netted_minor = max(0, min(debt, item.amount_minor - minimum))
                cash = item.amount_minor - item.netted_minor
                if debt > 0 and item.netted_minor == 0:
                    reason = "offset by the beneficiary's outstanding clawback"
                elif cash < minimum:
                    reason = "below the minimum item amount"
                elif maximum is not None and cash > maximum:
                    reason = "larger than the maximum batch total"
                elif cash > available:
                    reason = "not covered by the available balance"
                if reason:
                    report.waiting.append(
                        {
                            "beneficiary": item.beneficiary,
                            "method": method,
                            "currency": currency,
                            "amount_minor": item.amount_minor,
                            "reason": reason,
                        }
                    )
                    continue
                if not batches or (maximum is not None and open_total + cash > maximum):
                    batches.append([])
                    open_total = 0
                batches[-1].append(item)
                open_total += cash
                available -= cash
            for members in batches:
                total = sum(i.amount_minor - i.netted_minor for i in members)
                approvals = policy.required_approvals(currency, total)
                batch_id = create_batch(
                    conn,
                    method=method,
                    currency=currency,
                    created_by=created_by,
                    required_approvals=approvals,
                    items=[
                        ItemRequest(
                            i.amount_minor - i.netted_minor,
                            i.beneficiary_id,
                            i.destination_masked,
                            i.earning_ids,
                            i.netted_minor,
                        )
                        for i in members
                    ],
                )
                report.batches.append(
                    {
                        "batch_id": batch_id,
                        "method": method,
                        "currency": currency,
                        "total_minor": total,
                        "item_count": len(members),
                        "required_approvals": approvals,
                        "netted_minor": sum(i.netted_minor for i in members),
                    }
                )
    return report


def pending_batches(engine: Engine) -> list[dict[str, Any]]:
    """Every batch pending approval, with its items and the revenue events that fund each."""
    with db.read(engine) as conn:
        batches = (
            conn.execute(
                sa.select(payout_batches)
                .where(payout_batches.c.status == "pending_approval")
                .order_by(payout_batches.c.created_at, payout_batches.c.id)
            )
            .mappings()
            .all()
        )
        owed = clawbacks.outstanding(conn)
        out = []
        for batch in batches:
            items = (
                conn.execute(
                    sa.select(
                        payout_items.c.id,
                        payout_items.c.amount_minor,
                        payout_items.c.destination_masked,
                        payout_items.c.netted_minor,
                        payout_items.c.beneficiary_id,
                        beneficiaries.c.external_id,
                        beneficiaries.c.name,
                    )
                    .join(
                        beneficiaries,
                        beneficiaries.c.id == payout_items.c.beneficiary_id,
                        isouter=True,
                    )
                    .where(payout_items.c.batch_id == batch["id"])
                    .order_by(payout_items.c.id)
                )
                .mappings()
                .all()
            )
            es, ev = earning_sources.c, revenue_events.c
            funding = (
                conn.execute(
                    sa.select(
                        earnings.c.payout_item_id,
                        es.event_hash,
                        sa.func.sum(es.amount_minor).label("amount_minor"),
                        ev.source,
                        ev.external_id,
                        ev.occurred_at,
                    )
                    .join(earning_sources, es.earning_id == earnings.c.id)
                    .join(revenue_events, ev.event_hash == es.event_hash)
                    .where(earnings.c.payout_item_id.in_([i["id"] for i in items]))
                    .group_by(
                        earnings.c.payout_item_id,
                        es.event_hash,
                        ev.source,
                        ev.external_id,
                        ev.occurred_at,
                    )
                    .order_by(ev.occurred_at, es.event_hash)
                )
                .mappings()
                .all()
            )
            by_item: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for f in funding:
                by_item[f["payout_item_id"]].append(
                    {
                        "event_hash": f["event_hash"],
                        "source": f["source"],
                        "external_id": f["external_id"],
                        "occurred_at": f["occurred_at"],
                        "amount_minor": int(f["amount_minor"]),
                    }
                )
            out.append(
                {
                    "batch_id": batch["id"],
                    "method": batch["method"],
                    "currency": batch["currency"],
                    "total_minor": batch["total_minor"],
                    "item_count": batch["item_count"],
                    "required_approvals": batch["required_approvals"],
                    "created_by": batch["created_by"],
                    "created_at": batch["created_at"],
                    "items": [
                        {
                            "item_id": i["id"],
                            "beneficiary": i["external_id"],
                            "name": i["name"],
                            "destination": i["destination_masked"],
                            "amount_minor": i["amount_minor"],
                            "netted_minor": i["netted_minor"],
                            "clawback_outstanding_minor": owed.get(
                                (i["beneficiary_id"], batch["currency"]), 0
                            ),
                            "funded_by": by_item[i["id"]],
                        }
                        for i in items
                    ],
                }
            )
    return out

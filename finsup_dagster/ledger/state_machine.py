"""The payout state machine: allowed transitions as data, one function to move.

Every batch and item status change in finsup goes through ``move_batch`` or
``move_item``, which check the transition, write the journal postings the
money side of it needs, and append the transaction-log row, all inside the
caller's write transaction.

Items carry the money. Their statuses fall in three money classes:
``committed`` (reserved, not yet paid), ``paid`` and ``released`` (the
reservation given back to the available balance). Moving between classes
posts:

    committed → paid      Dr liabilities:payouts_payable  Cr assets:gateway_clearing
    committed → released  Dr liabilities:payouts_payable  Cr expenses:beneficiary_payouts
    paid      → released  Dr assets:gateway_clearing      Cr expenses:beneficiary_payouts

An item that netted a clawback (``netted_minor``) gives that back to the
receivable when its money is released; earnings of a released item accrue
again or go on hold (holds.py), and an earning paid while its funding was gone
is clawed back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import audit_log, clock, holds
from finsup_dagster.ledger.errors import IllegalTransition, NotFound
from finsup_dagster.ledger.journal import Account, Posting, debit_credit, post_entry
from finsup_dagster.ledger.schema import earnings, payout_batches, payout_items

# The payout trail (finsup_dagster/logs.py formats it as JSON): every status change of a
# batch or item carries its batch id, so one id follows a payout to its last status.
_trail = logging.getLogger("finsup.trail")

BATCH_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending_approval": frozenset({"approved", "denied", "cancelled"}),
    "approved": frozenset({"submitting", "cancelled"}),
    # submission_failed: the gateway refused the call outright (nothing was accepted);
    # the amount stays reserved until an approver retries (back to approved, same
    # idempotency key) or cancels (released). See docs/payouts.md, "Submission".
    "submitting": frozenset({"submitted", "submission_failed"}),
    "submission_failed": frozenset({"approved", "cancelled"}),
    # Derived from the items once none is committed (payout_status.derived_batch_status);
    # a paid item returned later derives it again, so completed can become partial or failed.
    "submitted": frozenset({"completed", "partially_completed", "failed"}),
    "completed": frozenset({"partially_completed", "failed"}),
    "partially_completed": frozenset({"failed"}),
    "failed": frozenset(),
    "denied": frozenset(),
    "cancelled": frozenset(),
}

# Every status the provider can still report after submission, in the order of meaning:
# a move only ever goes up this order (tests/test_payout_outcomes.py holds the two
# tables to each other), so a late or repeated report can never move an item back.
ITEM_RANK: dict[str, int] = {
    "pending": 0,  # not yet sent
    "submitted": 1,
    "processing": 2,  # the provider's PENDING: it has the item and is working on it
    "held": 3,
    "unclaimed": 4,
    "paid": 5,
    "failed": 5,
    "blocked": 5,
    "denied": 5,
    "cancelled": 5,
    "returned": 6,  # money came back after it had been paid (or unclaimed)
    "refunded": 6,
}
_RELEASED = ("failed", "returned", "refunded", "blocked", "denied", "cancelled")
_AFTER_SENT = frozenset({"held", "unclaimed", "paid", *_RELEASED})

ITEM_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"submitted", "cancelled", "failed"}),
    "submitted": frozenset({"processing"} | _AFTER_SENT),
    "processing": _AFTER_SENT,
    "held": _AFTER_SENT - {"held"},
    "unclaimed": frozenset({"paid", "failed", "returned", "refunded", "cancelled"}),
    "paid": frozenset({"returned", "refunded"}),
    **{status: frozenset() for status in _RELEASED},
}

ITEM_MONEY_CLASS: dict[str, str] = {
    **dict.fromkeys(("pending", "submitted", "processing", "held", "unclaimed"), "committed"),
    "paid": "paid",
    **dict.fromkeys(_RELEASED, "released"),
}

_CLASS_POSTINGS: dict[tuple[str, str], tuple[str, str]] = {
    ("committed", "paid"): (Account.PAYOUTS_PAYABLE, Account.GATEWAY_CLEARING),
    ("committed", "released"): (Account.PAYOUTS_PAYABLE, Account.BENEFICIARY_PAYOUTS),
    ("paid", "released"): (Account.GATEWAY_CLEARING, Account.BENEFICIARY_PAYOUTS),
}

# A batch that ends without paying cascades its open items to these statuses.
_BATCH_ITEM_CASCADE = {"denied": "cancelled", "cancelled": "cancelled"}

# The transaction-log action of a move, where it is not ``batch_<target>``: a retry
# must not read as an approval (the sensor keys approvals by approval version, and
# a retry keeps the version so the gateway can still deduplicate on the key).
BATCH_MOVE_ACTIONS: dict[tuple[str, str], str] = {
    ("submission_failed", "approved"): "batch_retry_approved",
}

# An item may become one of these only while its batch is in one of the statuses
# given: an item is submitted with its batch (submission.record_submitted), never alone.
ITEM_TARGET_BATCH_STATUSES: dict[str, frozenset[str]] = {
    "submitted": frozenset({"submitting", "submitted"}),
}

# Batches whose items may still hold committed money: not yet derived from their items.
# Named, not computed from the transitions: a finished batch can still be derived again
# (completed -> partially_completed) without being live.
LIVE_BATCH_STATUSES = frozenset(
    {"pending_approval", "approved", "submitting", "submission_failed", "submitted"}
)


def check(transitions: dict[str, frozenset[str]], what: str, current: str, target: str) -> None:
    if target not in transitions:
        raise IllegalTransition(f"{what}: unknown status {target!r}")
    if target not in transitions.get(current, frozenset()):
        allowed = ", ".join(sorted(transitions.get(current, ()))) or "nothing (final)"
        raise IllegalTransition(
            f"{what} is {current}; it cannot become {target} (allowed: {allowed})"
        )


def move_batch(
    conn: Connection,
    batch_id: str,
    target: str,
    actor: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    batch = conn.execute(sa.select(payout_batches).where(payout_batches.c.id == batch_id)).first()
    if batch is None:
        raise NotFound(f"no payout batch {batch_id!r}")
    check(BATCH_TRANSITIONS, f"batch {batch_id}", batch.status, target)
    changed = conn.execute(
        sa.update(payout_batches)
        .where(payout_batches.c.id == batch_id, payout_batches.c.status == batch.status)
        .values(status=target, updated_at=clock.now())
    ).rowcount
    if changed != 1:  # pragma: no cover - the write lock makes this unreachable
        raise IllegalTransition(f"batch {batch_id} changed underneath us")
    audit_log.log(
        conn,
        BATCH_MOVE_ACTIONS.get((batch.status, target), f"batch_{target}"),
        "payout_batch",
        batch_id,
        actor=actor,
        amount_minor=batch.total_minor,
        currency=batch.currency,
        detail={"from": batch.status, "to": target, "reason": reason, **(detail or {})},
    )
    _trail.info(
        "batch %s: %s -> %s",
        batch_id,
        batch.status,
        target,
        extra={"batch_id": batch_id, "from_status": batch.status, "to_status": target},
    )
    cascade = _BATCH_ITEM_CASCADE.get(target)
    if cascade:
        open_items: Sequence[int] = (
            conn.execute(
                sa.select(payout_items.c.id).where(
                    payout_items.c.batch_id == batch_id,
                    payout_items.c.status.in_(
                        [s for s, c in ITEM_MONEY_CLASS.items() if c == "committed"]
                    ),
                )
            )
            .scalars()
            .all()
        )
        for item_id in open_items:
            move_item(conn, item_id, cascade, actor, reason=f"batch {target}")


def move_item(
    conn: Connection, item_id: int, target: str, actor: str, reason: str | None = None
) -> None:
    item = conn.execute(sa.select(payout_items).where(payout_items.c.id == item_id)).first()
    if item is None:
        raise NotFound(f"no payout item {item_id}")
    check(ITEM_TRANSITIONS, f"item {item_id}", item.status, target)
    needs = ITEM_TARGET_BATCH_STATUSES.get(target)
    if needs is not None:
        batch_status: str = conn.execute(
            sa.select(payout_batches.c.status).where(payout_batches.c.id == item.batch_id)
        ).scalar_one()
        if batch_status not in needs:
            raise IllegalTransition(
                f"item {item_id} cannot become {target} while its batch {item.batch_id} "
                f"is {batch_status} (only while {' or '.join(sorted(needs))})"
            )
    conn.execute(
        sa.update(payout_items)
        .where(payout_items.c.id == item_id)
        .values(status=target, updated_at=clock.now())
    )
    before, after = ITEM_MONEY_CLASS[item.status], ITEM_MONEY_CLASS[target]
    entry_id = None
    # Set on a release only, even when empty: its absence marks a row written before
    # releases recorded their earnings (audit/as_of.py cannot attribute those).
    released: list[int] | None = None
    if before != after:
        debit, credit = _CLASS_POSTINGS[(before, after)]
        lines: list[Posting] = debit_credit(debit, credit, item.currency, item.amount_minor)
        entry_id = post_entry(
            conn,
            f"payout_item_{after}",
            f"payout item {item_id} {item.status} → {target}",
            lines,
            reference=("payout_item", str(item_id)),
        )
        if after == "paid":
            conn.execute(
                sa.update(earnings)
                .where(earnings.c.payout_item_id == item_id)
                .values(status="paid")
            )
            # Paid while its funding was gone (it was in flight): owed back from now on.
            holds.apply_holds(conn, actor, earning_ids=_earning_ids(conn, item_id))
        else:
            if item.netted_minor:
                # The clawback this item recovered by netting is owed again.
                post_entry(
                    conn,
                    "clawback_netting_released",
                    f"payout item {item_id} netting released",
                    debit_credit(
                        Account.CLAWBACK_RECEIVABLE,
                        Account.BENEFICIARY_PAYOUTS,
                        item.currency,
                        item.netted_minor,
                    ),
                    reference=("payout_item", str(item_id)),
                )
            if before == "paid":
                holds.clear_clawbacks(
                    conn, _earning_ids(conn, item_id), actor, f"payout item {item_id} {target}"
                )
            # Released money returns the earnings to accrued (or on hold) for a later batch.
            released = holds.return_to_pool(conn, item_id, actor)
    _trail.info(
        "item %s: %s -> %s",
        item_id,
        item.status,
        target,
        extra={
            "batch_id": item.batch_id,
            "item_id": item_id,
            "from_status": item.status,
            "to_status": target,
        },
    )
    audit_log.log(
        conn,
        f"item_{target}",
        "payout_item",
        str(item_id),
        actor=actor,
        amount_minor=item.amount_minor,
        currency=item.currency,
        detail={
            "batch_id": item.batch_id,
            "from": item.status,
            "to": target,
            "reason": reason,
            "entry_id": entry_id,
            **({} if released is None else {"earning_ids": released}),
        },
    )


def _earning_ids(conn: Connection, item_id: int) -> list[int]:
    return list(
        conn.execute(sa.select(earnings.c.id).where(earnings.c.payout_item_id == item_id)).scalars()
    )

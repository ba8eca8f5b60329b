"""Payout batches: created only where the available balance covers them.

``create_batch`` runs inside a books write transaction, which holds the
writer lock from its first statement: the balance it reads cannot change
before the reservation it posts commits, so two creators running at once can
never commit the same money twice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import audit_log, clock, holds, state_machine
from finsup_dagster.ledger.balance import available_minor
from finsup_dagster.ledger.beneficiaries import ensure_batch_payable
from finsup_dagster.ledger.controls import ensure_not_frozen
from finsup_dagster.ledger.errors import (
    IllegalTransition,
    InsufficientFunds,
    InvalidInput,
    NotFound,
)
from finsup_dagster.ledger.journal import Account, debit_credit, post_entry
from finsup_dagster.ledger.money import exponent, format_minor
from finsup_dagster.ledger.schema import earnings, payout_batches, payout_items

PAYOUT_METHODS = ("paypal", "payoneer", "bank")
_trail = logging.getLogger("finsup.trail")  # see state_machine: the batch id follows a payout


@dataclass(frozen=True)
class ItemRequest:
    amount_minor: int
    beneficiary_id: int | None = None
    destination_masked: str | None = None
    earning_ids: Sequence[int] = field(default_factory=tuple)
    # Part of the earnings kept back against the beneficiary's clawbacks (not paid out).
    netted_minor: int = 0


def new_batch_id() -> str:
    return f"pb_{datetime.now(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(5)}"


def create_batch(
    conn: Connection,
    *,
    method: str,
    currency: str,
    items: Sequence[ItemRequest],
    created_by: str,
    required_approvals: int = 1,
    batch_id: str | None = None,
) -> str:
    """Checks and reserves the available balance, then writes the batch, pending approval."""
    ensure_not_frozen(conn, "creating a payout batch")
    if method not in PAYOUT_METHODS:
        raise InvalidInput(f"payout method {method!r} is not one of {', '.join(PAYOUT_METHODS)}")
    exponent(currency)
    if not items:
        raise InvalidInput("a payout batch needs at least one item")
    if any(
        isinstance(i.amount_minor, bool)
        or not isinstance(i.amount_minor, int)
        or i.amount_minor <= 0
        or i.netted_minor < 0
        for i in items
    ):
        raise InvalidInput("every payout item needs a positive integer amount in minor units")
    total = sum(i.amount_minor for i in items)
    available = available_minor(conn, currency)
    if total > available:
        raise InsufficientFunds(
            f"batch of {format_minor(total, currency)} {currency} exceeds the available "
            f"{format_minor(available, currency)} {currency}"
        )
    batch_id = batch_id or new_batch_id()
    now = clock.now()
    entry_id = post_entry(
        conn,
        "payout_reserved",
        f"payout batch {batch_id} reserved",
        debit_credit(Account.BENEFICIARY_PAYOUTS, Account.PAYOUTS_PAYABLE, currency, total),
        reference=("payout_batch", batch_id),
    )
    conn.execute(
        sa.insert(payout_batches).values(
            id=batch_id,
            method=method,
            currency=currency,
            total_minor=total,
            item_count=len(items),
            status="pending_approval",
            required_approvals=required_approvals,
            approval_version=0,
            created_by=created_by,
            created_at=now,
            updated_at=now,
            reservation_entry_id=entry_id,
        )
    )
    for item in items:
        item_id: int = conn.execute(
            sa.insert(payout_items)
            .values(
                batch_id=batch_id,
                beneficiary_id=item.beneficiary_id,
                destination_masked=item.destination_masked,
                amount_minor=item.amount_minor,
                currency=currency,
                status="pending",
                updated_at=now,
                netted_minor=item.netted_minor,
            )
            .returning(payout_items.c.id)
        ).scalar_one()
        _claim_earnings(conn, item_id, item.earning_ids, currency)
    netted = sum(i.netted_minor for i in items)
    if netted:
        post_entry(
            conn,
            "clawback_netted",
            f"payout batch {batch_id} nets clawbacks",
            debit_credit(
                Account.BENEFICIARY_PAYOUTS, Account.CLAWBACK_RECEIVABLE, currency, netted
            ),
            reference=("payout_batch", batch_id),
        )
    audit_log.log(
        conn,
        "batch_created",
        "payout_batch",
        batch_id,
        actor=created_by,
        amount_minor=total,
        currency=currency,
        detail={
            "method": method,
            "items": len(items),
            "available_before": available,
            "reservation_entry_id": entry_id,
            "required_approvals": required_approvals,
            "netted_minor": netted,
        },
    )
    _trail.info(
        "batch %s created",
        batch_id,
        extra={"batch_id": batch_id, "to_status": "pending_approval", "items": len(items)},
    )
    return batch_id


def _claim_earnings(
    conn: Connection, item_id: int, earning_ids: Sequence[int], currency: str
) -> None:
    """Marks earnings as batched; an earning already in a live batch refuses the whole batch."""
    if not earning_ids:
        return
    claimed = conn.execute(
        sa.update(earnings)
        .where(
            earnings.c.id.in_(list(earning_ids)),
            earnings.c.status == "accrued",
            earnings.c.payout_item_id.is_(None),
            earnings.c.currency == currency,
        )
        .values(status="batched", payout_item_id=item_id)
    ).rowcount
    if claimed != len(set(earning_ids)):
        raise InvalidInput(
            "some earnings are not accrued in this currency or are already in a live batch"
        )


def idempotency_key(batch_id: str, approval_version: int) -> str:
    """The gateway's idempotency key (PayPal sender_batch_id, Payoneer client reference)."""
    return f"{batch_id}-v{approval_version}"


def start_submission(conn: Connection, batch_id: str, approval_version: int, actor: str) -> str:
    """Moves an approved batch to ``submitting`` and stores its idempotency key first.

    Running it again for the same approval version (a re-executed step, a
    repeated sensor tick) finds the batch already submitting with the same key
    and changes nothing; the key is what a gateway call must reuse. The
    submission op calls it through ``submission.prepare_attempt``.
    """
    batch = conn.execute(sa.select(payout_batches).where(payout_batches.c.id == batch_id)).first()
    if batch is None:
        raise NotFound(f"no payout batch {batch_id!r}")
    key = idempotency_key(batch_id, approval_version)
    if batch.status == "submitting" and batch.idempotency_key == key:
        return key
    ensure_not_frozen(conn, f"submitting batch {batch_id}")
    if batch.approval_version != approval_version:
        raise IllegalTransition(
            f"batch {batch_id} is at approval version {batch.approval_version}, not {approval_version}"
        )
    # The transition is checked before screening, so a batch that could not be
    # submitted anyway is refused for that, not for its payees.
    state_machine.check(
        state_machine.BATCH_TRANSITIONS, f"batch {batch_id}", batch.status, "submitting"
    )
    ensure_batch_payable(conn, batch_id)
    holds.ensure_batch_funded(conn, batch_id)
    # A batch retried after submission_failed is approved again with its key already
    # stored (same approval version): it keeps it, so the gateway can still deduplicate.
    if batch.idempotency_key is None:
        conn.execute(
            sa.update(payout_batches)
            .where(payout_batches.c.id == batch_id)
            .values(idempotency_key=key)
        )
    elif batch.idempotency_key != key:  # pragma: no cover - the approval version pins the key
        raise IllegalTransition(f"batch {batch_id} already has another idempotency key")
    state_machine.move_batch(conn, batch_id, "submitting", actor, detail={"idempotency_key": key})
    return key

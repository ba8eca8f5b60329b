"""Builders for payout tests: funded books, beneficiaries, earnings, batches, approvers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyotp
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import (
    approvals,
    beneficiaries,
    db,
    earnings,
    payouts,
    revenue,
    state_machine,
    submission,
)
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.schema import payout_batches, payout_items
from finsup_dagster.ledger.secret_box import SecretBox

BOX_KEY = "test-secret-key-material-at-least-32-chars"  # FINSUP_SECRET_KEY for CLI runs
BOX = SecretBox(BOX_KEY)
T0 = 1_800_000_000.0  # a fixed instant; each approver's codes step forward from here


def sale(
    engine: Engine, external_id: str, amount: str, currency: str = "USD", status: str = "confirmed"
) -> str:
    ev = revenue.parse_event(
        {
            "source": "paypal",
            "external_id": external_id,
            "amount": amount,
            "currency": currency,
            "occurred_at": "2026-11-20T10:00:00Z",
            "kind": "sale",
            "status": status,
        }
    )
    revenue.ingest(engine, [(1, ev)])
    return ev.event_hash


def beneficiary(engine: Engine, external_id: str, **overrides: str) -> None:
    record = {
        "external_id": external_id,
        "name": external_id.title(),
        "payout_method": "paypal",
        "destination": f"{external_id}@example.com",
        "country": "US",
        "kyc_status": "verified",
        "sanctions_status": "clear",
        "tax_id": "123-45-6789",
        **overrides,
    }
    with db.write(engine) as conn:
        beneficiaries.upsert(conn, beneficiaries.parse_beneficiary(record), "test")


def earning(
    engine: Engine, external_id: str, who: str, amount: str, *hashes: str, currency: str = "USD"
) -> None:
    parsed = earnings.parse_earning(
        {
            "external_id": external_id,
            "beneficiary": who,
            "amount": amount,
            "currency": currency,
            "event_hashes": list(hashes),
        }
    )
    with db.write(engine) as conn:
        earnings.add_earning(conn, parsed, "swarm")


@dataclass
class Approver:
    name: str
    secret: str
    t: float = T0

    def next_code(self) -> tuple[str, float]:
        """A fresh code for a fresh time step."""
        self.t += 30
        return pyotp.TOTP(self.secret).at(self.t), self.t


def approver(
    engine: Engine, name: str, limit_minor: int = 1_000_000, currency: str = "USD"
) -> Approver:
    with db.write(engine) as conn:
        secret = approvals.add_approver(conn, name, limit_minor, currency, BOX, "admin")
    return Approver(name, secret)


def authorise(
    engine: Engine,
    who: Approver,
    what: str,
    batch_id: str,
    step: Callable[[Connection, Any, str], Any],
    code: str | None = None,
    now: float | None = None,
) -> Any:
    """``step(conn, approver, batch_id)`` through ``approvals.authorised``, under ``code`` at
    ``now``, or by default under ``who``'s next fresh code at its time."""
    if code is None:
        code, now = who.next_code()
    return approvals.authorised(
        engine,
        who.name,
        code,
        BOX,
        approvals.ApprovalPolicy(),
        what,
        ("payout_batch", batch_id),
        lambda conn, a: step(conn, a, batch_id),
        now=now,
    )


def approve(
    engine: Engine, who: Approver, batch_id: str, code: str | None = None, now: float | None = None
) -> dict:
    return authorise(engine, who, "batch_approval", batch_id, approvals.approve, code, now)


def retry(
    engine: Engine, who: Approver, batch_id: str, code: str | None = None, now: float | None = None
) -> Any:
    """An approver sends a submission_failed batch back to approved (``submission.retry``)."""
    return authorise(engine, who, "batch_retry", batch_id, submission.retry, code, now)


def cancel_with_code(engine: Engine, who: Approver, batch_id: str, reason: str) -> Any:
    """An approver cancels an approved or submission_failed batch under a fresh code."""
    return authorise(
        engine,
        who,
        "batch_cancellation",
        batch_id,
        lambda conn, a, b: approvals.cancel(conn, a.name, b, reason, with_code=True),
    )


def funded_ann_and_bob(engine: Engine) -> str:
    """USD 500 of confirmed sales (S1, its hash returned); ann accrues 150 (E1, E2), bob 50 (E3)."""
    h = sale(engine, "S1", "500.00")
    beneficiary(engine, "ann")
    beneficiary(engine, "bob")
    earning(engine, "E1", "ann", "100.00", h)
    earning(engine, "E2", "ann", "50.00", h)
    earning(engine, "E3", "bob", "50.00", h)
    return h


def pending_batch(engine: Engine, policy: BatchPolicy, amount: str) -> str:
    """USD 100.00 confirmed (S1); one paypal batch paying ann ``amount`` (E1), pending approval."""
    h = sale(engine, "S1", "100.00")
    beneficiary(engine, "ann")
    earning(engine, "E1", "ann", amount, h)
    [batch] = build_batches(engine, policy, "maker").batches
    batch_id: str = batch["batch_id"]
    return batch_id


def approved_batch(engine: Engine, policy: BatchPolicy, amount: str) -> tuple[str, Approver]:
    """``pending_batch``, approved by a new approver carol (returned with it)."""
    batch_id = pending_batch(engine, policy, amount)
    carol = approver(engine, "carol")
    approve(engine, carol, batch_id)
    return batch_id, carol


def submitted_batch(engine: Engine, batch_id: str, who: Approver) -> list[Any]:
    """Approve and submit ``batch_id`` in the books only (no gateway): every item is
    ``submitted``, none reported yet; returns the item rows."""
    result = approve(engine, who, batch_id)
    with db.write(engine) as conn:
        payouts.start_submission(conn, batch_id, result["approval_version"], "submitter")
        state_machine.move_batch(conn, batch_id, "submitted", "gateway")
        items = item_rows(engine, batch_id)
        for item in items:
            state_machine.move_item(conn, item.id, "submitted", "gateway")
    return items


def batch_row(engine: Engine, batch_id: str) -> Any:
    with db.read(engine) as conn:
        return conn.execute(sa.select(payout_batches).where(payout_batches.c.id == batch_id)).one()


def item_rows(engine: Engine, batch_id: str) -> list[Any]:
    with db.read(engine) as conn:
        return list(
            conn.execute(
                sa.select(payout_items)
                .where(payout_items.c.batch_id == batch_id)
                .order_by(payout_items.c.id)
            )
        )

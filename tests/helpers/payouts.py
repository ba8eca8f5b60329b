"""Builders for payout tests: funded books, beneficiaries, earnings, approvers."""

from __future__ import annotations

from dataclasses import dataclass

import pyotp
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import approvals, beneficiaries, db, earnings, revenue
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


def approve(
    engine: Engine, who: Approver, batch_id: str, code: str | None = None, now: float | None = None
) -> dict:
    if code is None:
        code, now = who.next_code()
    return approvals.authorised(
        engine,
        who.name,
        code,
        BOX,
        approvals.ApprovalPolicy(),
        "batch_approval",
        ("payout_batch", batch_id),
        lambda conn, a: approvals.approve(conn, a, batch_id),
        now=now,
    )

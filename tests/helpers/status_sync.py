"""Builders for the status-poll tests: submitted batches at the sandbox, and what the books say."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster import submission
from finsup_dagster.gateways.payouts import PayoutGateway
from finsup_dagster.ledger import balance, db
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.schema import earnings, gateway_events, journal_entries, transaction_log
from finsup_dagster.resources.gateways import payout_gateway
from tests.helpers.payouts import approve, approver, beneficiary, earning, sale

POLICY = BatchPolicy(min_item={"*": "1"}, dual_approval_over={"*": "1000000"})


def gateways(resources: dict[str, Any]) -> Callable[[str], PayoutGateway]:
    """``gateway_for`` from the submission job's resources (``submission_resources``)."""
    return partial(
        payout_gateway,
        paypal=resources["paypal_payouts"],
        payoneer=resources["payoneer"],
        bank=resources["bank_outbox"],
    )


def submitted_batch(
    engine: Engine,
    gateway_for: Callable[[str], PayoutGateway],
    payees: dict[str, tuple[str, str]],
    *,
    method: str = "paypal",
    currency: str = "USD",
    funding: str = "1000.00",
) -> str:
    """One batch paying each payee (name -> (destination, amount)), approved and submitted.

    Funded by one confirmed sale of ``funding``; each payee earns once.
    """
    h = sale(engine, f"S-{method}-{currency}", funding, currency)
    for name, (destination, amount) in payees.items():
        beneficiary(engine, name, payout_method=method, destination=destination, country="DE")
        earning(engine, f"E-{name}", name, amount, h, currency=currency)
    [batch] = [b for b in build_batches(engine, POLICY, "maker").batches]
    checker = approver(engine, f"checker-{method}-{currency}".lower(), 10**9, currency)
    approve(engine, checker, batch["batch_id"])
    result = submission.submit(engine, gateway_for, batch["batch_id"], 1, "test-submit")
    assert result.status == "submitted", result
    return str(batch["batch_id"])


def item_statuses(engine: Engine, batch_id: str) -> dict[str, tuple[str, str | None]]:
    """payee -> (item status, provider status)."""
    with db.read(engine) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT b.external_id, i.status, i.provider_status FROM payout_items i "
                "JOIN beneficiaries b ON b.id = i.beneficiary_id WHERE i.batch_id = :batch"
            ),
            {"batch": batch_id},
        ).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def earning_statuses(engine: Engine) -> dict[str, str]:
    with db.read(engine) as conn:
        return dict(conn.execute(sa.select(earnings.c.external_id, earnings.c.status)).all())


def available(engine: Engine, currency: str = "USD") -> int:
    with db.read(engine) as conn:
        return balance.available_minor(conn, currency)


def counts(engine: Engine) -> tuple[int, int]:
    """(transaction-log rows, journal entries): a poll that changes nothing adds neither.

    Seal rows aside: the raw answer kept in gateway_events (a sealed table) is
    sealed, and logged as sealed, on every poll; that is evidence, not a change.
    """
    with db.read(engine) as conn:
        logs = conn.execute(
            sa.select(sa.func.count())
            .select_from(transaction_log)
            .where(transaction_log.c.action != "rows_sealed")
        ).scalar_one()
        entries = conn.execute(sa.select(sa.func.count()).select_from(journal_entries)).scalar_one()
    return int(logs), int(entries)


def poll_events(engine: Engine, batch_id: str) -> list[str]:
    """The event types of the gateway answers kept for the batch, oldest first."""
    with db.read(engine) as conn:
        return list(
            conn.execute(
                sa.select(gateway_events.c.event_type)
                .where(gateway_events.c.resource_id == batch_id)
                .order_by(gateway_events.c.id)
            ).scalars()
        )

"""Approve → submit → webhooks and polls together → the books, for every scripted outcome.

Everything over real sockets: the gateway sandbox pays one batch whose every
item is scripted to another outcome (by its recipient's tag), sends its
signed webhooks to finsup's receiver, and answers the status polls running at
the same time. Webhooks and polls race on purpose: each status must reach
the books exactly once whichever comes first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster import statuses
from finsup_dagster.ledger import db, state_machine
from finsup_dagster.ledger.journal import Account, account_balances
from finsup_dagster.ledger.schema import journal_entries, postings, transaction_log
from finsup_dagster.resources import LedgerResource
from finsup_dagster.web.pending import apply_stored
from tests.helpers.payout_sandbox import submission_resources
from tests.helpers.status_sync import (
    available,
    earning_statuses,
    gateways,
    item_statuses,
    submitted_batch,
)
from tests.helpers.webhooks import free_port, receiver, sending_sandbox

# tag -> where the item ends (the sandbox's scripted outcomes, docs/gateways.md)
OUTCOMES = {
    "success": "paid",
    "unclaimed": "unclaimed",
    "failed": "failed",
    "returned": "returned",
    "blocked": "blocked",
    "refunded": "refunded",
    "held": "held",
    "held-then-success": "paid",
    "denied": "denied",
}


def destination(method: str, name: str, tag: str) -> str:
    return f"{name}+{tag}@example.com" if method == "paypal" else f"PAYEE-{name}-{tag.upper()}"


def item_postings(engine: Engine) -> dict[str, dict[str, int]]:
    """item id -> net postings per account of the entries made for it."""
    with db.read(engine) as conn:
        rows = conn.execute(
            sa.select(
                journal_entries.c.reference_id,
                postings.c.account,
                sa.func.sum(postings.c.amount_minor),
            )
            .join(journal_entries, journal_entries.c.id == postings.c.entry_id)
            .where(journal_entries.c.reference_type == "payout_item")
            .group_by(journal_entries.c.reference_id, postings.c.account)
        )
        out: dict[str, dict[str, int]] = {}
        for ref, account, total in rows:
            if int(total):
                out.setdefault(str(ref), {})[account] = int(total)
        return out


def moves_per_item(engine: Engine) -> dict[str, list[str]]:
    with db.read(engine) as conn:
        rows = conn.execute(
            sa.select(transaction_log.c.entity_id, transaction_log.c.action)
            .where(
                transaction_log.c.entity_type == "payout_item",
                transaction_log.c.action.like("item_%"),
                transaction_log.c.action != "item_status_ignored",
            )
            .order_by(transaction_log.c.seq)
        )
        out: dict[str, list[str]] = {}
        for entity, action in rows:
            out.setdefault(str(entity), []).append(action)
        return out


@pytest.mark.parametrize("method", ["paypal", "payoneer"])
def test_every_outcome_reaches_the_books_once_by_webhook_and_poll(
    engine: Engine, ledger_url: str, tmp_path: Path, method: str
) -> None:
    port = free_port()
    urls = {method: f"http://127.0.0.1:{port}/webhooks/{method}"}
    payees = {
        f"p{n}": (destination(method, f"p{n}", tag), f"{10 + n}.00")
        for n, tag in enumerate(OUTCOMES)
    }
    expected = {f"p{n}": final for n, final in enumerate(OUTCOMES.values())}
    with (
        receiver(engine, port=port),
        sending_sandbox(tmp_path, urls, outcome_delay=0.4) as sandbox,
    ):
        resources: dict[str, Any] = submission_resources(
            sandbox, LedgerResource(url=ledger_url, home=str(tmp_path)), tmp_path / "outbox"
        )
        gateway_for = gateways(resources)
        # Funded by one sale of USD 1000.00; the batch reserves what it pays.
        batch_id = submitted_batch(engine, gateway_for, payees, method=method)
        reserved = available(engine)
        assert reserved == 100_000 - sum(1000 + 100 * n for n in range(len(OUTCOMES)))

        deadline = time.monotonic() + 30
        while True:
            # Polls race the webhooks the sandbox is sending meanwhile.
            statuses.sync(engine, gateway_for)
            apply_stored(engine)
            now = {name: status for name, (status, _) in item_statuses(engine, batch_id).items()}
            if now == expected:
                break
            assert time.monotonic() < deadline, f"not settled: {now}"
            time.sleep(0.1)
        # Whatever is still in flight is delivered, and changes nothing more.
        time.sleep(0.5)
        statuses.sync(engine, gateway_for)
        apply_stored(engine)

    final = item_statuses(engine, batch_id)
    assert {name: status for name, (status, _) in final.items()} == expected
    assert all(word for _, word in final.values()), "each item keeps the provider's own word"

    with db.read(engine) as conn:
        ids = dict(
            conn.execute(
                sa.text(
                    "SELECT b.external_id, i.id FROM payout_items i "
                    "JOIN beneficiaries b ON b.id = i.beneficiary_id WHERE i.batch_id = :b"
                ),
                {"b": batch_id},
            ).all()
        )
        assert sum(account_balances(conn).values()) == 0
    amounts = {name: int(amount.replace(".", "")) for name, (_, amount) in payees.items()}
    released = sum(
        amounts[name]
        for name, status in expected.items()
        if state_machine.ITEM_MONEY_CLASS[status] == "released"
    )
    assert available(engine) == reserved + released

    entries = item_postings(engine)
    moves = moves_per_item(engine)
    earnings_now = earning_statuses(engine)
    for name, status in expected.items():
        item = str(ids[name])
        money = state_machine.ITEM_MONEY_CLASS[status]
        amount = amounts[name]
        # Each status reached once: never two log rows (or two postings) for one move.
        assert len(moves[item]) == len(set(moves[item])), (name, moves[item])
        assert moves[item][-1] == f"item_{status}"
        if money == "committed":
            assert entries.get(item, {}) == {}
            assert earnings_now[f"E-{name}"] == "batched"
        elif money == "paid":
            assert entries[item] == {
                Account.PAYOUTS_PAYABLE: amount,
                Account.GATEWAY_CLEARING: -amount,
            }
            assert earnings_now[f"E-{name}"] == "paid"
        else:
            assert entries[item] == {
                Account.PAYOUTS_PAYABLE: amount,
                Account.BENEFICIARY_PAYOUTS: -amount,
            }
            assert earnings_now[f"E-{name}"] == "accrued"
    # Held and unclaimed items are still the provider's: the batch is not finished.
    assert statuses_of_batch(engine, batch_id) == "submitted"


def statuses_of_batch(engine: Engine, batch_id: str) -> str:
    with db.read(engine) as conn:
        status: str = conn.execute(
            sa.text("SELECT status FROM payout_batches WHERE id = :b"), {"b": batch_id}
        ).scalar_one()
        return status

"""Statuses come back by polling: approve → submit → sync against the gateway sandbox, over
real sockets, on SQLite and PostgreSQL.

What a finance team relies on: each outcome the provider reports reaches the
books once (item and batch status, postings, available balance, earnings), a
second poll of the same answers changes nothing, a gateway that fails for one
batch does not hold up the others, and an item unclaimed for too long is
cancelled at the provider before its money is released, never the other way.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster import statuses
from finsup_dagster.ledger import db, payout_status
from finsup_dagster.ledger.errors import NotFound
from finsup_dagster.ledger.schema import gateway_events
from finsup_dagster.resources import LedgerResource
from tests.helpers.payout_sandbox import payout_sandbox, submission_resources
from tests.helpers.payouts import batch_row, item_rows
from tests.helpers.status_sync import (
    available,
    counts,
    earning_statuses,
    gateways,
    item_statuses,
    poll_events,
    submitted_batch,
)

DELAY = 1.0  # the sandbox's outcome_delay: statuses move this long after submission

PAYPAL_PAYEES = {
    "ann": ("ann@example.com", "100.00"),  # SUCCESS
    "bob": ("bob+failed@example.com", "50.00"),
    "cy": ("cy+unclaimed@example.com", "30.00"),
    "dee": ("dee+held-then-success@example.com", "20.00"),
    "eve": ("eve+returned@example.com", "10.00"),
}


@pytest.fixture
def ledger(ledger_url: str, tmp_path: Path) -> LedgerResource:
    return LedgerResource(url=ledger_url, home=str(tmp_path))


def later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_each_paypal_outcome_reaches_the_books_once_and_a_second_poll_changes_nothing(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path, outcome_delay=DELAY) as sandbox:
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        batch_id = submitted_batch(engine, gateway_for, PAYPAL_PAYEES)
        assert available(engine) == 100_000 - 21_000, "the batch's 210.00 is committed"

        first = statuses.sync(engine, gateway_for)  # nothing has moved yet: PENDING
        [polled] = first.batches
        assert polled.batch_id == batch_id and polled.error is None
        assert {s for s, _ in item_statuses(engine, batch_id).values()} == {"processing"}
        assert available(engine) == 100_000 - 21_000

        time.sleep(DELAY * 2.5)  # every scripted outcome has happened
        second = statuses.sync(engine, gateway_for)
        assert item_statuses(engine, batch_id) == {
            "ann": ("paid", "SUCCESS"),
            "bob": ("failed", "FAILED"),
            "cy": ("unclaimed", "UNCLAIMED"),
            "dee": ("paid", "SUCCESS"),
            "eve": ("returned", "RETURNED"),
        }
        assert second.releases == (), "unclaimed for a moment is not unclaimed for 30 days"
        # cy's item is still committed: the batch waits for it.
        assert batch_row(engine, batch_id).status == "submitted"
        # Paid 120.00 (ann, dee); bob's and eve's 60.00 back; cy's 30.00 still committed.
        assert available(engine) == 100_000 - 12_000 - 3_000
        assert earning_statuses(engine) == {
            "E-ann": "paid",
            "E-bob": "accrued",
            "E-cy": "batched",
            "E-dee": "paid",
            "E-eve": "accrued",
        }

        before = counts(engine)
        third = statuses.sync(engine, gateway_for)
        assert counts(engine) == before, "the same answers again: no log row, no posting"
        assert {c.outcome for c in third.batches[0].changes} == {"unchanged"}
        assert third.applied == 0

        # Thirty-one days on, cy has not claimed it: cancelled at PayPal, then released.
        fourth = statuses.sync(engine, gateway_for, now=later(31))
        [release] = fourth.releases
        assert (release.outcome, release.status) == ("applied", "returned")
        cancels = sandbox.requests("POST", "/v1/payments/payouts-item/")
        assert len(cancels) == 1 and cancels[0]["path"].endswith("/cancel")

    assert item_statuses(engine, batch_id)["cy"] == ("returned", "RETURNED")
    assert batch_row(engine, batch_id).status == "partially_completed"
    assert available(engine) == 100_000 - 12_000
    assert earning_statuses(engine)["E-cy"] == "accrued"
    kinds = poll_events(engine, batch_id)
    assert kinds.count("api.poll.response") == 4 and kinds[-1] == "api.cancel.response"


def test_payoneer_outcomes_and_an_unclaimed_payment_cancelled_after_a_short_setting(
    engine: Engine, ledger: LedgerResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSUP_UNCLAIMED_RELEASE_DAYS", "0.5")
    payees = {
        "pam": ("PAYEE-1", "40.00"),
        "quin": ("PAYEE-2-FAILED", "25.00"),
        "rae": ("PAYEE-3-UNCLAIMED", "15.00"),
    }
    with payout_sandbox(tmp_path, outcome_delay=0.0) as sandbox:
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        batch_id = submitted_batch(engine, gateway_for, payees, method="payoneer")
        result = statuses.sync(engine, gateway_for)
        assert result.releases == ()
        assert item_statuses(engine, batch_id) == {
            "pam": ("paid", "Transferred"),
            "quin": ("failed", "Failed"),
            "rae": ("unclaimed", "Pending Payee Approval"),
        }
        assert statuses.sync(engine, gateway_for, now=later(0.4)).releases == ()
        [release] = statuses.sync(engine, gateway_for, now=later(0.6)).releases
        assert (release.outcome, release.status) == ("applied", "cancelled")

    assert item_statuses(engine, batch_id)["rae"] == ("cancelled", "Cancelled")
    assert batch_row(engine, batch_id).status == "partially_completed"
    assert available(engine) == 100_000 - 4_000
    assert earning_statuses(engine) == {"E-pam": "paid", "E-quin": "accrued", "E-rae": "accrued"}


def test_a_batch_all_paid_is_completed_and_none_paid_is_failed(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path) as sandbox:
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        paid = submitted_batch(engine, gateway_for, {"ann": ("ann@example.com", "10.00")})
        failed = submitted_batch(
            engine,
            gateway_for,
            {"bob": ("bob+blocked@example.com", "10.00")},
            currency="EUR",
        )
        result = statuses.sync(engine, gateway_for)
    assert {b.batch_id: b.status_after for b in result.batches} == {
        paid: "completed",
        failed: "failed",
    }
    assert item_statuses(engine, failed) == {"bob": ("blocked", "BLOCKED")}
    assert available(engine, "EUR") == 100_000


def test_a_gateway_fault_on_one_batch_leaves_it_as_it_was_and_the_others_are_booked(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(
            sandbox, ledger, tmp_path / "outbox", retry_attempts=2, retry_seconds=1.0
        )
        gateway_for = gateways(resources)
        usd = submitted_batch(engine, gateway_for, {"ann": ("ann@example.com", "10.00")})
        eur = submitted_batch(
            engine, gateway_for, {"bob": ("bob@example.com", "10.00")}, currency="EUR"
        )
        down = batch_row(engine, usd).gateway_batch_id
        sandbox.fault(
            kind="status", status=503, count=10, path_prefix=f"/v1/payments/payouts/{down}"
        )
        before = available(engine, "USD")

        result = statuses.sync(engine, gateway_for)
        by_batch = {b.batch_id: b for b in result.batches}
        error = by_batch[usd].error
        assert error is not None and "\n" not in error and by_batch[usd].transient
        assert by_batch[eur].status_after == "completed"
        assert batch_row(engine, usd).status == "submitted"
        assert item_statuses(engine, usd) == {"ann": ("submitted", None)}
        assert available(engine, "USD") == before
        assert result.unreachable and len(result.failures) == 1
        assert poll_events(engine, usd)[-1] == "api.poll.error"

        sandbox.state.faults.clear()  # the gateway is back: the next poll books it
        again = statuses.sync(engine, gateway_for)
    assert [b.batch_id for b in again.batches] == [usd]
    assert batch_row(engine, usd).status == "completed"


def test_a_refused_cancel_leaves_the_unclaimed_item_as_it_is(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path) as sandbox:
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        batch_id = submitted_batch(
            engine, gateway_for, {"cy": ("cy+unclaimed@example.com", "5.00")}
        )
        statuses.sync(engine, gateway_for)
        before = counts(engine), available(engine)
        sandbox.fault(
            kind="raw",
            status=400,
            body='{"name":"ITEM_ALREADY_PROCESSED","message":"claimed meanwhile"}',
            path_prefix="/v1/payments/payouts-item/",
        )
        result = statuses.sync(engine, gateway_for, now=later(31))
    [release] = result.releases
    assert (release.outcome, release.status) == ("refused", "unclaimed")
    assert release.detail and not result.failures, "a refused cancel warns, it does not fail"
    assert result.errors == [
        f"item {release.item_id} (batch {batch_id}): cancel refused: {release.detail}"
    ]
    assert item_statuses(engine, batch_id) == {"cy": ("unclaimed", "UNCLAIMED")}
    assert (counts(engine), available(engine)) == before
    assert poll_events(engine, batch_id)[-1] == "api.cancel.error"


def test_a_bank_batch_is_skipped_with_a_note_and_an_unknown_batch_is_refused(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path) as sandbox:
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        bank = submitted_batch(
            engine,
            gateway_for,
            {"ida": ("DE89370400440532013000/COBADEFFXXX", "20.05")},
            method="bank",
            currency="EUR",
        )
        [skipped] = statuses.sync(engine, gateway_for).batches
        assert skipped.batch_id == bank and skipped.error is None
        assert skipped.skipped and "no status API" in skipped.skipped
        assert batch_row(engine, bank).status == "submitted"
        asked = [r for r in sandbox.requests() if not r["path"].startswith("/_sandbox")]
        assert asked == [], "a bank file has nobody to ask"
        with pytest.raises(NotFound, match="no payout batch 'nope'"):
            statuses.sync(engine, gateway_for, batch_id="nope")


def paypal_item_event(event_id: str, item_id: int, gateway_item_id: str | None) -> str:
    """A PayPal PAYMENT.PAYOUTS-ITEM.SUCCEEDED webhook body, as the receiver stores it."""
    resource = {
        "payout_item_id": gateway_item_id,
        "transaction_status": "SUCCESS",
        "payout_item": {"sender_item_id": str(item_id)},
    }
    return json.dumps(
        {"id": event_id, "event_type": "PAYMENT.PAYOUTS-ITEM.SUCCEEDED", "resource": resource}
    )


def test_stored_webhook_events_left_waiting_are_applied_by_the_next_poll(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path, outcome_delay=60) as sandbox:  # PayPal says PENDING
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        batch_id = submitted_batch(engine, gateway_for, {"ann": ("ann@example.com", "10.00")})
        [item] = item_rows(engine, batch_id)
        with db.write(engine) as conn:
            rows = [
                payout_status.store_event(
                    conn,
                    gateway="paypal",
                    event_id=event_id,
                    event_type="PAYMENT.PAYOUTS-ITEM.SUCCEEDED",
                    resource_id=None,
                    body=paypal_item_event(event_id, item_id, gid),
                    headers={},
                    signature_valid=True,
                    outcome="unknown_item",  # as the receiver left them
                )
                for event_id, item_id, gid in (
                    ("WH-1", item.id, item.gateway_item_id),  # overtook the submission
                    ("WH-2", 999_999, None),  # an item the books do not know (yet)
                )
            ]
        result = statuses.sync(engine, gateway_for)
        assert statuses.sync(engine, gateway_for, batch_id=batch_id).webhooks == {}

    assert result.webhooks == {"applied": 1, "unknown_item": 1}
    assert item_statuses(engine, batch_id) == {"ann": ("paid", "SUCCESS")}
    assert batch_row(engine, batch_id).status == "completed"
    with db.read(engine) as conn:
        waiting = [(r.id, r.outcome) for r in payout_status.unprocessed_events(conn)]
        done = conn.execute(
            sa.select(gateway_events.c.outcome, gateway_events.c.processed_at).where(
                gateway_events.c.id == rows[0]
            )
        ).one()
    assert waiting == [(rows[1], "unknown_item")], "still waiting for its item"
    assert done.outcome == "applied" and done.processed_at is not None

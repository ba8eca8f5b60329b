"""Payouts that left: batches submitted to the sandbox for real, then left unanswered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from finsup_dagster import submission
from finsup_dagster.ledger import db
from finsup_dagster.ledger import submission as books
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.payout_status import StatusReport, apply_report
from tests.helpers.payout_sandbox import payout_sandbox
from tests.helpers.payouts import approve, approver, funded_ann_and_bob, item_rows

POLICY = BatchPolicy(min_item={"*": "1"}, dual_approval_over={"*": "1000000"})
LATER = timedelta(hours=49)  # past the default 48 h threshold


def approved_two_item_batch(engine: Engine) -> str:
    """One PayPal batch paying ann 150.00 and bob 50.00, approved."""
    funded_ann_and_bob(engine)
    [batch] = build_batches(engine, POLICY, "maker").batches
    approve(engine, approver(engine, "carol"), batch["batch_id"])
    return str(batch["batch_id"])


def submitted_batch(engine: Engine, tmp_path: Path) -> tuple[str, list[int]]:
    """The two-item batch submitted to the sandbox over real sockets: (batch id, item ids)."""
    batch_id = approved_two_item_batch(engine)
    with db.read(engine) as conn:
        version = books.approval_version_of(conn, batch_id)
    with payout_sandbox(tmp_path) as sandbox:
        result = submission.submit(engine, lambda m: sandbox.paypal(), batch_id, version, "test")
    assert result.status == "submitted"
    return batch_id, [int(r.id) for r in item_rows(engine, batch_id)]


def submitting_batch(engine: Engine, tmp_path: Path) -> str:
    """The two-item batch left ``submitting``: every answer of the sandbox is lost."""
    batch_id = approved_two_item_batch(engine)
    with payout_sandbox(tmp_path) as sandbox:
        sandbox.fault(kind="drop", count=50, path_prefix="/v1/payments/payouts")
        with pytest.raises(submission.SubmissionInterrupted):
            submission.submit(engine, lambda m: sandbox.paypal(), batch_id, 1, "test")
    return batch_id


def report(engine: Engine, item_id: int, provider_status: str) -> str:
    """PayPal's word on an item, applied as a poll would (``payout_status.apply_report``)."""
    with db.write(engine) as conn:
        return apply_report(
            conn,
            StatusReport(
                gateway="paypal",
                provider_status=provider_status,
                item_id=item_id,
                gateway_item_id=None,
                source="poll",
            ),
            "test",
        )


def move_on(engine: Engine, item_id: int, provider_status: str = "SUCCESS") -> None:
    """The provider's final word on an item (paid, by default)."""
    assert report(engine, item_id, provider_status) == "applied"


def hours_later(hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)

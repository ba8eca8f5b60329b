"""Stuck payouts: items the provider took and never settled, batches never confirmed sent.

Real batches submitted to the sandbox over real sockets, on SQLite and
PostgreSQL; the clock is moved by asking ``stuck_items`` about a later ``now``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db
from finsup_dagster.ledger.stuck import current_status, stuck_items
from tests.helpers.cli import assert_one_line_error, run, run_json
from tests.helpers.stuck import (
    hours_later,
    move_on,
    report,
    submitted_batch,
    submitting_batch,
)

THRESHOLD = timedelta(hours=48)


def test_submitted_items_are_stuck_only_past_the_threshold_and_until_they_move_on(
    engine: Engine, tmp_path: Path
) -> None:
    batch_id, (ann, bob) = submitted_batch(engine, tmp_path)
    with db.read(engine) as conn:
        assert stuck_items(conn, THRESHOLD) == []  # just sent: not stuck
        assert stuck_items(conn, THRESHOLD, hours_later(47)) == []
        stuck = stuck_items(conn, THRESHOLD, hours_later(49))
    assert [(s.kind, s.item_id) for s in stuck] == [("item", ann), ("item", bob)]
    first = stuck[0]
    assert first.batch_id == batch_id and first.method == "paypal"
    assert first.status == "submitted" and first.currency == "USD"
    assert first.amount_minor == 15000  # ann: 100.00 + 50.00
    assert first.gateway_batch_id and first.gateway_item_id  # the sandbox's ids
    assert 49 * 3600 - 60 <= first.age_seconds <= 49 * 3600 + 60
    assert first.key == f"stuck:item:{ann}" and first.subject_id == str(ann)
    # Submitted in the same transaction that stamped the batch: the item changed then too.
    assert first.status_changed_at.endswith("Z") and first.since.endswith("Z")
    shown = first.as_dict()
    assert shown["age_hours"] == pytest.approx(49, abs=0.1) and shown["key"] == first.key

    # The provider's PENDING (our processing) is not an answer: still stuck, same age.
    assert report(engine, bob, "PENDING") == "applied"
    assert report(engine, bob, "PENDING") == "unchanged"
    move_on(engine, ann)  # SUCCESS: paid
    with db.read(engine) as conn:
        [left] = stuck_items(conn, THRESHOLD, hours_later(49))
        assert current_status(conn, "item", str(ann)) == "paid"
        assert current_status(conn, "batch", batch_id) == "submitted"
    assert (left.item_id, left.status, left.provider_status) == (bob, "processing", "PENDING")
    assert left.since == first.since and left.status_changed_at > first.status_changed_at


def test_a_batch_left_submitting_is_stuck_as_a_whole(engine: Engine, tmp_path: Path) -> None:
    batch_id = submitting_batch(engine, tmp_path)
    with db.read(engine) as conn:
        assert stuck_items(conn, THRESHOLD) == []
        [stuck] = stuck_items(conn, THRESHOLD, hours_later(49))
    assert (stuck.kind, stuck.batch_id, stuck.item_id) == ("batch", batch_id, None)
    assert stuck.status == "submitting" and stuck.amount_minor == 20000
    assert stuck.key == f"stuck:batch:{batch_id}"


@pytest.fixture
def books(finsup_env: Path, engine: Engine) -> Engine:
    """The CLI's books: ``engine`` is on the URL ``finsup_env`` points the CLI at."""
    return engine


def test_report_stuck_payouts_lists_them_as_a_table_and_as_json(
    books: Engine, tmp_path: Path
) -> None:
    batch_id, (ann, bob) = submitted_batch(books, tmp_path)
    assert run_json("report-stuck-payouts") == []  # 48 h by default: nothing yet
    proc = run("report-stuck-payouts")
    assert proc.returncode == 0 and "no payout is stuck" in proc.stdout

    rows = run_json("report-stuck-payouts", "--older-than", "0")
    assert [(r["item_id"], r["batch_id"], r["status"]) for r in rows] == [
        (ann, batch_id, "submitted"),
        (bob, batch_id, "submitted"),
    ]
    assert rows[0]["gateway_item_id"] and rows[0]["alert"] is None
    assert {"age_hours", "since", "status_changed_at", "gateway_batch_id"} <= set(rows[0])
    table = run("report-stuck-payouts", "--older-than", "0", env={**_env(), "COLUMNS": "300"})
    assert table.returncode == 0
    assert batch_id in table.stdout and "150.00 USD" in table.stdout
    assert "2 stuck past 0h" in table.stdout

    assert_one_line_error(run("report-stuck-payouts", "--older-than", "-1"), "zero or more")
    bad = run("report-stuck-payouts", env={**_env(), "FINSUP_STUCK_AFTER_HOURS": "soon"})
    assert_one_line_error(bad, "FINSUP_STUCK_AFTER_HOURS must be a number of hours")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)

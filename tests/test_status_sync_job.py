"""payout_status_sensor and the sync_payout_statuses job: one poll per interval while batches
are open, what the run shows, retries while a gateway is down, then one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy.engine import Engine

from finsup_dagster.jobs_statuses import sync_payout_statuses
from finsup_dagster.resources import LedgerResource
from finsup_dagster.sensors.payout_status import POLL_SECONDS, payout_status_sensor, poll_request
from tests.helpers.payout_sandbox import payout_sandbox, submission_resources
from tests.helpers.payouts import batch_row
from tests.helpers.status_sync import gateways, item_statuses, submitted_batch


@pytest.fixture
def ledger(ledger_url: str, tmp_path: Path) -> LedgerResource:
    return LedgerResource(url=ledger_url, home=str(tmp_path))


def tick(ledger: LedgerResource, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    context = dg.build_sensor_context(cursor=cursor, resources={"ledger": ledger})
    data = payout_status_sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return dict(event.event_specific_data.metadata)  # type: ignore[union-attr]


def test_the_sensor_asks_for_one_poll_per_interval_while_batches_are_open(
    engine: Engine, ledger: LedgerResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One interval for the whole test: a bucket boundary mid-test would change the key.
    monkeypatch.setattr("finsup_dagster.sensors.payout_status._now", lambda: 1_800_000_000.0)
    assert POLL_SECONDS == 300, "FINSUP_STATUS_POLL_SECONDS defaults to five minutes"
    requests, cursor = tick(ledger, None)
    assert requests == [] and cursor is None, "nothing submitted: nothing to poll"

    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(sandbox, ledger, tmp_path / "outbox")
        batch_id = submitted_batch(
            engine, gateways(resources), {"ann": ("ann@example.com", "10.00")}
        )
        [request], cursor = tick(ledger, None)
        assert request.run_key is not None and request.run_key.startswith("poll:")
        assert json.loads(cursor or "{}")["open"] == [batch_id]
        again, cursor_after = tick(ledger, cursor)
        assert again == [] and cursor_after == cursor, "a tick in the same interval: no storm"
        replay, _ = tick(ledger, None)  # a lost cursor asks under the same key
        assert [r.run_key for r in replay] == [request.run_key]

        result = sync_payout_statuses.execute_in_process(
            run_config=request.run_config, resources=resources
        )
        assert result.success
        metadata = output_metadata(result)
        assert metadata["applied"].value == 1 and metadata["errors"].value == 0
        [polled] = metadata["result"].value["batches"]
        assert (polled["batch_id"], polled["status_after"]) == (batch_id, "completed")
        assert batch_row(engine, batch_id).status == "completed"

    requests, _ = tick(ledger, cursor)
    assert requests == [], "a completed batch is not polled again"


def test_each_interval_gets_its_own_run_key_and_a_new_open_batch_its_own() -> None:
    start = 300.0 * 6_000_000  # the start of an interval
    first, cursor = poll_request(["b1"], start, 300, None)
    assert isinstance(first, dg.RunRequest)
    same, same_cursor = poll_request(["b1"], start + 299, 300, cursor)
    assert isinstance(same, dg.SkipReason) and same_cursor == cursor
    # Ticks are at least one interval apart: the next tick is always in a new bucket.
    nxt, _ = poll_request(["b1"], start + 300, 300, same_cursor)
    assert isinstance(nxt, dg.RunRequest) and nxt.run_key != first.run_key
    more, _ = poll_request(["b1", "b2"], start + 1, 300, cursor)
    assert isinstance(more, dg.RunRequest) and more.run_key != first.run_key
    none, kept = poll_request([], start, 300, cursor)
    assert isinstance(none, dg.SkipReason) and kept == cursor


def test_a_bank_batch_alone_starts_no_poll(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(sandbox, ledger, tmp_path / "outbox")
        submitted_batch(
            engine,
            gateways(resources),
            {"ida": ("DE89370400440532013000/COBADEFFXXX", "20.05")},
            method="bank",
            currency="EUR",
        )
    requests, _ = tick(ledger, None)
    assert requests == [], "a bank file has no status API to poll"


def test_a_gateway_that_stays_down_fails_the_run_in_one_line_after_its_retries(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(
            sandbox, ledger, tmp_path / "outbox", retry_attempts=2, retry_seconds=1.0
        )
        batch_id = submitted_batch(
            engine, gateways(resources), {"ann": ("ann@example.com", "10.00")}
        )
        asked_before = len(sandbox.requests("GET", "/v1/payments/payouts/"))
        sandbox.fault(kind="status", status=503, count=100, path_prefix="/v1/payments/payouts/")
        config = {"ops": {"sync_statuses": {"config": {"retries": 1, "retry_wait_seconds": 0}}}}
        result = sync_payout_statuses.execute_in_process(
            run_config=config, resources=resources, raise_on_error=False
        )
        polls = sandbox.requests("GET", "/v1/payments/payouts/")[asked_before:]
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data.user_failure_data
    assert data is not None and data.description is not None
    assert data.description.startswith(f"polling payout statuses: batch {batch_id}: ")
    assert "\n" not in data.description and "secret" not in data.description.lower()
    assert len(polls) == 2 * 2, "two runs of the step, each call tried twice"
    assert batch_row(engine, batch_id).status == "submitted"
    assert item_statuses(engine, batch_id) == {"ann": ("submitted", None)}

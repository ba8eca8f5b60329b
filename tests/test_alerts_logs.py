"""Structured logs: one JSON object a line, the batch id following a submission through.

The real submission of a real batch to the sandbox over sockets: every line it
logs (its own trail, the gateway client's) carries the batch id.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from finsup_dagster import logs
from tests.helpers.stuck import submitted_batch


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logs.configure(logging.DEBUG, stream)
    try:
        yield stream
    finally:
        logging.getLogger("finsup").removeHandler(handler)
        logging.getLogger("finsup").setLevel(logging.NOTSET)


def parsed(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_json_with_the_bound_context_and_extra_fields(json_lines: io.StringIO) -> None:
    log = logging.getLogger("finsup.test")
    with logs.bound(batch_id="pb_1"):
        log.info("step %s", "one", extra={"attempt": 2})
        with logs.bound(item_id=7):
            assert logs.context() == {"batch_id": "pb_1", "item_id": 7}
            log.warning("inner")
        assert logs.correlation_id() == "pb_1"
    log.info("outside")
    first, inner, outside = parsed(json_lines)
    assert first["msg"] == "step one" and first["batch_id"] == "pb_1" and first["attempt"] == 2
    assert first["level"] == "info" and first["logger"] == "finsup.test"
    assert first["ts"].endswith("Z")
    assert inner["item_id"] == 7 and inner["level"] == "warning"
    assert "batch_id" not in outside and logs.correlation_id() is None


def test_each_thread_keeps_its_own_batch_id(json_lines: io.StringIO) -> None:
    log = logging.getLogger("finsup.test")

    def work(batch_id: str) -> None:
        with logs.bound(batch_id=batch_id):
            log.info("working")

    threads = [threading.Thread(target=work, args=(f"pb_{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(line["batch_id"] for line in parsed(json_lines)) == [f"pb_{n}" for n in range(4)]


def test_a_submission_logs_its_trail_under_its_batch_id(
    engine: Engine, tmp_path: Path, json_lines: io.StringIO
) -> None:
    batch_id, _ = submitted_batch(engine, tmp_path)
    lines = parsed(json_lines)
    trail = [line for line in lines if line.get("event") == "payout_submission"]
    assert [line["msg"] for line in trail] == [
        "payout_submission started",
        "payout_submission finished",
    ]
    assert trail[-1]["outcome"] == "submitted"
    # The gateway client's own lines, logged inside the submission, carry it too.
    assert any(line["logger"] == "finsup.gateways" for line in lines)
    assert all(line["batch_id"] == batch_id for line in lines)
    # Every status change on the way, from the state machine, under the same id.
    moves = [
        (line.get("item_id"), line["from_status"], line["to_status"])
        for line in lines
        if line["logger"] == "finsup.trail" and "from_status" in line
    ]
    assert (None, "approved", "submitting") in moves
    assert (None, "submitting", "submitted") in moves
    assert any(to == "submitted" and item is not None for item, _, to in moves)


def test_json_logs_are_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINSUP_LOG_FORMAT", raising=False)
    assert logs.configure_from_env() is None
    monkeypatch.setenv("FINSUP_LOG_FORMAT", "json")
    monkeypatch.setenv("FINSUP_LOG_LEVEL", "warning")
    handler = logs.configure_from_env()
    try:
        assert handler is not None and isinstance(handler.formatter, logs.JsonFormatter)
        assert logs.configure_from_env() is handler  # once, however often it is asked
        assert logging.getLogger("finsup").level == logging.WARNING
    finally:
        logging.getLogger("finsup").removeHandler(handler)
        logging.getLogger("finsup").setLevel(logging.NOTSET)

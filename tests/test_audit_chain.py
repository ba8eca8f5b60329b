"""Any single-row tamper with the transaction log is found, and the first bad row is named.

What the user relies on: ``finsup verify-audit-chain`` exits 0 on books nobody
touched, and exits 1 naming the first broken row when someone with database
access edited, deleted or inserted one row of the transaction log behind the
books' back (raw SQL, as an attacker would), whichever row and column it is,
including the first and the last row. ``audit_log.verify`` reports the same
row as ``first_bad_seq``. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import audit_log, controls, db, payouts, revenue_files, state_machine
from finsup_dagster.ledger.schema import transaction_log

# Every column a tamperer could edit: all but the sequence number (a gap is its own test).
EDITABLE_COLUMNS = tuple(c.name for c in transaction_log.c if c.name != "seq")
REVENUE_CSV = """\
source,external_id,amount,currency,occurred_at,kind,status
stripe,ch_1,120.00,USD,2026-01-02T10:00:00+00:00,sale,confirmed
stripe,ch_2,80.5,USD,2026-01-02T11:00:00+02:00,sale,projected
stripe,fee_1,3.10,USD,2026-01-02T10:00:00Z,fee,confirmed
stripe,ch_2,80.50,USD,2026-01-02T09:00:00Z,sale,confirmed
stripe,ch_1,120,USD,2026-01-02T10:00:00Z,sale,projected
"""


@dataclass(frozen=True)
class History:
    """The books after some ordinary work; seqs of the rows the tampers aim at."""

    last: int
    middle: int  # the batch_created row: it has an actor, an amount and a detail
    head_hash: str


def _finsup() -> str:
    beside = Path(sys.executable).with_name("finsup")
    found = str(beside) if beside.exists() else shutil.which("finsup")
    assert found, "the finsup console script is not installed in this environment"
    return found


@pytest.fixture
def history(engine: Engine, tmp_path: Path) -> History:
    path = tmp_path / "revenue.csv"
    path.write_text(REVENUE_CSV, encoding="utf-8")
    result = revenue_files.ingest_file(engine, path, actor="ingester", chunk_size=2)
    assert not result.result.rejected
    with db.write(engine) as conn:
        batch_id = payouts.create_batch(
            conn,
            method="paypal",
            currency="USD",
            created_by="alice",
            items=[payouts.ItemRequest(2_500), payouts.ItemRequest(1_250)],
        )
    with db.write(engine) as conn:
        state_machine.move_batch(conn, batch_id, "cancelled", "bob", reason="duplicate run")
    with db.write(engine) as conn:
        controls.set_reserve(conn, "USD", 5_000, "carol", "chargeback season")
    with db.read(engine) as conn:
        report = audit_log.verify(conn)
        middle = conn.execute(
            sa.text("SELECT seq FROM transaction_log WHERE action = 'batch_created'")
        ).scalar_one()
    assert report.ok, report.problem
    assert 1 < middle < report.rows, "the history is too short to have a middle row"
    return History(last=report.rows, middle=int(middle), head_hash=report.head_hash)


# --- tampers: raw SQL against the transaction log, never the product's API ---------------


def _row(conn: Connection, seq: int) -> dict[str, Any]:
    row = conn.execute(sa.text("SELECT * FROM transaction_log WHERE seq = :s"), {"s": seq})
    return dict(row.mappings().one())


def _altered(column: str, value: Any, seq: int) -> Any:
    """A plausible different value, of the column's type."""
    if column == "amount_minor":
        return (value or 0) + 1  # a cent more, or an amount where there was none
    if column == "currency":
        return "EUR" if value != "EUR" else "USD"
    if column == "detail":
        detail = json.loads(value)
        detail["reason"] = "approved by phone"
        return audit_log.canonical_json(detail)
    if column == "occurred_at":
        return value[:-2] + ("1Z" if value[-2] != "1" else "2Z")  # one microsecond off
    if column in ("prev_hash", "row_hash"):
        return hashlib.sha256(f"forged {seq}".encode()).hexdigest()
    plausible = {
        "actor": ("mallory", "eve"),
        "action": ("batch_approved", "batch_paid"),
        "entity_type": ("payout_item", "payout_batch"),
    }
    return next(v for v in (*plausible.get(column, ()), value + "0") if v != value)


def edit_column(conn: Connection, seq: int, column: str) -> int:
    old = _row(conn, seq)[column]
    new = _altered(column, old, seq)
    assert new != old
    conn.execute(
        sa.text(f"UPDATE transaction_log SET {column} = :v WHERE seq = :s"), {"v": new, "s": seq}
    )
    return seq


def delete_row(conn: Connection, seq: int) -> int:
    assert conn.execute(sa.text("DELETE FROM transaction_log WHERE seq = :s"), {"s": seq}).rowcount
    return seq


def renumber_row(conn: Connection, seq: int) -> int:
    conn.execute(sa.text("UPDATE transaction_log SET seq = seq + 1000 WHERE seq = :s"), {"s": seq})
    return seq


def _insert(conn: Connection, seq: int, prev_hash: str, chained: bool) -> int:
    row = {
        "seq": seq,
        "occurred_at": "2026-01-03T09:00:00.000000Z",
        "actor": "alice",
        "action": "batch_approved",
        "entity_type": "payout_batch",
        "entity_id": "pb_forged",
        "amount_minor": 999_999,
        "currency": "USD",
        "detail": audit_log.canonical_json({}),
        "prev_hash": prev_hash,
    }
    row["row_hash"] = (
        audit_log.row_digest(prev_hash, row)
        if chained
        else hashlib.sha256(b"looks like a hash").hexdigest()
    )
    conn.execute(
        sa.text(
            "INSERT INTO transaction_log (seq, occurred_at, actor, action, entity_type, "
            "entity_id, amount_minor, currency, detail, prev_hash, row_hash) VALUES (:seq, "
            ":occurred_at, :actor, :action, :entity_type, :entity_id, :amount_minor, :currency, "
            ":detail, :prev_hash, :row_hash)"
        ),
        row,
    )
    return seq


Tamper = Callable[[Connection, History], int]  # does the damage, returns the first bad seq


def _edit_middle(column: str) -> Tamper:
    def tamper(conn: Connection, history: History) -> int:
        return edit_column(conn, history.middle, column)

    return tamper


TAMPERS: dict[str, Tamper] = {
    # Any column of a middle row: these three here, every column in the tests below.
    **{f"edit_middle_{col}": _edit_middle(col) for col in ("actor", "amount_minor", "detail")},
    "edit_first_actor": lambda conn, h: edit_column(conn, 1, "actor"),
    "edit_last_amount_minor": lambda conn, h: edit_column(conn, h.last, "amount_minor"),
    "delete_middle": lambda conn, h: delete_row(conn, h.middle),
    "delete_first": lambda conn, h: delete_row(conn, 1),
    "delete_last": lambda conn, h: delete_row(conn, h.last),
    "renumber_middle": lambda conn, h: renumber_row(conn, h.middle),
    # Chained to the real head, but its own hash is made up.
    "append_unchained": lambda conn, h: _insert(conn, h.last + 1, h.head_hash, chained=False),
    # Hashed correctly (the algorithm is public): only the head row gives it away.
    "append_chained": lambda conn, h: _insert(conn, h.last + 1, h.head_hash, chained=True),
    "insert_seq_zero": lambda conn, h: _insert(conn, 0, audit_log.GENESIS_HASH, chained=True),
}


# --- the tests ------------------------------------------------------------------------------


def _run_verify() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_finsup(), "verify-audit-chain"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


def test_untampered_books_verify(history: History, finsup_env: Path) -> None:
    run = _run_verify()
    assert run.returncode == 0, run.stderr
    assert f"audit chain intact: {history.last} rows, head {history.head_hash}" in run.stdout


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_single_row_tamper_is_found_at_the_right_row(
    kind: str, engine: Engine, history: History, finsup_env: Path
) -> None:
    with engine.begin() as conn:
        bad_seq = TAMPERS[kind](conn, history)

    with db.read(engine) as conn:
        report = audit_log.verify(conn)
    assert not report.ok
    assert report.first_bad_seq == bad_seq, report.problem

    run = _run_verify()
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert f"audit chain BROKEN at row {bad_seq}: " in run.stderr
    assert "intact" not in run.stdout


@pytest.mark.parametrize("column", EDITABLE_COLUMNS)
def test_editing_any_column_of_a_middle_row_is_found(
    column: str, engine: Engine, history: History
) -> None:
    """Every column, through the API only (the CLI cases above share its code path)."""
    _assert_found_then_roll_back(engine, lambda conn: edit_column(conn, history.middle, column))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_edit_or_delete_of_any_row_is_found(
    data: st.DataObject, engine: Engine, history: History
) -> None:
    """Any row, any column or a deletion, through the API; each example is rolled back."""
    seq = data.draw(st.integers(1, history.last), label="seq")
    column = data.draw(st.sampled_from((*EDITABLE_COLUMNS, "<delete>")), label="column")
    _assert_found_then_roll_back(
        engine,
        lambda conn: (
            delete_row(conn, seq) if column == "<delete>" else edit_column(conn, seq, column)
        ),
    )


def test_a_row_before_the_first_is_described_as_such(engine: Engine, history: History) -> None:
    """The reason names the extra row 0 and does not claim row 1, which is intact, is missing."""
    with engine.connect() as conn:
        conn.begin()
        try:
            TAMPERS["insert_seq_zero"](conn, history)
            report = audit_log.verify(conn)
        finally:
            conn.rollback()
    assert report.first_bad_seq == 0
    assert report.problem is not None
    assert "row 0" in report.problem
    assert "row 1 is missing" not in report.problem


def _assert_found_then_roll_back(engine: Engine, tamper: Callable[[Connection], int]) -> None:
    with engine.connect() as conn:
        conn.begin()
        try:
            bad_seq = tamper(conn)
            report = audit_log.verify(conn)
        finally:
            conn.rollback()
    assert not report.ok
    assert report.first_bad_seq == bad_seq, report.problem
    with db.read(engine) as conn:
        assert audit_log.verify(conn).ok  # the rollback really undid it

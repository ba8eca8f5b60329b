"""Any direct edit of a money table is found, named by table and row, on SQLite and PostgreSQL.

What the user relies on: someone with database access who edits a column of a
row, inserts a row or deletes one, in any table that holds money or decides
where it goes, is named by ``finsup verify-audit-chain`` (table and key) and
the command exits 1; finsup refuses to build on a tampered row; tampered books
stop batch creation through the blocking check; and a consistent rewrite of
rows, seals and chain together is found against the signed checkpoint kept
outside the ledger.

The tampers are done as an attacker would: through a plain connection of the
database driver (no finsup listener), with foreign keys off on SQLite and
``session_replication_role = replica`` on PostgreSQL, so nothing but the seals
stands in the way. Each edit is rolled back before the next.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import (
    audit_log,
    batching,
    checkpoints,
    controls,
    db,
    migrate,
    seals,
    state_machine,
    verification,
)
from finsup_dagster.ledger.schema import clawbacks, gateway_events, journal_entries, postings
from tests.helpers import payouts as fx
from tests.helpers.cli import FINSUP
from tests.helpers.migrations import ledger_at

KEY = checkpoints.derive_key("test-audit-key")


@dataclass
class Books:
    engine: Engine
    url: str
    batch_id: str


def _webhook(event_id: str, event_type: str, **fields: Any) -> sa.Insert:
    """A signed, empty PayPal webhook landing in gateway_events."""
    return sa.insert(gateway_events).values(
        gateway="paypal",
        event_id=event_id,
        event_type=event_type,
        payload="{}",
        signature_valid=True,
        received_at="2026-11-21T10:00:00.000000Z",
        **fields,
    )


@pytest.fixture
def books(engine: Engine, ledger_url: str) -> Books:
    """Every sealed table has at least one row, written through finsup's own code."""
    fx.beneficiary(engine, "ana")
    s1 = fx.sale(engine, "s1", "500.00")
    fx.sale(engine, "s2", "300.00")
    fx.earning(engine, "e1", "ana", "200.00", s1)
    bob = fx.approver(engine, "bob")
    report = batching.build_batches(engine, batching.BatchPolicy(), created_by="maker")
    batch_id = report.batches[0]["batch_id"]
    fx.approve(engine, bob, batch_id)
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, "carol", "drill")
        controls.set_payouts_frozen(conn, False, "carol", "drill over")
        controls.set_reserve(conn, "USD", 1_000, "carol", "buffer")
        conn.execute(_webhook("WH-1", "PAYMENT.PAYOUTSBATCH.SUCCESS", resource_id="PB-1"))
        entry = conn.execute(sa.select(sa.func.max(journal_entries.c.id))).scalar_one()
        earning_id = conn.execute(sa.text("SELECT min(id) FROM earnings")).scalar_one()
        ben = conn.execute(sa.text("SELECT min(id) FROM beneficiaries")).scalar_one()
        conn.execute(
            sa.insert(clawbacks).values(
                beneficiary_id=ben,
                earning_id=earning_id,
                event_hash=s1,
                amount_minor=100,
                currency="USD",
                entry_id=entry,
                created_at="2026-11-21T10:00:00.000000Z",
            )
        )
    with db.read(engine) as conn:
        for table in seals.SEALED_TABLES:
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            assert count > 0, f"the history leaves {table.name} empty"
        assert seals.verify(conn).ok
    return Books(engine, ledger_url, batch_id)


@pytest.fixture
def attacker(books: Books) -> Iterator[Engine]:
    """A plain engine on the same database: no seals listener, no finsup settings."""
    raw = sa.create_engine(db.normalise_url(books.url))
    if raw.dialect.name == "sqlite":
        # pysqlite's own transaction handling would commit at a RELEASE SAVEPOINT: take it over.
        @sa.event.listens_for(raw, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(raw, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    yield raw
    raw.dispose()


def _begin_unguarded(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")


def _named(conn: Connection, table: str, keys: set[str]) -> list[seals.Problem]:
    report = seals.verify(conn)
    return [p for p in report.problems if p.table == table and p.key in keys]


def _changed(value: Any, column: sa.Column[Any]) -> list[Any]:
    """Candidate new values for a column, most plausible first (a CHECK may refuse some)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1]
    if isinstance(value, str):
        last = "b" if value.endswith("a") else "a"
        return [value[:-1] + last, value + "x"]
    kind = column.type.python_type
    return {bool: [True], int: [1], str: ["x"]}.get(kind, ["x"])


_STATUS_VALUES = {
    "status": [
        "accrued",
        "batched",
        "paid",
        "pending_approval",
        "approved",
        "cancelled",
        "pending",
        "submitted",
        "paid",
        "projected",
        "confirmed",
        "reversed",
    ],
    "kyc_status": ["unverified", "verified", "rejected"],
    "sanctions_status": ["clear", "sanctioned", "potential_match"],
    "payout_method": ["paypal", "payoneer", "bank"],
    "tax_form_status": ["missing", "verified"],
    "kind": ["sale", "refund", "fee", "chargeback"],
    "decision": ["approve", "deny"],
}


def _edit(conn: Connection, table: sa.Table, row: dict[str, Any], column: str) -> bool:
    """Sets one column of one row to another value; False if every candidate was refused."""
    where = sa.and_(*(c == row[c.name] for c in table.primary_key.columns))
    candidates = [v for v in _STATUS_VALUES.get(column, []) if v != row[column]]
    candidates += _changed(row[column], table.c[column])
    for value in candidates:
        savepoint = conn.begin_nested()
        try:
            conn.execute(sa.update(table).where(where).values({column: value}))
        except sa.exc.DBAPIError:
            savepoint.rollback()
            continue
        savepoint.commit()
        return True
    return False


def _copy_with_new_key(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """The same row under a key (and unique values) of its own."""
    groups = [list(table.primary_key.columns)] + [
        list(c.columns) for c in table.constraints if isinstance(c, sa.UniqueConstraint)
    ]
    copy = dict(row)
    for columns in groups:
        # One column of each key is enough; leave the ones a CHECK constrains alone.
        column = next(c for c in columns if c.name not in _STATUS_VALUES)
        value = copy[column.name]
        copy[column.name] = value + 1000 if isinstance(value, int) else _changed(value, column)[0]
    return copy


@pytest.mark.parametrize("table", seals.SEALED_TABLES, ids=lambda t: t.name)
def test_every_edit_insert_and_delete_of_a_sealed_table_is_named(
    table: sa.Table, books: Books, attacker: Engine
) -> None:
    with attacker.connect() as conn:
        row = dict(
            conn.execute(sa.select(table).order_by(*table.primary_key.columns)).mappings().first()
            or {}
        )
    assert row, f"no row in {table.name}"
    key = seals.row_key(table, row)
    edited = []
    for column in (c.name for c in table.columns):
        with attacker.connect() as conn, conn.begin() as tx:
            _begin_unguarded(conn)
            if not _edit(conn, table, row, column):
                tx.rollback()
                continue
            edited.append(column)
            keys = {key}
            if column in {c.name for c in table.primary_key.columns}:
                # A new key: the old row is gone and a new one appeared; either names the table.
                keys |= {seals.row_key(table, r) for r in conn.execute(sa.select(table)).mappings()}
            found = _named(conn, table.name, keys)
            assert found, f"editing {table.name}.{column} of row {key} went unnoticed"
            tx.rollback()
    assert len(edited) == len(table.columns), f"could not edit {set(table.c.keys()) - set(edited)}"

    copy = _copy_with_new_key(table, row)
    with attacker.connect() as conn, conn.begin() as tx:
        _begin_unguarded(conn)
        conn.execute(sa.insert(table).values(copy))
        found = _named(conn, table.name, {seals.row_key(table, copy)})
        assert found and "inserted outside the books" in found[0].message
        tx.rollback()

    with attacker.connect() as conn, conn.begin() as tx:
        _begin_unguarded(conn)
        conn.execute(sa.delete(table).where(*(c == row[c.name] for c in table.primary_key.columns)))
        found = _named(conn, table.name, {key})
        assert found and "deleted outside the books" in found[0].message
        tx.rollback()

    with db.read(books.engine) as conn:
        assert seals.verify(conn).ok  # every tamper above was rolled back


def _raise_sales(conn: Connection, amount: int) -> list[int]:
    """The finding of the issue: a sales posting and its clearing posting raised alike."""
    ids = [
        conn.execute(
            sa.text(
                f"SELECT min(id) FROM postings WHERE account = '{account}' AND currency = 'USD'"
            )
        ).scalar_one()
        for account in ("income:sales", "assets:gateway_clearing")
    ]
    conn.execute(
        sa.text("UPDATE postings SET amount_minor = amount_minor - :a WHERE id = :i"),
        {"a": amount, "i": ids[0]},
    )
    conn.execute(
        sa.text("UPDATE postings SET amount_minor = amount_minor + :a WHERE id = :i"),
        {"a": amount, "i": ids[1]},
    )
    return ids


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FINSUP, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


def test_a_balanced_postings_edit_is_named_by_the_cli(
    books: Books, attacker: Engine, finsup_env: Path
) -> None:
    assert _cli("verify-audit-chain").returncode == 0
    with attacker.begin() as conn:
        ids = _raise_sales(conn, 100_000)
    with db.read(books.engine) as conn:
        assert audit_log.verify(conn).ok  # the chain alone still verifies
    run = _cli("verify-audit-chain")
    assert run.returncode == 1
    for posting in ids:
        assert f"books TAMPERED: postings row {posting} was altered outside the books" in run.stderr
    assert "intact" not in run.stdout
    data = json.loads(_cli("verify-audit-chain", "--json").stdout)
    assert not data["ok"]
    assert {(t["table"], t["key"]) for t in data["tampered"]} == {("postings", str(i)) for i in ids}


def test_finsup_refuses_to_write_over_a_tampered_row(books: Books, attacker: Engine) -> None:
    with attacker.begin() as conn:
        conn.execute(sa.text("UPDATE payout_items SET amount_minor = amount_minor + 1"))
    with db.read(books.engine) as conn:
        before = audit_log.verify(conn).rows
    with (
        pytest.raises(seals.TamperDetected, match=r"payout_items row \d+ was altered outside"),
        db.write(books.engine) as conn,
    ):
        state_machine.move_batch(conn, books.batch_id, "cancelled", "ops", reason="tidy")
    with db.read(books.engine) as conn:
        assert audit_log.verify(conn).rows == before  # nothing was written
        status = conn.execute(sa.text("SELECT status FROM payout_batches")).scalar_one()
    assert status == "approved"


def test_tampered_books_stop_building_and_submitting(
    books: Books, attacker: Engine, tmp_path: Path
) -> None:
    with attacker.begin() as conn:
        _raise_sales(conn, 100_000)
    with pytest.raises(seals.TamperDetected, match="building payout batches refused"):
        verification.ensure_intact(books.engine, tmp_path, KEY, "building payout batches")


def _forge_consistently(conn: Connection) -> None:
    """Rewrite a row, its seal, the seal root, every later chain row and the head: no trace left
    inside the database."""
    s1 = conn.execute(
        sa.text("SELECT min(id) FROM postings WHERE account = 'income:sales'")
    ).scalar_one()
    conn.execute(
        sa.text("UPDATE postings SET amount_minor = amount_minor - 100000 WHERE id = :i"), {"i": s1}
    )
    row = dict(conn.execute(sa.select(postings).where(postings.c.id == s1)).mappings().one())
    seq = conn.execute(
        sa.text("SELECT max(seq) FROM row_seals WHERE table_name = 'postings' AND row_key = :k"),
        {"k": str(s1)},
    ).scalar_one()
    conn.execute(
        sa.text(
            "UPDATE row_seals SET digest = :d WHERE table_name = 'postings' AND row_key = :k AND seq = :s"
        ),
        {"d": seals.row_digest("postings", row), "k": str(s1), "s": seq},
    )
    lines = conn.execute(
        sa.text("SELECT table_name, row_key, digest FROM row_seals WHERE seq = :s"), {"s": seq}
    ).all()
    detail = audit_log.parse_detail(
        conn.execute(
            sa.text("SELECT detail FROM transaction_log WHERE seq = :s"), {"s": seq}
        ).scalar_one()
    )
    detail["root"] = seals.root_of([tuple(line) for line in lines])
    conn.execute(
        sa.text("UPDATE transaction_log SET detail = :d WHERE seq = :s"),
        {"d": audit_log.canonical_json(detail), "s": seq},
    )
    prev = conn.execute(
        sa.text("SELECT prev_hash FROM transaction_log WHERE seq = :s"), {"s": seq}
    ).scalar_one()
    for r in (
        conn.execute(
            sa.text("SELECT * FROM transaction_log WHERE seq >= :s ORDER BY seq"), {"s": seq}
        )
        .mappings()
        .all()
    ):
        digest = audit_log.row_digest(prev, r)
        conn.execute(
            sa.text("UPDATE transaction_log SET prev_hash = :p, row_hash = :h WHERE seq = :s"),
            {"p": prev, "h": digest, "s": r["seq"]},
        )
        prev = digest
    conn.execute(sa.text("UPDATE audit_chain_head SET row_hash = :h"), {"h": prev})


def test_a_consistent_rewrite_is_found_against_the_signed_checkpoint(
    books: Books, attacker: Engine, tmp_path: Path
) -> None:
    first = verification.verify_and_checkpoint(books.engine, tmp_path, KEY)
    assert first.ok and first.checkpoint is None
    path = checkpoints.path_for(tmp_path, verification.ledger_label(books.engine))
    assert path.exists()
    with attacker.begin() as conn:
        _begin_unguarded(conn)
        _forge_consistently(conn)
    inside = verification.verify_books(books.engine)
    assert inside.ok, inside.problems()  # nothing inside the database gives the forgery away
    report = verification.verify_and_checkpoint(books.engine, tmp_path, KEY)
    assert not report.ok
    assert report.problems()[0].startswith("CHECKPOINT MISMATCH: log row ")
    assert "the chain was rewritten up to there" in report.problems()[0]


def test_an_edited_checkpoint_is_refused(books: Books, tmp_path: Path) -> None:
    assert verification.verify_and_checkpoint(books.engine, tmp_path, KEY).ok
    path = checkpoints.path_for(tmp_path, verification.ledger_label(books.engine))
    data = json.loads(path.read_text())
    data["checkpoint"]["seq"] = 1
    path.write_text(json.dumps(data))
    report = verification.verify_and_checkpoint(books.engine, tmp_path, KEY)
    assert not report.ok and "CHECKPOINT INVALID" in report.problems()[0]
    assert json.loads(path.read_text())["checkpoint"]["seq"] == 1  # kept for a look, not replaced
    other = verification.verify_and_checkpoint(books.engine, tmp_path, checkpoints.derive_key("x"))
    assert not other.ok and "signed with another FINSUP_AUDIT_KEY" in other.problems()[0]


def test_incremental_verification_starts_at_the_checkpoint(books: Books, tmp_path: Path) -> None:
    first = verification.verify_and_checkpoint(books.engine, tmp_path, KEY)
    with db.write(books.engine) as conn:
        controls.set_reserve(conn, "USD", 2_000, "carol", "more buffer")
    later = verification.verify_and_checkpoint(books.engine, tmp_path, KEY, incremental=True)
    assert later.ok and later.incremental_from == first.chain.rows
    assert later.chain.rows > first.chain.rows
    assert later.seals.rows == first.seals.rows  # rows are always compared in full


def test_the_migration_seals_existing_books(ledger_url: str) -> None:
    """Books made before seals existed get every row sealed under one logged entry."""
    eng = ledger_at(ledger_url, "0002_revenue_changed_index")
    with eng.begin() as conn:  # rows the old code wrote
        conn.execute(
            sa.text(
                "INSERT INTO journal_entries (id, posted_at, kind, description) "
                "VALUES (1, '2026-11-20T10:00:00.000000Z', 'revenue_confirmed', 'old')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO postings (id, entry_id, account, currency, amount_minor) VALUES "
                "(1, 1, 'assets:gateway_clearing', 'USD', 500), (2, 1, 'income:sales', 'USD', -500)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO controls (name, value, set_by, set_at) "
                "VALUES ('payouts_frozen', 'false', 'ops', '2026-11-20T10:00:00.000000Z')"
            )
        )
    migrate.upgrade(eng)
    with db.read(eng) as conn:
        report = seals.verify(conn)
        logged = (
            conn.execute(sa.text("SELECT detail FROM transaction_log WHERE action = 'rows_sealed'"))
            .scalars()
            .all()
        )
    assert report.ok and report.rows == 4 and report.seals == 4
    assert len(logged) == 1
    assert json.loads(logged[0])["reason"] == "migration 0003_seals_and_holds"
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE postings SET amount_minor = 600 WHERE id = 1"))
    with db.read(eng) as conn:
        assert [p.key for p in seals.verify(conn).problems] == ["1"]
    eng.dispose()


def test_writes_to_sealed_tables_outside_a_books_transaction_are_refused(engine: Engine) -> None:
    with (
        pytest.raises(seals.UnsealedWrite, match="outside a books write transaction"),
        engine.begin() as conn,
    ):
        conn.execute(_webhook("WH-2", "x"))


def test_an_insert_that_promises_its_keys_and_never_hands_them_over_is_refused(
    engine: Engine,
) -> None:
    """The KEYS_RETURNED fast path skips the key-range queries around an insert; a writer
    that then forgot to hand the keys to the seals would commit unsealed rows. The write
    is refused before its commit, and the books keep nothing of it."""
    statement = _webhook("WH-OWED", "x").execution_options(**{seals.KEYS_RETURNED: True})
    with (
        pytest.raises(seals.UnsealedWrite, match="never handed to touch_inserted"),
        db.write(engine) as conn,
    ):
        conn.execute(statement.returning(gateway_events.c.id))
    with db.read(engine) as conn:
        kept = conn.execute(
            sa.select(gateway_events.c.id).where(gateway_events.c.event_id == "WH-OWED")
        ).all()
        assert kept == []
        assert seals.verify(conn).ok

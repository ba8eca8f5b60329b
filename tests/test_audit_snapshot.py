"""The auditor's snapshot on SQLite and PostgreSQL ledgers: export, verify, tamper, as of.

Books are built once per backend (tests/helpers/audit_books.py); the snapshot is
exported once, and every tamper case edits a copy of that file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.audit import canonical, snapshot
from finsup_dagster.audit.verify import VerifyReport, verify_open, verify_snapshot
from finsup_dagster.cli import main
from finsup_dagster.ledger import audit_log, clock, db, journal, migrate, state_machine
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.schema import earnings, payout_items
from tests.conftest import create_pg_database, drop_pg_database
from tests.helpers import payouts as p
from tests.helpers.audit_books import AuditBooks, build, fake_warehouse

SNAPSHOT_TABLES = (
    "approvals",
    "approvers",
    "balance_reserves",
    "beneficiaries",
    "clawbacks",
    "controls",
    "earning_sources",
    "earnings",
    "gateway_events",
    "ingested_files",
    "journal_entries",
    "manifest_info",
    "payout_batches",
    "payout_items",
    "postings",
    "reconciliation_exceptions",
    "reconciliation_matches",
    "revenue_events",
    "transaction_log",
    "trial_balance",
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def books(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, AuditBooks, Path]]:
    folder = tmp_path_factory.mktemp(f"audit-{request.param}")
    url = f"sqlite:///{folder / 'ledger.db'}" if request.param == "sqlite" else create_pg_database()
    engine = db.make_engine(url)
    try:
        migrate.upgrade(engine)
        yield engine, build(engine), fake_warehouse(folder / "warehouse.duckdb")
    finally:
        engine.dispose()
        if request.param == "postgresql":
            drop_pg_database(url)


@pytest.fixture(scope="module")
def exported(books: tuple[Engine, AuditBooks, Path]) -> snapshot.SnapshotResult:
    engine, _, warehouse = books
    out = warehouse.parent / "snapshot.duckdb"
    return snapshot.export_snapshot(engine, out, warehouse=warehouse)


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_export_then_verify_exits_0(
    exported: snapshot.SnapshotResult, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {t for (t,) in _query(exported.path, "SELECT table_name FROM manifest")}
    assert names == set(SNAPSHOT_TABLES)
    assert all(m["rows"] > 0 for m in exported.manifest), exported.manifest
    with pytest.raises(SystemExit) as exit_:
        main(["verify-audit-snapshot", str(exported.path)])
    assert exit_.value.code == 0
    assert exported.digest in capsys.readouterr().out


def test_manifest_info_names_the_head_version_and_a_url_without_credentials(
    exported: snapshot.SnapshotResult,
) -> None:
    info = dict(_query(exported.path, "SELECT key, value FROM manifest_info"))
    assert info["chain_head_hash"] == exported.chain_head_hash
    assert int(info["chain_head_seq"]) == exported.chain_head_seq > 0
    assert info["product_version"] and info["exported_at"] == exported.exported_at
    assert "@" not in info["ledger_url"] and "postgres@" not in info["ledger_url"]
    assert info["reconciliation_source"].endswith("(read only)")


def test_no_full_tax_id_or_destination_in_the_snapshot(exported: snapshot.SnapshotResult) -> None:
    conn = duckdb.connect(str(exported.path), read_only=True)
    try:
        text = "".join(repr(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in SNAPSHOT_TABLES)
    finally:
        conn.close()
    assert "123-45-6789" not in text and "123456789" not in text
    assert "ann@example.com" not in text
    assert ("****6789",) in _query(exported.path, "SELECT tax_id_masked FROM beneficiaries")
    assert not _query(
        exported.path,
        "SELECT * FROM information_schema.columns WHERE column_name = 'totp_secret_encrypted'",
    )


def test_the_documented_sql_recomputes_the_manifest(exported: snapshot.SnapshotResult) -> None:
    """docs/audit.md's by-hand query for postings, typed as it stands, gives the manifest's row."""
    doc = (Path(__file__).parents[1] / "docs" / "audit.md").read_text()
    sql = re.search(r"<!-- by-hand: postings -->\s*```sql\n(.*?)```", doc, re.S)
    assert sql, "docs/audit.md lost its by-hand query"
    [(count, digest)] = _query(exported.path, sql.group(1))
    [(m_count, m_digest)] = _query(
        exported.path, "SELECT row_count, sha256 FROM manifest WHERE table_name = 'postings'"
    )
    assert (count, digest) == (m_count, m_digest)
    conn = duckdb.connect(str(exported.path), read_only=True)
    try:
        columns = canonical.table_columns(conn, "postings")
    finally:
        conn.close()
    assert canonical.hash_sql("postings", columns, ["id"]).strip() == " ".join(sql.group(1).split())


def _tamper(path: Path, sql: str) -> None:
    """Edits a file copy (the CLI cases, which read a file)."""
    conn = duckdb.connect(str(path))
    try:
        conn.execute(sql)
    finally:
        conn.close()


def _edit_sql(path: Path, table: str) -> str:
    """Changes one value of one row: the first column not part of the ordering key."""
    [(key,)] = _query(path, f"SELECT key_columns FROM manifest WHERE table_name = '{table}'")
    cols = _query(
        path,
        "SELECT column_name, data_type FROM information_schema.columns"
        f" WHERE table_name = '{table}' ORDER BY ordinal_position",
    )
    name, kind = next((n, k) for n, k in cols if n not in key.split(","))
    new = {
        "BIGINT": f"coalesce({name}, 0) + 1",
        "BOOLEAN": f"NOT coalesce({name}, false)",
    }.get(kind, f"coalesce({name}, '') || 'x'")
    return f"UPDATE {table} SET {name} = {new} WHERE rowid = (SELECT min(rowid) FROM {table})"


@pytest.fixture(scope="module")
def attached(exported: snapshot.SnapshotResult) -> Iterator[duckdb.DuckDBPyConnection]:
    """The exported file attached read-only; each case edits an in-memory copy of it."""
    conn = duckdb.connect()
    conn.execute(f"ATTACH '{exported.path}' AS snap (READ_ONLY)")
    try:
        yield conn
    finally:
        conn.close()


def _verify_tampered(conn: duckdb.DuckDBPyConnection, sql: str) -> VerifyReport:
    conn.execute("ATTACH ':memory:' AS copy")
    try:
        conn.execute("COPY FROM DATABASE snap TO copy")
        conn.execute("USE copy")
        conn.execute(sql)
        return verify_open(conn, Path("copy"))
    finally:
        conn.execute("USE snap")
        conn.execute("DETACH copy")


@pytest.mark.parametrize("table", SNAPSHOT_TABLES)
def test_each_edit_insert_and_delete_is_found(
    exported: snapshot.SnapshotResult, attached: duckdb.DuckDBPyConnection, table: str
) -> None:
    cases = {
        "edit": _edit_sql(exported.path, table),
        "insert": f"INSERT INTO {table} SELECT * FROM {table} LIMIT 1",
        "delete": f"DELETE FROM {table} WHERE rowid = (SELECT min(rowid) FROM {table})",
    }
    for kind, sql in cases.items():
        report = _verify_tampered(attached, sql)
        assert not report.ok, f"{kind} of {table} went unnoticed"
        assert table in {p.table for p in report.problems}, (kind, report.problems)


MANIFEST_EDITS = {
    "hash": (
        "UPDATE manifest SET sha256 = repeat('0', 64) WHERE table_name = 'postings'",
        "postings",
    ),
    "count": (
        "UPDATE manifest SET row_count = row_count + 1 WHERE table_name = 'earnings'",
        "earnings",
    ),
    "row deleted": ("DELETE FROM manifest WHERE table_name = 'approvals'", "approvals"),
    "row added": ("INSERT INTO manifest VALUES ('ghost', 0, 'x', 'a', '')", "ghost"),
    "head": (
        "UPDATE manifest_info SET value = repeat('1', 64) WHERE key = 'chain_head_hash'",
        "transaction_log",
    ),
}


@pytest.mark.parametrize("edit", MANIFEST_EDITS)
def test_a_manifest_edit_is_found_and_named(
    exported: snapshot.SnapshotResult, tmp_path: Path, edit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql, named = MANIFEST_EDITS[edit]
    copy = tmp_path / "manifest.duckdb"
    shutil.copy(exported.path, copy)
    _tamper(copy, sql)
    with pytest.raises(SystemExit) as exit_:
        main(["verify-audit-snapshot", str(copy)])
    assert exit_.value.code == 1
    assert any(line.startswith(f"{named}: ") for line in capsys.readouterr().err.splitlines())


def test_as_of_shows_the_books_of_that_instant(
    books: tuple[Engine, AuditBooks, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, state, warehouse = books
    monkeypatch.setenv("FINSUP_LEDGER_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("FINSUP_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("FINSUP_HOME", str(tmp_path))
    out = tmp_path / "then.duckdb"
    with pytest.raises(SystemExit) as exit_:
        main(["export-audit-snapshot", "--out", str(out), "--as-of", state.before_approval])
    assert exit_.value.code == 0
    report = verify_snapshot(out)
    assert report.ok, report.problems
    result = report
    trial = {
        (a, c): b
        for a, c, b in _query(
            result.path, "SELECT account, currency, balance_minor FROM trial_balance"
        )
    }
    assert trial == state.balances_then
    statuses = dict(_query(result.path, "SELECT id, status FROM payout_batches"))
    assert statuses[state.late_batch] == "pending_approval"
    assert statuses[state.paid_batch] == "submitted"
    assert not _query(result.path, f"SELECT * FROM approvals WHERE batch_id = '{state.late_batch}'")
    [(version,)] = _query(
        result.path, f"SELECT approval_version FROM payout_batches WHERE id = '{state.late_batch}'"
    )
    assert version == 0
    # The reversal came later: the sale is still confirmed, nothing clawed back yet.
    assert _query(result.path, "SELECT status FROM revenue_events WHERE external_id = 'S1'") == [
        ("confirmed",)
    ]
    assert _query(result.path, "SELECT count(*) FROM clawbacks") == [(0,)]
    assert _query(result.path, "SELECT status FROM earnings WHERE external_id = 'E2'") == [
        ("batched",)
    ]
    last = _query(result.path, "SELECT max(occurred_at) FROM transaction_log")[0][0]
    assert last <= state.before_approval
    # Nights that had not ended by then are left out.
    days = {d for (d,) in _query(result.path, "SELECT run_date FROM reconciliation_matches")}
    assert all(d < state.before_approval[:10] for d in days)


def test_a_failed_export_leaves_no_file(
    books: tuple[Engine, AuditBooks, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _, _ = books

    def crash(_conn: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(canonical, "manifest_digest", crash)
    with pytest.raises(RuntimeError):
        snapshot.export_snapshot(engine, tmp_path / "half.duckdb")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_snapshot_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    with pytest.raises(SystemExit) as exit_:
        main(["verify-audit-snapshot", str(junk)])
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")


def _old_style_release(engine: Engine, item_id: int) -> None:
    """A release as books written before releases recorded ``earning_ids`` logged it.

    Those rows exist in real ledgers and cannot be written by today's code, so the
    old writer's steps (status, unlink, log row without the earnings) are replayed here.
    """
    with db.write(engine) as conn:
        item = conn.execute(sa.select(payout_items).where(payout_items.c.id == item_id)).one()
        conn.execute(
            sa.update(payout_items).where(payout_items.c.id == item_id).values(status="failed")
        )
        conn.execute(
            sa.update(earnings)
            .where(earnings.c.payout_item_id == item_id)
            .values(status="accrued", payout_item_id=None)
        )
        audit_log.log(
            conn,
            "item_failed",
            "payout_item",
            str(item_id),
            actor="gateway",
            amount_minor=item.amount_minor,
            currency=item.currency,
            detail={"batch_id": item.batch_id, "from": item.status, "to": "failed"},
        )


def test_as_of_an_item_released_later_shows_its_earnings_batched(
    engine: Engine, tmp_path: Path
) -> None:
    h = p.sale(engine, "S1", "500.00")
    p.beneficiary(engine, "ann")
    p.beneficiary(engine, "bob")
    p.earning(engine, "E1", "ann", "100.00", h)
    p.earning(engine, "E2", "bob", "40.00", h)
    carol = p.approver(engine, "carol")
    [batch] = build_batches(engine, BatchPolicy(), "maker").batches
    items = p.submitted_batch(engine, batch["batch_id"], carol)
    owner = {
        row.external_id: row.payout_item_id
        for row in _ledger_rows(
            engine, sa.select(earnings.c.external_id, earnings.c.payout_item_id)
        )
    }
    with db.read(engine) as conn:
        balances_then = journal.account_balances(conn)
    then = clock.now()
    with db.write(engine) as conn:
        state_machine.move_item(conn, owner["E1"], "failed", "gateway", reason="account closed")
    _old_style_release(engine, owner["E2"])

    now_file, then_file = tmp_path / "now.duckdb", tmp_path / "then.duckdb"
    snapshot.export_snapshot(engine, now_file)
    snapshot.export_snapshot(engine, then_file, as_of=then)
    for path in (now_file, then_file):
        report = verify_snapshot(path)
        assert report.ok, report.problems

    earning_sql = "SELECT external_id, status, payout_item_id FROM earnings ORDER BY external_id"
    assert _query(now_file, earning_sql) == [("E1", "accrued", None), ("E2", "accrued", None)]
    # E1's release logged its earnings: committed to its item as of then. E2's did not.
    assert _query(then_file, earning_sql) == [
        ("E1", "batched", owner["E1"]),
        ("E2", "accrued", None),
    ]
    item_status = f"SELECT status FROM payout_items WHERE id = {owner['E1']}"
    assert _query(then_file, item_status) == [("submitted",)]
    assert _query(now_file, item_status) == [("failed",)]
    info = dict(_query(then_file, "SELECT key, value FROM manifest_info"))
    assert info["as_of_unattributed_items"] == str(owner["E2"])
    assert (
        dict(_query(now_file, "SELECT key, value FROM manifest_info"))["as_of_unattributed_items"]
        == ""
    )
    trial = {
        (a, c): b
        for a, c, b in _query(
            then_file, "SELECT account, currency, balance_minor FROM trial_balance"
        )
    }
    assert trial == balances_then
    assert {i.id for i in items} == set(owner.values())


def _ledger_rows(engine: Engine, stmt: Any) -> list[Any]:
    with db.read(engine) as conn:
        return list(conn.execute(stmt))

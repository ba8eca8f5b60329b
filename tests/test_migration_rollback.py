"""Rolling a release back: every migration's downgrade that exists, on a copy of real books.

Each migration's docstring says whether it has a downgrade (``Downgrade: yes``
or ``Downgrade: no``) and what a downgrade loses (``Lost on downgrade:``
``table.column`` names); docs/operations.md says how to use that. Here, on a
copy of a ledger with money in it (SQLite: the backup API; PostgreSQL:
``CREATE DATABASE … TEMPLATE``), each migration that says yes is taken down
(with the ones after it) and the books upgraded to head again: every row of
every sealed table and every transaction-log entry is as it was (less what the
docstring says is lost), the balance is the same, and the books verify
(chain and seals). The migrations are read from the scripts folder, so a new
one is tested without changing this file.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import balance, db, migrate, rollback, seals
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.schema import transaction_log
from finsup_dagster.ledger.verification import verify_books
from tests.conftest import _admin_connect, drop_pg_database
from tests.helpers.payouts import approve, approver, beneficiary, earning, sale

DECLARED = re.compile(r"^Downgrade: (yes|no)\b", re.MULTILINE)
LOST = re.compile(r"^Lost on downgrade:(.*?)(?:\n\n|\Z)", re.MULTILINE | re.DOTALL)


def scripts() -> list[Script]:
    """Every migration, newest first."""
    return list(ScriptDirectory.from_config(migrate._config()).walk_revisions())


def has_downgrade(script: Script) -> bool:
    found = DECLARED.search(script.module.__doc__ or "")
    assert found, (
        f"migration {script.revision}: its docstring must say `Downgrade: yes` or "
        "`Downgrade: no` (docs/operations.md, Upgrading and rolling back)"
    )
    return found.group(1) == "yes"


def lost_columns(script: Script) -> set[tuple[str, str]]:
    found = LOST.search(script.module.__doc__ or "")
    text = found.group(1) if found else ""
    # ``table.column``, or ``table.*`` for a table dropped whole.
    return set(re.findall(r"\b([a-z_]+)\.([a-z_]+|\*)", text))


def books(engine: Engine, lost: set[tuple[str, str]]) -> dict[str, Any]:
    """Every sealed table's rows and the log's entries (sealing aside), less the ``lost`` columns."""
    out: dict[str, Any] = {}
    with db.read(engine) as conn:
        for table in (*seals.SEALED_TABLES, transaction_log):
            if (table.name, "*") in lost:
                continue
            cols = [c for c in table.c if (table.name, c.name) not in lost]
            query = sa.select(*cols).order_by(*table.primary_key.columns)
            if table is transaction_log:
                query = query.where(transaction_log.c.action != "rows_sealed")
            out[table.name] = [tuple(r) for r in conn.execute(query)]
        out["available_usd"] = balance.available_minor(conn, "USD")
    return out


@pytest.fixture
def copy_of_books(engine: Engine, ledger_url: str, tmp_path: Path) -> Iterator[Engine]:
    """Books with money in them (a sale, two earnings, one batch approved, one pending), copied."""
    funding = sale(engine, "S-1", "500.00")
    for who in ("ann", "bob"):
        beneficiary(engine, who)
    earning(engine, "E-1", "ann", "40.00", funding)
    [first] = build_batches(engine, BatchPolicy(), "maker").batches
    approve(engine, approver(engine, "carol"), first["batch_id"])
    earning(engine, "E-2", "bob", "25.00", funding)
    build_batches(engine, BatchPolicy(), "maker")
    engine.dispose()
    if ledger_url.startswith("sqlite"):
        target = tmp_path / "copy.db"
        src = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # a consistent copy, as a backup of a live ledger is taken
        finally:
            dst.close()
            src.close()
        copy = db.make_engine(f"sqlite:///{target}")
        yield copy
        copy.dispose()
        return
    source = ledger_url.rsplit("/", 1)[1]
    copy_url = f"{ledger_url}_copy"
    with _admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{source}_copy" TEMPLATE "{source}"')
    copy = db.make_engine(copy_url)
    try:
        yield copy
    finally:
        copy.dispose()
        drop_pg_database(copy_url)


def test_every_migration_says_whether_it_has_a_downgrade() -> None:
    for script in scripts():
        has_downgrade(script)  # asserts the declaration
    assert not has_downgrade(scripts()[-1]), "the baseline's downgrade would drop the books"


def test_each_downgrade_and_upgrade_again_keeps_the_books(copy_of_books: Engine) -> None:
    head = migrate.head_revision()
    assert head is not None
    all_scripts = scripts()
    lost: set[tuple[str, str]] = set()
    for script in all_scripts:
        if not has_downgrade(script):
            break  # nothing older can be reached without taking this one down
        # Going below ``script`` runs its downgrade and those of every newer one.
        lost |= lost_columns(script)
        before = books(copy_of_books, lost)
        rollback.downgrade(copy_of_books, script.down_revision or "base")
        assert migrate.current_revision(copy_of_books) == script.down_revision
        rollback.upgrade(copy_of_books)
        assert migrate.current_revision(copy_of_books) == head
        assert books(copy_of_books, lost) == before, f"down past {script.revision} and up again"
        report = verify_books(copy_of_books)
        assert report.ok, (script.revision, report.problems())
    assert books(copy_of_books, set())["payout_batches"], "the copy had batches to keep"


def test_a_migration_that_says_no_would_break_the_books(copy_of_books: Engine) -> None:
    """What ``Downgrade: no`` on 0003 protects against: its downgrade drops the seals the
    log commits to, and the books then never verify again."""
    [refused] = [s for s in scripts() if s.revision == "0003_seals_and_holds"]
    assert not has_downgrade(refused) and refused.down_revision
    rollback.downgrade(copy_of_books, refused.down_revision)
    rollback.upgrade(copy_of_books)
    report = verify_books(copy_of_books)
    assert not report.ok and "seals" in report.problems()[0]

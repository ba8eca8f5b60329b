"""Writing the auditor's snapshot: one DuckDB file, complete or not there at all.

The file is built under a temporary name beside the target and renamed over it
only once its manifest is written and checkpointed, so a crash leaves at most a
stray ``.tmp`` file, never a half snapshot under the real name. The ledger is
only read, in one consistent transaction (``extract.consistent_read``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.audit import as_of as as_of_sql
from finsup_dagster.audit import canonical, recon_source
from finsup_dagster.audit.extract import copy_tables, plan
from finsup_dagster.audit.tables import BY_NAME, DERIVED_KEYS, LEDGER_TABLES, duckdb_type
from finsup_dagster.ledger import clock
from finsup_dagster.ledger.audit_log import GENESIS_HASH


@dataclass
class SnapshotResult:
    path: Path
    digest: str
    exported_at: str
    as_of: str | None
    chain_head_seq: int
    chain_head_hash: str
    size_bytes: int
    manifest: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "digest": self.digest,
            "exported_at": self.exported_at,
            "as_of": self.as_of,
            "chain_head_seq": self.chain_head_seq,
            "chain_head_hash": self.chain_head_hash,
            "size_bytes": self.size_bytes,
            "manifest": self.manifest,
        }


def product_version() -> str:
    try:
        return importlib_metadata.version("finsup")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


def public_url(engine: Engine) -> str:
    """The ledger URL without user, password or query (which may carry a password)."""
    url = engine.url
    bare = sa.engine.URL.create(url.drivername, host=url.host, port=url.port, database=url.database)
    return bare.render_as_string(hide_password=True)


def export_snapshot(
    engine: Engine,
    out: Path,
    as_of: str | None = None,
    warehouse: Path | None = None,
) -> SnapshotResult:
    """Writes the snapshot of the books (as of ``as_of``, canonical UTC text) to ``out``."""
    exported_at = clock.now()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # The ledger is copied (on SQLite by a child process) before this process opens the file.
        stage = tmp.with_name(tmp.name + ".stage")
        live_head = _copy_ledger(engine, stage if as_of else tmp, as_of)
        duck = duckdb.connect(str(tmp))
        try:
            if as_of is None:
                assert live_head is not None
                head, unattributed = live_head, list[int]()
            else:
                head, unattributed = _rebuild_as_of(duck, stage, as_of)
            _trial_balance(duck)
            source = recon_source.copy_results(duck, warehouse, as_of)
            info = {
                "format": canonical.FORMAT,
                "product_version": product_version(),
                "duckdb_version": duckdb.__version__,
                "exported_at": exported_at,
                "as_of": as_of or "",
                "ledger_url": public_url(engine),
                "ledger_backend": engine.dialect.name,
                "chain_head_seq": str(head[0]),
                "chain_head_hash": head[1],
                "reconciliation_source": source,
                # Earnings of these items show accrued although they were batched then.
                "as_of_unattributed_items": ",".join(str(i) for i in unattributed),
            }
            _manifest(duck, info)
            digest = canonical.manifest_digest(duck)
            manifest = _manifest_rows(duck)
            duck.execute("CHECKPOINT")
        finally:
            duck.close()
        os.replace(tmp, out)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}.wal"), stage, Path(f"{stage}.wal")):
            leftover.unlink(missing_ok=True)
        raise
    stage.unlink(missing_ok=True)
    return SnapshotResult(
        out, digest, exported_at, as_of, head[0], head[1], out.stat().st_size, manifest
    )


def _copy_ledger(engine: Engine, path: Path, as_of: str | None) -> tuple[int, str] | None:
    """Every ledger table into the DuckDB file ``path`` (the snapshot itself, or as of an
    instant the stage it is rebuilt from); for a full snapshot, the live chain head."""
    copies = [plan(engine, spec, spec.name) for spec in LEDGER_TABLES]
    head = copy_tables(engine, path, copies, with_head=as_of is None).head
    if as_of is None:
        # The live head, not the last row: a log row deleted at the tail shows.
        return head or (0, GENESIS_HASH)
    return None


def _rebuild_as_of(
    duck: duckdb.DuckDBPyConnection, stage: Path, as_of: str
) -> tuple[tuple[int, str], list[int]]:
    """The snapshot's tables as of ``as_of`` from the staged copy; returns the chain head
    it ends at and the released items whose earnings could not be attributed."""
    duck.execute("ATTACH '" + str(stage).replace("'", "''") + "' AS stage (READ_ONLY)")
    seq = as_of_sql.cutoff_seq(duck, as_of)
    columns = {
        c: duckdb_type(BY_NAME["beneficiaries"].table.c[c])
        for c in as_of_sql.MUTABLE_BENEFICIARY_COLUMNS
    }
    for statement in as_of_sql.statements(as_of, seq, columns):
        duck.execute(statement)
    unattributed = as_of_sql.unattributed_items(duck)
    duck.execute("DETACH stage")
    for temp in as_of_sql.TEMP_TABLES:
        duck.execute(f"DROP TABLE temp.{temp}")
    found = duck.execute(
        "SELECT seq, row_hash FROM transaction_log ORDER BY seq DESC LIMIT 1"
    ).fetchall()[:1]
    head = (int(found[0][0]), str(found[0][1])) if found else (0, GENESIS_HASH)
    return head, unattributed


def _trial_balance(duck: duckdb.DuckDBPyConnection) -> None:
    duck.execute(TRIAL_BALANCE_SQL)


# The balance of an account is the sum of its postings (debits positive); the trial
# balance is what the verifier recomputes from ``postings``.
TRIAL_BALANCE_SQL = (
    "CREATE TABLE trial_balance AS SELECT account, currency,"
    " CAST(sum(amount_minor) AS BIGINT) AS balance_minor,"
    " CAST(sum(CASE WHEN amount_minor > 0 THEN amount_minor ELSE 0 END) AS BIGINT) AS debits_minor,"
    " CAST(sum(CASE WHEN amount_minor < 0 THEN -amount_minor ELSE 0 END) AS BIGINT) AS credits_minor,"
    " count(*) AS postings"
    " FROM postings GROUP BY account, currency ORDER BY account, currency"
)


def _keys(table: str) -> list[str]:
    if table in BY_NAME:
        return BY_NAME[table].key
    return list(DERIVED_KEYS.get(table, ()))


def _manifest(duck: duckdb.DuckDBPyConnection, info: dict[str, str]) -> None:
    duck.execute("CREATE TABLE manifest_info (key VARCHAR, value VARCHAR)")
    duck.executemany("INSERT INTO manifest_info VALUES (?, ?)", sorted(info.items()))
    duck.execute(
        "CREATE TABLE manifest (table_name VARCHAR, row_count BIGINT, sha256 VARCHAR,"
        " columns VARCHAR, key_columns VARCHAR)"
    )
    names = [
        str(r[0])
        for r in duck.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            " AND database_name = current_database() AND table_name <> 'manifest'"
            " ORDER BY table_name"
        ).fetchall()
    ]
    hashes = canonical.table_hashes(duck, {name: _keys(name) for name in names})
    rows = [
        (name, hashes[name][0], hashes[name][1], ",".join(hashes[name][2]), ",".join(_keys(name)))
        for name in names
    ]
    duck.executemany("INSERT INTO manifest VALUES (?, ?, ?, ?, ?)", rows)


def _manifest_rows(duck: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = duck.execute(
        "SELECT table_name, row_count, sha256 FROM manifest ORDER BY table_name"
    ).fetchall()
    return [{"table": t, "rows": int(n), "sha256": h} for t, n, h in rows]

"""Copying ledger tables into a DuckDB file, all of them read in one consistent transaction.

The rows come through ADBC (``adbc-driver-sqlite`` / ``adbc-driver-postgresql``) as
Arrow streams straight into DuckDB: no Python object per value, which is what the
earlier driver-cursor copy spent most of its time on.

On SQLite the copy runs in a child process (``python -m finsup_dagster.audit.adbc_copy``,
the request on stdin so no path or URL shows in a process list). That is a matter
of correctness: the ADBC driver links its own SQLite library, and two SQLite
libraries in one process share that process's POSIX locks without knowing of each
other. The second one to open a WAL database then takes the shared-memory
"first opener" lock as its own, rebuilds the WAL index and reads the main file
without the WAL's newer pages: stale rows (see sqlite.org/howtocorrupt.html, 2.2.1).
A child process has its own locks; it costs the interpreter's start and the
imports, which ``adbc_copy`` keeps to DuckDB, pyarrow and ADBC's driver manager
(about 0.5 s; SQLAlchemy and ADBC's DB-API layer, which pulls in pyarrow.dataset
and pandas, took 3–4 s and up to 7 s on a loaded machine).
PostgreSQL has no such sharing and is read in this process.

Consistency: SQLite ``BEGIN`` (deferred; in WAL mode one state of the file from
the first read to the end); PostgreSQL ``REPEATABLE READ READ ONLY``, one MVCC
snapshot for every table even while writers commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import quote_plus

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.audit import adbc_copy
from finsup_dagster.audit.canonical import quote
from finsup_dagster.audit.tables import LedgerTable, duckdb_type
from finsup_dagster.ledger import db
from finsup_dagster.ledger.schema import audit_chain_head

# A first row whose every column has a value of its type: ADBC's SQLite driver
# infers a column's Arrow type from the first rows and takes NULL for an integer,
# so a text column starting with NULLs would fail on its first value.
_PROBE = {"BIGINT": "0", "VARCHAR": "''", "BOOLEAN": "0"}
_MARK = adbc_copy.MARK


@dataclass(frozen=True)
class TableCopy:
    target: str  # the DuckDB table, e.g. ``earnings`` or ``stage.earnings``
    create: str
    select: str  # run on the ledger
    insert: str  # run in DuckDB over the Arrow stream ``finsup_stream``
    mask: bool


def create_sql(name: str, spec: LedgerTable) -> str:
    cols = ", ".join(f"{quote(c.name)} {duckdb_type(c)}" for c in spec.columns)
    return f"CREATE TABLE {name} ({cols})"


def plan(engine: Engine, spec: LedgerTable, target: str, typed: bool = True) -> TableCopy:
    """The statements copying ``spec`` into ``target``; untyped is the benchmark's baseline
    (``CREATE TABLE AS`` over the stream, DuckDB's types for Arrow's)."""
    names = [quote(c.name) for c in spec.columns]
    types = [duckdb_type(c) for c in spec.columns]
    cols = ", ".join(names)
    if db.is_sqlite(engine):
        probe = ", ".join(f"{_PROBE[t]} AS {n}" for n, t in zip(names, types, strict=True))
        select = (
            f"SELECT 0 AS {_MARK}, {probe}"
            f" UNION ALL SELECT * FROM (SELECT 1, {cols} FROM {quote(spec.name)})"
        )
        where = f" WHERE {_MARK} = 1"
    else:
        select, where = f"SELECT {cols} FROM {quote(spec.name)}", ""
    if typed:
        casts = ", ".join(f"CAST({n} AS {t})" for n, t in zip(names, types, strict=True))
        create = create_sql(target, spec)
        insert = f"INSERT INTO {target} SELECT {casts} FROM finsup_stream{where}"
    else:
        create = ""
        insert = f"CREATE TABLE {target} AS SELECT {cols} FROM finsup_stream{where}"
    return TableCopy(target, create, select, insert, typed and spec.name == "beneficiaries")


def adbc_uri(engine: Engine) -> str:
    if db.is_sqlite(engine):
        return str(engine.url.database)
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class CopyResult:
    head: tuple[int, str] | None
    seconds: float  # from opening the ledger to closing the DuckDB file (no process start)


def copy_tables(
    engine: Engine,
    duck_path: Path,
    copies: list[TableCopy],
    with_head: bool = False,
    child: bool | None = None,
) -> CopyResult:
    """Copies the tables into the DuckDB file ``duck_path`` (not open in this process);
    with ``with_head``, also the live chain head (seq, hash), read in the same
    transaction. ``child`` defaults to True on SQLite only (see the module docstring)."""
    uri = adbc_uri(engine)
    request = {
        "backend": "sqlite" if db.is_sqlite(engine) else "postgresql",
        "uri": uri,
        "duck_path": str(duck_path),
        "copies": [c.__dict__ for c in copies],
        "head": (
            str(sa.select(audit_chain_head.c.seq, audit_chain_head.c.row_hash).compile())
            if with_head
            else None
        ),
    }
    if child is None:
        child = db.is_sqlite(engine)
    if not child:
        try:
            return _result(adbc_copy.run(request))
        except Exception as exc:
            raise RuntimeError(
                f"copying the ledger failed: {_redacted(str(exc), engine)}"
            ) from None
    done = subprocess.run(
        [sys.executable, "-m", "finsup_dagster.audit.adbc_copy"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit {done.returncode}"
        raise RuntimeError(f"copying the ledger failed: {_redacted(why, engine)}")
    return _result(json.loads(done.stdout))


def _redacted(text: str, engine: Engine) -> str:
    """``text`` without the ledger's password, as typed or as the URI carries it (encoded)."""
    secret = engine.url.password
    if not secret:
        return text
    for form in {str(secret), quote_plus(str(secret)), url_quote(str(secret), safe="")}:
        text = text.replace(form, "***")
    return text


def _result(answer: dict[str, Any]) -> CopyResult:
    head = answer["head"]
    return CopyResult((int(head[0]), str(head[1])) if head else None, float(answer["seconds"]))

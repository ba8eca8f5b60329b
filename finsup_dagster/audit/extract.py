"""Copying ledger tables into DuckDB, all of them read in one consistent transaction.

SQLite: a deferred read transaction in WAL mode sees one state of the file from
its first read to its end. PostgreSQL: REPEATABLE READ, read only, so every
table is read from the same MVCC snapshot even while writers commit. Rows go
through the driver's own cursor (a server-side cursor on PostgreSQL) into Arrow
chunks: the SQLAlchemy row layer would cost more than the copy itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.audit import privacy
from finsup_dagster.audit.canonical import quote
from finsup_dagster.audit.tables import LedgerTable, duckdb_type
from finsup_dagster.ledger import db

CHUNK = 100_000
_ARROW = {"BIGINT": pa.int64(), "VARCHAR": pa.string(), "BOOLEAN": pa.bool_()}


@contextmanager
def consistent_read(engine: Engine) -> Iterator[Connection]:
    """One read transaction over the whole ledger, the same state for every table."""
    if db.is_sqlite(engine):
        with db.read(engine) as conn:
            yield conn
        return
    options: dict[str, Any] = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with engine.connect().execution_options(**options) as conn, conn.begin():
        yield conn


def create_sql(name: str, spec: LedgerTable) -> str:
    cols = ", ".join(f"{quote(c.name)} {duckdb_type(c)}" for c in spec.columns)
    return f"CREATE TABLE {name} ({cols})"


def copy_table(
    conn: Connection,
    duck: duckdb.DuckDBPyConnection,
    spec: LedgerTable,
    target: str,
) -> int:
    """Creates ``target`` in DuckDB and fills it with the spec's columns; returns the rows."""
    duck.execute(create_sql(target, spec))
    columns = spec.columns
    sql = str(sa.select(*columns).compile(dialect=conn.dialect))
    types = [duckdb_type(c) for c in columns]
    schema = pa.schema([(c.name, _ARROW[t]) for c, t in zip(columns, types, strict=True)])
    booleans = [i for i, t in enumerate(types) if t == "BOOLEAN"]
    raw = conn.connection.driver_connection
    assert raw is not None
    # A named (server-side) cursor streams on PostgreSQL instead of buffering it all.
    cursor = raw.cursor() if db.is_sqlite(conn) else raw.cursor(name=f"snapshot_{target}")
    total = 0
    try:
        cursor.execute(sql)
        while True:
            rows = cursor.fetchmany(CHUNK)
            if not rows:
                break
            total += len(rows)
            _insert(duck, target, schema, rows, booleans)
    finally:
        cursor.close()
    return total


def _insert(
    duck: duckdb.DuckDBPyConnection,
    target: str,
    schema: pa.Schema,
    rows: Sequence[Sequence[Any]],
    booleans: Sequence[int],
) -> None:
    columns = [list(c) for c in zip(*rows, strict=True)]
    for i in booleans:  # SQLite gives 0/1
        columns[i] = [None if v is None else bool(v) for v in columns[i]]
    privacy.mask_columns(target.rsplit(".", 1)[-1], list(schema.names), columns)
    chunk = pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
        schema=schema,
    )
    duck.register("finsup_chunk", chunk)
    try:
        duck.execute(f"INSERT INTO {target} SELECT * FROM finsup_chunk")
    finally:
        duck.unregister("finsup_chunk")

"""The copy itself: ledger tables as ADBC Arrow streams into a DuckDB file, in one read
transaction (``extract`` plans it and says why SQLite's runs in a child process).

Why so few imports: on SQLite this module is the child's whole program, started once
per snapshot, so its start is part of every export. It uses ADBC's driver manager
directly (``AdbcDatabase`` / ``AdbcConnection`` / ``AdbcStatement``) rather than the
DB-API layer, which imports pyarrow.dataset and pandas, and no SQLAlchemy: DuckDB,
pyarrow and the driver load in about half a second.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import adbc_driver_manager
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from finsup_dagster.audit import privacy

# The probe row's marker column (see ``extract.plan``): 0 on the probe, 1 on every row.
MARK = "finsup_copy_row"


def _database(backend: str, uri: str) -> adbc_driver_manager.AdbcDatabase:
    if backend == "sqlite":
        import adbc_driver_sqlite

        return adbc_driver_sqlite.connect(uri)
    import adbc_driver_postgresql

    return adbc_driver_postgresql.connect(uri)


class _Session:
    """One ADBC connection: statements run as SQL (the transaction too, as ``BEGIN``)."""

    def __init__(self, backend: str, uri: str) -> None:
        self.database = _database(backend, uri)
        self.conn = adbc_driver_manager.AdbcConnection(self.database)
        self._open: list[adbc_driver_manager.AdbcStatement] = []

    def _statement(self, sql: str) -> adbc_driver_manager.AdbcStatement:
        statement = adbc_driver_manager.AdbcStatement(self.conn)
        statement.set_sql_query(sql)
        self._open.append(statement)
        return statement

    def execute(self, sql: str) -> None:
        self._statement(sql).execute_update()

    def stream(self, sql: str) -> pa.RecordBatchReader:
        handle, _ = self._statement(sql).execute_query()
        return pa.RecordBatchReader.from_stream(handle)

    def release(self) -> None:
        """Closes the statements whose streams have been read."""
        while self._open:
            self._open.pop().close()

    def close(self) -> None:
        self.release()
        self.conn.close()
        self.database.close()


def run(request: dict[str, Any]) -> dict[str, Any]:
    """One read transaction, every table of ``request["copies"]`` streamed into DuckDB."""
    backend = request["backend"]
    start = time.perf_counter()
    begin = "BEGIN" if backend == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    session = _Session(backend, request["uri"])
    duck = duckdb.connect(request["duck_path"])
    head: list[Any] | None = None
    try:
        session.execute(begin)
        for copy in request["copies"]:
            stream: Any = session.stream(copy["select"])
            if copy["mask"]:
                table = stream.read_all()
                if MARK in table.column_names:  # the probe row is no beneficiary
                    table = table.filter(pc.equal(table.column(MARK), 1))
                stream = _masked(table, copy["target"].rsplit(".", 1)[-1])
            if copy["create"]:
                duck.execute(copy["create"])
            duck.register("finsup_stream", stream)
            try:
                duck.execute(copy["insert"])
            finally:
                duck.unregister("finsup_stream")
            session.release()
        if request["head"]:
            rows = session.stream(request["head"]).read_all().to_pylist()
            head = list(rows[0].values()) if rows else None
            session.release()
        session.execute("COMMIT")
        duck.execute("CHECKPOINT")
    finally:
        duck.close()
        session.close()
    return {"head": head, "seconds": time.perf_counter() - start}


def _masked(table: pa.Table, name: str) -> pa.Table:
    names = list(table.column_names)
    columns = [table.column(n).to_pylist() for n in names]
    privacy.mask_columns(name, names, columns)
    return pa.Table.from_arrays(
        [pa.array(c, type=table.schema.field(n).type) for c, n in zip(columns, names, strict=True)],
        names=names,
    )


if __name__ == "__main__":
    result = run(json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps(result))

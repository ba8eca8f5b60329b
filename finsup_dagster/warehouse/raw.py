"""Raw landed data: one table per landing format in schema ``raw``.

Every row keeps the day it landed for (``partition_date``), the file it came
from (``file_name``, relative to the landing zone), its row number in that file
and the file's SHA-256, so any number in a report can be traced to a line of a
file an auditor can open. ``raw.landed_files`` remembers every file by content
hash: the same bytes delivered again, under any name or day, land once.

Settlement rows also carry ``landing_seq``, one number per landed file from the
sequence ``raw.landing_seq``, in landing order: the nightly reconciliation
knows exactly which lines arrived after a night was built (whatever day they
landed for) by comparing it with the night's recorded watermark. And each
settlement row gets a ``line_key`` of its own when it lands (sequence
``raw.line_key``): the integer the reconciliation joins and stores instead of the
text line id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from finsup_dagster import landing
from finsup_dagster.formats import REVENUE_COLUMNS, SETTLEMENT_COLUMNS, Parsed, parse_file
from finsup_dagster.ledger import clock
from finsup_dagster.ledger.errors import InvalidInput, MalformedFile
from finsup_dagster.ledger.files import read_records
from finsup_dagster.ledger.money import to_minor
from finsup_dagster.ledger.revenue import FIELDS
from finsup_dagster.ledger.revenue_files import file_sha256
from finsup_dagster.quality import schemas
from finsup_dagster.warehouse import version
from finsup_dagster.warehouse.connection import (
    check_key_sequence,
    key_column,
    one,
    run,
    transaction,
)

TABLES = {
    "revenue": "revenue_files",
    "paypal-transactions": "paypal_transactions",
    "paypal-stl": "paypal_stl",
    "camt053": "camt053",
    "settlement-csv": "settlement_csv",
}
SETTLEMENT_TABLES = tuple(TABLES[fmt] for fmt in landing.SETTLEMENT_FORMATS)
PROVENANCE = ("partition_date", "file_name", "content_sha256")
# Revenue rows stay text here: the ledger validates them, and a row it refuses
# is still kept, with the problem found while reading it (if any).
REVENUE_RAW_COLUMNS = (*REVENUE_COLUMNS, "problem")

_SQL_TYPES = {
    "row_number": "INTEGER",
    "batch_net_minor": "BIGINT",
    "gross_minor": "BIGINT",
    "fee_minor": "BIGINT",
}


def _ddl(table: str, columns: Sequence[str]) -> str:
    cols = [f"{c} {_SQL_TYPES.get(c, 'VARCHAR')}" for c in (*PROVENANCE, *columns)]
    if table in SETTLEMENT_TABLES:
        cols += ["landing_seq BIGINT NOT NULL", key_column("line_key", "raw.line_key")]
    return f"CREATE TABLE IF NOT EXISTS raw.{table} ({', '.join(cols)})"


def columns_for(fmt: str) -> tuple[str, ...]:
    return SETTLEMENT_COLUMNS if fmt in landing.SETTLEMENT_FORMATS else REVENUE_RAW_COLUMNS


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    version.ensure(conn)  # a warehouse of another shape is rebuilt, never patched
    with transaction(conn):
        run(conn, "CREATE SCHEMA IF NOT EXISTS raw")
        run(conn, "CREATE SEQUENCE IF NOT EXISTS raw.landing_seq START 1")
        run(conn, "CREATE SEQUENCE IF NOT EXISTS raw.line_key START 1")
        run(
            conn,
            "CREATE TABLE IF NOT EXISTS raw.landed_files ("
            " content_sha256 VARCHAR PRIMARY KEY, format VARCHAR NOT NULL,"
            " partition_date VARCHAR NOT NULL, file_name VARCHAR NOT NULL,"
            " rows INTEGER NOT NULL, skipped INTEGER NOT NULL, landed_at VARCHAR NOT NULL)",
        )
        for fmt, table in TABLES.items():
            run(conn, _ddl(table, columns_for(fmt)))
    check_key_sequence(conn, "raw.line_key", [f"raw.{t}" for t in SETTLEMENT_TABLES], "line_key")


@dataclass
class LandedFile:
    file_name: str
    content_sha256: str
    rows: int
    skipped: int
    notes: list[str] = field(default_factory=list)


@dataclass
class LandingReport:
    """What one format's run for one day did with each file it found."""

    fmt: str
    day: str
    landed: list[LandedFile] = field(default_factory=list)
    already_landed: list[tuple[str, str]] = field(default_factory=list)  # (file, landed as)
    quarantined: list[landing.Quarantined] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.landed)


def land_partition(
    conn: duckdb.DuckDBPyConnection, home: Path, fmt: str, day: str
) -> LandingReport:
    """Lands every new file of one format and day; refused files go to quarantine.

    Each file commits on its own, so one bad file never holds back the others
    and a crash halfway leaves every file either landed whole or not at all.
    """
    ensure_schema(conn)
    zone = home / "landing"
    report = LandingReport(fmt, day)
    for path in landing.partition_files(zone, fmt, day):
        sha = file_sha256(path)
        name = path.relative_to(zone).as_posix()
        seen = one(conn, "SELECT file_name FROM raw.landed_files WHERE content_sha256 = ?", [sha])
        if seen is not None:
            report.already_landed.append((name, str(seen[0])))
            continue
        try:
            parsed = read_file(fmt, path)
            frame = to_frame(fmt, parsed.rows, day, name, sha)
        except InvalidInput as exc:
            report.quarantined.append(landing.quarantine(home, path, fmt, day, exc, sha))
            continue
        with transaction(conn):
            if len(frame):
                table = TABLES[fmt]
                rows = "SELECT * FROM incoming_rows"
                if table in SETTLEMENT_TABLES:  # one number for the whole file
                    seq = one(conn, "SELECT nextval('raw.landing_seq')")
                    assert seq is not None
                    rows = f"SELECT *, {int(seq[0])} AS landing_seq FROM incoming_rows"
                conn.register("incoming_rows", frame)
                try:
                    run(conn, f"INSERT INTO raw.{table} BY NAME {rows}")
                finally:
                    conn.unregister("incoming_rows")
            run(
                conn,
                "INSERT INTO raw.landed_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [sha, fmt, day, name, len(frame), parsed.skipped, clock.now()],
            )
        report.landed.append(LandedFile(name, sha, len(frame), parsed.skipped, parsed.notes))
    return report


def read_file(fmt: str, path: Path) -> Parsed:
    """Parses one landed file; anything that makes it unreadable is MalformedFile."""
    if not landing.accepts(fmt, path):
        raise MalformedFile(
            f"{path.name}: not a {fmt} file (expected {' or '.join(landing.SUFFIXES[fmt])})"
        )
    if fmt == "revenue":
        return _read_revenue_file(path)
    return parse_file(fmt, path)


def _read_revenue_file(path: Path) -> Parsed:
    required = tuple(f for f in FIELDS if f != "status")
    rows: list[dict[str, object]] = []
    try:
        for row, record in read_records(path, required):
            rows.append(_revenue_row(row, record))
    except MalformedFile:
        raise
    except InvalidInput as exc:  # missing columns, not UTF-8: the file as a whole
        raise MalformedFile(str(exc).replace(str(path), path.name)) from None
    return Parsed(rows=rows, skipped=0, notes=[])


def _revenue_row(row: int, record: Mapping[str, Any]) -> dict[str, object]:
    def text(key: str) -> str | None:
        value = record.get(key)
        if value is None or isinstance(value, dict | list):
            return None if value is None else json.dumps(value)
        return str(value)

    problem = record.get("_malformed")
    if problem is None:
        # The raw table is text: a JSON number would come back as a string the
        # ledger accepts, so it is refused here with the ledger's own words.
        problem = next(
            (
                _not_text(k, record[k])
                for k in FIELDS
                if record.get(k) is not None and not isinstance(record[k], str)
            ),
            None,
        )
    clean = {k: v for k, v in record.items() if k != "_malformed"}
    return {
        "row_number": row,
        "record_ref": str(row),
        **{key: text(key) for key in FIELDS},
        "raw": json.dumps(clean, default=str, ensure_ascii=False),
        "problem": None if problem is None else str(problem),
    }


def _not_text(key: str, value: object) -> str:
    if key == "amount":
        try:
            to_minor(value, "USD")
        except InvalidInput as exc:
            return str(exc)
    return f"{key} must be a string, got {value!r}"


def to_frame(
    fmt: str, rows: Sequence[Mapping[str, object]], day: str, name: str, sha: str
) -> pd.DataFrame:
    """The rows as a DataFrame in the raw table's shape, checked by its pandera schema."""
    columns = columns_for(fmt)
    frame = pd.DataFrame.from_records(list(rows), columns=list(columns))
    frame.insert(0, "content_sha256", sha)
    frame.insert(0, "file_name", name)
    frame.insert(0, "partition_date", day)
    if fmt in landing.SETTLEMENT_FORMATS:
        frame = frame.astype(
            {
                "row_number": "int64",
                "gross_minor": "int64",
                "fee_minor": "int64",
                "batch_net_minor": "Int64",
            }
        )
        return schemas.validate(schemas.SettlementLines, frame, f"settlement lines of {name}")
    frame = frame.astype({"row_number": "int64"})
    return schemas.validate(schemas.RawRevenueRows, frame, f"revenue rows of {name}")


def revenue_rows(conn: duckdb.DuckDBPyConnection, day: str) -> pd.DataFrame:
    """Every raw revenue row landed for one day, from files and the PayPal API, by file."""
    return conn.execute(
        "SELECT * FROM ("
        " SELECT 'revenue' AS format, * FROM raw.revenue_files WHERE partition_date = ?"
        " UNION ALL BY NAME"
        " SELECT 'paypal-transactions' AS format, * FROM raw.paypal_transactions"
        " WHERE partition_date = ?"
        ") ORDER BY file_name, row_number",
        [day, day],
    ).df()

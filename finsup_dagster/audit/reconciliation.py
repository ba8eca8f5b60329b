"""The reconciliation export: matched pairs and exceptions of a range of nights, one file.

One row per matched pair or open exception: ``run_date``, a ``kind`` column
(``matched``, or the exception kind of docs/reconciliation.md), ``rule`` (the rule that matched a pair; empty for an
exception), then every other column of the two marts by name (a column one of
them lacks is empty). One file rather than one per kind: a filter on ``kind``
gives any one of them, and the totals of a night add up in one place.

Read from the warehouse opened read-only: DuckDB refuses while a run writes
it, and the command says to try again when the run has finished.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from finsup_dagster.audit.recon_source import EXCEPTIONS, MATCHES, has_table
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.warehouse.connection import connect

FORMATS = ("csv", "parquet", "json")
_COPY_OPTIONS = {
    "csv": "FORMAT csv, HEADER true",
    "parquet": "FORMAT parquet",
    "json": "FORMAT json, ARRAY true",
}


def export_reconciliation(
    warehouse: Path, first: str, last: str, fmt: str, out: Path
) -> dict[str, int]:
    """Writes the nights ``first``..``last`` (ISO dates) to ``out``; returns rows per kind."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if last < first:
        raise InvalidInput(f"--to {last} is before --date {first}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    with connect(warehouse, read_only=True) as wh:
        parts = []
        if has_table(wh, MATCHES):
            parts.append(
                f"SELECT run_date, 'matched' AS kind, match_rule AS rule, * EXCLUDE (run_date, match_rule) FROM {MATCHES}"
            )
        if has_table(wh, EXCEPTIONS):
            parts.append(
                f"SELECT run_date, exception_kind AS kind, CAST(NULL AS VARCHAR) AS rule, * EXCLUDE (run_date, exception_kind) FROM {EXCEPTIONS}"
            )
        if not parts:
            raise InvalidInput(f"nothing reconciled yet in {warehouse}")
        body = " UNION ALL BY NAME ".join(parts)
        query = (
            f"SELECT * FROM ({body}) WHERE CAST(run_date AS VARCHAR) BETWEEN '{first}' AND '{last}'"
            " ORDER BY ALL"
        )
        try:
            wh.execute(f"COPY ({query}) TO '{_sql_path(tmp)}' ({_COPY_OPTIONS[fmt]})")
            counts = wh.execute(
                f"SELECT kind, count(*) FROM ({query}) GROUP BY kind ORDER BY kind"
            ).fetchall()
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return {str(k): int(n) for k, n in counts}


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")

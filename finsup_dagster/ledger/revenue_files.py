"""Ingesting revenue files (CSV or JSONL) into the books.

Columns: ``source, external_id, amount, currency, occurred_at, kind, status``
(status optional, default ``projected``; other columns are ignored). Row
handling and rejects files are those of ``files``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from finsup_dagster.ledger.files import Rejected, read_records, split_malformed, write_rejects
from finsup_dagster.ledger.revenue import FIELDS, IngestResult, RevenueEvent, ingest, parse_records

REQUIRED = tuple(f for f in FIELDS if f != "status")


@dataclass
class FileResult:
    path: Path
    result: IngestResult
    rejects_path: Path | None = None


def ingest_file(
    engine: Engine, path: Path, actor: str = "system", chunk_size: int = 20_000
) -> FileResult:
    """Ingests every valid row; writes the others to a rejects file beside the input."""
    rejected: list[Rejected] = []

    def events() -> Iterator[tuple[int, RevenueEvent]]:
        for row, item in parse_records(split_malformed(read_records(path, REQUIRED), rejected)):
            if isinstance(item, Rejected):
                rejected.append(item)
            else:
                yield row, item

    result = ingest(engine, events(), source_file=str(path), actor=actor, chunk_size=chunk_size)
    result.rejected = sorted([*rejected, *result.rejected], key=lambda r: r.row)
    return FileResult(path, result, write_rejects(path, result.rejected, FIELDS))

"""Ingesting revenue files (CSV or JSONL) into the books.

Columns: ``source, external_id, amount, currency, occurred_at, kind, status``
(status optional, default ``projected``; other columns are ignored). Row
handling and rejects files are those of ``files``.

A file ingested without a rejected row is remembered by its SHA-256: the same
bytes again are answered "unchanged" for every row without being read, which
is what ingesting them again would find anyway (status only moves forward).
A file with rejected rows is always read again, so its rejects file is
rewritten and the exit status still says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import clock, db
from finsup_dagster.ledger.files import (
    Rejected,
    check_input,
    file_format,
    read_records,
    split_malformed,
    write_rejects,
)
from finsup_dagster.ledger.revenue import FIELDS, IngestResult, RevenueEvent, ingest, parse_one
from finsup_dagster.ledger.schema import ingested_files

REQUIRED = tuple(f for f in FIELDS if f != "status")
KIND = "revenue"


@dataclass
class FileResult:
    path: Path
    result: IngestResult
    rejects_path: Path | None = None


def ingest_file(
    engine: Engine, path: Path, actor: str = "system", chunk_size: int = 20_000
) -> FileResult:
    """Ingests every valid row; writes the others to a rejects file beside the input."""
    check_input(path)
    file_format(path)  # an unsupported file type is refused before anything is read
    rejected: list[Rejected] = []
    records = split_malformed(read_records(path, REQUIRED), rejected)
    return ingest_records(
        engine, file_sha256(path), path, records, rejected, actor=actor, chunk_size=chunk_size
    )


def ingest_records(
    engine: Engine,
    fingerprint: str,
    path: Path,
    records: Iterable[tuple[int, Mapping[str, Any]]],
    rejected: list[Rejected],
    *,
    actor: str = "system",
    chunk_size: int = 20_000,
    label: str | None = None,
) -> FileResult:
    """Ingests the records of one file known by its SHA-256 (see the module docstring).

    ``rejected`` holds rows already refused while reading; ``label`` is what the
    books record as the source file (the path by default).
    """
    known = _known_rows(engine, fingerprint)
    if known is not None:
        write_rejects(path, [], FIELDS)
        return FileResult(path, IngestResult(unchanged=known))

    # The chunk being ingested, as read: a row refused as a conflict goes to the
    # rejects file with its own fields, so that once fixed it can go back in.
    originals: dict[int, Mapping[str, Any]] = {}

    def events() -> Iterator[tuple[int, RevenueEvent]]:
        for row, raw in records:
            item = parse_one(row, raw)
            if isinstance(item, Rejected):
                rejected.append(item)
            else:
                originals[row] = raw
                yield row, item

    source_file = label or str(path)
    result = ingest(
        engine,
        events(),
        source_file=source_file,
        actor=actor,
        chunk_size=chunk_size,
        originals=originals,
    )
    result.rejected = sorted([*rejected, *result.rejected], key=lambda r: r.row)
    if not result.rejected:
        _remember(
            engine,
            fingerprint,
            source_file,
            result.inserted + result.unchanged + result.advanced + result.ignored_backward,
        )
    return FileResult(path, result, write_rejects(path, result.rejected, FIELDS))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint_rows(conn: Connection, fingerprint: str) -> int | None:
    t = ingested_files.c
    rows = conn.execute(
        sa.select(t.rows).where(t.content_sha256 == fingerprint, t.kind == KIND)
    ).scalar_one_or_none()
    return None if rows is None else int(rows)


def _known_rows(engine: Engine, fingerprint: str) -> int | None:
    with db.read(engine) as conn:
        return _fingerprint_rows(conn, fingerprint)


def _remember(engine: Engine, fingerprint: str, path: str, rows: int) -> None:
    with db.write(engine) as conn:
        if _fingerprint_rows(conn, fingerprint) is None:
            conn.execute(
                sa.insert(ingested_files).values(
                    content_sha256=fingerprint,
                    kind=KIND,
                    path=path,
                    rows=rows,
                    ingested_at=clock.now(),
                )
            )

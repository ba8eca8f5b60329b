"""Reading revenue files (CSV or JSONL) and writing their rejects files.

Columns: ``source, external_id, amount, currency, occurred_at, kind, status``
(status optional, default ``projected``; other columns are ignored). Amounts
are decimal strings in major units; in JSONL a JSON number is refused because
it has already been through a float.

Rejected rows go to ``<file>.rejects.csv`` (or ``.rejects.jsonl``) beside the
input: the original record plus ``row_number`` and ``reject_reason``, so the
file can be fixed and ingested again as it is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.revenue import (
    FIELDS,
    IngestResult,
    Rejected,
    RevenueEvent,
    ingest,
    parse_records,
)

REQUIRED = tuple(f for f in FIELDS if f != "status")


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InvalidInput(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .jsonl")


def read_records(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yields (row number, record). Row 1 is the first data row."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    fmt = file_format(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            if fmt == "csv":
                yield from _csv_records(path, fh)
            else:
                yield from _jsonl_records(fh)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _csv_records(path: Path, fh: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.DictReader(fh)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InvalidInput(f"{path}: missing columns {', '.join(missing)}")
    reader.fieldnames = header
    for row, record in enumerate(reader, start=1):
        if None in record:
            # More cells than header columns: the row is misaligned, not just long.
            yield row, {**{k: v for k, v in record.items() if k is not None}, "_malformed": True}
        else:
            yield row, record


def _jsonl_records(fh: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for row, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield row, {"_malformed": f"not valid JSON ({exc.msg})", "_raw": line.rstrip("\n")}
            continue
        if not isinstance(obj, dict):
            yield row, {"_malformed": "not a JSON object", "_raw": line.rstrip("\n")}
            continue
        yield row, obj


@dataclass
class FileResult:
    path: Path
    result: IngestResult
    rejects_path: Path | None = None
    errors: list[str] = field(default_factory=list)


def ingest_file(
    engine: Engine, path: Path, actor: str = "system", chunk_size: int = 5_000
) -> FileResult:
    """Ingests every valid row; writes the others to a rejects file beside the input."""
    rejected: list[Rejected] = []

    def events() -> Iterator[tuple[int, RevenueEvent]]:
        for row, item in parse_records(_flag_malformed(read_records(path), rejected)):
            if isinstance(item, Rejected):
                rejected.append(item)
            else:
                yield row, item

    result = ingest(engine, events(), source_file=str(path), actor=actor, chunk_size=chunk_size)
    result.rejected = sorted([*rejected, *result.rejected], key=lambda r: r.row)
    out = FileResult(path, result)
    if result.rejected:
        out.rejects_path = write_rejects(path, result.rejected)
    else:
        # A rejects file from an earlier run of this input no longer applies.
        rejects_path_for(path).unlink(missing_ok=True)
    return out


def _flag_malformed(
    records: Iterator[tuple[int, Mapping[str, Any]]], rejected: list[Rejected]
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for row, record in records:
        problem = record.get("_malformed")
        if problem:
            reason = problem if isinstance(problem, str) else "more cells than header columns"
            clean = {k: v for k, v in record.items() if not k.startswith("_")}
            rejected.append(Rejected(row, reason, clean or {"raw": record.get("_raw")}))
        else:
            yield row, record


def rejects_path_for(path: Path) -> Path:
    ext = ".csv" if file_format(path) == "csv" else ".jsonl"
    return path.with_name(f"{path.name}.rejects{ext}")


def write_rejects(path: Path, rejected: list[Rejected]) -> Path:
    target = rejects_path_for(path)
    if target.suffix == ".csv":
        columns = ["row_number", "reject_reason", *FIELDS]
        extra = sorted({k for r in rejected for k in r.record} - set(columns))
        with target.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns + extra, extrasaction="ignore")
            writer.writeheader()
            for r in rejected:
                writer.writerow(
                    {**_as_text(r.record), "row_number": r.row, "reject_reason": r.reason}
                )
    else:
        with target.open("w", encoding="utf-8") as fh:
            for r in rejected:
                fh.write(
                    json.dumps({**r.record, "row_number": r.row, "reject_reason": r.reason}) + "\n"
                )
    return target


def _as_text(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: "" if v is None else v for k, v in record.items()}

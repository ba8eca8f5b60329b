"""Reading CSV/JSONL input files row by row, and writing their rejects files.

Shared by every file finsup ingests (revenue, beneficiaries, earnings): each
row is validated on its own, the valid ones go in, and each refused row goes
to ``<file>.rejects.csv`` (or ``.rejects.jsonl``) beside the input with
``row_number`` and ``reject_reason`` added. The rejects file keeps the input's
columns, so it can be fixed and ingested as it is. The input is never moved
or changed.

In JSONL, amounts must be strings: a JSON number has already been through a
float by the time anyone reads it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import db
from finsup_dagster.ledger.errors import InvalidInput


@dataclass(frozen=True)
class Rejected:
    row: int
    reason: str
    record: Mapping[str, Any]


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InvalidInput(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .jsonl")


def read_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yields (row number, record); row 1 is the first data row.

    A malformed row is yielded with a ``_malformed`` key (see ``split_malformed``);
    a file without the ``required`` CSV columns, or not UTF-8, is refused whole.
    """
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    fmt = file_format(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            if fmt == "csv":
                yield from _csv_records(path, fh, required)
            else:
                yield from _jsonl_records(fh)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _csv_records(
    path: Path, fh: Any, required: Sequence[str]
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.DictReader(fh)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise InvalidInput(f"{path}: missing columns {', '.join(missing)}")
    reader.fieldnames = header
    for row, record in enumerate(reader, start=1):
        if None in record:
            # More cells than header columns: the row is misaligned, not just long.
            cells = {k: v for k, v in record.items() if k is not None}
            yield row, {**cells, "_malformed": "more cells than header columns"}
        else:
            yield row, record


def _jsonl_records(fh: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for row, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield row, {"_malformed": f"not valid JSON ({exc.msg})", "raw": line.rstrip("\n")}
            continue
        if not isinstance(obj, dict):
            yield row, {"_malformed": "not a JSON object", "raw": line.rstrip("\n")}
            continue
        yield row, obj


def split_malformed(
    records: Iterator[tuple[int, Mapping[str, Any]]], rejected: list[Rejected]
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Passes well-formed records on; malformed ones go to ``rejected``."""
    for row, record in records:
        problem = record.get("_malformed")
        if problem:
            clean = {k: v for k, v in record.items() if k != "_malformed"}
            rejected.append(Rejected(row, str(problem), clean))
        else:
            yield row, record


def rejects_path_for(path: Path) -> Path:
    # JSON-shaped inputs (JSONL, API pages) get JSONL rejects; CSV keeps CSV.
    ext = ".csv" if path.suffix.lower() == ".csv" else ".jsonl"
    return path.with_name(f"{path.name}.rejects{ext}")


def write_rejects(path: Path, rejected: Sequence[Rejected], columns: Sequence[str]) -> Path | None:
    """Writes the rejects file, or removes a stale one when nothing was rejected."""
    target = rejects_path_for(path)
    if not rejected:
        target.unlink(missing_ok=True)
        return None
    if target.suffix == ".csv":
        header = ["row_number", "reject_reason", *columns]
        extra = sorted({k for r in rejected for k in r.record} - set(header))
        with target.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=header + extra, extrasaction="ignore")
            writer.writeheader()
            for r in rejected:
                cells = {k: "" if v is None else v for k, v in r.record.items()}
                writer.writerow({**cells, "row_number": r.row, "reject_reason": r.reason})
    else:
        with target.open("w", encoding="utf-8") as fh:
            for r in rejected:
                line = {**r.record, "row_number": r.row, "reject_reason": r.reason}
                fh.write(json.dumps(line) + "\n")
    return target


@dataclass
class RowsResult:
    """What happened to each row of a file: an outcome count each, or a rejection."""

    counts: dict[str, int]
    rejected: list[Rejected]
    rejects_path: Path | None

    def summary(self) -> dict[str, Any]:
        return {**self.counts, "rejected": len(self.rejected),
                "rejects_file": str(self.rejects_path) if self.rejects_path else None}  # fmt: skip


def apply_rows(
    engine: Engine,
    path: Path,
    required: Sequence[str],
    columns: Sequence[str],
    outcomes: Sequence[str],
    apply: Callable[[Connection, Mapping[str, Any]], str],
    scrub: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
) -> RowsResult:
    """Applies each row in its own savepoint of one write transaction.

    ``apply`` returns one of ``outcomes`` or raises InvalidInput; a refused row
    changes nothing and goes, through ``scrub`` (to mask what must not be kept),
    to the rejects file.
    """
    rejected: list[Rejected] = []
    records = list(split_malformed(read_records(path, required), rejected))
    counts = dict.fromkeys(outcomes, 0)
    with db.write(engine) as conn:
        for row, raw in records:
            try:
                with conn.begin_nested():
                    outcome = apply(conn, raw)
            except InvalidInput as exc:
                rejected.append(Rejected(row, str(exc), raw))
                continue
            counts[outcome] += 1
    cleaned = sorted(
        (Rejected(r.row, r.reason, scrub(r.record)) for r in rejected), key=lambda r: r.row
    )
    return RowsResult(counts, cleaned, write_rejects(path, cleaned, columns))

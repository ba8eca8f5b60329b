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
from finsup_dagster.ledger.text import SURROGATE

# Python's csv module refuses fields over 128 KiB with an exception that names
# no row; a field that long is still one row's problem (a rejected row).
csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
# Marks a CSV row whose cells do not line up with the header: any cell may hold
# any column's value (a scrubber must not trust the column names).
MISALIGNED = "_misaligned"


@dataclass(frozen=True)
class Rejected:
    row: int
    reason: str
    record: Mapping[str, Any]


def check_input(path: Path) -> None:
    """Refuses, in one line, a path that is not a regular file finsup can read."""
    if path.is_file():
        return
    if path.is_dir():
        raise InvalidInput(f"{path}: is a directory, not a file")
    if path.exists():
        raise InvalidInput(f"{path}: not a regular file")
    raise InvalidInput(f"{path}: no such file")


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
    a file without the ``required`` CSV columns, with a column twice in its
    header, or not UTF-8, is refused whole. A UTF-8 byte order mark (as
    spreadsheets save CSV) is read as such, not as part of the first column.
    """
    check_input(path)
    fmt = file_format(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
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
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise InvalidInput(f"{path}: header is not readable CSV ({exc})") from None
    # Blank header cells (a spreadsheet's trailing commas) name no column: ignored.
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        # Which of the two a row means is anybody's guess: refuse rather than pick one.
        raise InvalidInput(f"{path}: column {', '.join(repeated)} appears twice in the header")
    missing = [c for c in required if c not in header]
    if missing:
        raise InvalidInput(f"{path}: missing columns {', '.join(missing)}")
    reader.fieldnames = header
    row = 0
    try:
        for row, record in enumerate(reader, start=1):
            if None in record:
                # More cells than header columns: the row is misaligned, not just long.
                cells = {k: v for k, v in record.items() if k is not None}
                yield (
                    row,
                    {**cells, MISALIGNED: True, "_malformed": "more cells than header columns"},
                )
            else:
                yield row, record
    except csv.Error as exc:
        # The reader cannot find where the next row starts: nothing after it is trustworthy.
        raise InvalidInput(f"{path}: row {row + 1} is not readable CSV ({exc})") from None


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _has_surrogate(value: Any) -> bool:
    # Iterative: a line nested thousands deep must not exhaust the interpreter's stack.
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def _jsonl_records(fh: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for row, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        raw = line.rstrip("\r\n")
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except _RepeatedKey as exc:
            yield row, {"_malformed": f"key {exc.args[0]!r} appears twice", "raw": raw}
            continue
        except json.JSONDecodeError as exc:
            yield row, {"_malformed": f"not valid JSON ({exc.msg})", "raw": raw}
            continue
        except RecursionError:
            yield row, {"_malformed": "nested too deeply to be a record", "raw": raw}
            continue
        if not isinstance(obj, dict):
            yield row, {"_malformed": "not a JSON object", "raw": raw}
            continue
        if _has_surrogate(obj):
            # A lone \ud800-style escape decodes, but is no character: it cannot be stored.
            yield (
                row,
                {"_malformed": "not valid Unicode text (a lone surrogate escape)", "raw": raw},
            )
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


# What a rejects file adds to a row: ingesting it again ignores them.
REJECT_COLUMNS = ("row_number", "reject_reason")


def _without_conflicts(
    records: list[tuple[int, Mapping[str, Any]]], key: str, rejected: list[Rejected]
) -> list[tuple[int, Mapping[str, Any]]]:
    def content(record: Mapping[str, Any]) -> dict[str, Any]:
        return {
            k: v.strip() if isinstance(v, str) else v
            for k, v in record.items()
            if k not in REJECT_COLUMNS
        }

    rows_by_key: dict[str, list[int]] = {}
    for i, (_row, record) in enumerate(records):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            rows_by_key.setdefault(value.strip(), []).append(i)
    refused: set[int] = set()
    for value, group in rows_by_key.items():
        first = content(records[group[0]][1])
        if len(group) > 1 and any(content(records[i][1]) != first for i in group[1:]):
            numbers = [str(records[i][0]) for i in group]
            reason = (
                f"{key} {value!r} is in rows {', '.join(numbers)} with different "
                "values: keep one row for it"
            )
            for i in group:
                rejected.append(Rejected(records[i][0], reason, records[i][1]))
            refused.update(group)
    return [r for i, r in enumerate(records) if i not in refused]


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
    rejected = [
        Rejected(r.row, r.reason, {k: v for k, v in r.record.items() if k != MISALIGNED})
        for r in rejected
    ]
    if target.suffix == ".csv":
        header = [*REJECT_COLUMNS, *columns]
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
        return {
            **self.counts,
            "rejected": len(self.rejected),
            "rejects_file": str(self.rejects_path) if self.rejects_path else None,
        }


def apply_rows(
    engine: Engine,
    path: Path,
    required: Sequence[str],
    columns: Sequence[str],
    outcomes: Sequence[str],
    apply: Callable[[Connection, Mapping[str, Any]], str],
    scrub: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
    key: str | None = "external_id",
) -> RowsResult:
    """Applies each row in its own savepoint of one write transaction.

    ``apply`` returns one of ``outcomes`` or raises InvalidInput; a refused row
    changes nothing and goes, through ``scrub`` (to mask what must not be kept),
    to the rejects file. Rows of one file sharing a ``key`` but differing
    elsewhere are all refused: which of them is meant, the file does not say.
    """
    rejected: list[Rejected] = []
    records = list(split_malformed(read_records(path, required), rejected))
    if key is not None:
        records = _without_conflicts(records, key, rejected)
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

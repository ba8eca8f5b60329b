"""A Great Expectations report on one format's landed settlement inputs for a day.

The column rules of a settlement line live in one place each (docs/reconciliation.md,
"One home per rule"): the pandera model ``schemas.SettlementLines`` refuses a file whose
lines break them at landing, and the dbt tests hold the models to theirs. This report
says what neither says, about the landed inputs as a whole:

- **footer counts**: each landed file's control count (the STL file footer ``FF``, the
  camt.053 statements' ``TxsSummry/TtlNtries/NbOfNtries``) against what the warehouse
  holds of it: its rows (camt.053: its booked entries) plus the records landing
  skipped. The parsers refuse a file whose footers disagree with its body; this
  finds a file whose landed rows no longer agree with its footer. A settlement CSV
  has no footer: nothing to compare.
- **day coverage**: every day of the ``COVERAGE_DAYS`` up to the day, from the first
  day the format ever landed, has a landed file of the format.
- **currency mix**: the day's lines are in currencies the format settled in the
  ``HISTORY_DAYS`` before the day.
- **amount range**: no line is over ``AMOUNT_HEADROOM`` times the largest line of its
  currency in those days.

The last two need history: on a format's first day they are not evaluated. A footer
count that disagrees is an error (rows are missing or extra); the others are
warnings for an analyst to look at.

Great Expectations takes seconds to import, so it is imported inside
``check_landed_inputs`` and never when this module is imported. The context is
ephemeral (in memory): nothing is written to disk, and analytics are off unless the
environment explicitly turned them on (``GX_ANALYTICS_ENABLED``).
"""

from __future__ import annotations

import csv
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from finsup_dagster.formats.common import decode_text
from finsup_dagster.ledger import clock
from finsup_dagster.ledger.revenue_files import file_sha256
from finsup_dagster.warehouse.raw import TABLES

COVERAGE_DAYS = 7
HISTORY_DAYS = 28
AMOUNT_HEADROOM = 10.0

_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass
class LandedInputs:
    """What the report reads, one frame per question.

    ``files``: one row per file landed for the day (``file_name``, ``declared_records``
    from its footer or None, ``landed_records``). ``days``: one row per expected day
    (``partition_date``, ``files`` landed for it). ``lines``: the day's lines
    (``file_name``, ``record_ref``, ``currency``, ``gross_minor``, ``usual_max_minor``:
    the largest gross of the currency in the history, None without one) and
    ``usual_currencies``, the history's currencies (empty: no history).
    """

    fmt: str
    day: str
    files: pd.DataFrame
    days: pd.DataFrame
    lines: pd.DataFrame
    usual_currencies: list[str] = field(default_factory=list)

    @property
    def nothing_landed(self) -> bool:
        """No file of the format has landed up to the day: nothing to report on."""
        return self.files.empty and self.days.empty


@dataclass
class ExpectationReport:
    """What the report found: ``failed`` holds one line per unmet expectation; ``serious``
    is true when a footer count disagrees (the others are for an analyst to look at)."""

    success: bool
    evaluated: int
    failed: list[str] = field(default_factory=list)
    serious: bool = False

    def summary(self) -> str:
        if self.success:
            return f"all {self.evaluated} expectations met"
        return f"{len(self.failed)} of {self.evaluated} expectations failed: " + "; ".join(
            self.failed
        )


# -- reading the landed inputs ------------------------------------------------------------


def control_count(fmt: str, path: Path) -> int | None:
    """The records a settlement file's footer declares, or None when it declares none.

    PayPal STL: the file footer ``FF`` (every SB body row, kept or skipped). camt.053:
    the entries every statement's ``TxsSummry/TtlNtries/NbOfNtries`` counts (every
    status), None when a statement has no summary. A settlement CSV has no footer.
    """
    if fmt not in ("paypal-stl", "camt053"):
        return None
    text = decode_text(path.read_bytes(), path.name)
    if fmt == "paypal-stl":
        footer = [row for row in csv.reader(text.splitlines()) if row and row[0] == "FF"]
        return int(footer[-1][1]) if footer and len(footer[-1]) > 1 else None
    if _DECLARATION.search(text):  # refused at landing; never expanded here either
        return None
    statements = [el for el in ET.fromstring(text).iter() if _local(el.tag) == "Stmt"]
    counts = [_summary_count(stmt) for stmt in statements]
    if not counts or any(c is None for c in counts):
        return None
    return sum(c for c in counts if c is not None)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _summary_count(stmt: ET.Element) -> int | None:
    el: ET.Element | None = stmt
    for name in ("TxsSummry", "TtlNtries", "NbOfNtries"):
        el = next((c for c in el if _local(c.tag) == name), None) if el is not None else None
    return None if el is None else int((el.text or "").strip())


def landed_inputs(conn: duckdb.DuckDBPyConnection, home: Path, fmt: str, day: str) -> LandedInputs:
    """The frames the report reads, from the warehouse's raw tables and the landing zone."""
    table = f"raw.{TABLES[fmt]}"
    # camt.053 footers count entries: a batch entry landed as one row per item.
    landed = (
        "count(*) FILTER (WHERE batch_ref IS NULL) + count(DISTINCT batch_ref)"
        if fmt == "camt053"
        else "count(*)"
    )
    files = conn.execute(
        f"SELECT f.file_name, f.content_sha256, f.skipped + coalesce(l.landed, 0)"
        f" FROM raw.landed_files AS f LEFT JOIN (SELECT content_sha256, {landed} AS landed"
        f" FROM {table} WHERE partition_date = ? GROUP BY ALL) AS l USING (content_sha256)"
        " WHERE f.format = ? AND f.partition_date = ? ORDER BY f.file_name",
        [day, fmt, day],
    ).fetchall()
    declared = [_declared(fmt, home / "landing" / str(name), str(sha)) for name, sha, _ in files]
    files_frame = pd.DataFrame(
        {
            "file_name": [str(f[0]) for f in files],
            "declared_records": pd.array(declared, dtype="Int64"),
            "landed_records": pd.array([int(f[2]) for f in files], dtype="int64"),
        }
    )
    # Coverage: the days up to the day, none before the format first landed.
    first = conn.execute(
        "SELECT min(partition_date) FROM raw.landed_files WHERE format = ?", [fmt]
    ).fetchall()[0][0]
    end = date.fromisoformat(day)
    start = end - timedelta(days=COVERAGE_DAYS - 1)
    if first is not None:
        start = max(start, date.fromisoformat(str(first)))
    expected = [] if first is None else clock.days_between(start, end)
    counts = dict(
        conn.execute(
            "SELECT partition_date, count(*) FROM raw.landed_files WHERE format = ?"
            " AND partition_date BETWEEN ? AND ? GROUP BY ALL",
            [fmt, start.isoformat(), day],
        ).fetchall()
    )
    days = pd.DataFrame(
        {
            "partition_date": pd.Series(expected, dtype=object),
            "files": pd.array([int(counts.get(d, 0)) for d in expected], dtype="int64"),
        }
    )
    since = (date.fromisoformat(day) - timedelta(days=HISTORY_DAYS)).isoformat()
    usual = dict(
        conn.execute(
            f"SELECT currency, max(gross_minor) FROM {table}"
            " WHERE partition_date >= ? AND partition_date < ? GROUP BY ALL",
            [since, day],
        ).fetchall()
    )
    lines = conn.execute(
        f"SELECT file_name, record_ref, currency, gross_minor FROM {table}"
        " WHERE partition_date = ? ORDER BY file_name, row_number",
        [day],
    ).df()
    lines["usual_max_minor"] = pd.array([usual.get(c) for c in lines["currency"]], dtype="Int64")
    return LandedInputs(fmt, day, files_frame, days, lines, sorted(str(c) for c in usual))


def _declared(fmt: str, path: Path, sha: str) -> int | None:
    """The footer count of the landed file, if it is still there with the same bytes."""
    try:
        if not path.is_file() or file_sha256(path) != sha:
            return None
        return control_count(fmt, path)
    except (OSError, ValueError, ET.ParseError, IndexError):
        return None


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Question:
    name: str
    frame: str  # the LandedInputs frame it reads
    name_by: str  # the column that names an unexpected row
    serious: bool


_FOOTERS = _Question("footer counts", "files", "file_name", serious=True)
_COVERAGE = _Question("day coverage", "days", "partition_date", serious=False)
_CURRENCIES = _Question("currency mix", "lines", "record_ref", serious=False)
_AMOUNTS = _Question("amount range", "lines", "record_ref", serious=False)


def check_landed_inputs(inputs: LandedInputs) -> ExpectationReport:
    """Runs the report's expectations on ``inputs`` in an ephemeral GX context."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # slow: only when a report actually runs
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")  # in memory: no gx/ directory, no stores on disk
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas(name="finsup")
    e = gx.expectations
    lines = inputs.lines.assign(
        amount_to_usual=inputs.lines["gross_minor"] / inputs.lines["usual_max_minor"]
    )
    frames = {"files": inputs.files, "days": inputs.days, "lines": lines}
    footers = e.ExpectColumnPairValuesToBeEqual(
        column_A="declared_records",
        column_B="landed_records",
        ignore_row_if="either_value_is_missing",  # no footer (a CSV), or the file is gone
    )
    asked: list[tuple[_Question, Any]] = [
        (_FOOTERS, footers),
        (_COVERAGE, e.ExpectColumnValuesToBeBetween(column="files", min_value=1)),
    ]
    if inputs.usual_currencies:  # distributions need a history to compare with
        currencies = e.ExpectColumnValuesToBeInSet(
            column="currency", value_set=inputs.usual_currencies
        )
        amounts = e.ExpectColumnValuesToBeBetween(
            column="amount_to_usual", max_value=AMOUNT_HEADROOM
        )
        asked += [(_CURRENCIES, currencies), (_AMOUNTS, amounts)]
    failed: list[str] = []
    serious = False
    for frame in frames:
        questions = [(q, x) for q, x in asked if q.frame == frame]
        if not questions:
            continue
        asset = source.add_dataframe_asset(name=frame)
        batch = asset.add_batch_definition_whole_dataframe(name="whole_frame").get_batch(
            batch_parameters={"dataframe": frames[frame]}
        )
        for question, expectation in questions:
            result = batch.validate(
                expectation,
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": [question.name_by],
                },
            )
            if not result.success:
                failed.append(_describe(question, result))
                serious = serious or question.serious
    return ExpectationReport(not failed, len(asked), failed, serious)


def _describe(question: _Question, result: Any) -> str:
    """One line for an unmet expectation: what it asks, and the first rows that miss it."""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = re.sub(r"\s+", " ", str(info.get("exception_message") or "")).strip()
        return f"{question.name}: error {message[:100]}"
    details = result.result or {}
    rows = details.get("unexpected_index_list") or []
    count = int(details.get("unexpected_count") or len(rows))
    shown = [_row(question, r) for r in rows[:3] if isinstance(r, dict)]
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    return f"{question.name}: {count} {_WHAT[question.name]}: {', '.join(shown)}{more}"


_WHAT = {
    "footer counts": "file(s) whose landed records disagree with the footer",
    "day coverage": "day(s) without a landed file",
    "currency mix": "line(s) in a currency not settled before",
    "amount range": f"line(s) over {AMOUNT_HEADROOM:g}x the largest of their currency before",
}


def _row(question: _Question, row: dict[str, Any]) -> str:
    name = str(row.get(question.name_by))
    if question is _FOOTERS:
        return f"{name} (footer {row.get('declared_records')}, landed {row.get('landed_records')})"
    if question is _CURRENCIES:
        return f"{name} ({row.get('currency')})"
    return name


__all__ = [
    "AMOUNT_HEADROOM",
    "COVERAGE_DAYS",
    "HISTORY_DAYS",
    "ExpectationReport",
    "LandedInputs",
    "check_landed_inputs",
    "control_count",
    "landed_inputs",
]

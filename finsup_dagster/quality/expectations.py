"""A Great Expectations suite over parsed settlement lines.

Great Expectations takes seconds to import, so it is imported inside
``check_settlement_lines`` and never when this module is imported. The context is
ephemeral (in memory): nothing is written to disk, and analytics are off unless the
environment explicitly turned them on (``GX_ANALYTICS_ENABLED``).

The pandera schema (``schemas.SettlementLines``) is the gate that refuses a frame; this
suite is the report: it says which expectations a frame misses and how often.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from finsup_dagster.quality.schemas import DIRECTIONS, SETTLEMENT_KINDS, SettlementLines

# GX's pandas engine matches with ``re.match``: these are the patterns of the brief.
CURRENCY_REGEX = r"^[A-Z]{3}$"
DATE_REGEX = r"^\d{4}-\d{2}-\d{2}$"

SETTLEMENT_COLUMNS: tuple[str, ...] = tuple(SettlementLines.to_schema().columns)

SUITE_NAME = "settlement_lines"


@dataclass
class ExpectationReport:
    """What the suite found: ``failed`` holds one line per unmet expectation."""

    success: bool
    evaluated: int
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.success:
            return f"all {self.evaluated} expectations met"
        return f"{len(self.failed)} of {self.evaluated} expectations failed: " + "; ".join(
            self.failed
        )


def check_settlement_lines(df: pd.DataFrame) -> ExpectationReport:
    """Runs the settlement-lines suite on ``df`` in an ephemeral GX context."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # slow: only when a suite actually runs
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")  # in memory: no gx/ directory, no stores on disk
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas(name="finsup")
    asset = source.add_dataframe_asset(name=SUITE_NAME)
    batch_definition = asset.add_batch_definition_whole_dataframe(name="whole_frame")
    suite = context.suites.add(_suite(gx))
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite)
    failed = [_describe(r) for r in result.results if not r.success]
    return ExpectationReport(
        success=bool(result.success), evaluated=len(result.results), failed=failed
    )


def _suite(gx: Any) -> Any:
    e = gx.expectations
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for expectation in (
        e.ExpectTableColumnsToMatchSet(column_set=list(SETTLEMENT_COLUMNS), exact_match=False),
        e.ExpectColumnValuesToNotBeNull(column="gross_minor"),
        e.ExpectColumnValuesToBeBetween(column="gross_minor", min_value=1),
        e.ExpectColumnValuesToMatchRegex(column="currency", regex=CURRENCY_REGEX),
        e.ExpectColumnValuesToMatchRegex(column="fee_currency", regex=CURRENCY_REGEX),
        e.ExpectColumnValuesToBeInSet(column="direction", value_set=list(DIRECTIONS)),
        e.ExpectColumnValuesToBeInSet(column="kind", value_set=list(SETTLEMENT_KINDS)),
        e.ExpectColumnValuesToMatchRegex(column="settled_on", regex=DATE_REGEX),
        e.ExpectCompoundColumnsToBeUnique(column_list=["content_sha256", "row_number"]),
        e.ExpectColumnValuesToNotBeNull(column="fee_minor"),
    ):
        suite.add_expectation(expectation)
    return suite


def _describe(result: Any) -> str:
    """One line for an unmet expectation: its type, its column(s), what went wrong."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    target = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
    head = f"{config.type} {target}".strip()
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = re.sub(r"\s+", " ", str(info.get("exception_message") or "")).strip()
        return f"{head}: error {message[:100]}"
    details = result.result or {}
    if "unexpected_count" in details:
        return f"{head}: {details['unexpected_count']} unexpected"
    mismatched = (details.get("details") or {}).get("mismatched") or {}
    missing = mismatched.get("missing") if isinstance(mismatched, dict) else None
    if missing:
        return f"{head}: missing {', '.join(sorted(map(str, missing)))}"
    return f"{head}: not met"


__all__ = ["SETTLEMENT_COLUMNS", "ExpectationReport", "check_settlement_lines"]

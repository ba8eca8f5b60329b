"""Small builders for the metadata analysts read in the Dagster UI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from finsup_dagster.ledger.money import format_minor


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], limit: int = 20
) -> str:
    if not rows:
        return "_no rows_"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more rows not shown_")
    return "\n".join(lines)


def money_by_currency(prefix: str, amounts: Mapping[str, int]) -> dict[str, dg.MetadataValue]:
    """One entry per currency, in minor units (integers) with the major-unit text beside."""
    out: dict[str, dg.MetadataValue] = {}
    for currency, minor in sorted(amounts.items()):
        out[f"{prefix}_{currency}_minor"] = dg.MetadataValue.int(minor)
        out[f"{prefix}_{currency}"] = dg.MetadataValue.text(
            f"{format_minor(minor, currency)} {currency}"
        )
    return out

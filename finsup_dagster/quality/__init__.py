"""Data quality for the pipeline's frames: pandera schemas and a Great Expectations suite.

``schemas`` holds the pandera models and ``validate`` (one-line ``InvalidInput``);
``expectations`` runs the Great Expectations suite on settlement lines and imports
Great Expectations only when called. Nothing here imports Dagster.
"""

from finsup_dagster.quality.schemas import (
    LedgerRevenueEvents,
    RawRevenueRows,
    ReconciliationMatches,
    SettlementLines,
    empty_frame,
    validate,
)

__all__ = [
    "LedgerRevenueEvents",
    "RawRevenueRows",
    "ReconciliationMatches",
    "SettlementLines",
    "empty_frame",
    "validate",
]

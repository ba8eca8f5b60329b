"""Thresholds for the reconciliation checks, from the environment."""

import dagster as dg
from pydantic import Field


class ReconciliationPolicyResource(dg.ConfigurableResource):
    """How much unmatched revenue is tolerable before a warning (docs/reconciliation.md)."""

    unmatched_rate_threshold: str = Field(
        default="0.05",
        description="FINSUP_UNMATCHED_RATE_THRESHOLD: warn above this share of due events open",
    )

    @property
    def threshold(self) -> float:
        # A ratio of counts, not money: a float is the right type here.
        return float(self.unmatched_rate_threshold)

"""Dagster resources, each fed by environment variables through ``dg.EnvVar``."""

import dagster as dg

from finsup_dagster.resources.ledger import LedgerResource
from finsup_dagster.resources.payout_policy import PayoutPolicyResource

__all__ = ["LedgerResource", "PayoutPolicyResource", "resources_from_env"]


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources every definition uses; dev, CI and production differ only in env."""
    return {
        "ledger": LedgerResource(url=dg.EnvVar("FINSUP_LEDGER_URL"), home=dg.EnvVar("FINSUP_HOME")),
        "payout_policy": PayoutPolicyResource(
            min_item=dg.EnvVar("FINSUP_MIN_ITEM"),
            max_batch_total=dg.EnvVar("FINSUP_MAX_BATCH_TOTAL"),
            dual_approval_over=dg.EnvVar("FINSUP_DUAL_APPROVAL_OVER"),
        ),
    }

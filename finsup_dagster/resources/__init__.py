"""Dagster resources, each fed by environment variables through ``dg.EnvVar``."""

import dagster as dg

from finsup_dagster.resources.ledger import LedgerResource

__all__ = ["LedgerResource", "resources_from_env"]


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources every definition uses; dev, CI and production differ only in env."""
    return {
        "ledger": LedgerResource(
            url=dg.EnvVar("FINSUP_LEDGER_URL"),
            home=dg.EnvVar("FINSUP_HOME"),
        ),
    }

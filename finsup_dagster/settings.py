"""Which environment we are in, and the embedded defaults for local runs.

Definitions read every setting through ``dg.EnvVar``. Local entry points
(the ``finsup`` CLI, ``make demo``, ``make dev``) call ``apply_local_defaults``
first, so an unset variable falls back to the embedded stack under
``FINSUP_HOME``: SQLite ledger, DuckDB warehouse, Dagster instance.
"""

from __future__ import annotations

import os
from pathlib import Path

DEPLOYMENTS = ("local", "ci", "production")


def deployment() -> str:
    """``FINSUP_DEPLOYMENT`` if set, else ``ci`` under CI, else ``local``."""
    explicit = os.environ.get("FINSUP_DEPLOYMENT")
    if explicit:
        if explicit not in DEPLOYMENTS:
            raise ValueError(
                f"FINSUP_DEPLOYMENT={explicit!r} is not one of {', '.join(DEPLOYMENTS)}"
            )
        return explicit
    return "ci" if os.environ.get("CI") else "local"


def local_defaults(home: Path) -> dict[str, str]:
    home = home.absolute()
    return {
        "FINSUP_HOME": str(home),
        "FINSUP_LEDGER_URL": f"sqlite:///{home / 'ledger.db'}",
        "FINSUP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"),
        "DAGSTER_HOME": str(home / "dagster_home"),
    }


def apply_local_defaults() -> dict[str, str]:
    """Fills unset variables with the embedded defaults; production must set them all."""
    home = Path(os.environ.get("FINSUP_HOME", ".finsup"))
    applied = {}
    for key, value in local_defaults(home).items():
        if key not in os.environ and deployment() != "production":
            os.environ[key] = value
            applied[key] = value
    return applied

"""The dbt project, as dagster-dbt describes it (``DbtProject``).

``make install`` (and so ``make test`` and CI) parses the manifest once, through
the project's own preparer; under ``dagster dev`` (``finsup dev``) it is parsed
again when the definitions load (``prepare_if_dev``), so an edited model shows
without reinstalling. Anywhere else the manifest ``make install`` wrote is read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def dbt_executable() -> str:
    """The dbt installed beside this Python, so an unactivated venv still finds it."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def dbt_command(*args: str, target: Path, variables: Mapping[str, object]) -> list[str]:
    """A dbt command line on this project, outside Dagster (tests, benchmarks): its
    compiled SQL and logs in ``target``, the night and the warehouse as ``--vars``."""
    return [
        dbt_executable(),
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target),
        "--log-path",
        str(target / "logs"),
        "--vars",
        json.dumps(variables),
    ]


@cache
def manifest_path() -> Path:
    """The manifest ``@dbt_assets`` reads; prepared once per process, and only under dev."""
    dbt_project.prepare_if_dev()
    if not dbt_project.manifest_path.exists():
        raise FileNotFoundError(
            f"the dbt manifest {dbt_project.manifest_path} is missing: run `make install`"
        )
    return dbt_project.manifest_path


def prepare() -> None:
    """What ``make install`` runs: ``dbt parse`` into ``dbt_project/target``."""
    dbt_project.preparer.prepare(dbt_project)

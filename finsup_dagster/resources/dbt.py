"""The dbt project and its manifest, which dagster-dbt needs before any run.

``make install`` and ``make test`` run ``dbt parse`` so the manifest is there;
a checkout without one (an IDE, a fresh clone) gets it parsed once, on first
use, into a private folder and moved into place, so two processes starting at
once never read a half-written file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


def dbt_executable() -> str:
    """The dbt installed beside this Python, so an unactivated venv still finds it."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


@cache
def manifest_path() -> Path:
    if not MANIFEST.exists():
        parse_project()
    return MANIFEST


def parse_project() -> None:
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MANIFEST.parent) as scratch:
        env = {
            **os.environ,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            # parse never opens the warehouse, but the profile must render.
            "FINSUP_WAREHOUSE_PATH": os.environ.get("FINSUP_WAREHOUSE_PATH", "unused.duckdb"),
        }
        subprocess.run(
            [dbt_executable(), "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
             "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", scratch],
            check=True, env=env, cwd=DBT_PROJECT_DIR,
        )  # fmt: skip
        # Same file system (the scratch folder is inside target/): an atomic rename.
        os.replace(Path(scratch) / "manifest.json", MANIFEST)

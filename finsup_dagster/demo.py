"""`finsup demo`: the main job on the embedded defaults, from a fresh checkout.

Initialises the books, lands the bundled sample files, runs the ``books``
job through the Dagster instance under ``DAGSTER_HOME`` (so the run shows in
the UI), imports the sample beneficiaries and runs ``create_payout_batches``,
which leaves batches pending approval.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from finsup_dagster.ledger import db, migrate

if TYPE_CHECKING:
    import dagster as dg

SAMPLE_DATA = Path(__file__).with_name("sample_data")
INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def prepare_instance(dagster_home: Path) -> None:
    """Creates DAGSTER_HOME with finsup's instance settings unless it has its own."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, target)


def land_samples(landing: Path) -> list[Path]:
    """Copies the bundled sample files into the landing zone (existing files are kept)."""
    copied = []
    for src in sorted(SAMPLE_DATA.rglob("*")):
        if src.is_file():
            dest = landing / src.relative_to(SAMPLE_DATA)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(src, dest)
                copied.append(dest)
    return copied


def run_job(
    name: str, tags: dict[str, str] | None = None, partition_key: str | None = None
) -> dg.ExecuteInProcessResult:
    """Runs a job in process against the persistent instance, so the run shows in the UI."""
    import dagster as dg

    from finsup_dagster.definitions import defs

    prepare_instance(Path(os.environ["DAGSTER_HOME"]))
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(name).execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags=tags,
            partition_key=partition_key,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )


def run() -> dict[str, bool]:
    """The demo: books job, then beneficiaries and the payout batches job. Returns run outcomes."""
    from finsup_dagster.ledger import beneficiaries

    engine = db.make_engine()
    migrate.upgrade(engine)
    landing = db.finsup_home() / "landing"
    land_samples(landing)
    outcome = {"books": run_job("books").success}
    beneficiaries.import_file(engine, landing / "beneficiaries.csv", actor="demo")
    engine.dispose()
    outcome["create_payout_batches"] = run_job(
        "create_payout_batches", tags={"finsup/actor": "demo"}
    ).success
    return outcome

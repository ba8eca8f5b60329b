"""`finsup demo`: the main job on the embedded defaults, from a fresh checkout.

Initialises the books, lands the bundled sample files, generates a
multi-source reconciliation sample (sample_data/generate.py), serves its PayPal
transactions from the bundled sandbox, runs ``nightly_reconciliation`` for
each sample day through the Dagster instance under ``DAGSTER_HOME`` (so the
runs show in the UI), imports the sample beneficiaries and runs
``create_payout_batches``, which leaves batches pending approval.
"""

from __future__ import annotations

import os
import shutil
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        if src.is_file() and src.suffix in (".csv", ".jsonl"):  # data, not the generator
            dest = landing / src.relative_to(SAMPLE_DATA)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(src, dest)
                copied.append(dest)
    return copied


def dagster_instance() -> dg.DagsterInstance:
    """The persistent instance under DAGSTER_HOME (a context manager), so runs show in the UI."""
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        from finsup_dagster.ledger.errors import LedgerError

        raise LedgerError("DAGSTER_HOME is not set: point it at the Dagster instance folder")
    prepare_instance(Path(home))
    return dg.DagsterInstance.get()


def run_job(
    name: str,
    tags: dict[str, str] | None = None,
    partition_key: str | None = None,
    ops: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Runs a job in process against the persistent instance, so the run shows in the UI."""
    # Dagster's warnings (beta parameters, backfill policies) speak to developers,
    # and the run's own log lines are in the run (the UI shows them): the caller
    # prints the outcome and every failed check.
    with warnings.catch_warnings(), dagster_instance() as instance:
        warnings.simplefilter("ignore")
        from finsup_dagster.definitions import defs

        return defs.resolve_job_def(name).execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags=tags,
            partition_key=partition_key,
            run_config={
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                **({"ops": ops} if ops else {}),
            },
        )


SAMPLE_START = date(2026, 11, 16)
SAMPLE_DAYS = 6  # the generated sample's five days, and the bundled files' last day


def sample_days() -> list[str]:
    return [(SAMPLE_START + timedelta(days=i)).isoformat() for i in range(SAMPLE_DAYS)]


def generate_once(home: Path) -> Path:
    """The multi-source reconciliation sample, generated on the first demo only."""
    from finsup_dagster.sample_data.generate import generate_sample

    sandbox_dir = home / "sandbox"
    marker = sandbox_dir / ".generated"
    if not marker.exists():
        sandbox_dir.mkdir(parents=True, exist_ok=True)
        (sandbox_dir / "paypal_transactions.jsonl").unlink(missing_ok=True)
        generate_sample(home, sandbox_dir, start=SAMPLE_START, days=SAMPLE_DAYS - 1)
        marker.touch()
    return sandbox_dir


def run() -> dict[str, bool]:
    """The demo: the nightly reconciliation for each sample day with the PayPal sandbox
    serving the API, then beneficiaries and the payout batches job. Returns run outcomes."""
    from finsup_dagster import settings
    from finsup_dagster.gateways.sandbox import create_app, serve_in_thread
    from finsup_dagster.ledger import beneficiaries

    engine = db.make_engine()
    migrate.upgrade(engine)
    home = db.finsup_home()
    landing = home / "landing"
    land_samples(landing)
    sandbox_dir = generate_once(home)
    outcome = {}
    app = create_app(sandbox_dir, settings.SANDBOX_CLIENT_ID, settings.SANDBOX_CLIENT_SECRET)
    with serve_in_thread(app) as base_url:
        os.environ.update(
            {
                "FINSUP_PAYPAL_BASE_URL": base_url,
                "FINSUP_PAYPAL_CLIENT_ID": settings.SANDBOX_CLIENT_ID,
                "FINSUP_PAYPAL_CLIENT_SECRET": settings.SANDBOX_CLIENT_SECRET,
            }
        )
        for day in sample_days():
            result = run_job("nightly_reconciliation", {"finsup/actor": "demo"}, partition_key=day)
            outcome[f"nightly_reconciliation {day}"] = result.success
    beneficiaries.import_file(engine, landing / "beneficiaries.csv", actor="demo")
    engine.dispose()
    outcome["create_payout_batches"] = run_job(
        "create_payout_batches", tags={"finsup/actor": "demo"}
    ).success
    return outcome

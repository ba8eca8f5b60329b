"""`finsup rebuild-warehouse`: a new warehouse from the landing zone and the books.

The warehouse is derived data (docs/architecture.md), so a change to the shape of
its tables is never patched in place: ``warehouse.version`` refuses a warehouse of
another schema version, and this builds a new one beside it. It replays the nights
from the first day anything landed, each as the nightly job runs it (the same
Dagster assets: land that day's kept files, copy the books, ``dbt build`` the
day), without the steps that write to the books (revenue ingestion, confirmations)
and without fetching from PayPal (the pages fetched before are kept files, landed
again). Only when every night succeeded does the new file take the old one's
place; the old one is kept beside it, renamed, for as long as anyone wants it.

The old warehouse stays open, and so locked, for the whole rebuild: a nightly run
that starts meanwhile is refused as "busy" instead of writing a file about to be
replaced.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from finsup_dagster import landing
from finsup_dagster.ledger import clock
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.warehouse.connection import one, open_file

if TYPE_CHECKING:
    import dagster as dg


@dataclass
class RebuildReport:
    path: Path
    nights: list[str]
    files: int
    matches: int
    kept_as: Path | None
    quarantined: list[str] = field(default_factory=list)


def landing_days(zone: Path) -> list[str]:
    """Every day some format has a folder for in the landing zone, in order."""
    days = set()
    for fmt in landing.FORMATS:
        folder = zone / fmt
        if folder.is_dir():
            for child in folder.iterdir():
                try:
                    days.add(date.fromisoformat(child.name).isoformat())
                except ValueError:
                    continue  # not a day's folder: nothing landing would read either
    return sorted(days)


def nights_to_rebuild(zone: Path, through: str | None, partition_days: list[str]) -> list[str]:
    """Each day from the first landed one to ``through`` (default: the last landed one)."""
    days = landing_days(zone)
    if not days:
        raise LedgerError(f"nothing to rebuild from: {zone} holds no day folders")
    last = through or days[-1]
    if last < days[0]:
        raise LedgerError(f"--through {last} is before the first landed day, {days[0]}")
    nights = clock.days_between(date.fromisoformat(days[0]), date.fromisoformat(last))
    known = set(partition_days)
    outside = [n for n in nights if n not in known]
    if outside:
        raise LedgerError(
            f"{outside[0]} is not a reconciliation day (days run from {partition_days[0]}"
            f" to {partition_days[-1]}): move its folder out of {zone} or set --through"
        )
    return nights


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Holds the old warehouse's write lock (if it exists) until the swap."""
    if not path.exists():
        yield
        return
    conn = open_file(path, then="rebuild it when the run has finished")
    try:
        yield
    finally:
        conn.close()


def rebuild(
    target: Path, home: Path, *, through: str | None = None, tags: dict[str, str] | None = None
) -> RebuildReport:
    """Builds the warehouse anew at ``target``; returns what the new one holds."""
    from finsup_dagster.assets.partitions import daily

    nights = nights_to_rebuild(home / "landing", through, list(daily.get_partition_keys()))
    work = target.with_name(f"{target.name}.rebuilding")
    kept_as: Path | None = None
    before = _quarantine(home)
    with _held(target):
        _remove(work)  # what a rebuild that died left behind
        try:
            for night in nights:
                result = _night(work, night, tags or {})
                if not result.success:
                    failure = next(
                        (e.message for e in result.all_events if e.is_step_failure), None
                    )
                    raise LedgerError(
                        f"rebuilding night {night} failed (run {result.run_id}): "
                        f"{(failure or 'see the run in the UI').splitlines()[0]};"
                        f" the warehouse at {target} is unchanged"
                    )
        except BaseException:
            _remove(work)
            raise
        with duckdb.connect(str(work), read_only=True) as conn:
            files = one(conn, "SELECT count(*) FROM raw.landed_files")
            matches = one(conn, "SELECT count(*) FROM main.reconciliation_match_keys")
        if target.exists():
            stamp = clock.now().replace(":", "").replace("-", "")
            kept_as = target.with_name(f"{target.stem}.before-rebuild-{stamp}{target.suffix}")
    # Files this finsup refuses that an earlier one landed were moved to quarantine.
    quarantined = sorted(
        str(p.relative_to(home))
        for p in _quarantine(home) - before
        if not p.name.endswith(landing.REASON_SUFFIX)
    )
    # The old file's lock is released; the swap is two renames in one folder.
    if kept_as is not None:
        _move(target, kept_as)
    _move(work, target)
    return RebuildReport(
        target,
        nights,
        int(files[0]) if files else 0,
        int(matches[0]) if matches else 0,
        kept_as,
        quarantined,
    )


def _night(work: Path, night: str, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from finsup_dagster.assets.ledger_replica import ledger_replica
    from finsup_dagster.assets.raw import raw_assets
    from finsup_dagster.assets.reconciliation import reconciliation_models
    from finsup_dagster.demo import dagster_instance
    from finsup_dagster.resources import PayPalReportingResource, resources_from_env

    resources = {
        **resources_from_env(),
        "duckdb": DuckDBResource(database=str(work)),
        "paypal": PayPalReportingResource(),  # no base URL: the kept pages, no fetch
    }
    with warnings.catch_warnings(), dagster_instance() as instance:
        warnings.simplefilter("ignore")  # Dagster's notes to developers, as in run_job
        return dg.materialize(
            [*raw_assets, ledger_replica, reconciliation_models],
            resources=resources,
            partition_key=night,
            instance=instance,
            tags={"finsup/rebuild": "warehouse", **tags},
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )


def _quarantine(home: Path) -> set[Path]:
    folder = home / "quarantine"
    return {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def _companions(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + ".wal")]


def _remove(path: Path) -> None:
    for p in _companions(path):
        p.unlink(missing_ok=True)


def _move(source: Path, dest: Path) -> None:
    for src, dst in zip(_companions(source), _companions(dest), strict=True):
        if src.exists():
            src.replace(dst)

"""`finsup reconcile` and `finsup report-reconciliation`: the nightly job by hand, and its results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finsup_dagster.cli.common import JsonFlag, app, emit_json, fail, out
from finsup_dagster.formats.common import check_date
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.money import format_minor

if TYPE_CHECKING:
    import dagster as dg

DateOption = Annotated[str, typer.Option("--date", help="The day to reconcile, YYYY-MM-DD.")]


def warehouse_path() -> Path:
    path = os.environ.get("FINSUP_WAREHOUSE_PATH")
    if not path:
        raise LedgerError("FINSUP_WAREHOUSE_PATH is not set")
    return Path(path)


@app.command()
def reconcile(date: DateOption, as_json: JsonFlag = False) -> None:
    """Run the nightly_reconciliation job for one day's partition (the run shows in the UI).

    Exits 1 when the run fails or an error-severity check fails.
    """
    import dagster as dg

    from finsup_dagster.assets.partitions import daily
    from finsup_dagster.demo import run_job

    day = check_date(date)
    if day not in daily.get_partition_keys():
        raise LedgerError(
            f"{day} is not a reconciliation day: days run from "
            f"{daily.start.date().isoformat()} to {daily.get_last_partition_key()}"
        )
    result = run_job("nightly_reconciliation", tags={"finsup/actor": "cli"}, partition_key=day)
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    errors = [e for e in failed if e.severity == dg.AssetCheckSeverity.ERROR]
    step_failures = [e.message for e in result.all_events if e.is_step_failure and e.message]
    report = _report_or_none(day) if result.success else None
    if as_json:
        emit_json(
            {
                "date": day,
                "run_id": result.run_id,
                "succeeded": result.success,
                "failed_checks": [_check_json(e) for e in failed],
                "report": report,
            }
        )
    else:
        state = "succeeded" if result.success else "FAILED"
        out.print(f"nightly_reconciliation for {day}: {state} (run {result.run_id})")
        for message in step_failures:
            out.print(f"  step failed: {message}")
        for e in failed:
            label = "ERROR" if e.severity == dg.AssetCheckSeverity.ERROR else "warning"
            out.print(f"  {label}: {e.asset_key.to_user_string()} {e.check_name}: {_desc(e)}")
        if report is not None:
            _print_report(report)
    if not result.success or errors:
        raise typer.Exit(1)


@app.command("report-reconciliation")
def report_reconciliation(
    date: Annotated[
        str | None, typer.Option("--date", help="YYYY-MM-DD; default: the latest reconciled day.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Counts and totals of matched items and of each exception kind, for one day."""
    from finsup_dagster.warehouse import reports
    from finsup_dagster.warehouse.connection import connect

    asked = check_date(date) if date else None  # a bad date is refused before anything is opened
    with connect(warehouse_path(), read_only=True) as conn:
        day = asked or reports.latest_run_date(conn)
        if day is None:
            fail("nothing reconciled yet: run `finsup reconcile --date YYYY-MM-DD` first")
        report = reports.report(conn, day)
        if not report["totals"]:
            fail(f"{day} has not been reconciled: run `finsup reconcile --date {day}`")
    if as_json:
        emit_json(report)
    else:
        _print_report(report)


@app.command("rebuild-warehouse")
def rebuild_warehouse(
    through: Annotated[
        str | None,
        typer.Option("--through", help="YYYY-MM-DD, the last night; default: the last landed day."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Build the warehouse anew from the landing zone's kept files and the books.

    For a warehouse of another schema version (after an upgrade of finsup), or one
    in doubt. Replays every night from the first landed day; the books are read,
    never written; the old warehouse is kept beside the new one, renamed.
    """
    from finsup_dagster import rebuild
    from finsup_dagster.ledger import db

    last = check_date(through) if through else None
    report = rebuild.rebuild(
        warehouse_path(), db.finsup_home(), through=last, tags={"finsup/actor": "cli"}
    )
    if as_json:
        emit_json(
            {
                "warehouse": str(report.path),
                "nights": report.nights,
                "files_landed": report.files,
                "matches": report.matches,
                "old_warehouse_kept_as": str(report.kept_as) if report.kept_as else None,
                "quarantined": report.quarantined,
            }
        )
        return
    out.print(
        f"warehouse rebuilt at {report.path}: {len(report.nights)} nights"
        f" ({report.nights[0]} to {report.nights[-1]}), {report.files} files landed,"
        f" {report.matches} matches"
    )
    if report.kept_as:
        out.print(f"the old warehouse is kept as {report.kept_as}")
    for name in report.quarantined:
        out.print(f"  quarantined (this finsup refuses it): {name}")


def _report_or_none(day: str) -> dict[str, Any] | None:
    from finsup_dagster.warehouse import reports
    from finsup_dagster.warehouse.connection import connect

    with connect(warehouse_path(), read_only=True) as conn:
        return reports.report(conn, day)


def _print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    from finsup_dagster.warehouse.reports import EXCEPTION_KINDS

    table = Table(title=f"Reconciliation {report['date']}")
    for col in ("category", "items", "net amount", "fees"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for category in ("matched", *EXCEPTION_KINDS, "awaiting_settlement"):
        per_currency = report["totals"].get(category, {})
        amounts = ", ".join(
            f"{format_minor(v['net_amount_minor'], c)} {c}" for c, v in per_currency.items()
        )
        fees = ", ".join(
            f"{format_minor(v['fee_minor'], c)} {c}"
            for c, v in per_currency.items()
            if v["fee_minor"]
        )
        table.add_row(category, str(report[category]), amounts or "-", fees or "-")
    out.print(table)
    out.print(f"matched to date: {report['matched_to_date']}")


def _desc(e: dg.AssetCheckEvaluation) -> str:
    return e.description or ""


def _check_json(e: dg.AssetCheckEvaluation) -> dict[str, Any]:
    return {
        "asset": e.asset_key.to_user_string(),
        "check": e.check_name,
        "severity": e.severity.value,
        "description": _desc(e),
    }

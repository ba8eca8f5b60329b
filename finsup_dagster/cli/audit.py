"""`finsup` commands for auditors and the finance team: the snapshot, its verification,
the reconciliation export and the annual tax report (docs/audit.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from finsup_dagster.cli.common import JsonFlag, app, check_files, emit_json, engine, fail, out


def _warehouse() -> Path | None:
    # Optional for a snapshot: without a warehouse its reconciliation tables are empty.
    path = os.environ.get("FINSUP_WAREHOUSE_PATH")
    return Path(path) if path else None


@app.command("export-audit-snapshot")
def export_audit_snapshot(
    out_path: Annotated[Path, typer.Option("--out", help="The DuckDB file to write.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="ISO 8601 instant with offset: the books then.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write the books to one DuckDB file with a manifest of per-table hashes.

    Written under a temporary name and renamed, so a crash never leaves half a
    snapshot. The ledger is only read; the warehouse is opened read-only.
    """
    from finsup_dagster.audit.snapshot import export_snapshot
    from finsup_dagster.ledger.clock import parse_instant

    instant = parse_instant(as_of, "--as-of") if as_of else None
    if out_path.is_dir():
        fail(f"{out_path} is a folder: give the snapshot's file name")
    result = export_snapshot(engine(), out_path, instant, _warehouse())
    if as_json:
        emit_json(result.as_dict())
        return
    tables = len(result.manifest)
    when = f" as of {result.as_of}" if result.as_of else ""
    out.print(f"snapshot written: {result.path}{when} ({tables} tables, {result.size_bytes} bytes)")
    out.print(f"chain head: row {result.chain_head_seq}, {result.chain_head_hash}")
    out.print(f"snapshot digest (keep it): {result.digest}")


@app.command("verify-audit-snapshot")
def verify_audit_snapshot(
    path: Annotated[Path, typer.Argument(help="A snapshot written by export-audit-snapshot.")],
    as_json: JsonFlag = False,
) -> None:
    """Verify a snapshot from the file alone: manifest hashes, chain, journal, trial balance.

    Opens the file read-only. Exits 1 naming each table or row that differs.
    """
    import duckdb

    from finsup_dagster.audit.verify import verify_snapshot

    check_files([path])
    try:
        report = verify_snapshot(path)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        fail(f"{path} cannot be read as a DuckDB snapshot: {first}")
    if as_json:
        emit_json(report.as_dict())
    elif report.ok:
        out.print(f"snapshot intact: {report.tables} tables match the manifest")
        out.print(f"audit chain intact: {report.chain_rows} rows, head {report.chain_head}")
        out.print("journal balanced per currency; trial balance equals the postings")
        out.print(f"snapshot digest: {report.digest}")
    else:
        for problem in report.problems:
            typer.echo(problem.line(), err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("export-reconciliation")
def export_reconciliation(
    date: Annotated[str, typer.Option("--date", help="First night, YYYY-MM-DD.")],
    out_path: Annotated[Path, typer.Option("--out", help="The file to write.")],
    to: Annotated[
        str | None, typer.Option("--to", help="Last night, YYYY-MM-DD (default: --date).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, parquet or json.")] = "csv",
    as_json: JsonFlag = False,
) -> None:
    """Matched pairs (with their rule) and exceptions (with kind and detail), one file
    with a ``kind`` column."""
    from finsup_dagster.audit.reconciliation import export_reconciliation as export
    from finsup_dagster.cli.reconcile import warehouse_path
    from finsup_dagster.formats.common import check_date

    first = check_date(date)
    last = check_date(to) if to else first
    counts = export(warehouse_path(), first, last, fmt, out_path)
    if as_json:
        emit_json({"path": str(out_path), "from": first, "to": last, "rows": counts})
        return
    summary = ", ".join(f"{k} {n}" for k, n in counts.items()) or "no rows"
    out.print(f"{out_path}: {first} to {last}: {summary}")


@app.command("export-tax-report")
def export_tax_report(
    year: Annotated[int, typer.Option("--year", min=1970, max=9998, help="Calendar year (UTC).")],
    out_path: Annotated[Path, typer.Option("--out", help="The CSV file to write.")],
    as_json: JsonFlag = False,
) -> None:
    """Totals paid per beneficiary and currency in a year, masked tax id, tax form status;
    beneficiaries paid without a received or verified tax form flagged."""
    from finsup_dagster.audit.tax_report import tax_rows, write_csv
    from finsup_dagster.ledger import db

    with db.read(engine()) as conn:
        rows = tax_rows(conn, year)
    write_csv(rows, out_path)
    flagged = sum(1 for r in rows if r["tax_form_missing"])
    if as_json:
        emit_json({"path": str(out_path), "year": year, "rows": len(rows), "flagged": flagged})
        return
    out.print(f"{out_path}: {len(rows)} rows for {year}, {flagged} paid without a tax form on file")

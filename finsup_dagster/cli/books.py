"""`finsup` commands over the books: init, revenue, balances, reserves, the audit chain."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.engine import Engine

from finsup_dagster.cli.common import (
    JsonFlag,
    actor,
    app,
    check_files,
    each_file,
    emit_json,
    engine,
    out,
    report_files,
)
from finsup_dagster.ledger import audit_log, balance, controls, db, seals
from finsup_dagster.ledger.money import format_minor, normalise_currency, to_minor
from finsup_dagster.ledger.reports import transaction_logs
from finsup_dagster.ledger.revenue_files import ingest_file


@app.command()
def demo() -> None:
    """Set up the embedded stack, land the sample data, run the jobs, print what came out."""
    from finsup_dagster import demo as demo_run
    from finsup_dagster.cli.payouts import report_pending_approval
    from finsup_dagster.cli.reconcile import report_reconciliation

    outcome = demo_run.run()
    for job, ok in outcome.items():
        out.print(
            f"[bold]{job}[/bold]: " + ("succeeded" if ok else "FAILED (see `make dev`, Runs)")
        )
    report_reconciliation(date=demo_run.sample_days()[-1], as_json=False)
    available_balance(currency=None, as_json=False)
    report_pending_approval(as_json=False)
    verify_audit_chain(as_json=False)
    out.print(
        "Next: `make dev` for the Dagster UI; docs/reconciliation.md for the exceptions; "
        "docs/payouts.md to enrol approvers and approve."
    )
    if not all(outcome.values()):
        raise typer.Exit(1)


@app.command()
def dev() -> None:
    """Start the Dagster UI (dagster dev) on the embedded defaults."""
    import os
    import shutil

    from finsup_dagster.demo import prepare_instance
    from finsup_dagster.ledger import migrate

    migrate.upgrade(engine())
    prepare_instance(Path(os.environ["DAGSTER_HOME"]))
    # dagster dev re-parses the dbt project on start (prepare_if_dev) with the `dbt`
    # on PATH: the one installed beside this Python, even in an unactivated venv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    dagster = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
    os.execv(dagster, [dagster, "dev", "-m", "finsup_dagster.definitions"])


@app.command()
def init() -> None:
    """Create the books, or migrate them to the newest schema (safe to repeat)."""
    from finsup_dagster.ledger import migrate  # Alembic costs a third of a second to import

    eng = engine()
    before, after = migrate.upgrade(eng)
    if before == after:
        out.print(f"books up to date at revision {after} ({_where(eng)})")
    else:
        with db.write(eng) as conn:
            audit_log.log(
                conn,
                "books_migrated",
                "books",
                "schema",
                actor=actor(),
                detail={"from": before, "to": after},
            )
        out.print(
            f"books {'created' if before is None else 'migrated'} at revision {after} ({_where(eng)})"
        )


def _where(eng: Engine) -> str:
    return eng.url.render_as_string(hide_password=True)


@app.command("ingest-revenue")
def ingest_revenue(
    paths: Annotated[list[Path], typer.Argument(help="CSV or JSONL revenue files.")],
    as_json: JsonFlag = False,
) -> None:
    """Ingest revenue events; rejected rows go to a rejects file beside each input.

    Exits 1 when any row was rejected (the valid rows are still ingested), 2 when
    a file was refused whole (the other files are still ingested).
    """
    check_files(paths)
    eng = engine()

    def one(path: Path) -> dict[str, Any]:
        res = ingest_file(eng, path, actor=actor())
        return {
            **res.result.summary(),
            "rejects_file": str(res.rejects_path) if res.rejects_path else None,
        }

    results, errors = each_file(paths, one)
    report_files(results, errors, ("inserted", "unchanged", "status_advanced", "rejected"), as_json)


@app.command("available-balance")
def available_balance(
    currency: Annotated[str | None, typer.Option(help="Only this ISO 4217 currency.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Available balance per currency, with the parts it is made of."""
    code = normalise_currency(currency) if currency else None
    with db.read(engine()) as conn:
        rows = [b.as_dict() for b in balance.available_balances(conn, code)]
    if as_json:
        emit_json(rows)
        return
    table = Table(
        "currency",
        "available",
        "confirmed revenue",
        "deductions",
        "reserve",
        "committed",
        "clawbacks owed",
    )
    for r in rows:
        cur = r["currency"]
        table.add_row(
            cur,
            *(
                format_minor(r[k], cur)
                for k in (
                    "available_minor",
                    "confirmed_revenue_minor",
                    "deductions_minor",
                    "reserve_minor",
                    "committed_minor",
                    "clawback_receivable_minor",
                )
            ),
        )
    out.print(table)


@app.command("set-reserve")
def set_reserve(
    amount: Annotated[
        str, typer.Argument(help="Decimal amount in major units, e.g. 500.00; 0 clears it.")
    ],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the transaction log.")],
) -> None:
    """Hold back part of a currency's balance from payouts."""
    code = normalise_currency(currency)
    # to_minor refuses zero (no payment is zero); a reserve of zero clears it.
    minor = 0 if re.fullmatch(r"0+(\.0+)?", amount.strip()) else to_minor(amount, code)
    with db.write(engine()) as conn:
        controls.set_reserve(conn, code, minor, actor(), reason)
    out.print(f"reserve for {code} set to {format_minor(minor, code)}")


# Far more rows than a terminal wants, and well inside a 64-bit SQL integer.
MAX_LIMIT = 100_000_000


@app.command("report-transaction-logs")
def report_transaction_logs(
    since: Annotated[str | None, typer.Option(help="ISO 8601 instant with offset.")] = None,
    entity: Annotated[str | None, typer.Option(help="Entity type, e.g. payout_batch.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_LIMIT, help="At most this many rows.")
    ] = 1000,
    with_seals: Annotated[
        bool, typer.Option("--seals", help="Also the rows_sealed rows each write adds.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The transaction log, oldest first."""
    from finsup_dagster.ledger.clock import parse_instant

    since_utc = parse_instant(since) if since else None
    with db.read(engine()) as conn:
        rows = transaction_logs(conn, since_utc, entity, limit, with_seals)
    if as_json:
        emit_json(rows)
        return
    table = Table("seq", "at", "actor", "action", "entity", "amount", "detail")
    for r in rows:
        amount = (
            format_minor(r["amount_minor"], r["currency"]) + f" {r['currency']}"
            if r["currency"] and r["amount_minor"] is not None
            else ""
        )
        table.add_row(
            str(r["seq"]),
            r["occurred_at"],
            r["actor"],
            r["action"],
            f"{r['entity_type']}:{r['entity_id']}",
            amount,
            json.dumps(r["detail"], sort_keys=True)[:120],
        )
    out.print(table)


@app.command("verify-audit-chain")
def verify_audit_chain(as_json: JsonFlag = False) -> None:
    """Verify the books: the hash chain, every money row against its seal, the signed checkpoint.

    Exits 1 naming the first broken log row and every tampered row (table and key).
    """
    from finsup_dagster.ledger import verification
    from finsup_dagster.settings import audit_key

    report = verification.verify_and_checkpoint(engine(), db.finsup_home(), audit_key())
    if as_json:
        emit_json(report.as_dict())
    elif report.ok:
        out.print(f"audit chain intact: {report.chain.rows} rows, head {report.chain.head_hash}")
        out.print(
            f"seals intact: {report.seals.rows} rows in {len(seals.SEALED_TABLES)} tables match "
            f"their latest seals ({report.seals.seals} seals)"
        )
        if report.checkpoint is not None:
            out.print(
                f"checkpoint of {report.checkpoint.written_at} (row {report.checkpoint.seq}) matches"
            )
    else:
        for line in report.problems():
            typer.echo(line, err=True)
    if not report.ok:
        raise typer.Exit(1)

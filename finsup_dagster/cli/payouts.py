"""`finsup` commands for beneficiaries, earnings, payout batches, approvers and the kill switch."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from finsup_dagster import settings
from finsup_dagster.cli.common import (
    JsonFlag,
    actor,
    app,
    check_files,
    each_file,
    emit_json,
    engine,
    fail,
    out,
    report_files,
)
from finsup_dagster.ledger import (
    approvals,
    beneficiaries,
    clawbacks,
    controls,
    db,
    earnings,
    holds,
    reports,
    submission,
)
from finsup_dagster.ledger.batching import pending_batches
from finsup_dagster.ledger.money import format_minor, normalise_currency, to_minor
from finsup_dagster.ledger.state_machine import BATCH_TRANSITIONS

Approver = Annotated[str, typer.Option("--approver", help="Approver name.")]
Code = Annotated[
    str | None,
    typer.Option(
        "--code", help="Current TOTP code from the approver's app (asked for when omitted)."
    ),
]
Reason = Annotated[str, typer.Option("--reason", help="Why; kept in the transaction log.")]


def _code(code: str | None) -> str:
    return code if code is not None else str(typer.prompt("TOTP code", hide_input=True))


@app.command("import-beneficiaries")
def import_beneficiaries(
    path: Annotated[Path, typer.Argument(help="CSV or JSONL of beneficiaries.")],
    as_json: JsonFlag = False,
) -> None:
    """Create or update beneficiaries; each changed field is logged. Exits 1 if any row was rejected."""
    check_files([path])
    res = beneficiaries.import_file(engine(), path, actor=actor())
    summary = res.summary()
    if as_json:
        emit_json(summary)
    else:
        out.print(", ".join(f"{k} {v}" for k, v in summary.items() if v is not None))
    if res.rejected:
        raise typer.Exit(1)


@app.command("ingest-earnings")
def ingest_earnings(
    paths: Annotated[list[Path], typer.Argument(help="CSV or JSONL earnings files.")],
    as_json: JsonFlag = False,
) -> None:
    """Record earnings with the revenue that funds them.

    Exits 1 if any row was rejected, 2 if a file was refused whole (the others still go in).
    """
    check_files(paths)
    eng = engine()
    results, errors = each_file(
        paths, lambda p: earnings.ingest_file(eng, p, actor=actor()).summary()
    )
    report_files(results, errors, ("created", "unchanged", "rejected"), as_json)


@app.command("create-payout-batches")
def create_payout_batches(as_json: JsonFlag = False) -> None:
    """Build batches from accrued earnings by running the payout_batches asset through Dagster."""
    from finsup_dagster.demo import run_job

    settings.batch_policy()  # a bad setting is refused here, in one line, not inside the run
    with db.read(engine()) as conn:
        controls.ensure_not_frozen(conn, "creating payout batches")
    result = run_job("create_payout_batches", tags={"finsup/actor": actor()})
    if not result.success:
        fail(f"the create_payout_batches run failed: {_first_failure(result)}", 1)
    [mat] = result.asset_materializations_for_node("ledger__payout_batches")
    batches = cast(list[dict[str, Any]], mat.metadata["batches_json"].value)
    if as_json:
        emit_json(batches)
        return
    table = Table("batch", "method", "currency", "total", "items", "approvals needed")
    for b in batches:
        table.add_row(
            b["batch_id"],
            b["method"],
            b["currency"],
            format_minor(b["total_minor"], b["currency"]),
            str(b["item_count"]),
            str(b["required_approvals"]),
        )
    out.print(
        table
        if batches
        else "no batch created: nothing eligible is accrued, or nothing fits the balance"
    )
    out.print(f"run {result.run_id} (see it under Runs in the Dagster UI)")


def _first_failure(result: Any) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            return str(event.step_failure_data.error.message).strip().splitlines()[-1]
    return "see the run in the Dagster UI"


@app.command("report-pending-approval")
def report_pending_approval(as_json: JsonFlag = False) -> None:
    """Every batch pending approval: items, masked destinations, and the revenue funding each item."""
    batches = pending_batches(engine())
    if as_json:
        emit_json(batches)
        return
    if not batches:
        out.print("no batch is pending approval")
    for b in batches:
        cur = b["currency"]
        out.print(
            f"[bold]{b['batch_id']}[/bold] {b['method']} {format_minor(b['total_minor'], cur)} {cur}, "
            f"{b['item_count']} items, needs {b['required_approvals']} approval(s), created by {b['created_by']}"
        )
        table = Table(
            "beneficiary", "destination", "amount", "clawback netted", "funded by (revenue events)"
        )
        for item in b["items"]:
            funded = "\n".join(
                f"{f['source']}:{f['external_id']} {f['event_hash'][:12]}… {format_minor(f['amount_minor'], cur)}"
                for f in item["funded_by"]
            )
            netted = format_minor(item["netted_minor"], cur) if item["netted_minor"] else ""
            if item["clawback_outstanding_minor"]:
                still = format_minor(item["clawback_outstanding_minor"], cur)
                netted += f" ({still} still owed)"
            table.add_row(
                item["beneficiary"] or "",
                item["destination"] or "",
                format_minor(item["amount_minor"], cur),
                netted,
                funded,
            )
        out.print(table)


@app.command("report-held-earnings")
def report_held_earnings(as_json: JsonFlag = False) -> None:
    """Earnings whose funding revenue was reversed, refunded or charged back, and clawbacks owed."""
    with db.read(engine()) as conn:
        held = holds.held_earnings(conn)
        owed = clawbacks.report(conn)
    if as_json:
        emit_json({"held": held, "clawbacks": owed})
        return
    if not held:
        out.print("no earning is on hold")
    else:
        table = Table("earning", "beneficiary", "status", "amount", "batch", "why")
        for h in held:
            cur = h["currency"]
            table.add_row(
                h["earning"],
                h["beneficiary"],
                h["status"],
                f"{format_minor(h['amount_minor'], cur)} {cur}",
                h["batch_id"] or "",
                h["reason"] or "",
            )
        out.print(table)
    if owed:
        table = Table("clawback", "beneficiary", "earning", "amount", "cleared", "still owed")
        for c in owed:
            cur = c["currency"]
            table.add_row(
                str(c["clawback_id"]),
                c["beneficiary"],
                c["earning"],
                f"{format_minor(c['amount_minor'], cur)} {cur}",
                c["cleared_at"] or "",
                format_minor(c["beneficiary_outstanding_minor"], cur),
            )
        out.print(table)


@app.command("release-earning")
def release_earning(
    earning_id: Annotated[str, typer.Argument(help="The earning's external id.")],
    approver: Approver,
    reason: Reason,
    code: Code = None,
) -> None:
    """Let a held earning be paid although its funding was reversed (needs a TOTP code)."""
    result = _authorised(
        approver,
        code,
        "earning_release",
        ("earning", earning_id),
        lambda conn, who: holds.release(conn, who, earning_id, reason),
    )
    out.print(f"earning {earning_id} released by {approver}; it is {result['status']}")


@app.command("cancel-earning")
def cancel_earning(
    earning_id: Annotated[str, typer.Argument(help="The earning's external id.")],
    approver: Approver,
    reason: Reason,
    code: Code = None,
) -> None:
    """Cancel a held earning: it is never paid (needs a TOTP code)."""
    _authorised(
        approver,
        code,
        "earning_cancellation",
        ("earning", earning_id),
        lambda conn, who: holds.cancel(conn, who, earning_id, reason),
    )
    out.print(f"earning {earning_id} cancelled")


@app.command("generate-secret-key")
def generate_secret_key() -> None:
    """Print a new key for FINSUP_SECRET_KEY (keep it in your secret store)."""
    from finsup_dagster.ledger.secret_box import generate_key

    typer.echo(generate_key())


@app.command("add-approver")
def add_approver(
    name: Annotated[str, typer.Argument(help="Approver name, e.g. alice@example.com.")],
    limit: Annotated[
        str, typer.Option("--limit", help="Largest batch total this approver may approve.")
    ],
    currency: Annotated[str, typer.Option("--currency", help="Currency of the limit.")],
) -> None:
    """Enrol an approver: prints the otpauth URI once, and a QR code to scan."""
    box = settings.secret_box()
    code = normalise_currency(currency)
    limit_minor = to_minor(limit, code)
    with db.write(engine()) as conn:
        secret = approvals.add_approver(conn, name, limit_minor, code, box, actor())
    uri = approvals.provisioning_uri(secret, name)
    out.print(f"approver {name} added, limit {format_minor(limit_minor, code)} {code}")
    out.print("Scan this into an authenticator app now; it is not shown again:")
    typer.echo(uri)
    _print_qr(uri)


def _print_qr(text: str) -> None:
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(text)
    buffer = io.StringIO()
    qr.print_ascii(out=buffer, invert=True)
    typer.echo(buffer.getvalue())


@app.command("disable-approver")
def disable_approver(name: Annotated[str, typer.Argument(help="Approver name.")]) -> None:
    """Stop an approver from approving anything."""
    with db.write(engine()) as conn:
        approvals.disable_approver(conn, name, actor())
    out.print(f"approver {name} disabled")


def _authorised(
    approver: str, code: str | None, what: str, entity: tuple[str, str], action: Any
) -> Any:
    return approvals.authorised(
        engine(),
        approver,
        _code(code),
        settings.secret_box(),
        settings.approval_policy(),
        what,
        entity,
        action,
    )


def _authorised_batch(
    approver: str,
    code: str | None,
    what: str,
    batch_id: str,
    step: Callable[[Any, Any, str], dict[str, Any]],
    as_json: bool,
    message: Callable[[dict[str, Any]], str],
) -> None:
    """``step(conn, approver, batch_id)`` under the approver's code; prints its result as JSON
    or as ``message(result)``."""
    result = _authorised(
        approver,
        code,
        what,
        ("payout_batch", batch_id),
        lambda conn, who: step(conn, who, batch_id),
    )
    if as_json:
        emit_json(result)
    else:
        out.print(message(result))


@app.command("approve-payout-batch")
def approve_payout_batch(
    batch_id: Annotated[str, typer.Argument(help="Batch id, e.g. pb_20261125...")],
    approver: Approver,
    code: Code = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a batch pending approval with your TOTP code."""

    def message(result: dict[str, Any]) -> str:
        counted = f"{result['approvals']} of {result['required_approvals']}"
        if result["status"] == "approved":
            return f"batch {batch_id} approved ({counted})"
        return f"approval recorded: {counted}; a second approver is needed"

    _authorised_batch(
        approver, code, "batch_approval", batch_id, approvals.approve, as_json, message
    )


@app.command("deny-payout-batch")
def deny_payout_batch(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")],
    approver: Approver,
    reason: Reason,
    code: Code = None,
) -> None:
    """Deny a batch pending approval; its amount is released and its earnings accrue again."""
    _authorised(
        approver,
        code,
        "batch_denial",
        ("payout_batch", batch_id),
        lambda conn, who: approvals.deny(conn, who, batch_id, reason),
    )
    out.print(f"batch {batch_id} denied")


@app.command("cancel-payout-batch")
def cancel_payout_batch(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")],
    reason: Reason,
    approver: Annotated[
        str | None,
        typer.Option("--approver", help="Needed for an approved or submission_failed batch."),
    ] = None,
    code: Code = None,
) -> None:
    """Cancel a pending batch (or, with an approver's code, an approved or submission_failed
    one), releasing its amount."""
    if approver is None:
        with db.write(engine()) as conn:
            approvals.cancel(conn, actor(), batch_id, reason, with_code=False)
    else:
        _authorised(
            approver,
            code,
            "batch_cancellation",
            ("payout_batch", batch_id),
            lambda conn, who: approvals.cancel(conn, who.name, batch_id, reason, with_code=True),
        )
    out.print(f"batch {batch_id} cancelled; its amount is available again")


@app.command("retry-payout-batch")
def retry_payout_batch(
    batch_id: Annotated[str, typer.Argument(help="Batch id of a submission_failed batch.")],
    approver: Approver,
    code: Code = None,
    as_json: JsonFlag = False,
) -> None:
    """Send a batch the gateway refused back to approved: it is submitted again, same key."""
    _authorised_batch(
        approver,
        code,
        "batch_retry",
        batch_id,
        submission.retry,
        as_json,
        lambda result: (
            f"batch {batch_id} approved again by {approver}; it is submitted again under "
            f"{result['idempotency_key']}"
        ),
    )


@app.command("report-payout-batches")
def report_payout_batches(
    status: Annotated[
        str | None, typer.Option("--status", help="Only batches in this status.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Payout batches, newest first: status, why (a refused submission), gateway id, attempts."""
    if status is not None and status not in BATCH_TRANSITIONS:
        fail(f"--status {status!r} is not one of {', '.join(sorted(BATCH_TRANSITIONS))}")
    with db.read(engine()) as conn:
        rows = reports.payout_batches_report(conn, status)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print(f"no payout batch{' is ' + status if status else ''}")
        return
    table = Table(
        "batch",
        "method",
        "currency",
        "total",
        "items",
        "status",
        "reason",
        "gateway batch",
        "attempts",
        "updated",
    )
    for r in rows:
        table.add_row(
            r["batch_id"],
            r["method"],
            r["currency"],
            r["total"],
            str(r["items"]),
            r["status"],
            r["status_reason"] or "",
            r["gateway_batch_id"] or "",
            str(r["attempts"]),
            r["updated_at"],
        )
    out.print(table)


@app.command("freeze-payouts")
def freeze_payouts(reason: Reason) -> None:
    """Kill switch: no batch is created, approved or submitted until unfrozen."""
    with db.write(engine()) as conn:
        controls.set_payouts_frozen(conn, True, actor(), reason)
    out.print(f"payouts frozen by {actor()}: {reason}")


@app.command("unfreeze-payouts")
def unfreeze_payouts(
    approver: Approver,
    code: Code = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is safe again.")
    ] = "cleared by an approver",
) -> None:
    """Lift the kill switch; needs an approver's TOTP code."""
    _authorised(
        approver,
        code,
        "unfreeze",
        ("control", controls.PAYOUTS_FROZEN),
        lambda conn, who: controls.set_payouts_frozen(conn, False, who.name, reason),
    )
    out.print(f"payouts unfrozen by {approver}")


@app.command("submit-payout-batch")
def submit_payout_batch(
    batch_id: Annotated[str, typer.Argument(help="Batch id of an approved (or submitting) batch.")],
    as_json: JsonFlag = False,
) -> None:
    """Submit one approved batch to its gateway now, through the Dagster instance (the run
    shows in the UI). Safe to run again: the gateway is asked before anything is sent.

    Exits 1 when the gateway refused the batch (it is then submission_failed) or could
    not be reached (it stays submitting: run this again).
    """
    from finsup_dagster.demo import run_job

    with db.read(engine()) as conn:
        version = submission.approval_version_of(conn, batch_id)
    result = run_job(
        "submit_payout_batch",
        tags={"finsup/actor": actor(), "finsup/batch_id": batch_id},
        # By hand, a person decides when to try again: no automatic resumes.
        ops={
            "submit_batch": {
                "config": {"batch_id": batch_id, "approval_version": version, "resume_retries": 0}
            }
        },
    )
    with db.read(engine()) as conn:
        [row] = reports.payout_batches_report(conn, batch_id=batch_id)
    if as_json:
        emit_json({"run_id": result.run_id, "succeeded": result.success, "batch": row})
    if not result.success:
        fail(
            f"batch {batch_id} is {row['status']}: {row['status_reason'] or _first_failure(result)}"
        )
    if not as_json:
        out.print(
            f"batch {batch_id} submitted to {row['method']} as {row['gateway_batch_id']} "
            f"(run {result.run_id[:8]})"
        )

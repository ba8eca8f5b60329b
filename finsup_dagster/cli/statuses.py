"""`finsup` commands for payout statuses: poll the gateways now, and report a batch's items."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from finsup_dagster.cli.common import JsonFlag, actor, app, emit_json, engine, fail, out
from finsup_dagster.ledger import db, submission
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.payout_report import payout_report

BatchOption = Annotated[str | None, typer.Option("--batch", help="Only this batch id.")]


@app.command("sync-payout-statuses")
def sync_payout_statuses(batch: BatchOption = None, as_json: JsonFlag = False) -> None:
    """Ask the gateways now where every submitted batch (or one) is, and book it, through
    the Dagster instance (the run shows in the UI). Safe to run again: a status already
    booked changes nothing.

    Exits 1 when a gateway could not be reached or could not answer for a batch (the
    other batches are still booked).
    """
    if batch is not None:
        with db.read(engine()) as conn:
            submission.method_of(conn, batch)  # an unknown batch: one line, no run
    from finsup_dagster.demo import run_job  # Dagster loads only for a run

    config: dict[str, Any] = {"retries": 0}  # by hand, a person decides when to try again
    if batch is not None:
        config["batch_id"] = batch
    result = run_job(
        "sync_payout_statuses",
        tags={"finsup/actor": actor(), **({"finsup/batch_id": batch} if batch else {})},
        ops={"sync_statuses": {"config": config}},
    )
    summary, failure = _outcome(result)
    if as_json:
        emit_json({"run_id": result.run_id, "succeeded": result.success, **(summary or {})})
    elif summary is not None:
        _print_summary(summary)
    if not result.success:
        fail(failure or "the sync_payout_statuses run failed: see it in the Dagster UI", 1)


def _outcome(result: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The op's result (from its output, or from its failure) and the failure's line."""
    for event in result.all_node_events:
        if event.event_type_value == "STEP_OUTPUT":
            return dict(event.event_specific_data.metadata["result"].value), None
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            data = event.step_failure_data.user_failure_data
            summary = data.metadata.get("result") if data is not None else None
            line = str(event.step_failure_data.error.message).strip().splitlines()[-1]
            if data is not None and data.description:
                line = data.description.splitlines()[0]
            return (dict(summary.value) if summary is not None else None), line
    return None, None


def _print_summary(summary: dict[str, Any]) -> None:
    batches = summary["batches"]
    if not batches:
        out.print("no submitted batch is waiting for a status")
    for b in batches:
        head = f"batch {b['batch_id']} ({b['method']}): {b['status_before']}"
        if b["status_after"] != b["status_before"]:
            head += f" → {b['status_after']}"
        if b["skipped"] or b["error"]:
            out.print(f"{head}; {'not polled: ' + b['skipped'] if b['skipped'] else b['error']}")
            continue
        moved = [c for c in b["changes"] if c["outcome"] == "applied"]
        out.print(f"{head}; {len(moved)} of {len(b['changes'])} items changed")
        for c in b["changes"]:
            if c["outcome"] != "unchanged":
                out.print(
                    f"  item {c['item_id']}: {c['status']} ({c['provider_status']}, {c['outcome']})"
                )
    for r in summary["releases"]:
        what = (
            f"cancelled at the provider, now {r['status']}"
            if r["outcome"] in ("applied", "unchanged")
            else f"not cancelled ({r['outcome']}: {r['detail']})"
        )
        out.print(f"item {r['item_id']} unclaimed since {r['unclaimed_since'][:10]}: {what}")
    if summary["webhooks"]:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in summary["webhooks"].items())
        out.print(f"stored webhook events: {counts}")


@app.command("report-payouts")
def report_payouts(
    batch: Annotated[str, typer.Option("--batch", help="Batch id.")],
    as_json: JsonFlag = False,
) -> None:
    """Every item of a batch: status, the provider's status and ids, amount, payee (masked),
    and the revenue events that fund it."""
    with db.read(engine()) as conn:
        report = payout_report(conn, batch)
    if as_json:
        emit_json(report)
        return
    out.print(
        f"batch {report['batch_id']} ({report['method']}, {report['total']} "
        f"{report['currency']}): {report['status']}, gateway {report['gateway_batch_id'] or '-'}"
    )
    table = Table(
        "item",
        "beneficiary",
        "destination",
        "amount",
        "status",
        "provider",
        "gateway id",
        "funding",
    )
    for item in report["items"]:
        funding = ", ".join(
            f"{f['source']}:{f['external_id']} {format_minor(f['funded_minor'], f['currency'])} "
            f"{f['status']}"
            for f in item["funding"]
        )
        table.add_row(
            str(item["item_id"]),
            item["beneficiary"] or "-",
            item["destination"] or "-",
            f"{item['amount']} {item['currency']}",
            item["status"],
            item["provider_status"] or "-",
            item["gateway_item_id"] or "-",
            funding or "-",
        )
    out.print(table)

"""`finsup report-stuck-payouts`: what left the building and has not come back."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from finsup_dagster import settings
from finsup_dagster.alerts import state as alert_state
from finsup_dagster.cli.common import JsonFlag, app, emit_json, engine, fail, out
from finsup_dagster.ledger import db
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.stuck import stuck_items


@app.command("report-stuck-payouts")
def report_stuck_payouts(
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            help="Hours since submission (default FINSUP_STUCK_AFTER_HOURS, 48).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Payout items still submitted/processing, and batches still submitting, past the
    threshold: batch, provider ids, age, last status, and whether people were alerted."""
    hours = settings.stuck_after_hours() if older_than is None else older_than
    if not hours >= 0:
        fail(f"--older-than must be zero or more hours, got {older_than}")
    with db.read(engine()) as conn:
        stuck = stuck_items(conn, timedelta(hours=hours))
        alerts = {s.key: alert_state.get(conn, s.key) for s in stuck}
    rows: list[dict[str, Any]] = []
    for s in stuck:
        known = alerts[s.key]
        rows.append(
            {
                **s.as_dict(),
                "alert": None
                if known is None or not known.is_open
                else {
                    "opened_at": known.opened_at,
                    "last_sent_at": known.last_sent_at,
                    "send_count": known.send_count,
                    "delivered": known.delivered,
                    "last_error": known.last_error,
                },
            }
        )
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print(f"no payout is stuck: nothing submitted more than {hours:g}h ago is unresolved")
        return
    table = Table(
        "batch",
        "item",
        "method",
        "amount",
        "status",
        "since",
        "age",
        "provider batch",
        "provider item",
        "alerted",
    )
    for r in rows:
        alert = r["alert"]
        told = "no" if alert is None else (alert["last_sent_at"] or "not delivered")
        if alert is not None and alert["last_error"]:
            told += f" ({alert['last_error']})"
        table.add_row(
            r["batch_id"],
            str(r["item_id"]) if r["item_id"] is not None else "(batch)",
            r["method"],
            f"{format_minor(r['amount_minor'], r['currency'])} {r['currency']}",
            r["status"],
            r["status_changed_at"],
            f"{r['age_hours']:g}h",
            r["gateway_batch_id"] or "",
            r["gateway_item_id"] or "",
            told,
        )
    out.print(table)
    out.print(
        f"{len(rows)} stuck past {hours:g}h: check each at its provider, then "
        "`finsup sync-payout-statuses --batch ID` (runbook: docs/alerts.md)"
    )


@app.command("report-alerts")
def report_alerts(
    show_all: Annotated[
        bool, typer.Option("--all", help="Resolved alerts too, not only open or failing ones.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Alerts the sensors sent: open ones, and any a channel failed to take (and why)."""
    with db.read(engine()) as conn:
        rows = alert_state.report(conn, open_only=not show_all)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print("no alert is open and every alert was delivered")
        return
    table = Table("key", "opened", "last sent", "resolved", "sends", "delivered to", "last error")
    for r in rows:
        table.add_row(
            r["key"],
            r["opened_at"],
            r["last_sent_at"] or "never",
            r["resolved_at"] or "",
            str(r["send_count"]),
            ", ".join(r["delivered"]),
            r["last_error"] or "",
        )
    out.print(table)

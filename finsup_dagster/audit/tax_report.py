"""The annual tax report: what each beneficiary was paid in a year, per currency.

Paid items only (an item's status is ``paid`` now: one returned or refunded
since was not income), dated by the transaction-log row that moved it to paid
(``item_paid``; items carry no paid date of their own), years in UTC. The tax
id is the masked one the ledger stores (``****`` and at most the last four);
the tax form status is the beneficiaries column of that name, and a
beneficiary paid without a form ``received`` or ``verified`` is flagged.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.audit.privacy import safe_tax_id
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.schema import beneficiaries, payout_items, transaction_log

FORM_ON_FILE = ("received", "verified")
COLUMNS = (
    "year",
    "beneficiary",
    "name",
    "country",
    "currency",
    "paid_minor",
    "paid",
    "items",
    "first_paid_at",
    "last_paid_at",
    "tax_id_masked",
    "tax_form_status",
    "tax_form_missing",
)


def tax_rows(conn: Connection, year: int) -> list[dict[str, Any]]:
    """One row per beneficiary and currency paid in ``year``, by beneficiary then currency."""
    log, item, ben = transaction_log.c, payout_items.c, beneficiaries.c
    start, end = f"{year:04d}-01-01T00:00:00", f"{year + 1:04d}-01-01T00:00:00"
    paid = (
        sa.select(log.entity_id.label("item_id"), sa.func.max(log.occurred_at).label("paid_at"))
        .where(log.action == "item_paid", log.entity_type == "payout_item")
        .group_by(log.entity_id)
        .subquery()
    )
    stmt = (
        sa.select(
            ben.external_id,
            ben.name,
            ben.country,
            ben.tax_id_masked,
            ben.tax_form_status,
            item.currency,
            item.amount_minor,
            paid.c.paid_at,
        )
        .join(paid, paid.c.item_id == sa.cast(item.id, sa.String))
        .join(beneficiaries, ben.id == item.beneficiary_id)
        .where(item.status == "paid", paid.c.paid_at >= start, paid.c.paid_at < end)
    )
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for r in conn.execute(stmt):
        key = (r.external_id, r.currency)
        g = groups.setdefault(
            key,
            {
                "year": year,
                "beneficiary": r.external_id,
                "name": r.name,
                "country": r.country,
                "currency": r.currency,
                "items": 0,
                "first_paid_at": r.paid_at,
                "last_paid_at": r.paid_at,
                "tax_id_masked": safe_tax_id(r.tax_id_masked) or "",
                "tax_form_status": r.tax_form_status,
                "tax_form_missing": r.tax_form_status not in FORM_ON_FILE,
            },
        )
        totals[key] += int(r.amount_minor)
        g["items"] += 1
        g["first_paid_at"] = min(g["first_paid_at"], r.paid_at)
        g["last_paid_at"] = max(g["last_paid_at"], r.paid_at)
    out = []
    for key in sorted(groups):
        g = groups[key]
        g["paid_minor"] = totals[key]
        g["paid"] = format_minor(totals[key], g["currency"])
        out.append({c: g[c] for c in COLUMNS})
    return out


def write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    """The report as CSV (header first), written under a temporary name and renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "tax_form_missing": str(row["tax_form_missing"]).lower()})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)

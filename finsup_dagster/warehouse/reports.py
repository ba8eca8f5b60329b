"""What the reconciliation found, read back from the warehouse tables dbt builds."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb

from finsup_dagster.ledger.confirmations import SettledMatch
from finsup_dagster.warehouse.connection import one

EXCEPTION_KINDS = (
    "unmatched_revenue",
    "unmatched_settlement",
    "amount_mismatch",
    "duplicate_settlement",
    "currency_mismatch",
    "stale_projected",
)
REVENUE_SIDE = ("unmatched_revenue", "stale_projected")


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = one(
        conn,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
        "AND table_schema = 'main'",
        [name],
    )
    return bool(row and row[0])


def _dicts(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def matches_for(conn: duckdb.DuckDBPyConnection, day: str) -> list[SettledMatch]:
    """The pairs the run for ``day`` made, as the books apply them."""
    if not _has_table(conn, "reconciliation_matches"):
        return []
    rows = conn.execute(
        "SELECT event_hash, fee_minor, fee_currency, settled_on FROM reconciliation_matches"
        " WHERE run_date = ? ORDER BY settled_on, event_hash",
        [day],
    ).fetchall()
    return [SettledMatch(str(h), int(f), str(c), str(s)) for h, f, c, s in rows]


def summary(conn: duckdb.DuckDBPyConnection, day: str) -> list[dict[str, Any]]:
    if not _has_table(conn, "reconciliation_summary"):
        return []
    return _dicts(
        conn,
        "SELECT category, currency, items, net_amount_minor, fee_minor"
        " FROM reconciliation_summary WHERE run_date = ? ORDER BY category, currency",
        [day],
    )


def exceptions(conn: duckdb.DuckDBPyConnection, day: str) -> list[dict[str, Any]]:
    if not _has_table(conn, "reconciliation_exceptions"):
        return []
    sql = (
        "SELECT * FROM reconciliation_exceptions WHERE run_date = ?"
        " ORDER BY exception_kind, coalesce(settled_on, occurred_at), record_ref, external_id"
    )
    return _dicts(conn, sql, [day])


def matched_to_date(conn: duckdb.DuckDBPyConnection, day: str) -> int:
    # The narrow table where it exists; a warehouse not yet upgraded has only the wide one.
    table = next(
        (t for t in ("reconciliation_match_keys", "reconciliation_matches") if _has_table(conn, t)),
        None,
    )
    if table is None:
        return 0
    row = one(conn, f"SELECT count(*) FROM {table} WHERE run_date <= ?", [day])
    return int(row[0]) if row else 0


def latest_run_date(conn: duckdb.DuckDBPyConnection) -> str | None:
    if not _has_table(conn, "reconciliation_summary"):
        return None
    row = one(conn, "SELECT max(run_date) FROM reconciliation_summary")
    return None if row is None or row[0] is None else str(row[0])


def report(conn: duckdb.DuckDBPyConnection, day: str) -> dict[str, Any]:
    """Counts and signed totals per category: what ``finsup report-reconciliation`` prints.

    ``matched`` and each exception kind are item counts (zero when none);
    ``totals`` gives, per category, the signed net amount and fees in minor
    units per currency.
    """
    rows = summary(conn, day)
    counts: dict[str, int] = defaultdict(int)
    totals: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for r in rows:
        counts[r["category"]] += int(r["items"])
        totals[r["category"]][r["currency"]] = {
            "items": int(r["items"]),
            "net_amount_minor": int(r["net_amount_minor"] or 0),
            "fee_minor": int(r["fee_minor"] or 0),
        }
    out: dict[str, Any] = {"date": day, "matched": counts["matched"]}
    for kind in EXCEPTION_KINDS:
        out[kind] = counts[kind]
    out["awaiting_settlement"] = counts["awaiting_settlement"]
    out["matched_to_date"] = matched_to_date(conn, day)
    out["totals"] = {k: dict(sorted(v.items())) for k, v in sorted(totals.items())}
    return out


def unmatched_rate(rep: dict[str, Any]) -> tuple[int, int, float]:
    """(open revenue items, matched to date, share of due events still open), from a ``report``.

    Due events are those older than the match window, plus every event ever
    matched; open ones are the unmatched_revenue and stale_projected items.
    """
    open_items = sum(rep[k] for k in REVENUE_SIDE)
    matched = rep["matched_to_date"]
    due = open_items + matched
    return open_items, matched, (open_items / due if due else 0.0)

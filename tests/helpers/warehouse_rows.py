"""Rows written straight into a warehouse's raw and replica tables, as landing and the
ledger replica would write them, for tests that drive the dbt models directly.

One place names the columns, so a test says only what its rows are about. A row is
a mapping (a test's dataclass as ``asdict`` plus what it derives); keys the table
does not have are not read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

_LINE_COLUMNS = (
    "partition_date, file_name, content_sha256, row_number, record_ref, gateway,"
    " gateway_txn_id, kind, direction, gross_minor, currency, fee_minor, fee_currency,"
    " settled_on, raw, landing_seq"
)
_EVENT_COLUMNS = (
    "event_hash, source, external_id, kind, amount_minor, currency, occurred_at, status,"
    " ingested_at, status_changed_at, source_file, replicated_seq, first_replicated_seq,"
    " event_key"
)


def insert_raw_line(conn: duckdb.DuckDBPyConnection, table: str, line: Mapping[str, Any]) -> None:
    """One settlement line of ``raw.<table>``: a refund is a debit, anything else a
    credit; the fee (default 0) in the line's currency; no ``landing_seq``, the next
    number of the sequence."""
    conn.execute(
        f"INSERT INTO raw.{table} ({_LINE_COLUMNS}) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', coalesce(?, nextval('raw.landing_seq')))",
        [
            *(line[c] for c in ("partition_date", "file_name", "content_sha256", "row_number")),
            f"R{line['row_number']}",
            *(line[c] for c in ("gateway", "gateway_txn_id", "kind")),
            "debit" if line["kind"] == "refund" else "credit",
            line["gross_minor"],
            line["currency"],
            line.get("fee_minor", 0),
            line["currency"],
            str(line["settled_on"]),
            line.get("landing_seq"),
        ],
    ).fetchall()


def insert_replica_event(conn: duckdb.DuckDBPyConnection, event: Mapping[str, Any]) -> None:
    """One revenue event of the ledger replica, ingested and changed when it occurred;
    first copied in copy 1 unless it says otherwise; no ``event_key``, the next number
    of the sequence, as a first copy gets."""
    seq = event.get("replicated_seq", 1)
    conn.execute(
        f"INSERT INTO ledger.revenue_events ({_EVENT_COLUMNS}) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'books', ?, ?, coalesce(?, nextval('ledger.event_key')))",
        [
            *(event[c] for c in ("event_hash", "source", "external_id", "kind")),
            *(event[c] for c in ("amount_minor", "currency", "occurred_at", "status")),
            event["occurred_at"],
            event["occurred_at"],
            seq,
            event.get("first_replicated_seq", seq),
            event.get("event_key"),
        ],
    ).fetchall()

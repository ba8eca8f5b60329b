"""Which ledger tables a snapshot holds, which columns, and how "created" is told for each.

Left out on purpose:

- ``alerts``: operational state (who was paged, when), not books; nothing sums it.
- ``row_seals`` and ``audit_chain_head``: the live ledger's tamper evidence. A
  snapshot carries its own (the manifest hashes and the chain, whose head is in
  ``manifest_info``); ``verify-audit-chain`` checks the seals on the live books.
- ``approvers.totp_secret_encrypted``: a secret, even encrypted. So are the
  approvers' second-factor bookkeeping (last TOTP step, failed attempts, lock-out),
  which change with every attempt and say nothing about the books.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from finsup_dagster.ledger import schema


@dataclass(frozen=True)
class LedgerTable:
    table: sa.Table
    # The column whose instant says when the row came to be (None: the rule is in as_of).
    created: str | None
    dropped: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def columns(self) -> list[sa.Column[object]]:
        return [c for c in self.table.columns if c.name not in self.dropped]

    @property
    def key(self) -> list[str]:
        return [c.name for c in self.table.primary_key.columns]


LEDGER_TABLES: tuple[LedgerTable, ...] = (
    LedgerTable(schema.beneficiaries, "created_at"),
    LedgerTable(schema.revenue_events, "ingested_at"),
    LedgerTable(schema.journal_entries, "posted_at"),
    LedgerTable(schema.postings, None),  # with its entry
    LedgerTable(schema.earnings, "created_at"),
    LedgerTable(schema.earning_sources, None),  # with its earning
    LedgerTable(schema.payout_batches, "created_at"),
    LedgerTable(schema.payout_items, None),  # with its batch
    LedgerTable(schema.clawbacks, "created_at"),
    LedgerTable(
        schema.approvers,
        "created_at",
        dropped=("totp_secret_encrypted", "last_totp_step", "failed_attempts", "locked_until"),
    ),
    LedgerTable(schema.approvals, "decided_at"),
    LedgerTable(schema.gateway_events, "received_at"),
    LedgerTable(schema.controls, "set_at"),
    LedgerTable(schema.balance_reserves, "set_at"),
    LedgerTable(schema.ingested_files, "ingested_at"),
    LedgerTable(schema.transaction_log, "occurred_at"),
)
BY_NAME = {t.name: t for t in LEDGER_TABLES}

# Tables the snapshot derives or copies from the warehouse, with the columns that
# order their rows in the manifest hash (empty: the canonical row text alone).
DERIVED_KEYS: dict[str, tuple[str, ...]] = {
    "trial_balance": ("account", "currency"),
    "reconciliation_matches": ("run_date", "event_hash", "settlement_line_id"),
    "reconciliation_exceptions": (),
    "manifest_info": ("key",),
}


def duckdb_type(column: sa.Column[object]) -> str:
    """The DuckDB type a ledger column is stored as: integers, text and booleans only."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return "BOOLEAN"
    if isinstance(kind, sa.Integer):  # BigInteger is one
        return "BIGINT"
    return "VARCHAR"

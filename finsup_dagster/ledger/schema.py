"""The ledger schema, in SQLAlchemy Core, written once for SQLite and PostgreSQL.

Alembic migrations under ``migrations/`` build exactly this; a test compares
the two so they cannot drift. Instants are canonical UTC text (see ``clock``),
money is ``BigInteger`` minor units beside a three-letter currency.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _instant(name: str, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(27), nullable=nullable)


def _currency(name: str = "currency") -> sa.Column[str]:
    return sa.Column(name, sa.String(3), nullable=False)


beneficiaries = sa.Table(
    "beneficiaries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("external_id", sa.String(128), nullable=False, unique=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("payout_method", sa.String(16), nullable=False),  # paypal | payoneer | bank
    sa.Column("destination", sa.String(256), nullable=False),  # email, payee id, IBAN+BIC
    sa.Column("country", sa.String(2), nullable=False),  # ISO 3166-1 alpha-2
    sa.Column("kyc_status", sa.String(16), nullable=False, server_default="unverified"),
    sa.Column("sanctions_status", sa.String(16), nullable=False, server_default="not_screened"),
    sa.Column("screened_at", sa.String(27)),
    sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("tax_id_masked", sa.String(32)),  # only the last 4 characters are ever stored
    sa.Column("tax_form_status", sa.String(16), nullable=False, server_default="missing"),
    _instant("created_at"),
    _instant("updated_at"),
    sa.CheckConstraint("payout_method IN ('paypal', 'payoneer', 'bank')", name="payout_method"),
    sa.CheckConstraint(
        "kyc_status IN ('unverified', 'pending', 'verified', 'rejected')", name="kyc_status"
    ),
    sa.CheckConstraint(
        "sanctions_status IN ('not_screened', 'clear', 'potential_match', 'sanctioned')",
        name="sanctions_status",
    ),
    sa.CheckConstraint(
        "tax_form_status IN ('missing', 'requested', 'received', 'verified', 'expired')",
        name="tax_form_status",
    ),
)

revenue_events = sa.Table(
    "revenue_events",
    metadata,
    sa.Column("event_hash", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("external_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    _currency(),
    _instant("occurred_at"),
    sa.Column("status", sa.String(16), nullable=False),
    _instant("ingested_at"),
    _instant("status_changed_at"),
    sa.Column("source_file", sa.String(512)),
    sa.Column("confirmed_entry_id", sa.BigInteger, sa.ForeignKey("journal_entries.id")),
    sa.Column("reversed_entry_id", sa.BigInteger, sa.ForeignKey("journal_entries.id")),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.CheckConstraint("kind IN ('sale', 'refund', 'fee', 'chargeback')", name="kind"),
    sa.CheckConstraint("status IN ('projected', 'confirmed', 'reversed')", name="status"),
    # The natural key: one source never reuses an id for two different events of
    # a kind; a row that does is refused as a conflict rather than double counted.
    sa.UniqueConstraint("external_id", "source", "kind", name="uq_revenue_events_natural_key"),
    # The warehouse replica copies what changed since its watermark.
    sa.Index("ix_revenue_events_status_changed_at", "status_changed_at"),
)

journal_entries = sa.Table(
    "journal_entries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    _instant("posted_at"),
    sa.Column("kind", sa.String(48), nullable=False),
    sa.Column("description", sa.String(512), nullable=False),
    sa.Column("reference_type", sa.String(32)),
    sa.Column("reference_id", sa.String(128)),
)

postings = sa.Table(
    "postings",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("journal_entries.id"), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    _currency(),
    # Signed: debits positive, credits negative; an entry sums to zero per currency.
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Index("ix_postings_account_currency", "account", "currency"),
    sa.Index("ix_postings_entry_id", "entry_id"),
)

earnings = sa.Table(
    "earnings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("external_id", sa.String(128), nullable=False, unique=True),
    sa.Column("beneficiary_id", sa.Integer, sa.ForeignKey("beneficiaries.id"), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    _currency(),
    sa.Column("status", sa.String(16), nullable=False, server_default="accrued"),
    sa.Column("payout_item_id", sa.Integer, sa.ForeignKey("payout_items.id")),
    sa.Column("description", sa.String(512)),
    _instant("earned_at"),
    _instant("created_at"),
    # Why an earning is on hold (its funding was reversed), and which event did it.
    sa.Column("hold_reason", sa.String(512)),
    sa.Column("held_event_hash", sa.String(64)),
    # An approver who released the earning despite reversed funding (who and when).
    sa.Column("funding_released_by", sa.String(128)),
    _instant("funding_released_at", nullable=True),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.CheckConstraint(
        "status IN ('accrued', 'batched', 'paid', 'on_hold', 'cancelled')", name="status"
    ),
)

earning_sources = sa.Table(
    "earning_sources",
    metadata,
    sa.Column("earning_id", sa.Integer, sa.ForeignKey("earnings.id"), primary_key=True),
    sa.Column(
        "event_hash", sa.String(64), sa.ForeignKey("revenue_events.event_hash"), primary_key=True
    ),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Index("ix_earning_sources_event_hash", "event_hash"),
)

payout_batches = sa.Table(
    "payout_batches",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("method", sa.String(16), nullable=False),
    _currency(),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("item_count", sa.Integer, nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("required_approvals", sa.Integer, nullable=False, server_default="1"),
    sa.Column("approval_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_by", sa.String(128), nullable=False),
    _instant("created_at"),
    _instant("updated_at"),
    sa.Column("idempotency_key", sa.String(64), unique=True),
    sa.Column("gateway_batch_id", sa.String(128)),
    sa.Column("reservation_entry_id", sa.BigInteger, sa.ForeignKey("journal_entries.id")),
    # The payload hash (gateways.PayoutRequest.payload_hash) of the first attempt: a
    # later attempt under the same idempotency key must send the very same payload.
    sa.Column("submission_hash", sa.String(64)),
    # Why the batch is submission_failed (one line); cleared when it is retried.
    sa.Column("status_reason", sa.String(512)),
    _instant("submitted_at", nullable=True),
    sa.Column("submission_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint("total_minor > 0", name="total_positive"),
    sa.Index("ix_payout_batches_status", "status"),
)

payout_items = sa.Table(
    "payout_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("batch_id", sa.String(40), sa.ForeignKey("payout_batches.id"), nullable=False),
    sa.Column("beneficiary_id", sa.Integer, sa.ForeignKey("beneficiaries.id")),
    sa.Column("destination_masked", sa.String(256)),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    _currency(),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("gateway_item_id", sa.String(128)),
    _instant("updated_at"),
    # The provider's own word for the item's status as last reported (webhook or poll).
    sa.Column("provider_status", sa.String(32)),
    # Clawbacks recovered by netting them from this item (amount_minor is what is paid).
    sa.Column("netted_minor", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.CheckConstraint("netted_minor >= 0", name="netted_not_negative"),
    sa.Index("ix_payout_items_batch_id", "batch_id"),
)

# Money paid to a beneficiary whose funding was reversed afterwards: a
# receivable, recovered by netting it from the beneficiary's next payouts.
clawbacks = sa.Table(
    "clawbacks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("beneficiary_id", sa.Integer, sa.ForeignKey("beneficiaries.id"), nullable=False),
    sa.Column("earning_id", sa.Integer, sa.ForeignKey("earnings.id"), nullable=False),
    sa.Column(
        "event_hash", sa.String(64), sa.ForeignKey("revenue_events.event_hash"), nullable=False
    ),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    _currency(),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("journal_entries.id"), nullable=False),
    _instant("created_at"),
    # Cleared when the payment it claws back came back itself (returned, refunded).
    sa.Column("cleared_entry_id", sa.BigInteger, sa.ForeignKey("journal_entries.id")),
    _instant("cleared_at", nullable=True),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.Index("ix_clawbacks_beneficiary_id", "beneficiary_id"),
    sa.Index("ix_clawbacks_earning_id", "earning_id"),
)

approvers = sa.Table(
    "approvers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("totp_secret_encrypted", sa.String(512), nullable=False),
    sa.Column("limit_minor", sa.BigInteger, nullable=False),
    sa.Column("limit_currency", sa.String(3), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("last_totp_step", sa.BigInteger),
    sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
    _instant("locked_until", nullable=True),
    _instant("created_at"),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("batch_id", sa.String(40), sa.ForeignKey("payout_batches.id"), nullable=False),
    sa.Column("approver_id", sa.Integer, sa.ForeignKey("approvers.id"), nullable=False),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("reason", sa.String(512)),
    sa.Column("totp_step", sa.BigInteger, nullable=False),
    _instant("decided_at"),
    sa.CheckConstraint("decision IN ('approve', 'deny')", name="decision"),
    sa.UniqueConstraint("batch_id", "approver_id", name="uq_approvals_batch_approver"),
)

gateway_events = sa.Table(
    "gateway_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("gateway", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(128)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("signature_valid", sa.Boolean, nullable=False),
    # The HTTP status of an answer to one of our own calls (None for webhooks, or when
    # no answer came back at all).
    sa.Column("status_code", sa.Integer),
    _instant("received_at"),
    _instant("processed_at", nullable=True),
    # A webhook's request headers (JSON, secrets removed): what a signature was checked on.
    sa.Column("headers", sa.Text),
    # What receiving or applying it came to: applied, duplicate, unknown_item, refused:<why>...
    sa.Column("outcome", sa.String(64)),
    sa.UniqueConstraint("gateway", "event_id", name="uq_gateway_events_gateway_event"),
    # Webhook processing and polling look for accepted events not yet applied.
    sa.Index("ix_gateway_events_processed_at", "processed_at"),
)

# Alerts sent to people (stuck payouts, failed money jobs): operational state, not
# books, so not sealed. One row per thing alerted on, so it is alerted once, reminded
# after a while, and resolved when it moves on.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("key", sa.String(160), primary_key=True),  # e.g. stuck:item:42
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject_id", sa.String(128), nullable=False),
    _instant("opened_at"),
    _instant("last_sent_at", nullable=True),
    _instant("resolved_at", nullable=True),
    sa.Column("send_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(512)),
    sa.Column("detail", sa.Text),
)

# Files ingested without a single rejected row, by content: the same bytes
# delivered again are answered "unchanged" without reading a row.
ingested_files = sa.Table(
    "ingested_files",
    metadata,
    sa.Column("content_sha256", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    _instant("ingested_at"),
)

controls = sa.Table(
    "controls",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("set_by", sa.String(128), nullable=False),
    _instant("set_at"),
    sa.Column("reason", sa.String(512)),
)

balance_reserves = sa.Table(
    "balance_reserves",
    metadata,
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("set_by", sa.String(128), nullable=False),
    _instant("set_at"),
    sa.Column("reason", sa.String(512)),
    sa.CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
)

transaction_log = sa.Table(
    "transaction_log",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    _instant("occurred_at"),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("entity_type", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.String(128), nullable=False),
    sa.Column("amount_minor", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("detail", sa.Text, nullable=False),  # canonical JSON
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Index("ix_transaction_log_entity", "entity_type", "entity_id"),
    sa.Index("ix_transaction_log_occurred_at", "occurred_at"),
)

# Seals: for every write of a sealed table's row, the digest of its content
# after the write (NULL: deleted), under the transaction-log row (``seq``) whose
# detail commits to all the seals of that transaction. Append-only; see seals.py.
row_seals = sa.Table(
    "row_seals",
    metadata,
    sa.Column("table_name", sa.String(32), primary_key=True),
    sa.Column("row_key", sa.String(200), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("digest", sa.String(64)),
    sa.Index("ix_row_seals_seq", "seq"),
)

# One row, the head of the chain. Every books write transaction locks it first,
# which serialises writers on PostgreSQL the way BEGIN IMMEDIATE does on SQLite,
# and it makes a deleted or appended log row visible even at the tail.
audit_chain_head = sa.Table(
    "audit_chain_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

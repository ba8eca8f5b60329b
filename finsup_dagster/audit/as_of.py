"""The books as they stood at an earlier instant, rebuilt in DuckDB from the current rows
and the transaction log.

The ledger tables are first copied whole into a staging DuckDB file, attached
read-only as ``stage`` (and deleted once the snapshot is written);
each snapshot table is then one query over them. With ``A`` the as-of instant
and ``S`` the last transaction-log row at or before it:

- a row is left out when it came to be after ``A`` (its creation column, see
  ``tables.LEDGER_TABLES``; postings go with their entry, items with their batch,
  earning sources with their earning); the log keeps rows 1..S;
- a status is the ``from`` of the first status move logged after ``S`` (every batch,
  item and revenue-event move logs ``from`` and ``to``), else the current one;
- a beneficiary column changed after ``S`` takes the ``from`` of its first logged
  change; controls and reserves set after ``A`` are what the last log row at or
  before ``S`` set them to (and left out when none did);
- what refers to something that did not exist yet at ``A`` (a journal entry, a
  gateway id, a submission, a clearing) is NULL.

Where the log does not record a column's history it is rebuilt from what it
implies, and docs/audit.md lists those columns: an earning's status follows
its payout item as of then (committed: batched, paid: paid, none: accrued unless
a hold logged before ``A`` still stands), an item's provider status is NULL when
its status changed after ``A``, ``updated_at`` is the last log row about the row
at or before ``A``.

An earning's item as of ``A`` is its current one when that item existed then;
else the item whose first release after ``S`` lists it in ``detail.earning_ids``
(a release clears the link on the row, and its log row keeps what it cleared).
An earning is only ever linked when its item is created, so an item that existed
at ``A`` and released it later held it at ``A``. Log rows written before releases
recorded ``earning_ids`` cannot be attributed: their earnings show accrued, and
the snapshot names those items in ``manifest_info.as_of_unattributed_items``.
"""

from __future__ import annotations

import duckdb

from finsup_dagster.audit.tables import LEDGER_TABLES
from finsup_dagster.ledger.state_machine import ITEM_MONEY_CLASS


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def cutoff_seq(duck: duckdb.DuckDBPyConnection, as_of: str) -> int:
    row = duck.execute(
        "SELECT coalesce(max(seq), 0) FROM stage.transaction_log WHERE occurred_at <= ?", [as_of]
    ).fetchall()[:1]
    return int(row[0][0]) if row else 0


def statements(as_of: str, seq: int, beneficiary_columns: dict[str, str]) -> list[str]:
    """The queries that build every ledger table of the snapshot from ``stage``, in order."""
    a, s = _lit(as_of), str(int(seq))
    moves = (
        "CREATE TEMP TABLE moves AS SELECT entity_type, entity_id,"
        " arg_min(json_extract_string(detail, '$.from'), seq) AS status_then"
        f" FROM stage.transaction_log WHERE seq > {s}"
        " AND entity_type IN ('payout_batch', 'payout_item', 'revenue_event')"
        " AND json_extract_string(detail, '$.from') IS NOT NULL"
        " AND json_extract_string(detail, '$.to') IS NOT NULL GROUP BY ALL"
    )
    last_seen = (
        "CREATE TEMP TABLE last_seen AS SELECT entity_type, entity_id, max(occurred_at) AS at"
        f" FROM stage.transaction_log WHERE seq <= {s} GROUP BY ALL"
    )
    out = [moves, last_seen]
    out.append(
        f"CREATE TABLE journal_entries AS SELECT * FROM stage.journal_entries WHERE posted_at <= {a}"
    )
    out.append(
        "CREATE TABLE postings AS SELECT * FROM stage.postings"
        " WHERE entry_id IN (SELECT id FROM journal_entries)"
    )
    out.append(
        f"CREATE TABLE transaction_log AS SELECT * FROM stage.transaction_log WHERE seq <= {s}"
    )
    entry = "IN (SELECT id FROM journal_entries)"
    out.append(
        "CREATE TABLE revenue_events AS SELECT r.* REPLACE ("
        " coalesce(m.status_then, r.status) AS status,"
        f" CASE WHEN r.status_changed_at > {a} THEN coalesce(ls.at, r.ingested_at)"
        " ELSE r.status_changed_at END AS status_changed_at,"
        f" CASE WHEN r.confirmed_entry_id {entry} THEN r.confirmed_entry_id END AS confirmed_entry_id,"
        f" CASE WHEN r.reversed_entry_id {entry} THEN r.reversed_entry_id END AS reversed_entry_id)"
        " FROM stage.revenue_events r"
        " LEFT JOIN moves m ON m.entity_type = 'revenue_event' AND m.entity_id = r.event_hash"
        " LEFT JOIN last_seen ls ON ls.entity_type = 'revenue_event' AND ls.entity_id = r.event_hash"
        f" WHERE r.ingested_at <= {a}"
    )
    approved = (
        "SELECT entity_id, arg_max(json_extract(detail, '$.approval_version')::BIGINT, seq) AS v"
        f" FROM stage.transaction_log WHERE seq <= {s} AND action = 'batch_approved' GROUP BY ALL"
    )
    submitting = (
        "SELECT DISTINCT entity_id FROM stage.transaction_log WHERE entity_type = 'payout_batch'"
        f" AND seq <= {s} AND json_extract_string(detail, '$.to') = 'submitting'"
    )
    gateway_id = (
        "SELECT DISTINCT entity_id FROM stage.transaction_log"
        f" WHERE seq <= {s} AND action = 'batch_gateway_id_recorded'"
    )
    sent = "sub.entity_id IS NOT NULL"
    out.append(
        "CREATE TABLE payout_batches AS SELECT b.* REPLACE ("
        " coalesce(m.status_then, b.status) AS status,"
        f" CASE WHEN b.updated_at > {a} THEN coalesce(ls.at, b.created_at) ELSE b.updated_at END AS updated_at,"
        " coalesce(av.v, 0) AS approval_version,"
        f" CASE WHEN {sent} THEN b.idempotency_key END AS idempotency_key,"
        f" CASE WHEN {sent} THEN b.submission_hash END AS submission_hash,"
        f" CASE WHEN {sent} THEN b.submission_attempts ELSE 0 END AS submission_attempts,"
        f" CASE WHEN b.submitted_at <= {a} THEN b.submitted_at END AS submitted_at,"
        " CASE WHEN gw.entity_id IS NOT NULL THEN b.gateway_batch_id END AS gateway_batch_id,"
        " CASE WHEN m.status_then IS NULL THEN b.status_reason END AS status_reason)"
        " FROM stage.payout_batches b"
        " LEFT JOIN moves m ON m.entity_type = 'payout_batch' AND m.entity_id = b.id"
        " LEFT JOIN last_seen ls ON ls.entity_type = 'payout_batch' AND ls.entity_id = b.id"
        f" LEFT JOIN ({approved}) av ON av.entity_id = b.id"
        f" LEFT JOIN ({submitting}) sub ON sub.entity_id = b.id"
        f" LEFT JOIN ({gateway_id}) gw ON gw.entity_id = b.id"
        f" WHERE b.created_at <= {a}"
    )
    out.append(
        "CREATE TABLE payout_items AS SELECT i.* REPLACE ("
        " coalesce(m.status_then, i.status) AS status,"
        f" CASE WHEN i.updated_at > {a} THEN coalesce(ls.at, b.created_at) ELSE i.updated_at END AS updated_at,"
        " CASE WHEN m.status_then IS NULL THEN i.provider_status END AS provider_status,"
        " CASE WHEN coalesce(m.status_then, i.status) <> 'pending' THEN i.gateway_item_id END"
        " AS gateway_item_id)"
        " FROM stage.payout_items i JOIN payout_batches b ON b.id = i.batch_id"
        " LEFT JOIN moves m ON m.entity_type = 'payout_item' AND m.entity_id = CAST(i.id AS VARCHAR)"
        " LEFT JOIN last_seen ls ON ls.entity_type = 'payout_item' AND ls.entity_id = CAST(i.id AS VARCHAR)"
    )
    # Releases after S of items that existed at A: the earnings each one unlinked.
    item_ids = (
        "SELECT entity_id, seq, detail FROM stage.transaction_log"
        f" WHERE seq > {s} AND entity_type = 'payout_item'"
        " AND TRY_CAST(entity_id AS BIGINT) IN (SELECT id FROM payout_items)"
    )
    out.append(
        "CREATE TEMP TABLE released AS SELECT earning_id, arg_min(item_id, seq) AS item_id"
        " FROM (SELECT CAST(entity_id AS BIGINT) AS item_id, seq,"
        " unnest(CAST(json_extract(detail, '$.earning_ids') AS BIGINT[])) AS earning_id"
        f" FROM ({item_ids}) WHERE json_extract(detail, '$.earning_ids') IS NOT NULL)"
        " GROUP BY earning_id"
    )
    gone = ", ".join(_lit(k) for k, c in sorted(ITEM_MONEY_CLASS.items()) if c == "released")
    out.append(
        "CREATE TEMP TABLE unattributed AS SELECT DISTINCT CAST(entity_id AS BIGINT) AS item_id"
        f" FROM ({item_ids}) WHERE json_extract_string(detail, '$.to') IN ({gone})"
        f" AND json_extract_string(detail, '$.from') NOT IN ({gone})"
        " AND json_extract(detail, '$.earning_ids') IS NULL"
    )
    # The last hold decision at or before S about each earning: held (on_hold or a
    # flag on a batched one), released (back to its status) or cancelled.
    holds = (
        "SELECT entity_id, arg_max(CASE action WHEN 'earning_cancelled' THEN 'cancelled'"
        " ELSE json_extract_string(detail, '$.status') END, seq) AS status_then"
        f" FROM stage.transaction_log WHERE seq <= {s} AND entity_type = 'earning'"
        " AND action IN ('earning_held', 'earning_released', 'earning_cancelled') GROUP BY ALL"
    )
    money_class = (
        "CASE WHEN i.status = 'paid' THEN 'paid'"
        " WHEN i.status IN ('pending', 'submitted', 'processing', 'held', 'unclaimed')"
        " THEN 'batched' END"
    )
    out.append(
        "CREATE TABLE earnings AS SELECT e.* REPLACE ("
        f" coalesce({money_class}, CASE WHEN h.status_then IN ('on_hold', 'cancelled')"
        " THEN h.status_then END, 'accrued') AS status,"
        f" CASE WHEN {money_class} IS NOT NULL THEN i.id END AS payout_item_id,"
        f" CASE WHEN e.funding_released_at <= {a} THEN e.funding_released_by END AS funding_released_by,"
        f" CASE WHEN e.funding_released_at <= {a} THEN e.funding_released_at END AS funding_released_at)"
        " FROM stage.earnings e LEFT JOIN released r ON r.earning_id = e.id"
        " LEFT JOIN payout_items i ON i.id = coalesce(r.item_id, e.payout_item_id)"
        f" LEFT JOIN ({holds}) h ON h.entity_id = e.external_id"
        f" WHERE e.created_at <= {a}"
    )
    out.append(
        "CREATE TABLE earning_sources AS SELECT * FROM stage.earning_sources"
        " WHERE earning_id IN (SELECT id FROM earnings)"
    )
    out.append(
        "CREATE TABLE clawbacks AS SELECT c.* REPLACE ("
        f" CASE WHEN c.cleared_entry_id {entry} THEN c.cleared_entry_id END AS cleared_entry_id,"
        f" CASE WHEN c.cleared_at <= {a} THEN c.cleared_at END AS cleared_at)"
        f" FROM stage.clawbacks c WHERE c.created_at <= {a}"
    )
    out.append(_beneficiaries(a, s, beneficiary_columns))
    disabled = (
        "SELECT DISTINCT entity_id FROM stage.transaction_log"
        f" WHERE seq > {s} AND action = 'approver_disabled'"
    )
    out.append(
        "CREATE TABLE approvers AS SELECT p.* REPLACE ("
        " p.active OR d.entity_id IS NOT NULL AS active)"
        f" FROM stage.approvers p LEFT JOIN ({disabled}) d ON d.entity_id = p.name"
        f" WHERE p.created_at <= {a}"
    )
    out.append(f"CREATE TABLE approvals AS SELECT * FROM stage.approvals WHERE decided_at <= {a}")
    out.append(
        "CREATE TABLE gateway_events AS SELECT g.* REPLACE ("
        f" CASE WHEN g.processed_at <= {a} THEN g.processed_at END AS processed_at)"
        f" FROM stage.gateway_events g WHERE g.received_at <= {a}"
    )
    last_log = (
        "SELECT entity_type, entity_id, arg_max(action, seq) AS action, arg_max(actor, seq) AS actor,"
        " max(occurred_at) AS at, arg_max(amount_minor, seq) AS amount_minor,"
        " arg_max(json_extract_string(detail, '$.reason'), seq) AS reason"
        f" FROM stage.transaction_log WHERE seq <= {s}"
        " AND action IN ('payouts_frozen', 'payouts_unfrozen', 'reserve_set') GROUP BY ALL"
    )
    out.append(f"CREATE TEMP TABLE last_control AS {last_log}")
    out.append(
        f"CREATE TABLE controls AS SELECT * FROM stage.controls WHERE set_at <= {a}"
        " UNION ALL BY NAME SELECT c.name,"
        " CASE l.action WHEN 'payouts_frozen' THEN 'true' ELSE 'false' END AS value,"
        " l.actor AS set_by, l.at AS set_at, l.reason"
        " FROM stage.controls c JOIN last_control l ON l.entity_type = 'control'"
        f" AND l.entity_id = c.name WHERE c.set_at > {a}"
    )
    out.append(
        f"CREATE TABLE balance_reserves AS SELECT * FROM stage.balance_reserves WHERE set_at <= {a}"
        " UNION ALL BY NAME SELECT r.currency, l.amount_minor, l.actor AS set_by,"
        " l.at AS set_at, l.reason FROM stage.balance_reserves r JOIN last_control l"
        f" ON l.entity_type = 'reserve' AND l.entity_id = r.currency WHERE r.set_at > {a}"
    )
    out.append(
        f"CREATE TABLE ingested_files AS SELECT * FROM stage.ingested_files WHERE ingested_at <= {a}"
    )
    return out


def _beneficiaries(a: str, s: str, columns: dict[str, str]) -> str:
    """Each column changed after S gets the ``from`` of its first logged change."""
    changed = (
        "SELECT entity_id, key AS col, arg_min(json_extract(detail, '$.changed.\"' || key || '\".from'), seq) AS was"
        " FROM (SELECT entity_id, seq, detail, unnest(json_keys(detail, '$.changed')) AS key"
        f" FROM stage.transaction_log WHERE seq > {s} AND action = 'beneficiary_updated')"
        " GROUP BY ALL"
    )
    replaced = []
    for name, kind in columns.items():
        cast = "BOOLEAN" if kind == "BOOLEAN" else ("BIGINT" if kind == "BIGINT" else None)
        value = f"CAST(u.was AS {cast})" if cast else "json_extract_string(u.was, '$')"
        match = f"FROM changed u WHERE u.entity_id = b.external_id AND u.col = '{name}'"
        replaced.append(
            f"CASE WHEN EXISTS (SELECT 1 {match}) THEN (SELECT {value} {match})"
            f" ELSE b.{name} END AS {name}"
        )
    replaced.append(
        f"CASE WHEN b.updated_at > {a} THEN coalesce(ls.at, b.created_at) ELSE b.updated_at END"
        " AS updated_at"
    )
    return (
        f"CREATE TABLE beneficiaries AS WITH changed AS ({changed})"
        f" SELECT b.* REPLACE ({', '.join(replaced)}) FROM stage.beneficiaries b"
        " LEFT JOIN last_seen ls ON ls.entity_type = 'beneficiary' AND ls.entity_id = b.external_id"
        f" WHERE b.created_at <= {a}"
    )


MUTABLE_BENEFICIARY_COLUMNS = (
    "name",
    "email",
    "payout_method",
    "destination",
    "country",
    "kyc_status",
    "sanctions_status",
    "screened_at",
    "blocked",
    "tax_id_masked",
    "tax_form_status",
)

ALL_TABLES = tuple(t.name for t in LEDGER_TABLES)
TEMP_TABLES = ("moves", "last_seen", "released", "unattributed", "last_control")


def unattributed_items(duck: duckdb.DuckDBPyConnection) -> list[int]:
    """Items released after the instant by a log row that did not record its earnings."""
    rows = duck.execute("SELECT item_id FROM temp.unattributed ORDER BY item_id").fetchall()
    return [int(r[0]) for r in rows]

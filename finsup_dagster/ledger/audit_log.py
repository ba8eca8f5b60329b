"""The transaction log: append-only and hash-chained.

Each row's hash is SHA-256 over the previous row's hash and the row's own
fields in canonical JSON (see ``row_digest``). The head row
(``audit_chain_head``) holds the last sequence number and hash, updated in the
same transaction as each append, so deleting or appending a row at the tail is
found as surely as editing one in the middle. Someone who can rewrite the whole
chain and the head can forge it: compare the head hash against a copy kept
elsewhere (every Dagster run records it) to rule that out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import clock
from finsup_dagster.ledger.schema import audit_chain_head, transaction_log

GENESIS_HASH = "0" * 64
_HASHED_FIELDS = (
    "seq",
    "occurred_at",
    "actor",
    "action",
    "entity_type",
    "entity_id",
    "amount_minor",
    "currency",
    "detail",
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_detail(text: str | None) -> dict[str, Any]:
    value = json.loads(text or "{}")
    return value if isinstance(value, dict) else {}


def row_digest(prev_hash: str, row: Mapping[Any, Any]) -> str:
    body = canonical_json([prev_hash, *(row[f] for f in _HASHED_FIELDS)])
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class LogRecord:
    action: str
    entity_type: str
    entity_id: str
    actor: str = "system"
    amount_minor: int | None = None
    currency: str | None = None
    detail: Mapping[str, Any] | None = None


# The head as ``db.write`` read it when taking the writer lock (same row, same statement),
# so the first ``chained`` of the transaction need not read it again: one round trip
# less a write on PostgreSQL. Taken (popped) by that first use: every later move of the
# head inside the transaction comes after a ``chained``, which then reads the row itself.
# ``db.write`` drops it when the transaction ends, so it never outlives its lock.
HEAD_AT_LOCK = "finsup_chain_head_at_lock"


def chained(
    conn: Connection, records: Iterable[LogRecord]
) -> tuple[list[dict[str, Any]], int, str]:
    """The records as log rows chained onto the head (read here, under the caller's writer
    lock): (rows, their last seq, their last hash). Written by ``append``, or by a caller
    that sends them in one statement with writes of its own (``seals``)."""
    held: tuple[int, str] | None = conn.info.pop(HEAD_AT_LOCK, None)
    if held is not None:
        seq, prev = held
    else:
        head = conn.execute(
            sa.select(audit_chain_head.c.seq, audit_chain_head.c.row_hash).where(
                audit_chain_head.c.id == 1
            )
        ).one()
        seq, prev = head.seq, head.row_hash
    occurred_at = clock.now()
    rows = []
    for rec in records:
        seq += 1
        row = {
            "seq": seq,
            "occurred_at": occurred_at,
            "actor": rec.actor,
            "action": rec.action,
            "entity_type": rec.entity_type,
            "entity_id": rec.entity_id,
            "amount_minor": rec.amount_minor,
            "currency": rec.currency,
            "detail": canonical_json(dict(rec.detail or {})),
        }
        row["prev_hash"] = prev
        row["row_hash"] = prev = row_digest(prev, row)
        rows.append(row)
    return rows, int(seq), str(prev)


def append(conn: Connection, records: Iterable[LogRecord]) -> int:
    """Appends records inside the caller's write transaction; returns the last seq."""
    rows, seq, head_hash = chained(conn, records)
    if rows:
        conn.execute(sa.insert(transaction_log), rows)
        conn.execute(
            sa.update(audit_chain_head)
            .where(audit_chain_head.c.id == 1)
            .values(seq=seq, row_hash=head_hash)
        )
    return seq


def log(conn: Connection, action: str, entity_type: str, entity_id: str, **kw: Any) -> int:
    return append(conn, [LogRecord(action, entity_type, entity_id, **kw)])


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(
    conn: Connection, batch_size: int = 10_000, since: tuple[int, str] | None = None
) -> ChainReport:
    """Recomputes the chain from the first row; names the first row that breaks it.

    ``since`` (seq, row_hash) starts after a row already verified and vouched
    for elsewhere (a signed checkpoint, which ``checkpoints.compare`` checks).
    """
    prev, expected_seq, count = GENESIS_HASH, 1, 0
    last_seq: int | None = None
    if since is not None and since[0] > 0:
        last_seq, prev = since
        expected_seq, count = last_seq + 1, last_seq
    while True:
        stmt = sa.select(transaction_log).order_by(transaction_log.c.seq).limit(batch_size)
        if last_seq is not None:
            stmt = stmt.where(transaction_log.c.seq > last_seq)
        rows = conn.execute(stmt).mappings().all()
        if not rows:
            break
        for row in rows:
            if row["seq"] != expected_seq:
                if row["seq"] > expected_seq:
                    where, problem = (
                        expected_seq,
                        f"row {expected_seq} is missing (next row is {row['seq']})",
                    )
                else:
                    where, problem = (
                        row["seq"],
                        f"row {row['seq']} is out of sequence (expected row {expected_seq})",
                    )
                return ChainReport(False, count, prev, where, problem)
            if row["prev_hash"] != prev:
                return ChainReport(
                    False,
                    count,
                    prev,
                    row["seq"],
                    f"row {row['seq']} does not follow row {row['seq'] - 1} (prev_hash differs)",
                )
            if row_digest(prev, row) != row["row_hash"]:
                return ChainReport(
                    False,
                    count,
                    prev,
                    row["seq"],
                    f"row {row['seq']} was altered (its content does not match its hash)",
                )
            prev = row["row_hash"]
            expected_seq += 1
            count += 1
            last_seq = row["seq"]
    head = conn.execute(sa.select(audit_chain_head).where(audit_chain_head.c.id == 1)).first()
    if head is None:
        return ChainReport(False, count, prev, None, "the chain head row is missing")
    if head.seq != count or head.row_hash != prev:
        bad = min(head.seq, count) + 1
        return ChainReport(
            False,
            count,
            prev,
            bad,
            f"the chain ends at row {count} but its head records row {head.seq}: "
            f"row {bad} was deleted or appended outside the books",
        )
    return ChainReport(True, count, prev)

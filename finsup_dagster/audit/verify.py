"""Verifying a snapshot from the file alone: no ledger, no warehouse, the file read-only.

Four checks, each naming what differs:

1. manifest: every table's row count, column list and hash recomputed by the
   query of ``canonical.hash_sql`` (the one docs/audit.md gives for by-hand
   use); a table missing from the file or from the manifest is named too;
2. chain: the transaction log recomputed row by row (``audit_log.row_digest``,
   the ledger's own definition) from the genesis hash, ending at the head that
   ``manifest_info`` records;
3. journal: every entry's postings sum to zero per currency, and every posting
   belongs to an entry;
4. trial balance: each (account, currency) row equals the sum of its postings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from finsup_dagster.audit import canonical
from finsup_dagster.ledger.audit_log import GENESIS_HASH, row_digest

_LOG_COLUMNS = (
    "seq",
    "occurred_at",
    "actor",
    "action",
    "entity_type",
    "entity_id",
    "amount_minor",
    "currency",
    "detail",
    "prev_hash",
    "row_hash",
)
_LIMIT = 50  # rows named per check: enough to act on, not a flood


@dataclass(frozen=True)
class Problem:
    table: str
    message: str

    def line(self) -> str:
        return f"{self.table}: {self.message}"


@dataclass
class VerifyReport:
    path: Path
    digest: str | None = None
    tables: int = 0
    chain_rows: int = 0
    chain_head: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "digest": self.digest,
            "tables": self.tables,
            "chain_rows": self.chain_rows,
            "chain_head": self.chain_head,
            "problems": [{"table": p.table, "message": p.message} for p in self.problems],
        }


def verify_snapshot(path: Path) -> VerifyReport:
    """Verifies the snapshot at ``path``, opened read-only."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return verify_open(conn, path)
    finally:
        conn.close()


def verify_open(conn: duckdb.DuckDBPyConnection, path: Path) -> VerifyReport:
    """Verifies the snapshot that is ``conn``'s current database."""
    report = VerifyReport(path)
    tables = {
        str(r[0])
        for r in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            " AND database_name = current_database()"
        ).fetchall()
    }
    if "manifest" not in tables:
        report.problems.append(Problem("manifest", "the snapshot has no manifest table"))
        return report
    for check in (_check_manifest, _check_chain, _check_journal, _check_trial_balance):
        try:
            check(conn, tables, report)
        except duckdb.Error as exc:
            # A table altered in shape (a column dropped, a type changed) fails the query.
            name = check.__name__.removeprefix("_check_")
            first = str(exc).strip().splitlines()[0]
            report.problems.append(
                Problem(_TABLE_OF.get(name, name), f"cannot be checked: {first}")
            )
    try:
        report.digest = canonical.manifest_digest(conn)
    except duckdb.Error:
        report.digest = None
    return report


_TABLE_OF = {"chain": "transaction_log", "journal": "postings", "trial_balance": "trial_balance"}


def _check_manifest(
    conn: duckdb.DuckDBPyConnection, tables: set[str], report: VerifyReport
) -> None:
    rows = conn.execute(
        "SELECT table_name, row_count, sha256, columns, key_columns FROM manifest ORDER BY table_name"
    ).fetchall()
    listed: set[str] = set()
    keys: dict[str, list[str]] = {}
    for name, _count, _digest, _columns, key in rows:
        if str(name) in tables:
            keys[str(name)] = [k for k in str(key or "").split(",") if k]
    try:
        actual = canonical.table_hashes(conn, dict(keys))
    except duckdb.Error:
        actual = {}  # one table fails to hash: hash them one by one to name it
    for name, count, digest, columns, _key in rows:
        name = str(name)
        if name in listed:
            report.problems.append(Problem("manifest", f"lists {name} twice"))
            continue
        listed.add(name)
        if name not in tables:
            report.problems.append(Problem(name, "is in the manifest but not in the snapshot"))
            continue
        try:
            actual_count, actual_hash, actual_columns = actual.get(name) or canonical.table_hash(
                conn, name, keys[name]
            )
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            report.problems.append(Problem(name, f"cannot be hashed: {first}"))
            continue
        report.tables += 1
        if ",".join(actual_columns) != columns:
            report.problems.append(
                Problem(
                    name, f"columns are {','.join(actual_columns)}, the manifest says {columns}"
                )
            )
        if actual_count != count:
            report.problems.append(
                Problem(name, f"has {actual_count} rows, the manifest says {count}")
            )
        if actual_hash != digest:
            report.problems.append(
                Problem(name, f"hash {actual_hash} differs from the manifest's {digest}")
            )
    for name in sorted(tables - listed - {"manifest"}):
        report.problems.append(Problem(name, "is in the snapshot but not in the manifest"))


def _info(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return {
        str(k): str(v) for k, v in conn.execute("SELECT key, value FROM manifest_info").fetchall()
    }


def _check_chain(conn: duckdb.DuckDBPyConnection, tables: set[str], report: VerifyReport) -> None:
    if "transaction_log" not in tables:
        report.problems.append(Problem("transaction_log", "is missing"))
        return
    problems: list[Problem] = []
    prev, expected, count = GENESIS_HASH, 1, 0
    cur = conn.execute(f"SELECT {', '.join(_LOG_COLUMNS)} FROM transaction_log ORDER BY seq")
    while len(problems) < _LIMIT:
        chunk = cur.fetchmany(50_000)
        if not chunk:
            break
        for values in chunk:
            row = dict(zip(_LOG_COLUMNS, values, strict=True))
            seq = int(row["seq"])
            if seq != expected:
                problems.append(
                    Problem("transaction_log", f"row {expected} is missing (next is {seq})")
                    if seq > expected
                    else Problem("transaction_log", f"row {seq} is out of sequence")
                )
            elif row["prev_hash"] != prev:
                problems.append(
                    Problem("transaction_log", f"row {seq} does not follow row {seq - 1}")
                )
            elif row_digest(prev, row) != row["row_hash"]:
                problems.append(
                    Problem(
                        "transaction_log",
                        f"row {seq} was altered (content does not match its hash)",
                    )
                )
            prev, expected, count = str(row["row_hash"]), seq + 1, count + 1
    report.chain_rows, report.chain_head = count, prev
    info = _info(conn) if "manifest_info" in tables else {}
    head_seq, head_hash = info.get("chain_head_seq"), info.get("chain_head_hash")
    if not problems and (head_seq != str(count) or head_hash != prev):
        problems.append(
            Problem(
                "transaction_log",
                f"the chain ends at row {count} ({prev[:12]}…) but the manifest's head is "
                f"row {head_seq} ({(head_hash or '')[:12]}…): rows deleted or appended",
            )
        )
    report.problems += problems


def _check_journal(conn: duckdb.DuckDBPyConnection, tables: set[str], report: VerifyReport) -> None:
    off = conn.execute(
        "SELECT entry_id, currency, sum(amount_minor) FROM postings GROUP BY entry_id, currency"
        f" HAVING sum(amount_minor) <> 0 ORDER BY entry_id, currency LIMIT {_LIMIT}"
    ).fetchall()
    for entry, currency, total in off:
        report.problems.append(
            Problem(
                "postings", f"journal entry {entry} does not balance: {currency} off by {total}"
            )
        )
    totals = conn.execute(
        "SELECT currency, sum(amount_minor) FROM postings GROUP BY currency"
        " HAVING sum(amount_minor) <> 0 ORDER BY currency"
    ).fetchall()
    for currency, total in totals:
        report.problems.append(Problem("postings", f"the journal is off by {total} {currency}"))
    orphans = conn.execute(
        "SELECT id, entry_id FROM postings WHERE entry_id NOT IN (SELECT id FROM journal_entries)"
        f" ORDER BY id LIMIT {_LIMIT}"
    ).fetchall()
    for posting, entry in orphans:
        report.problems.append(
            Problem(
                "postings", f"posting {posting} names journal entry {entry}, which is not there"
            )
        )


def _check_trial_balance(
    conn: duckdb.DuckDBPyConnection, tables: set[str], report: VerifyReport
) -> None:
    rows = conn.execute(
        "SELECT coalesce(t.account, p.account), coalesce(t.currency, p.currency),"
        " t.balance_minor, p.balance_minor FROM trial_balance t FULL OUTER JOIN"
        " (SELECT account, currency, sum(amount_minor) AS balance_minor FROM postings"
        "  GROUP BY account, currency) p ON p.account = t.account AND p.currency = t.currency"
        " WHERE t.balance_minor IS DISTINCT FROM p.balance_minor ORDER BY 1, 2"
        f" LIMIT {_LIMIT}"
    ).fetchall()
    for account, currency, shown, summed in rows:
        report.problems.append(
            Problem(
                "trial_balance",
                f"{account} {currency} shows {shown}, its postings sum to {summed}",
            )
        )

"""Seals: tamper evidence over every table that holds money or decides where it goes.

The mechanism, once for every sealed table:

- Every Core ``INSERT``/``UPDATE``/``DELETE`` on a sealed table is seen by an
  engine listener (``install``). It must run inside ``db.write`` (anything
  else is refused), and before an update or delete touches a row the row's
  current content is read, so that at commit its *previous* content can be
  checked against its latest seal: finsup never builds on a row someone
  changed behind its back, and a later legitimate write never launders an
  earlier direct edit.
- At commit (``flush``), every row the transaction touched is read back and
  its digest (``row_digest``: SHA-256 over the table name and the row's
  non-NULL columns in canonical JSON) is appended to ``row_seals`` (NULL for
  a deleted row), under one transaction-log row ``rows_sealed`` whose detail
  holds the root: SHA-256 over the transaction's seal lines, sorted. The
  chain then commits to every seal.
- ``verify`` recomputes the roots from ``row_seals`` and every sealed row's
  digest against its latest seal: a row edited, inserted or deleted directly
  in the database is named with its table and key; a seal edited, added or
  removed is named with its log row.

What it does not prove: that the chain itself was not rewritten together
with the rows by someone with database access. That is what the checkpoint
(``checkpoints.py``, HMAC under a key outside the database) and the heads
recorded in Dagster's event log are for.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import dml
from sqlalchemy.sql.selectable import LateralFromClause

from finsup_dagster.ledger import audit_log
from finsup_dagster.ledger.audit_log import LogRecord
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.schema import (
    approvals,
    approvers,
    balance_reserves,
    beneficiaries,
    clawbacks,
    controls,
    earning_sources,
    earnings,
    gateway_events,
    journal_entries,
    payout_batches,
    payout_items,
    postings,
    revenue_events,
    row_seals,
    transaction_log,
)

SEAL_VERSION = "finsup-row-v1"
SEALED_TABLES: tuple[sa.Table, ...] = (
    beneficiaries,
    revenue_events,
    journal_entries,
    postings,
    earnings,
    earning_sources,
    payout_batches,
    payout_items,
    approvers,
    approvals,
    gateway_events,
    controls,
    balance_reserves,
    clawbacks,
)
BY_NAME: dict[str, sa.Table] = {t.name: t for t in SEALED_TABLES}
_SORTED_COLUMNS: dict[str, list[str]] = {t.name: sorted(t.c.keys()) for t in SEALED_TABLES}
_PREFIXES: dict[str, str] = {
    name: f"{SEAL_VERSION}\x1f{name}\x1f{','.join(cols)}\x1f"
    for name, cols in _SORTED_COLUMNS.items()
}
_PENDING = "finsup_seals_pending"
_IN_CHUNK = 500
# An INSERT carrying this execution option returns its generated keys, and its caller
# hands exactly those to ``touch_inserted``: the two queries that bracket any other
# insert (the maximum key before, the keys above it after) are not needed. A caller
# that forgot would leave rows unsealed, which ``verify`` names as inserted outside the
# books: the option can cost a seal's presence only loudly, never silently.
KEYS_RETURNED = "finsup_keys_returned"
# Up to this many seals, PostgreSQL gets the log row, the chain head and the seals in one
# statement (one round trip); more go by COPY.
_ONE_STATEMENT_SEALS = 2000


class TamperDetected(LedgerError):
    """A sealed row does not match its seal: the books were changed outside finsup."""


class UnsealedWrite(LedgerError):
    """A write to a sealed table outside ``db.write``: it would go unsealed."""


def row_digest(table_name: str, row: Mapping[str, Any]) -> str:
    """SHA-256 over the table, its column names and the row's values, in column-name order.

    ``finsup-row-v1`` US table US names joined by commas US ``repr`` of the
    tuple of values (Python's repr of str, int, bool and None: typed, quoted
    and escaped, so no two contents share an encoding). A migration that adds
    a column to a sealed table re-seals its rows (``seal_existing``).
    """
    names = _SORTED_COLUMNS.get(table_name) or sorted(row)
    return digest_values(table_name, tuple(row[n] for n in names))


def digest_values(table_name: str, values: tuple[Any, ...]) -> str:
    """``row_digest`` for values already in column-name order (the verification's fast path)."""
    prefix = _PREFIXES.get(table_name) or f"{SEAL_VERSION}\x1f{table_name}\x1f\x1f"
    return hashlib.sha256((prefix + repr(values)).encode()).hexdigest()


def row_key(table: sa.Table, row: Mapping[str, Any]) -> str:
    """The primary key as text: the values joined by ``/`` (as ``key_expr`` writes it in SQL)."""
    return "/".join(str(row[c.name]) for c in table.primary_key.columns)


def key_expr(table: sa.Table) -> sa.ColumnElement[str]:
    """``row_key`` in SQL; a text key stays the bare column, so its index still serves ORDER BY."""
    parts: list[sa.ColumnElement[str]] = [
        c if isinstance(c.type, sa.String) else sa.cast(c, sa.String)
        for c in table.primary_key.columns
    ]
    expr = parts[0]
    for part in parts[1:]:
        expr = expr + sa.literal("/", sa.String) + part
    return expr


def seal_line(table_name: str, key: str, digest: str | None) -> str:
    return f"{table_name}\x1f{key}\x1f{digest or '-'}"


def root_of(lines: Iterable[tuple[str, str, str | None]]) -> str:
    """SHA-256 over the seal lines ordered by (table, key), each followed by a newline."""
    digest = hashlib.sha256()
    for line in sorted(lines, key=lambda x: (x[0], x[1])):
        digest.update((seal_line(*line) + "\n").encode())
    return digest.hexdigest()


def _content(table: sa.Table, row: Any) -> dict[str, Any]:
    mapping = row._mapping
    return {c.name: mapping[c.name] for c in table.columns}


# --- capturing writes --------------------------------------------------------------------


@dataclass
class Pending:
    """What one write transaction touched, and what the touched rows held before."""

    touched: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    before: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    inserted: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    insert_marks: list[Any] = field(default_factory=list)
    # Tables a KEYS_RETURNED insert wrote whose keys ``touch_inserted`` has not had yet.
    keys_owed: set[str] = field(default_factory=set)


def begin(conn: Connection) -> None:
    conn.info[_PENDING] = Pending()


def discard(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _pending(conn: Connection, table: sa.Table) -> Pending:
    pending = conn.info.get(_PENDING)
    if pending is None:
        raise UnsealedWrite(
            f"a write to {table.name} outside a books write transaction (db.write) would go unsealed"
        )
    assert isinstance(pending, Pending)
    return pending


def touch_inserted(conn: Connection, table: sa.Table, keys: Iterable[str]) -> None:
    """For writers that bypass Core (bulk inserts): these rows are new in this transaction."""
    pending = _pending(conn, table)
    new = set(keys)
    pending.keys_owed.discard(table.name)
    pending.inserted[table.name] |= new - pending.touched[table.name]
    pending.touched[table.name] |= new


def _sealed_table(statement: Any) -> sa.Table | None:
    if not isinstance(statement, dml.UpdateBase):
        return None
    table = statement.table
    return table if isinstance(table, sa.Table) and table.name in BY_NAME else None


def _before_execute(
    conn: Connection, statement: Any, multiparams: Any, params: Any, _options: Any
) -> None:
    table = _sealed_table(statement)
    if table is None:
        return
    pending = _pending(conn, table)
    if isinstance(statement, dml.Insert):
        if statement.get_execution_options().get(KEYS_RETURNED):
            pending.keys_owed.add(table.name)
            return
        auto = table.autoincrement_column
        if auto is not None:
            # Generated keys are not in the statement: the new rows are those above today's
            # maximum (the writer lock keeps other writers of the books out meanwhile).
            top = conn.execute(sa.select(sa.func.max(auto))).scalar()
            pending.insert_marks.append((table, top))
        else:
            compiled = statement.compile(dialect=conn.dialect)
            sets = list(multiparams) if multiparams else [params or {}]
            keys = {row_key(table, compiled.construct_params(p)) for p in sets}
            touch_inserted(conn, table, keys)
        return
    if len(multiparams or ()) > 1:
        raise UnsealedWrite(f"an executemany UPDATE or DELETE of {table.name} cannot be sealed")
    where = statement.whereclause
    query = sa.select(table)
    if where is not None:
        query = query.where(where)
    for row in conn.execute(query):
        content = _content(table, row)
        key = row_key(table, content)
        if key not in pending.touched[table.name]:
            pending.before[table.name][key] = row_digest(table.name, content)
            pending.touched[table.name].add(key)


def _after_execute(
    conn: Connection, statement: Any, _multiparams: Any, _params: Any, _options: Any, _result: Any
) -> None:
    table = _sealed_table(statement)
    if table is None or not isinstance(statement, dml.Insert) or table.autoincrement_column is None:
        return
    if statement.get_execution_options().get(KEYS_RETURNED):
        return
    pending = _pending(conn, table)
    marked, top = pending.insert_marks.pop()
    auto = table.autoincrement_column
    query = sa.select(auto)
    if top is not None:
        query = query.where(auto > top)
    touch_inserted(conn, marked, (str(k) for k in conn.execute(query).scalars()))


def install(engine: Engine) -> None:
    sa.event.listen(engine, "before_execute", _before_execute)
    sa.event.listen(engine, "after_execute", _after_execute)


# --- sealing at commit -------------------------------------------------------------------


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _any_of(col: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``col = ANY(:values)`` with the values as one array parameter (PostgreSQL only).

    One statement and one parameter however many keys: no 500-placeholder statement to
    build, convert and plan per chunk.
    """
    return col == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(col.type)))


def _current(conn: Connection, table: sa.Table, keys: Sequence[str]) -> dict[str, str]:
    """key → digest of the row as it stands, for the keys that exist."""
    out: dict[str, str] = {}
    expr = key_expr(table)
    pk = list(table.primary_key.columns)
    whole = len(pk) == 1 and _is_pg(conn)
    for part in [keys] if whole else _chunks(keys):
        if len(pk) == 1:
            col = pk[0]
            values: list[Any] = [col.type.python_type(k) for k in part]
            where = _any_of(col, values) if whole else col.in_(values)
        else:
            where = expr.in_(list(part))
        for row in conn.execute(sa.select(table).where(where)):
            content = _content(table, row)
            out[row_key(table, content)] = row_digest(table.name, content)
    return out


def _newest_seal_per_key(
    table_name: str, keys: Sequence[str], *columns: sa.ColumnElement[Any]
) -> tuple[sa.Subquery, LateralFromClause]:
    """PostgreSQL: the keys as a relation ``wanted.key`` and, per key, ``columns`` of its
    newest seal by a lateral ``ORDER BY seq DESC LIMIT 1`` (one primary-key descent each)."""
    s = row_seals.c
    wanted = sa.select(
        sa.func.unnest(
            sa.bindparam(None, list(keys), type_=postgresql.ARRAY(sa.String))
        ).column_valued("key")
    ).subquery("wanted")
    newest = (
        sa.select(*columns)
        .where(s.table_name == table_name, s.row_key == wanted.c.key)
        .order_by(s.seq.desc())
        .limit(1)
        .lateral("newest")
    )
    return wanted, newest


def latest_seals(conn: Connection, table_name: str, keys: Sequence[str]) -> dict[str, str | None]:
    """key → digest of its latest seal (None: sealed as deleted); keys never sealed are absent.

    Each key costs one descent of the primary key, however many seals the table holds:
    on PostgreSQL a lateral ``ORDER BY seq DESC LIMIT 1`` per key (a plan no estimate
    can turn into a scan of the table's seals); elsewhere the newest seq per key, with
    the keys bounding both sides of the join.
    """
    out: dict[str, str | None] = {}
    if _is_pg(conn):
        wanted, newest = _newest_seal_per_key(table_name, keys, row_seals.c.digest)
        rows: Iterable[Any] = conn.execute(
            sa.select(wanted.c.key, newest.c.digest).select_from(wanted.join(newest, sa.true()))
        )
        out.update({k: d for k, d in rows})
        return out
    for part in _chunks(keys):
        # Driver SQL (row_seals holds only text and integers: nothing for Core to convert):
        # a statement compiled per transaction cost more than the lookup itself.
        marks = ", ".join("?" * len(part))
        found: Iterable[Any] = conn.exec_driver_sql(
            "SELECT s.row_key, s.digest FROM row_seals AS s JOIN ("
            "SELECT row_key, max(seq) AS seq FROM row_seals"
            f" WHERE table_name = ? AND row_key IN ({marks}) GROUP BY row_key"
            ") AS n ON s.row_key = n.row_key AND s.seq = n.seq"
            f" WHERE s.table_name = ? AND s.row_key IN ({marks})",
            (table_name, *part, table_name, *part),
        )
        out.update({k: d for k, d in found})
    return out


def _sealed_and_current(
    conn: Connection, table: sa.Table, keys: Sequence[str]
) -> tuple[dict[str, str | None], dict[str, str]]:
    """``latest_seals`` and ``_current`` in one round trip (PostgreSQL, one-column keys).

    Every key once, its newest seal beside it by the same lateral ``LIMIT 1`` descent
    as ``latest_seals``, and its row as it stands by the primary key: the same two
    answers from one statement, so the same checks follow.
    """
    [pk] = table.primary_key.columns
    wanted, newest = _newest_seal_per_key(
        table.name, keys, row_seals.c.digest.label("__seal_digest"), sa.true().label("__sealed")
    )
    by_key = pk == (
        wanted.c.key if isinstance(pk.type, sa.String) else sa.cast(wanted.c.key, pk.type)
    )
    query = sa.select(
        wanted.c.key.label("__key"), newest.c["__seal_digest"], newest.c["__sealed"], *table.columns
    ).select_from(wanted.outerjoin(newest, sa.true()).outerjoin(table, by_key))
    latest: dict[str, str | None] = {}
    now: dict[str, str] = {}
    for row in conn.execute(query):
        mapping = row._mapping
        key = mapping["__key"]
        if mapping["__sealed"]:
            latest[key] = mapping["__seal_digest"]
        if mapping[pk.name] is not None:
            content = {c.name: mapping[c.name] for c in table.columns}
            now[row_key(table, content)] = row_digest(table.name, content)
    return latest, now


def _tampered(table_name: str, key: str, was: str | None, sealed: str | None, known: bool) -> str:
    if not known:
        return f"{table_name} row {key} was inserted outside the books (it has no seal)"
    if sealed is None and was is not None:
        return f"{table_name} row {key} was re-inserted outside the books (sealed as deleted)"
    if was is None:
        return f"{table_name} row {key} was deleted outside the books"
    return f"{table_name} row {key} was altered outside the books (it does not match its seal)"


def flush(conn: Connection, actor: str = "system", *, commit: bool = False) -> int:
    """Seals what this transaction wrote; returns how many seals. Refuses tampered rows.

    ``commit``: the caller commits straight after (``db.write``). On PostgreSQL the
    statement that writes the seals then goes with the COMMIT in one flush
    (``_append_in_one``). The caller still calls ``commit()``, which finds nothing left
    to commit, or commits the other paths.
    """
    pending: Pending | None = conn.info.pop(_PENDING, None)
    if pending is None:
        return 0
    if pending.keys_owed:
        # Refused before the commit: those rows would otherwise go in unsealed.
        raise UnsealedWrite(
            f"rows inserted into {', '.join(sorted(pending.keys_owed))} with KEYS_RETURNED "
            "were never handed to touch_inserted"
        )
    lines: list[tuple[str, str, str | None]] = []
    for name in sorted(pending.touched):
        table = BY_NAME[name]
        keys = sorted(pending.touched[name])
        if not keys:
            continue
        if _is_pg(conn) and len(table.primary_key.columns) == 1:
            latest, now = _sealed_and_current(conn, table, keys)
        else:
            latest = latest_seals(conn, name, keys)
            now = _current(conn, table, keys)
        for key, was in pending.before[name].items():
            if key not in latest or latest[key] != was:
                raise TamperDetected(
                    _tampered(name, key, was, latest.get(key), key in latest)
                    + ": run `finsup verify-audit-chain`"
                )
        for key in pending.inserted[name]:
            if latest.get(key) is not None:
                raise TamperDetected(
                    f"{name} row {key} was deleted outside the books and its key reused: "
                    "run `finsup verify-audit-chain`"
                )
        for key in keys:
            digest = now.get(key)
            if key in latest and latest[key] == digest:
                continue  # touched, but left as it was sealed
            if key not in latest and digest is None:
                continue  # written and removed again inside this transaction
            lines.append((name, key, digest))
    if not lines:
        return 0
    return _append(conn, lines, actor, reason=None, commit=commit)


def _append(
    conn: Connection,
    lines: Sequence[tuple[str, str, str | None]],
    actor: str,
    reason: str | None,
    commit: bool = False,
) -> int:
    counts: dict[str, int] = defaultdict(int)
    for name, _, _ in lines:
        counts[name] += 1
    detail: dict[str, Any] = {
        "rows": len(lines),
        "tables": dict(sorted(counts.items())),
        "root": root_of(lines),
    }
    if reason:
        detail["reason"] = reason
    record = LogRecord("rows_sealed", "ledger", "row_seals", actor=actor, detail=detail)
    if not _is_pg(conn):
        return _append_sqlite(conn, record, lines)
    if len(lines) <= _ONE_STATEMENT_SEALS:
        return _append_in_one(conn, record, lines, commit)
    seq = audit_log.append(conn, [record])
    # COPY: an executemany of a million seals costs more than the rows they seal.
    driver = conn.connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        cursor.copy("COPY row_seals (table_name, row_key, seq, digest) FROM STDIN") as copy,
    ):
        for n, k, d in lines:
            copy.write_row((n, k, seq, d))
    return len(lines)


# Every column of the log, from its table: a column added there is never left out here.
_LOG_COLUMNS = tuple(c.name for c in transaction_log.columns)
# One constant text, so psycopg prepares it once per connection and no statement is
# built or compiled per transaction; every column is plain text or an integer, so the
# driver's values are what Core would bind.
_APPEND_IN_ONE = (
    "WITH new_log AS (INSERT INTO transaction_log ("
    + ", ".join(_LOG_COLUMNS)
    + ") VALUES ("
    + ", ".join(["%s"] * len(_LOG_COLUMNS))
    + ")), new_head AS (UPDATE audit_chain_head SET seq = %s, row_hash = %s WHERE id = 1) "
    "INSERT INTO row_seals (table_name, row_key, seq, digest) "
    "SELECT t, k, %s, d FROM unnest(%s::text[], %s::text[], %s::text[]) AS s(t, k, d)"
)


def _append_in_one(
    conn: Connection,
    record: LogRecord,
    lines: Sequence[tuple[str, str, str | None]],
    commit: bool = False,
) -> int:
    """PostgreSQL: the log row, the chain head's move and the seals in one statement.

    The same rows ``audit_log.append`` and the COPY would write, in one round trip
    instead of four: data-modifying CTEs run exactly once whether or not the main
    statement reads them, and all of it commits or none of it does.

    ``commit``: the statement and the COMMIT go in one pipeline flush, one round trip
    instead of two. This returns only once the COMMIT's answer is back, so nothing is
    acknowledged before it is durable. If the statement fails, the server skips the
    COMMIT (the transaction is aborted, the error raised here, the caller rolls back);
    if the COMMIT fails, its error is raised here.
    """
    [row], seq, head_hash = audit_log.chained(conn, [record])
    driver = conn.connection.driver_connection
    assert driver is not None
    params = [
        *(row[c] for c in _LOG_COLUMNS),
        seq,
        head_hash,
        seq,
        [n for n, _, _ in lines],
        [k for _, k, _ in lines],
        [d for _, _, d in lines],
    ]
    with driver.cursor() as cursor:
        if not commit:
            cursor.execute(_APPEND_IN_ONE, params)
            return len(lines)
        with driver.pipeline():
            cursor.execute(_APPEND_IN_ONE, params)
            cursor.execute("COMMIT")
    return len(lines)


def _append_sqlite(
    conn: Connection, record: LogRecord, lines: Sequence[tuple[str, str, str | None]]
) -> int:
    """SQLite: the same log row, head and seals as ``audit_log.append`` and an insert of the
    seals would write, as driver SQL (in-process, so the cost was Core's per statement)."""
    rows, seq, head_hash = audit_log.chained(conn, [record])
    marks = ", ".join("?" * len(_LOG_COLUMNS))
    conn.exec_driver_sql(
        f"INSERT INTO transaction_log ({', '.join(_LOG_COLUMNS)}) VALUES ({marks})",
        [tuple(row[c] for c in _LOG_COLUMNS) for row in rows],
    )
    conn.exec_driver_sql(
        "UPDATE audit_chain_head SET seq = ?, row_hash = ? WHERE id = 1", (seq, head_hash)
    )
    conn.exec_driver_sql(
        "INSERT INTO row_seals (table_name, row_key, seq, digest) VALUES (?, ?, ?, ?)",
        [(n, k, seq, d) for n, k, d in lines],
    )
    return len(lines)


def seal_existing(conn: Connection, reason: str, tables: Sequence[sa.Table] = SEALED_TABLES) -> int:
    """Seals every row of ``tables`` as it stands, under one log entry.

    For the migration that brings seals in (every table), and for one that adds
    a column to sealed tables (their digests cover the new column from then on).
    A table not yet in this schema's shape (an earlier migration, run on the
    way to a later one that adds columns to it) is left to that later
    migration, which seals it in its final shape.
    """
    lines: list[tuple[str, str, str | None]] = []
    inspector = sa.inspect(conn)
    for table in tables:
        if {c["name"] for c in inspector.get_columns(table.name)} != set(table.c.keys()):
            continue
        for row in conn.execute(sa.select(table)):
            content = _content(table, row)
            lines.append((table.name, row_key(table, content), row_digest(table.name, content)))
    if not lines:
        return 0
    return _append(conn, lines, actor="migration", reason=reason)


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    table: str
    key: str
    message: str


@dataclass
class SealReport:
    rows: int = 0
    seals: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, table: str, key: str, message: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(Problem(table, key, message))


_MAX_PROBLEMS = 50
_CURSORS = itertools.count()


def _in_text_order(conn: Connection, expr: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """Order by code point, as Python compares strings (PostgreSQL's collation may not)."""
    return expr.collate("C") if conn.dialect.name == "postgresql" else expr


def verify(conn: Connection, batch_size: int = 20_000) -> SealReport:
    """One ordered pass over the seals and one over each sealed table, merged by key.

    The seals come in (table, key, seq) order: each key's last seal is its
    latest, and each transaction's lines arrive in the order its root was
    computed in, so every root is recomputed in the same pass.
    """
    report = SealReport()
    claimed = _claimed_roots(conn)
    roots: dict[int, Any] = {}
    counts: dict[int, int] = defaultdict(int)
    s = row_seals.c
    stream = _plain_rows(
        conn,
        sa.select(s.table_name, s.row_key, s.seq, s.digest).order_by(
            _in_text_order(conn, s.table_name), _in_text_order(conn, s.row_key), s.seq
        ),
        batch_size,
    )

    def latest() -> Iterator[tuple[str, str, str | None]]:
        # The hot loop of verification: one pass per seal, so seal_line is inlined.
        last_name = last_key = None
        last_digest: str | None = None
        for name, key, seq, digest in stream:
            hasher = roots.get(seq)
            if hasher is None:
                hasher = roots[seq] = hashlib.sha256()
            hasher.update(f"{name}\x1f{key}\x1f{digest or '-'}\n".encode())
            counts[seq] += 1
            if key != last_key or name != last_name:
                if last_key is not None:
                    yield last_name, last_key, last_digest  # type: ignore[misc]
                last_name, last_key = name, key
            last_digest = digest
        if last_key is not None:
            yield last_name, last_key, last_digest  # type: ignore[misc]

    pending = _Peek(latest())
    for name in sorted(BY_NAME):
        while (head := pending.peek()) is not None and head[0] < name:
            pending.next()
            report.add("row_seals", head[1], f"row_seals names {head[0]!r}, which is not sealed")
        _merge_table(conn, BY_NAME[name], pending, report, batch_size)
    for head in iter(pending.next, None):
        report.add("row_seals", head[1], f"row_seals names {head[0]!r}, which is not sealed")
    report.seals = sum(counts.values())
    for seq in sorted(set(claimed) | set(roots)):
        if seq not in claimed:
            report.add(
                "row_seals",
                str(seq),
                f"row_seals holds {counts[seq]} seals under log row {seq}, which sealed nothing: "
                "added outside the books",
            )
        elif seq not in roots:
            report.add(
                "row_seals",
                str(seq),
                f"the seals of log row {seq} are missing: removed outside the books",
            )
        elif claimed[seq] != (roots[seq].hexdigest(), counts[seq]):
            report.add(
                "row_seals",
                str(seq),
                f"the seals under log row {seq} do not match the root that row commits to: "
                "a seal was changed, added or removed outside the books",
            )
    return report


def _plain_rows(conn: Connection, query: sa.Select[Any], batch_size: int) -> Iterator[Any]:
    """The query's rows, streamed; straight from the driver when SQLAlchemy would not convert.

    A million rows through the Core result cost about as much again as reading them:
    where no column has a result processor (text and integers, as ``row_seals`` and
    ``revenue_events`` hold) the driver's tuples are the values Core would give, so
    the digests are the same. Any other query goes through Core.
    """
    dialect = conn.dialect
    converts = any(
        c.type.dialect_impl(dialect).result_processor(dialect, None) is not None
        for c in query.selected_columns
    )
    driver = conn.connection.driver_connection
    if converts or driver is None:
        yield from conn.execution_options(yield_per=batch_size).execute(query)
        return
    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    # PostgreSQL: a named (server-side) cursor, so the rows are never all in memory at once.
    # The seals and a table stream at the same time, hence a name of each cursor's own.
    name = f"finsup_verify_{next(_CURSORS)}"
    cursor = driver.cursor(name=name) if _is_pg(conn) else driver.cursor()
    try:
        cursor.execute(sql)
        while batch := cursor.fetchmany(batch_size):
            yield from batch
    finally:
        cursor.close()


class _Peek:
    def __init__(self, it: Iterator[tuple[str, str, str | None]]) -> None:
        self._it, self._head = it, next(it, None)

    def peek(self) -> tuple[str, str, str | None] | None:
        return self._head

    def next(self) -> tuple[str, str, str | None] | None:
        head, self._head = self._head, next(self._it, None)
        return head


def _claimed_roots(conn: Connection) -> dict[int, tuple[str, int]]:
    log = transaction_log.c
    claimed: dict[int, tuple[str, int]] = {}
    sealing: Iterable[Any] = conn.execute(
        sa.select(log.seq, log.detail).where(log.action == "rows_sealed")
    )
    for seq, detail in sealing:
        body = audit_log.parse_detail(detail)
        claimed[int(seq)] = (str(body.get("root")), int(body.get("rows") or 0))
    return claimed


def _merge_table(
    conn: Connection, table: sa.Table, seals_: _Peek, report: SealReport, batch_size: int
) -> None:
    """The table's rows in key order against its latest seals in key order."""
    names = _SORTED_COLUMNS[table.name]
    width = len(names)
    key = key_expr(table)
    rows = _plain_rows(
        conn,
        sa.select(*(table.c[n] for n in names), key.label("__key")).order_by(
            _in_text_order(conn, key)
        ),
        batch_size,
    )
    for row in rows:
        k = str(row[width])
        while (head := seals_.peek()) is not None and head[0] == table.name and head[1] < k:
            seals_.next()
            if head[2] is not None:
                report.add(table.name, head[1], _tampered(table.name, head[1], None, "x", True))
        report.rows += 1
        digest = digest_values(table.name, tuple(row[:width]))
        head = seals_.peek()
        if head is not None and head[0] == table.name and head[1] == k:
            seals_.next()
            if head[2] != digest:
                report.add(table.name, k, _tampered(table.name, k, digest, head[2], True))
        else:
            report.add(table.name, k, _tampered(table.name, k, digest, None, False))
    while (head := seals_.peek()) is not None and head[0] == table.name:
        seals_.next()
        if head[2] is not None:
            report.add(table.name, head[1], _tampered(table.name, head[1], None, "x", True))

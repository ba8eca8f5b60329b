"""Connecting to the books and opening write transactions.

SQLite gets WAL (readers never block the writer), foreign keys, a busy
timeout, and ``BEGIN IMMEDIATE`` so a writer takes the write lock up front
instead of failing when it upgrades from reader to writer halfway through.
On PostgreSQL every write transaction first locks the single audit-chain head
row, which serialises writers exactly as SQLite does; readers are never blocked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from finsup_dagster.ledger import audit_log, seals
from finsup_dagster.ledger.errors import LedgerError, SchemaNotReady
from finsup_dagster.ledger.schema import audit_chain_head

SQLITE_BUSY_TIMEOUT_MS = 60_000
SUPPORTED_DIALECTS = {"sqlite": "pysqlite", "postgresql": "psycopg"}  # dialect: its driver


def finsup_home() -> Path:
    return Path(os.environ.get("FINSUP_HOME", ".finsup"))


def default_ledger_url() -> str:
    """``FINSUP_LEDGER_URL``, else a SQLite file under ``FINSUP_HOME``."""
    url = os.environ.get("FINSUP_LEDGER_URL")
    if url:
        return url
    return f"sqlite:///{finsup_home() / 'ledger.db'}"


def normalise_url(url: str) -> str:
    """Bare ``postgresql://`` URLs use psycopg 3, the driver we ship; other databases are refused."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
            break
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        # Not echoed: a malformed URL may still hold a password.
        raise LedgerError(
            "FINSUP_LEDGER_URL is not a database URL: use sqlite:///path/to/ledger.db "
            "or postgresql://user@host:5432/dbname"
        ) from None
    dialect = parsed.get_backend_name()
    if dialect not in SUPPORTED_DIALECTS:
        raise LedgerError(
            f"FINSUP_LEDGER_URL names a {dialect} database: the books live on SQLite or "
            "PostgreSQL only (sqlite:///… or postgresql://…)"
        )
    driver = parsed.get_driver_name()
    if driver != SUPPORTED_DIALECTS[dialect]:
        # Sealing writes with psycopg 3's COPY; other drivers are not what finsup ships.
        raise LedgerError(
            f"FINSUP_LEDGER_URL asks for the {driver} driver: write a bare "
            f"{'postgresql://' if dialect == 'postgresql' else 'sqlite:///'} URL"
        )
    return url


def sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite ledger (None for PostgreSQL or an in-memory database)."""
    if not is_sqlite(engine):
        return None
    path = engine.url.database
    return Path(path) if path and path != ":memory:" else None


def prepare_to_create(engine: Engine) -> None:
    """Creates the folder of a SQLite ledger: only creating the books may (reads never do)."""
    path = sqlite_file(engine)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _exists_or_refuse(engine: Engine) -> None:
    # SQLite would create an empty ledger file on a read; say what to do instead.
    path = sqlite_file(engine)
    if path is not None and not path.exists():
        raise SchemaNotReady(f"the books are not initialised: run `finsup init` (no {path} yet)")


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below, not pysqlite, decide where transactions start.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        # 64 MiB of page cache: the event-hash index of a million events stays in memory.
        cursor.execute("PRAGMA cache_size = -65536")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("finsup_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    url = normalise_url(url or default_ledger_url())
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **kwargs)
        _configure_sqlite(engine)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(url, **kwargs)
    seals.install(engine)
    return engine


def for_one_writer(engine: Engine) -> Engine:
    """The engine a long-lived writer thread opens its ``write`` transactions on.

    PostgreSQL: the same books without the pool's pre-ping, which cost two round trips
    (BEGIN and ``SELECT 1``) before every write. Not needed there: the writer lock's
    read is the first statement of every ``write``, and a dropped connection fails it
    with an ``OperationalError``, which ``_begin_locked`` retries on a fresh connection.
    Dispose of it when the writer stops. SQLite: the engine itself (nothing to save).
    """
    if is_sqlite(engine):
        return engine
    return make_engine(engine.url.render_as_string(hide_password=False), pool_pre_ping=False)


def is_sqlite(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "sqlite"


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: on SQLite a deferred BEGIN, so it never waits for writers."""
    _exists_or_refuse(engine)
    with engine.connect().execution_options(finsup_begin="DEFERRED") as conn, conn.begin():
        yield conn


@contextmanager
def write(engine: Engine, retries: int = 8) -> Iterator[Connection]:
    """A serialised write transaction over the books.

    Holds the writer lock from its first statement, so a balance read inside it
    is still true when the reservation that depends on it commits. Every row of
    a sealed table it writes is sealed just before it commits (``seals.flush``).
    """
    conn = _begin_locked(engine, retries)
    seals.begin(conn)
    try:
        yield conn
        seals.flush(conn, commit=True)
    except BaseException:
        seals.discard(conn)
        conn.info.pop(audit_log.HEAD_AT_LOCK, None)
        conn.rollback()
        conn.close()
        raise
    # conn.info lives as long as the pooled connection: never leave a head read behind.
    conn.info.pop(audit_log.HEAD_AT_LOCK, None)
    conn.commit()
    conn.close()


_LOCK_HEAD = (
    sa.select(audit_chain_head.c.seq, audit_chain_head.c.row_hash)
    .where(audit_chain_head.c.id == 1)
    .with_for_update()
)


# The same statement as driver SQL, for PostgreSQL's pipelined BEGIN (``_lock_head``).
_LOCK_HEAD_SQL = "SELECT seq, row_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE"


def _lock_head(conn: Connection) -> tuple[int, str] | None:
    """Takes the writer lock; the head it locked (None: no head row).

    PostgreSQL: psycopg starts the transaction with a BEGIN of its own, one round trip
    before the lock's. In pipeline mode the BEGIN and the lock go in one flush and come
    back in one answer. The lock is still taken before this returns, and the head read
    under it, exactly as before.
    """
    if is_sqlite(conn):
        row = conn.execute(_LOCK_HEAD).first()
        return None if row is None else (row.seq, row.row_hash)
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor:
            with driver.pipeline():
                cursor.execute(_LOCK_HEAD_SQL)
            found = cursor.fetchone()
    except Exception as exc:
        if isinstance(exc, conn.dialect.loaded_dbapi.OperationalError):
            # A dropped connection: never handed out again, the caller retries on a fresh one.
            conn.invalidate()
        raise
    return None if found is None else (int(found[0]), str(found[1]))


def _begin_locked(engine: Engine, retries: int) -> Connection:
    _exists_or_refuse(engine)
    driver_errors, driver_programming = _driver_errors(engine)
    caught: tuple[type[Exception], ...] = (OperationalError, ProgrammingError, *driver_errors)
    for attempt in range(retries + 1):
        conn = engine.connect()
        try:
            conn.begin()
            # The hash too: the lock's read is the head the chain continues from.
            row = _lock_head(conn)
        except caught as exc:
            conn.rollback()
            conn.close()
            if _missing_table(exc):
                raise SchemaNotReady("the books are not initialised: run `finsup init`") from None
            # SQLite already waited busy_timeout; PostgreSQL lock waits do not
            # raise. What is left is a transient fault worth one more try.
            if attempt == retries or isinstance(exc, ProgrammingError):
                raise
            if driver_programming is not None and isinstance(exc, driver_programming):
                raise
            time.sleep(0.05 * (attempt + 1))
            continue
        except BaseException:
            # Anything else (an unexpected driver error, an interrupt): the connection
            # goes back closed, never half-begun.
            conn.rollback()
            conn.close()
            raise
        if row is None:
            conn.rollback()
            conn.close()
            raise SchemaNotReady("the books are not initialised: run `finsup init`")
        conn.info[audit_log.HEAD_AT_LOCK] = row
        return conn
    raise AssertionError("unreachable")


def _driver_errors(engine: Engine) -> tuple[tuple[type[Exception], ...], type[Exception] | None]:
    """The driver's own errors that ``_lock_head``'s driver-level statement raises: all that
    are caught, and the one that is never retried (a fault of the statement, not a glitch)."""
    if is_sqlite(engine):
        return (), None
    dbapi = engine.dialect.loaded_dbapi
    return (dbapi.OperationalError, dbapi.ProgrammingError), dbapi.ProgrammingError


def _missing_table(exc: Exception) -> bool:
    text = str(exc.orig if isinstance(exc, DBAPIError) else exc).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def is_missing_table(exc: DBAPIError) -> bool:
    """The error a database gives for a table that was never created (not a missing database)."""
    text = str(exc.orig).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)

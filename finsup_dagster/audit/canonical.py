"""The manifest hash of a table, defined as one DuckDB query an auditor can type by hand.

For a table with columns ``c1 … cn`` (in the table's column order) and key
columns ``k1 … km`` (the manifest's ``key_columns``; may be none):

- the canonical text of a row is ``json_array(c1, …, cn)::VARCHAR``: DuckDB's JSON
  array of the values, no spaces, strings JSON-escaped, integers as digits,
  booleans ``true``/``false``, NULL as ``null``;
- each row's digest is the SHA-256 (lowercase hex) of that text's UTF-8 bytes;
- the table's hash is the SHA-256 of the row digests concatenated with nothing
  between them, in the order ``k1 … km`` and then the canonical text itself (so
  the order is total even where there is no key); an empty table hashes the
  empty string (``e3b0c442…b855``).

Hashing row digests rather than the rows keeps the aggregated string at 64 bytes
a row, whatever the rows hold. ``hash_sql`` writes the query; the verifier runs
exactly that text, and docs/audit.md shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

FORMAT = "finsup-snapshot-v1"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def row_text_sql(columns: Sequence[str]) -> str:
    return f"json_array({', '.join(quote(c) for c in columns)})::VARCHAR"


def hash_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """``SELECT count(*), sha256(…)`` of one table: its manifest row count and hash."""
    row = row_text_sql(columns)
    order = ", ".join([*(quote(k) for k in key), row])
    return (
        f"SELECT count(*) AS row_count, "
        f"sha256(coalesce(string_agg(sha256({row}), '' ORDER BY {order}), '')) AS sha256 "
        f"FROM {quote(table)}"
    )


def table_columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main'"
        " AND database_name = current_database() AND table_name = ? ORDER BY column_index",
        [table],
    ).fetchall()
    return [str(r[0]) for r in rows]


def table_hash(
    conn: duckdb.DuckDBPyConnection, table: str, key: Sequence[str]
) -> tuple[int, str, list[str]]:
    """(row count, hash, columns) of ``table`` as it is in the file now."""
    columns = table_columns(conn, table)
    # fetchall: DuckDB 2.0 refuses the next statement while a result is unread.
    [(count, digest)] = conn.execute(hash_sql(table, columns, key)).fetchall()
    return int(count), str(digest), columns


def all_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every main table's columns in order, in one catalog query."""
    out: dict[str, list[str]] = {}
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main'"
        " AND database_name = current_database() ORDER BY table_name, column_index"
    ).fetchall():
        out.setdefault(str(table), []).append(str(column))
    return out


def table_hashes(
    conn: duckdb.DuckDBPyConnection, keys: dict[str, Sequence[str]]
) -> dict[str, tuple[int, str, list[str]]]:
    """``table_hash`` of many tables in one query (each part is that table's ``hash_sql``)."""
    columns = all_columns(conn)
    names = [t for t in keys if t in columns]
    if not names:
        return {}
    sql = " UNION ALL ".join(
        f"SELECT {i} AS n, * FROM ({hash_sql(t, columns[t], keys[t])})" for i, t in enumerate(names)
    )
    rows = conn.execute(sql).fetchall()
    return {names[int(n)]: (int(c), str(h), columns[names[int(n)]]) for n, c, h in rows}


def manifest_digest(conn: duckdb.DuckDBPyConnection) -> str:
    """The snapshot's digest: the manifest table hashed by the same rule, keyed by table name.

    Printed by the export and recorded by the Dagster asset, so a copy of it
    kept elsewhere vouches for the whole file.
    """
    return table_hash(conn, "manifest", ["table_name"])[1]

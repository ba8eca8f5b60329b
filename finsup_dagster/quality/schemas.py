"""Pandera schemas for the frames the pipeline passes around, and a one-line validator.

Money is integer minor units in ``int64`` columns (a float money column is refused by
its dtype, never coerced), currencies are ISO 4217 codes (three uppercase letters),
instants are the books' canonical UTC text ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` and dates
are ``YYYY-MM-DD`` text. Schemas never coerce: they state what a frame must already be.

The models are plain ``pandera.pandas.DataFrameModel`` classes, so they can be handed to
``dagster_pandera.pandera_schema_to_dagster_type`` as they are. ``validate`` is the
entry point for code: it raises ``InvalidInput`` with one short line instead of
pandera's multi-line report.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors
from pandera.typing.pandas import Series

from finsup_dagster.formats.common import DIRECTIONS, SETTLEMENT_KINDS
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.revenue import KINDS as REVENUE_KINDS
from finsup_dagster.ledger.revenue import STATUSES as REVENUE_STATUSES
from finsup_dagster.text import one_line

# ``\Z`` rather than ``$``: pandera matches with ``re.match``, and ``$`` also matches
# before a trailing newline ("USD\n" would pass).
CURRENCY_RE = r"^[A-Z]{3}\Z"
SHA256_RE = r"^[0-9a-f]{64}\Z"
DATE_RE = r"^\d{4}-\d{2}-\d{2}\Z"
INSTANT_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z"

# Kinds, directions and statuses are the parsers' and the books' own (one home each).
SETTLEMENT_SOURCES = ("paypal-stl", "camt053", "settlement-csv")
MATCH_RULES = ("gateway_txn_id", "amount_date_window", "batch_reference")


_DATE = re.compile(DATE_RE)
_INSTANT = re.compile(INSTANT_RE)


def _is_date_text(value: object) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)  # 2026-02-30 has the shape, not the date
    except ValueError:
        return False
    return True


def _is_instant_text(value: object) -> bool:
    if not isinstance(value, str) or not _INSTANT.match(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")  # month 13 has the shape only
    except ValueError:
        return False
    return True


def is_date(series: pd.Series) -> pd.Series:
    """True where the value is ``YYYY-MM-DD`` text naming a real calendar date."""
    return series.map(_is_date_text).astype(bool)


def is_instant(series: pd.Series) -> pd.Series:
    """True where the value is canonical UTC instant text naming a real moment."""
    return series.map(_is_instant_text).astype(bool)


class _Frame(pa.DataFrameModel):
    """What every model here is: a statement of what a frame already is, never a coercion;
    columns beyond the model's are allowed."""

    class Config:
        strict = False
        coerce = False


class _FileRows(_Frame):
    """Columns every frame read from a landed file carries: where each row came from."""

    partition_date: Series[str] = pa.Field(description="Partition the file landed in, YYYY-MM-DD.")
    file_name: Series[str] = pa.Field(description="Name of the landed file.")
    content_sha256: Series[str] = pa.Field(
        str_matches=SHA256_RE, description="SHA-256 of the file's bytes, lowercase hex."
    )
    row_number: Series[np.int64] = pa.Field(ge=1, description="Data row in the file, from 1.")
    record_ref: Series[str] = pa.Field(description="The row's line id, unique in its file.")

    @pa.check("partition_date", name="is_date")
    def _partition_date_is_a_date(cls, series: pd.Series) -> pd.Series:
        return is_date(series)


class SettlementLines(_FileRows):
    """Settlement report lines (PayPal STL, camt.053, settlement CSV) after parsing."""

    settler_ref: Series[str] = pa.Field(
        nullable=True, description="The settler's own reference for the row; may repeat."
    )
    gateway: Series[str] = pa.Field(
        nullable=True, description="Who settled the line, lower-case; empty for bank lines."
    )
    gateway_txn_id: Series[str] = pa.Field(nullable=True, description="Gateway transaction id.")
    batch_ref: Series[str] = pa.Field(nullable=True, description="Payout batch reference.")
    batch_net_minor: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, description="Net amount of the batch, minor units."
    )
    event_code: Series[str] = pa.Field(nullable=True, description="Gateway event code.")
    kind: Series[str] = pa.Field(isin=SETTLEMENT_KINDS)
    direction: Series[str] = pa.Field(isin=DIRECTIONS)
    gross_minor: Series[np.int64] = pa.Field(gt=0, description="Gross amount, minor units.")
    currency: Series[str] = pa.Field(str_matches=CURRENCY_RE)
    fee_minor: Series[np.int64] = pa.Field(description="Fee, minor units of fee_currency.")
    fee_currency: Series[str] = pa.Field(str_matches=CURRENCY_RE)
    settled_on: Series[str] = pa.Field(description="Settlement date, YYYY-MM-DD.")
    occurred_at: Series[str] = pa.Field(nullable=True, description="Canonical UTC instant.")
    description: Series[str] = pa.Field(nullable=True)
    raw: Series[str] = pa.Field(description="The source row as read, for audit.")

    @pa.check("settled_on", name="is_date")
    def _settled_on_is_a_date(cls, series: pd.Series) -> pd.Series:
        return is_date(series)

    @pa.check("occurred_at", name="is_instant")
    def _occurred_at_is_an_instant(cls, series: pd.Series) -> pd.Series:
        return is_instant(series)

    class Config:
        description = "Settlement report lines; (content_sha256, row_number) is unique."
        unique: ClassVar[list[str]] = ["content_sha256", "row_number"]


class RawRevenueRows(_FileRows):
    """Revenue file rows as text, before the ledger parses them: structure only.

    Every field may be missing: a row without one is kept, and the ledger
    refuses that row alone into the rejects file, never the whole file.
    """

    source: Series[str] = pa.Field(nullable=True)
    external_id: Series[str] = pa.Field(nullable=True)
    amount: Series[str] = pa.Field(nullable=True, description="Decimal amount as written.")
    currency: Series[str] = pa.Field(nullable=True, description="Currency as written.")
    occurred_at: Series[str] = pa.Field(nullable=True, description="Instant as written.")
    kind: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(nullable=True)
    problem: Series[str] = pa.Field(nullable=True, description="Why the row could not be read.")
    raw: Series[str] = pa.Field(description="The source row as read, for audit.")

    class Config:
        description = "Revenue file rows as text, before ledger validation."


class _Event(_Frame):
    """A revenue event's identity: its hash (unique in the frame) and natural key."""

    event_hash: Series[str] = pa.Field(str_matches=SHA256_RE, unique=True)
    source: Series[str]
    external_id: Series[str]


class LedgerRevenueEvents(_Event):
    """Revenue events as the books hold them."""

    kind: Series[str] = pa.Field(isin=REVENUE_KINDS)
    amount_minor: Series[np.int64] = pa.Field(ge=0, description="Amount, minor units.")
    currency: Series[str] = pa.Field(str_matches=CURRENCY_RE)
    occurred_at: Series[str] = pa.Field(description="Canonical UTC instant.")
    status: Series[str] = pa.Field(isin=REVENUE_STATUSES)

    @pa.check("occurred_at", name="is_instant")
    def _occurred_at_is_an_instant(cls, series: pd.Series) -> pd.Series:
        return is_instant(series)

    class Config:
        description = "Revenue events in the books; event_hash is unique."


class ReconciliationMatches(_Event):
    """Revenue events matched to settlement lines: each side matched at most once."""

    kind: Series[str]
    revenue_amount_minor: Series[np.int64]
    revenue_currency: Series[str] = pa.Field(str_matches=CURRENCY_RE)
    occurred_at: Series[str]
    settlement_line_id: Series[str] = pa.Field(unique=True)
    settlement_source: Series[str] = pa.Field(isin=SETTLEMENT_SOURCES)
    settled_on: Series[str]
    gross_minor: Series[np.int64]
    currency: Series[str] = pa.Field(str_matches=CURRENCY_RE)
    fee_minor: Series[np.int64]
    fee_currency: Series[str] = pa.Field(str_matches=CURRENCY_RE)
    match_rule: Series[str] = pa.Field(isin=MATCH_RULES)
    run_date: Series[str]

    class Config:
        description = "Reconciliation matches; event_hash and settlement_line_id are unique."


def empty_frame(model: type[pa.DataFrameModel]) -> pd.DataFrame:
    """A frame with no rows and the model's columns and dtypes: it validates."""
    columns: dict[str, pd.Series] = {}
    for name, column in model.to_schema().columns.items():
        dtype = column.dtype
        if dtype is None or (isinstance(dtype.type, np.dtype) and dtype.type.kind in "OUS"):
            columns[name] = pd.Series([], dtype=object)  # text is object dtype in pandas 2
        else:
            columns[name] = pd.Series([], dtype=dtype.type)
    return pd.DataFrame(columns, index=pd.RangeIndex(0))


def validate(model: type[pa.DataFrameModel], df: pd.DataFrame, what: str) -> pd.DataFrame:
    """``df`` checked against ``model`` (every failure collected), or ``InvalidInput``.

    The message is one line naming the first failures, e.g. ``settlement lines from
    x.csv: column 'gross_minor' failed greater_than(0) at 2 rows (e.g. row 3)``. A row
    is the frame's ``row_number`` (the row in its file) when it has one, otherwise its
    position in the frame counted from 1. Values are not quoted: rows may hold
    personal data.
    """
    if not isinstance(df, pd.DataFrame):
        raise InvalidInput(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    try:
        return model.validate(df, lazy=True)
    except SchemaErrors as exc:
        raise InvalidInput(f"{what}: {describe_failures(exc.failure_cases, df)}") from None
    except SchemaError as exc:  # not expected in lazy mode, but kept to one line all the same
        raise InvalidInput(f"{what}: {one_line(str(exc), 120)}") from None


def describe_failures(failure_cases: pd.DataFrame, df: pd.DataFrame, limit: int = 3) -> str:
    """pandera's failure cases as one line: the first ``limit`` failures, then a count."""
    groups: dict[tuple[int, str, str], list[Any]] = {}
    order: list[tuple[int, str, str]] = []
    for case in failure_cases.to_dict("records"):
        context = str(case.get("schema_context"))
        column = str(case.get("column"))
        check = str(case.get("check"))
        if context == "DataFrameSchema" and check == "multiple_fields_uniqueness":
            key = (1, "columns", check)  # one failure for the pair, not one per column
        elif context == "DataFrameSchema" and check != "column_in_dataframe":
            key = (1, "frame", check)  # a wide check: every column of the row is reported
        else:
            rank = 0 if check == "column_in_dataframe" or check.startswith("dtype(") else 1
            key = (rank, column, check)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(case)
    keys = sorted(order, key=lambda k: k[0])  # missing columns and dtypes first, stable
    parts = [_describe(key, groups[key], df) for key in keys[:limit]]
    if len(keys) > limit:
        more = len(keys) - limit
        parts.append(f"and {more} more failure{'s' if more != 1 else ''}")
    return "; ".join(parts)


def _describe(key: tuple[int, str, str], cases: list[dict[str, Any]], df: pd.DataFrame) -> str:
    _, column, check = key
    indexes = list(dict.fromkeys(c.get("index") for c in cases if _present(c.get("index"))))
    where = _where(indexes, df)
    if check == "column_in_dataframe":
        missing = ", ".join(repr(str(c.get("failure_case"))) for c in cases)
        return f"missing column{'s' if len(cases) > 1 else ''} {missing}"
    if check.startswith("dtype(") and not indexes:
        expected = check[len("dtype(") : -1].strip("'\"")
        got = one_line(str(cases[0].get("failure_case")), 120)
        return f"column {column!r} has dtype {got}, expected {expected}"
    if column == "columns":
        names = ", ".join(dict.fromkeys(str(c.get("column")) for c in cases))
        return f"columns ({names}) are not unique{where}"
    if column == "frame":
        return f"check {check} failed{where}"
    if check == "not_nullable":
        return f"column {column!r} has missing values{where}"
    if check == "field_uniqueness":
        return f"column {column!r} is not unique{where}"
    # Once dagster-pandera has turned a model into a Dagster type, pandera reports
    # a custom check by its method name (_settled_on_is_a_date) rather than its
    # name= (is_date): both mean the same.
    check = _METHOD_CHECKS.get(check, check)
    for pattern, meaning in _MEANINGS.items():
        if check == pattern or check == f"str_matches('{pattern}')":
            return f"column {column!r} {meaning}{where}"
    return f"column {column!r} failed {one_line(check, 120)}{where}"


_METHOD_CHECKS = {
    "_partition_date_is_a_date": "is_date",
    "_settled_on_is_a_date": "is_date",
    "_occurred_at_is_an_instant": "is_instant",
}
_MEANINGS = {
    CURRENCY_RE: "is not an ISO 4217 code (3 uppercase letters)",
    SHA256_RE: "is not a SHA-256 (64 lowercase hex digits)",
    "is_date": "is not a YYYY-MM-DD date",
    "is_instant": "is not a canonical UTC instant (YYYY-MM-DDTHH:MM:SS.ffffffZ)",
}


def _where(indexes: list[Any], df: pd.DataFrame) -> str:
    if not indexes:
        return ""
    rows = len(indexes)
    return f" at {rows} row{'s' if rows != 1 else ''} (e.g. row {_row_label(indexes[0], df)})"


def _row_label(index: Any, df: pd.DataFrame) -> str:
    """The file row (``row_number``) of a failing index label, else its 1-based position."""
    try:
        if "row_number" in df.columns and df.index.is_unique:
            value = df.at[index, "row_number"]
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
                return str(int(value))
        if df.index.is_unique:
            position = df.index.get_indexer([index])[0]
            if position >= 0:
                return str(position + 1)
    except (KeyError, TypeError, ValueError):
        pass
    return one_line(str(index), 120)


def _present(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):
        return True


__all__ = [
    "CURRENCY_RE",
    "DATE_RE",
    "DIRECTIONS",
    "INSTANT_RE",
    "MATCH_RULES",
    "REVENUE_KINDS",
    "REVENUE_STATUSES",
    "SETTLEMENT_KINDS",
    "SETTLEMENT_SOURCES",
    "SHA256_RE",
    "LedgerRevenueEvents",
    "RawRevenueRows",
    "ReconciliationMatches",
    "SettlementLines",
    "describe_failures",
    "empty_frame",
    "is_date",
    "is_instant",
    "validate",
]

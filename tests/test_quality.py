"""Data-quality schemas (pandera) and the landed-inputs report (Great Expectations)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pandera.pandas as pa
import pytest

from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.quality.schemas import (
    LedgerRevenueEvents,
    RawRevenueRows,
    ReconciliationMatches,
    SettlementLines,
    empty_frame,
    validate,
)

SHA = "ab" * 32
OTHER_SHA = "cd" * 32
WHAT = "settlement lines from x.csv"


def settlement_lines() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": ["2026-01-31"] * 3,
            "file_name": ["x.csv"] * 3,
            "content_sha256": [SHA] * 3,
            "row_number": [1, 2, 3],
            "record_ref": ["x.csv:1", "x.csv:2", "x.csv:3"],
            "settler_ref": ["T-1", "B-1", None],
            "gateway": ["paypal", None, "stripe"],
            "gateway_txn_id": ["T-1", None, "T-3"],
            "batch_ref": [None, "B-1", None],
            "batch_net_minor": pd.array([None, 9_700, None], dtype="Int64"),
            "event_code": ["T0006", None, None],
            "kind": ["sale", "refund", "other"],
            "direction": ["credit", "debit", "credit"],
            "gross_minor": [10_000, 2_500, 1],
            "currency": ["USD", "EUR", "JPY"],
            "fee_minor": [320, 0, -5],
            "fee_currency": ["USD", "EUR", "JPY"],
            "settled_on": ["2026-01-30", "2026-01-30", "2026-01-31"],
            "occurred_at": ["2026-01-29T12:00:00.000000Z", None, "2026-01-30T23:59:59.999999Z"],
            "description": [None, "refund", "adjustment"],
            "raw": ["a,b", "c,d", "e,f"],
        }
    )


def raw_revenue_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": ["2026-01-31"] * 2,
            "file_name": ["r.csv"] * 2,
            "content_sha256": [SHA] * 2,
            "row_number": [1, 2],
            "record_ref": ["r.csv:1", "r.csv:2"],
            "source": ["stripe", "stripe"],
            "external_id": ["ch_1", "ch_2"],
            "amount": ["12.50", "not a number"],  # raw text: the ledger judges it later
            "currency": ["usd", "EUR"],
            "occurred_at": ["2026-01-30T12:00:00+00:00", "yesterday"],
            "kind": ["sale", "refund"],
            "status": [None, "confirmed"],
            "problem": [None, None],
            "raw": ["...", "..."],
        }
    )


def event_ids() -> dict[str, list[str]]:
    """The two events' identity: what the books' events and the matches both carry first."""
    return {
        "event_hash": [SHA, OTHER_SHA],
        "source": ["stripe", "paypal"],
        "external_id": ["ch_1", "PAY-2"],
    }


def ledger_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            **event_ids(),
            "kind": ["sale", "fee"],
            "amount_minor": [1_250, 0],
            "currency": ["USD", "EUR"],
            "occurred_at": ["2026-01-30T12:00:00.000000Z", "2026-01-30T13:00:00.500000Z"],
            "status": ["projected", "confirmed"],
        }
    )


def matches() -> pd.DataFrame:
    return pd.DataFrame(
        {
            **event_ids(),
            "kind": ["sale", "sale"],
            "revenue_amount_minor": [1_250, 900],
            "revenue_currency": ["USD", "EUR"],
            "occurred_at": ["2026-01-30T12:00:00.000000Z", "2026-01-30T13:00:00.000000Z"],
            "settlement_line_id": ["L-1", "L-2"],
            "settlement_source": ["paypal-stl", "camt053"],
            "settled_on": ["2026-01-31", "2026-01-31"],
            "gross_minor": [1_250, 900],
            "currency": ["USD", "EUR"],
            "fee_minor": [40, 0],
            "fee_currency": ["USD", "EUR"],
            "match_rule": ["gateway_txn_id", "amount_date_window"],
            "run_date": ["2026-02-01", "2026-02-01"],
        }
    )


GOOD: dict[type[pa.DataFrameModel], Callable[[], pd.DataFrame]] = {
    SettlementLines: settlement_lines,
    RawRevenueRows: raw_revenue_rows,
    LedgerRevenueEvents: ledger_events,
    ReconciliationMatches: matches,
}


def refusal(model: type[pa.DataFrameModel], df: pd.DataFrame) -> str:
    with pytest.raises(InvalidInput) as caught:
        validate(model, df, WHAT)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"{WHAT}: ")
    assert len(message) < 400, message
    return message


@pytest.mark.parametrize("model", list(GOOD), ids=lambda m: m.__name__)
def test_good_frames_pass(model: type[pa.DataFrameModel]) -> None:
    df = GOOD[model]()
    out = validate(model, df, WHAT)
    pd.testing.assert_frame_equal(out, df)  # no coercion, no reordering


@pytest.mark.parametrize("model", list(GOOD), ids=lambda m: m.__name__)
def test_empty_frame_validates_with_the_models_columns(model: type[pa.DataFrameModel]) -> None:
    empty = empty_frame(model)
    assert len(empty) == 0
    assert list(empty.columns) == list(model.to_schema().columns)
    assert list(empty.columns) == list(GOOD[model]().columns)
    validate(model, empty, WHAT)


def test_empty_frame_money_columns_are_int64() -> None:
    dtypes = empty_frame(SettlementLines).dtypes
    assert dtypes["gross_minor"] == "int64"
    assert dtypes["fee_minor"] == "int64"
    assert dtypes["row_number"] == "int64"
    assert str(dtypes["batch_net_minor"]) == "Int64"
    assert str(dtypes["currency"]) == "object"


def test_the_brief_example_message() -> None:
    df = settlement_lines().assign(gross_minor=[10_000, 0, -1])
    assert refusal(SettlementLines, df) == (
        f"{WHAT}: column 'gross_minor' failed greater_than(0) at 2 rows (e.g. row 2)"
    )


def test_rows_are_named_by_their_row_number_in_the_file() -> None:
    df = settlement_lines().assign(row_number=[7, 8, 9], gross_minor=[1, 1, 0])
    assert "(e.g. row 9)" in refusal(SettlementLines, df)


BAD_SETTLEMENT: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "float money": (
        lambda df: df.assign(gross_minor=df["gross_minor"].astype("float64")),
        "column 'gross_minor' has dtype float64, expected int64",
    ),
    "float fee": (
        lambda df: df.assign(fee_minor=[0.5, 0.0, 1.0]),
        "column 'fee_minor' has dtype float64",
    ),
    "lowercase currency": (
        lambda df: df.assign(currency=["usd", "EUR", "JPY"]),
        "column 'currency' is not an ISO 4217 code",
    ),
    "currency with a newline": (
        lambda df: df.assign(fee_currency=["USD\n", "EUR", "JPY"]),
        "column 'fee_currency' is not an ISO 4217 code",
    ),
    "unknown kind": (
        lambda df: df.assign(kind=["sale", "payout", "other"]),
        "column 'kind' failed isin(",
    ),
    "unknown direction": (
        lambda df: df.assign(direction=["in", "debit", "credit"]),
        "column 'direction' failed isin(",
    ),
    "missing kind": (
        lambda df: df.assign(kind=[None, "sale", "sale"]),
        "column 'kind' has missing values at 1 row (e.g. row 1)",
    ),
    "row number 0": (
        lambda df: df.assign(row_number=[0, 1, 2]),
        "column 'row_number' failed greater_than_or_equal_to(1)",
    ),
    "bad hash": (
        lambda df: df.assign(content_sha256=["AB" * 32] * 3),
        "column 'content_sha256' is not a SHA-256",
    ),
    "impossible date": (
        lambda df: df.assign(settled_on=["2026-02-30", "2026-01-30", "2026-01-30"]),
        "column 'settled_on' is not a YYYY-MM-DD date at 1 row (e.g. row 1)",
    ),
    "date in another shape": (
        lambda df: df.assign(partition_date=["31/01/2026"] * 3),
        "column 'partition_date' is not a YYYY-MM-DD date at 3 rows",
    ),
    "non-canonical instant": (
        lambda df: df.assign(occurred_at=["2026-01-29T12:00:00Z", None, None]),
        "column 'occurred_at' is not a canonical UTC instant",
    ),
    "number in a text column": (
        lambda df: df.assign(raw=[1, "c,d", "e,f"]),
        "column 'raw' failed dtype('str') at 1 row",
    ),
    "missing column": (
        lambda df: df.drop(columns=["fee_currency"]),
        "missing column 'fee_currency'",
    ),
    "duplicate file row": (
        lambda df: df.assign(row_number=[1, 1, 2]),
        "columns (content_sha256, row_number) are not unique at 2 rows",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTLEMENT))
def test_bad_settlement_lines_are_refused_in_one_line(case: str) -> None:
    spoil, expected = BAD_SETTLEMENT[case]
    assert expected in refusal(SettlementLines, spoil(settlement_lines()))


def test_same_row_number_in_two_files_is_fine() -> None:
    df = settlement_lines().assign(content_sha256=[SHA, SHA, OTHER_SHA], row_number=[1, 2, 1])
    validate(SettlementLines, df, WHAT)


def test_many_failures_are_summarised_not_dumped() -> None:
    df = settlement_lines().assign(
        kind=["x"] * 3, direction=["y"] * 3, gross_minor=[0] * 3, currency=["?"] * 3
    )
    message = refusal(SettlementLines, df)
    assert message.count(";") == 3
    assert message.endswith("and 1 more failure")


def test_missing_columns_and_dtypes_come_first() -> None:
    df = settlement_lines().assign(kind=["x"] * 3, gross_minor=[1.0, 2.0, 3.0])
    message = refusal(SettlementLines, df.drop(columns=["raw"]))
    assert message.index("missing column 'raw'") < message.index("gross_minor")
    assert message.index("gross_minor") < message.index("'kind'")


def test_not_a_frame_is_refused() -> None:
    with pytest.raises(InvalidInput, match="expected a pandas DataFrame"):
        validate(SettlementLines, [1, 2], WHAT)


def test_raw_revenue_rows_only_check_structure() -> None:
    df = raw_revenue_rows()
    validate(RawRevenueRows, df, WHAT)
    assert "column 'amount' failed dtype('str')" in refusal(
        RawRevenueRows, df.assign(amount=[12.5, 3.0])
    )
    # A missing field is the ledger's to refuse, row by row: the file still lands.
    validate(RawRevenueRows, df.assign(source=[None, "stripe"]), WHAT)
    assert "column 'problem' failed dtype('str')" in refusal(
        RawRevenueRows, df.assign(problem=[1.5, None])
    )


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda df: df.assign(event_hash=[SHA, SHA]), "column 'event_hash' is not unique"),
        (lambda df: df.assign(kind=["sale", "other"]), "column 'kind' failed isin("),
        (lambda df: df.assign(amount_minor=[-1, 0]), "column 'amount_minor' failed greater"),
        (lambda df: df.assign(amount_minor=[1.5, 0.0]), "column 'amount_minor' has dtype float"),
        (lambda df: df.assign(status=["pending", "confirmed"]), "column 'status' failed isin("),
        (
            lambda df: df.assign(occurred_at=["2026-01-30 12:00:00", None]),
            "column 'occurred_at' has missing values",
        ),
    ],
)
def test_bad_ledger_events_are_refused(
    spoil: Callable[[pd.DataFrame], pd.DataFrame], expected: str
) -> None:
    assert expected in refusal(LedgerRevenueEvents, spoil(ledger_events()))


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda df: df.assign(event_hash=[SHA, SHA]), "column 'event_hash' is not unique"),
        (
            lambda df: df.assign(settlement_line_id=["L-1", "L-1"]),
            "column 'settlement_line_id' is not unique",
        ),
        (
            lambda df: df.assign(settlement_source=["stripe", "camt053"]),
            "column 'settlement_source' failed isin(",
        ),
        (lambda df: df.assign(match_rule=["fuzzy", "gateway_txn_id"]), "column 'match_rule'"),
        (
            lambda df: df.assign(revenue_amount_minor=[1.0, 2.0]),
            "column 'revenue_amount_minor' has dtype float64",
        ),
    ],
)
def test_bad_matches_are_refused(
    spoil: Callable[[pd.DataFrame], pd.DataFrame], expected: str
) -> None:
    assert expected in refusal(ReconciliationMatches, spoil(matches()))


@pytest.mark.parametrize("model", list(GOOD), ids=lambda m: m.__name__)
def test_dagster_pandera_accepts_the_models(model: type[pa.DataFrameModel]) -> None:
    from dagster import check_dagster_type
    from dagster_pandera import pandera_schema_to_dagster_type

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the function is marked beta
        dagster_type = pandera_schema_to_dagster_type(model)
    assert dagster_type.display_name == model.__name__
    assert check_dagster_type(dagster_type, GOOD[model]()).success
    assert check_dagster_type(dagster_type, empty_frame(model)).success
    assert not check_dagster_type(dagster_type, GOOD[model]().iloc[:, 1:]).success


def test_dagster_type_refuses_bad_settlement_lines() -> None:
    from dagster import check_dagster_type
    from dagster_pandera import pandera_schema_to_dagster_type

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dagster_type = pandera_schema_to_dagster_type(SettlementLines)
    bad = settlement_lines().assign(gross_minor=[1.0, 2.0, 3.0])
    assert not check_dagster_type(dagster_type, bad).success


# What the Great Expectations suite used to repeat: pandera's, and only pandera's now ---------


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda df: df.assign(gross_minor=[10_000, 0, 1]), "column 'gross_minor' failed greater"),
        (lambda df: df.assign(currency=["usd", "EUR", "JPY"]), "column 'currency' is not an ISO"),
        (lambda df: df.assign(row_number=[1, 1, 2]), "columns (content_sha256, row_number)"),
        (lambda df: df.assign(kind=["sale", "payout", "other"]), "column 'kind' failed isin("),
        (lambda df: df.assign(direction=["credit", "debit", "sideways"]), "column 'direction'"),
        (lambda df: df.assign(settled_on=["2026-01-30", "30/01/2026", "2026-01-31"]), "settled_on"),
        (
            lambda df: df.assign(fee_minor=pd.array([1, None, 2], dtype="Int64")),
            "column 'fee_minor' has missing values",
        ),
        (lambda df: df.drop(columns=["raw"]), "missing column 'raw'"),
    ],
)
def test_the_column_rules_of_a_settlement_line_are_pandera_s(
    spoil: Callable[[pd.DataFrame], pd.DataFrame], expected: str
) -> None:
    assert expected in refusal(SettlementLines, spoil(settlement_lines()))


def test_settlement_lines_may_carry_extra_columns() -> None:
    validate(SettlementLines, settlement_lines().assign(extra=1), WHAT)


# Great Expectations: the report on landed inputs -----------------------------------------

FIXTURES = Path(__file__).parent / "data" / "formats"
FILES = {
    "paypal-stl": "STL-20261120.01.009.CSV",
    "camt053": "camt053-statement.xml",
    "settlement-csv": "settlement.csv",
}
DAY = "2026-11-20"
CSV_HEADER = (
    "settlement_id,gateway,gateway_txn_id,kind,amount,currency,fee,fee_currency,settled_on,"
    "occurred_at,batch_ref,batch_net_amount,description\n"
)


def test_importing_expectations_does_not_import_great_expectations() -> None:
    code = (
        "import sys\n"
        "import finsup_dagster.quality.expectations\n"
        "import finsup_dagster.quality\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'great_expectations')\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        yield conn


def land(
    conn: duckdb.DuckDBPyConnection, home: Path, fmt: str, day: str, name: str, body: bytes
) -> None:
    """Drops one file into the landing zone and lands it; it must land, not be refused."""
    from finsup_dagster.warehouse import raw

    folder = home / "landing" / fmt / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(body)
    report = raw.land_partition(conn, home, fmt, day)
    assert not report.quarantined, [q.describe() for q in report.quarantined]


def land_fixture(conn: duckdb.DuckDBPyConnection, home: Path, fmt: str) -> None:
    land(conn, home, fmt, DAY, FILES[fmt], (FIXTURES / FILES[fmt]).read_bytes())


def csv_file(*lines: str) -> bytes:
    return (CSV_HEADER + "".join(f"{line}\n" for line in lines)).encode()


def land_csv(conn: duckdb.DuckDBPyConnection, home: Path, day: str, name: str, *lines: str) -> None:
    land(conn, home, "settlement-csv", day, name, csv_file(*lines))


def sale(ref: str, amount: str, currency: str, day: str) -> str:
    return f"{ref},paypal,T-{ref},sale,{amount},{currency},0,{currency},{day},,,,"


def report_for(conn: duckdb.DuckDBPyConnection, home: Path, fmt: str, day: str) -> Any:
    from finsup_dagster.quality import expectations

    return expectations.check_landed_inputs(expectations.landed_inputs(conn, home, fmt, day))


@pytest.mark.parametrize("fmt", list(FILES))
def test_landed_files_meet_every_expectation(
    fmt: str, warehouse: duckdb.DuckDBPyConnection, home: Path
) -> None:
    from finsup_dagster.quality import expectations

    land_fixture(warehouse, home, fmt)
    inputs = expectations.landed_inputs(warehouse, home, fmt, DAY)
    # STL: 5 rows landed and 2 skipped, FF says 7; camt.053: 2 booked entries (one a batch
    # of two items) and 1 pending, NbOfNtries says 3; a settlement CSV has no footer.
    declared = {"paypal-stl": 7, "camt053": 3, "settlement-csv": None}[fmt]
    landed = {"paypal-stl": 7, "camt053": 3, "settlement-csv": 5}[fmt]
    assert [None if pd.isna(v) else v for v in inputs.files["declared_records"]] == [declared]
    assert list(inputs.files["landed_records"]) == [landed]
    assert inputs.days.to_dict("records") == [{"partition_date": DAY, "files": 1}]
    assert inputs.usual_currencies == []  # the format's first day: no history yet
    report = expectations.check_landed_inputs(inputs)
    assert report.success, report.failed
    assert report.evaluated == 2  # footer counts and coverage; distributions need history
    assert report.summary() == "all 2 expectations met"


@pytest.mark.parametrize("fmt", ["paypal-stl", "camt053"])
def test_a_file_whose_landed_rows_disagree_with_its_footer_fails(
    fmt: str, warehouse: duckdb.DuckDBPyConnection, home: Path
) -> None:
    from finsup_dagster.warehouse.raw import TABLES

    land_fixture(warehouse, home, fmt)
    table = f"raw.{TABLES[fmt]}"
    # A row lost after landing (a partial reload, a hand edit): the footer still says 7 / 3.
    warehouse.execute(
        f"DELETE FROM {table} WHERE row_number = (SELECT min(row_number) FROM {table}"
        " WHERE batch_ref IS NULL)"
    )
    report = report_for(warehouse, home, fmt, DAY)
    assert not report.success
    assert report.serious
    declared = {"paypal-stl": 7, "camt053": 3}[fmt]
    assert report.failed == [
        "footer counts: 1 file(s) whose landed records disagree with the footer: "
        f"{fmt}/{DAY}/{FILES[fmt]} (footer {declared}, landed {declared - 1})"
    ]


def test_a_file_changed_in_the_landing_zone_is_not_compared(
    warehouse: duckdb.DuckDBPyConnection, home: Path
) -> None:
    from finsup_dagster.quality import expectations

    land_fixture(warehouse, home, "paypal-stl")
    path = home / "landing" / "paypal-stl" / DAY / FILES["paypal-stl"]
    path.write_bytes(path.read_bytes().replace(b'"FF",7', b'"FF",9'))  # not the landed bytes
    inputs = expectations.landed_inputs(warehouse, home, "paypal-stl", DAY)
    assert inputs.files["declared_records"].isna().all()
    assert expectations.check_landed_inputs(inputs).success


def test_footer_counts_read_from_the_files() -> None:
    from finsup_dagster.quality.expectations import control_count

    assert control_count("paypal-stl", FIXTURES / FILES["paypal-stl"]) == 7
    assert control_count("camt053", FIXTURES / FILES["camt053"]) == 3
    assert control_count("settlement-csv", FIXTURES / FILES["settlement-csv"]) is None


def test_a_statement_without_a_summary_declares_no_count(tmp_path: Path) -> None:
    from finsup_dagster.quality.expectations import control_count

    text = (FIXTURES / FILES["camt053"]).read_text(encoding="utf-8")
    start, end = text.index("<TxsSummry>"), text.index("</TxsSummry>") + len("</TxsSummry>")
    path = tmp_path / "no-summary.xml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    assert control_count("camt053", path) is None


def test_a_missing_day_shows_in_coverage(warehouse: duckdb.DuckDBPyConnection, home: Path) -> None:
    land_csv(warehouse, home, "2026-11-20", "a.csv", sale("A1", "10.00", "USD", "2026-11-20"))
    land_csv(warehouse, home, "2026-11-22", "c.csv", sale("C1", "12.00", "USD", "2026-11-22"))
    report = report_for(warehouse, home, "settlement-csv", "2026-11-22")
    assert not report.success
    assert not report.serious  # a warning: a settler may simply not have sent a file yet
    assert report.failed == ["day coverage: 1 day(s) without a landed file: 2026-11-21"]
    # A day with no file of its own is missing too, but not the days before the first file.
    assert report_for(warehouse, home, "settlement-csv", "2026-11-23").failed == [
        "day coverage: 2 day(s) without a landed file: 2026-11-21, 2026-11-23"
    ]


def test_coverage_looks_back_a_week(warehouse: duckdb.DuckDBPyConnection, home: Path) -> None:
    from finsup_dagster.quality import expectations

    land_csv(warehouse, home, "2026-11-01", "a.csv", sale("A1", "10.00", "USD", "2026-11-01"))
    inputs = expectations.landed_inputs(warehouse, home, "settlement-csv", "2026-11-20")
    assert list(inputs.days["partition_date"]) == [f"2026-11-{d}" for d in range(14, 21)]
    assert len(inputs.days) == expectations.COVERAGE_DAYS


def test_a_new_currency_and_an_outsized_amount_are_reported(
    warehouse: duckdb.DuckDBPyConnection, home: Path
) -> None:
    land_csv(
        warehouse,
        home,
        "2026-11-20",
        "a.csv",
        sale("A1", "120.00", "USD", "2026-11-20"),
        sale("A2", "80.00", "EUR", "2026-11-20"),
    )
    land_csv(
        warehouse,
        home,
        "2026-11-21",
        "b.csv",
        sale("B1", "1199.99", "USD", "2026-11-21"),  # under 10x the largest USD line: usual
        sale("B2", "1200.01", "USD", "2026-11-21"),  # over 10x: outsized
        sale("B3", "15.00", "CHF", "2026-11-21"),  # never settled in this format before
    )
    report = report_for(warehouse, home, "settlement-csv", "2026-11-21")
    assert report.evaluated == 4
    assert not report.serious
    assert report.failed == [
        "currency mix: 1 line(s) in a currency not settled before: B3 (CHF)",
        "amount range: 1 line(s) over 10x the largest of their currency before: B2",
    ]
    assert report.summary().startswith("2 of 4 expectations failed: currency mix: ")


def test_nothing_landed_is_nothing_to_report(
    warehouse: duckdb.DuckDBPyConnection, home: Path
) -> None:
    from finsup_dagster.quality import expectations
    from finsup_dagster.warehouse import raw

    raw.ensure_schema(warehouse)
    inputs = expectations.landed_inputs(warehouse, home, "camt053", DAY)
    assert inputs.nothing_landed
    assert inputs.lines.empty and inputs.files.empty

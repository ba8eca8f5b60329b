"""The matches model pairs exactly what docs/reconciliation.md's rules say, on any input.

`reconciliation_match_keys` is written for speed (integer keys for events and
lines; an id with one pair needs no ranking; ids with more than one pair are
found by a 64-bit hash and ranked exactly; rule 2 is ranked on narrow rows; a
nightly run anti-joins the matches of other nights on keys alone). This test
runs the model's compiled SQL —
first build and nightly, with no amount tolerance and with one minor unit — in
DuckDB on small random books with many repeated ids, sources, kinds, currencies
and dates, and compares its pairs with a plain Python reading of the rules.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finsup_dagster.sample_data.expected import MatchEvent, MatchLine, match_night
from finsup_dagster.warehouse import raw, replica
from tests.helpers.dbt_runner import dbt_command
from tests.helpers.warehouse_rows import insert_raw_line, insert_replica_event

MODEL = "reconciliation_match_keys"
RUN_DATE = date(2025, 3, 10)
WINDOW_DAYS = 3  # dbt_project.yml match_window_days
VIEWS = (
    "stg_ledger__revenue_events",
    "stg_paypal_stl__settlement_lines",
    "stg_camt053__settlement_lines",
    "stg_settlement_csv__settlement_lines",
    "settlement_lines",
)


def event(*fields: Any) -> MatchEvent:
    """The rules' own event from (hash, source, id, kind, amount, currency, days before
    RUN_DATE, status), at noon UTC: day numbers count from RUN_DATE, earlier ones negative."""
    *identity, days_before, status = fields
    at = f"{RUN_DATE - timedelta(days=days_before)}T12:00:00.000000Z"
    return MatchEvent(*identity, -days_before, at, status)


@dataclass(frozen=True)
class Line:
    table: str  # settlement_csv (names its gateway) or camt053 (names none)
    row_number: int
    gateway: str | None
    gateway_txn_id: str | None
    kind: str
    gross_minor: int
    currency: str
    day: int
    landed: int = 0  # days after settling that its file landed

    @property
    def line_id(self) -> str:
        return f"{self.table:0<64}:{self.row_number}"

    @property
    def settled_on(self) -> date:
        return RUN_DATE - timedelta(days=self.day)

    @property
    def partition_date(self) -> str:
        return str(self.settled_on + timedelta(days=self.landed))

    @property
    def file_name(self) -> str:
        return f"{self.table}/{self.partition_date}/settlement.csv"

    def order(self) -> tuple[Any, ...]:
        """Earlier landing day, then file name, then the earlier row (the model's last word,
        the line key, is never reached: these lines differ in row or file)."""
        return (self.partition_date, self.file_name, self.row_number, self.line_id)


OTHER_NIGHT = (RUN_DATE - timedelta(days=1)).isoformat()
Compiled = dict[tuple[str, int], str]  # (view name | "first" | "nightly", tolerance) -> SQL


def _compile(warehouse: Path, target: Path, tolerance: int) -> dict[str, str]:
    env = {
        **os.environ,
        "FINSUP_WAREHOUSE_PATH": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    variables = {"run_date": RUN_DATE.isoformat(), "amount_tolerance_minor": tolerance}
    subprocess.run(
        dbt_command(
            "compile",
            "--quiet",
            "--select",
            "+reconciliation_match_keys",
            target=target,
            variables=variables,
        ),
        env=env,
        check=True,
        capture_output=True,
    )
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    return {
        str(n["name"]): str(n["compiled_code"])
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and "compiled_code" in n
    }


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    """The staging views and the matches model's SQL, first build and nightly (compiled again
    once the table exists), with no amount tolerance and with one minor unit."""
    out: Compiled = {}
    for tolerance in (0, 1):
        work = tmp_path_factory.mktemp(f"matching_rules_{tolerance}")
        warehouse = work / "warehouse.duckdb"
        with duckdb.connect(str(warehouse)) as conn:
            raw.ensure_schema(conn)
            replica.ensure_schema(conn)
        nodes = _compile(warehouse, work / "first", tolerance)
        with duckdb.connect(str(warehouse)) as conn:
            for name in VIEWS:
                conn.execute(f"CREATE VIEW main.{name} AS {nodes[name]}").fetchall()
            conn.execute(f"CREATE TABLE main.{MODEL} AS {nodes[MODEL]}").fetchall()
        nightly = _compile(warehouse, work / "nightly", tolerance)[MODEL]
        assert nightly != nodes[MODEL]  # is_incremental() took effect
        out |= {(name, tolerance): nodes[name] for name in VIEWS}
        out[("first", tolerance)] = nodes[MODEL]
        out[("nightly", tolerance)] = nightly
    return out


def run_model(
    compiled: Compiled,
    events: list[MatchEvent],
    lines: list[Line],
    *,
    tolerance: int = 0,
    earlier: list[tuple[str, str, str]] | None = None,
) -> set[Any]:
    """The model's pairs for RUN_DATE. ``earlier`` (event hash, line id, run date) are
    matches already in the table: given, the nightly SQL runs, else the first build."""
    conn = duckdb.connect()
    try:
        for sql in ("ATTACH ':memory:' AS warehouse", "USE warehouse"):
            conn.execute(sql).fetchall()
        raw.ensure_schema(conn)
        replica.ensure_schema(conn)
        for e in events:
            insert_replica_event(conn, {**asdict(e), "occurred_at": e.occurred_at})
        for ln in lines:
            insert_raw_line(
                conn,
                ln.table,
                {
                    **asdict(ln),
                    "partition_date": ln.partition_date,
                    "file_name": ln.file_name,
                    "content_sha256": f"{ln.table:0<64}",
                    "settled_on": ln.settled_on,
                    "landing_seq": 1,
                },
            )
        for name in VIEWS:
            conn.execute(f"CREATE VIEW main.{name} AS {compiled[(name, tolerance)]}").fetchall()
        mode = "first"
        if earlier is not None:
            mode = "nightly"
            conn.execute(
                f"CREATE TABLE main.{MODEL} AS"
                f" SELECT * FROM ({compiled[('first', tolerance)]}) LIMIT 0"
            ).fetchall()
            for row in earlier:
                conn.execute(
                    f"INSERT INTO main.{MODEL} (event_key, line_key, run_date)"
                    " SELECT e.event_key, l.line_key, ? FROM main.stg_ledger__revenue_events AS e,"
                    " main.settlement_lines AS l WHERE e.event_hash = ? AND l.settlement_line_id = ?",
                    [row[2], row[0], row[1]],
                ).fetchall()
        rows = conn.execute(
            "SELECT e.event_hash, l.settlement_line_id, m.match_rule = 'amount_date_window'"
            f" FROM ({compiled[(mode, tolerance)]}) AS m"
            " JOIN main.stg_ledger__revenue_events AS e ON e.event_key = m.event_key"
            " JOIN main.settlement_lines AS l ON l.line_key = m.line_key"
        ).fetchall()
    finally:
        conn.close()
    return set(rows)


def reference(
    events: list[MatchEvent],
    lines: list[Line],
    tolerance: int = 0,
    earlier: list[tuple[str, str, str]] | None = None,
) -> set[Any]:
    """docs/reconciliation.md, "Matching rules", read literally (sample_data/expected.py:
    match_night, on day numbers counted from RUN_DATE). Items another night matched
    take no part; the night's own earlier matches are replaced, so they do."""
    done = [(e, ln) for e, ln, night in earlier or [] if night != RUN_DATE.isoformat()]
    done_events, done_lines = {e for e, _ in done}, {ln for _, ln in done}
    pairs = match_night(
        [e for e in events if e.event_hash not in done_events],
        [
            MatchLine(
                ln.line_id,
                ln.gateway,
                ln.gateway_txn_id,
                ln.kind,
                ln.gross_minor,
                ln.currency,
                -ln.day,
                ln.order(),
            )
            for ln in lines
            if ln.line_id not in done_lines
        ],
        0,
        tolerance=tolerance,
        window=WINDOW_DAYS,
    )
    return {(e, ln, rule == "amount_date_window") for e, ln, rule in pairs}


IDS = st.sampled_from(["T1", "T2", "T3"])
SOURCES = st.sampled_from(["stripe", "paddle"])
KINDS = st.sampled_from(["sale", "refund"])
CURRENCIES = st.sampled_from(["USD", "JPY"])
AMOUNTS = st.sampled_from([100, 101, 250])  # 100 and 101: one unit apart
DAYS = st.integers(min_value=-1, max_value=6)  # -1: after the run date, not yet due

events_strategy = st.lists(
    st.tuples(
        SOURCES,
        IDS,
        KINDS,
        AMOUNTS,
        CURRENCIES,
        DAYS,
        st.sampled_from(["projected", "confirmed", "reversed"]),
    ),
    min_size=2,
    max_size=10,
).map(lambda ts: [event(f"{n:064x}", *t) for n, t in enumerate(ts)])
lines_strategy = st.lists(
    st.tuples(
        st.sampled_from(["settlement_csv", "camt053"]),
        SOURCES,
        st.one_of(st.none(), IDS),
        KINDS,
        AMOUNTS,
        CURRENCIES,
        DAYS,
        st.sampled_from([0, 1]),
    ),
    min_size=2,
    max_size=10,
).map(
    lambda ls: [
        Line(
            table,
            n + 1,
            gateway if table == "settlement_csv" else None,
            txn,
            kind,
            amount,
            currency,
            day,
            landed,
        )
        for n, (table, gateway, txn, kind, amount, currency, day, landed) in enumerate(ls)
    ]
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=events_strategy,
    lines=lines_strategy,
    tolerance=st.sampled_from([0, 1]),
    nightly=st.booleans(),
    data=st.data(),
)
def test_matches_model_follows_the_documented_rules(
    compiled: Compiled,
    events: list[MatchEvent],
    lines: list[Line],
    tolerance: int,
    nightly: bool,
    data: st.DataObject,
) -> None:
    earlier = None
    if nightly:
        # History as the nights before left it: some of the pairs these books would match,
        # and a few arbitrary ones, made on an earlier night or earlier tonight (replaced).
        pairs = sorted((e, ln) for e, ln, _ in reference(events, lines, tolerance))
        pairs += [(e.event_hash, ln.line_id) for e in events[:2] for ln in lines[-2:]]
        nights = st.sampled_from([OTHER_NIGHT, RUN_DATE.isoformat()])
        chosen = data.draw(st.lists(st.sampled_from(pairs), unique=True) if pairs else st.just([]))
        earlier = [(e, ln, data.draw(nights)) for e, ln in chosen]
    got = run_model(compiled, events, lines, tolerance=tolerance, earlier=earlier)
    assert got == reference(events, lines, tolerance, earlier)
    matched_events = [e for e, _, _ in got]
    matched_lines = [ln for _, ln, _ in got]
    assert len(set(matched_events)) == len(matched_events)  # one line per event
    assert len(set(matched_lines)) == len(matched_lines)  # one event per line


def test_a_repeated_id_pairs_the_earliest_line_and_leaves_the_other(
    compiled: Compiled,
) -> None:
    sale = event(f"{1:064x}", "stripe", "T1", "sale", 100, "USD", 5, "projected")
    first = Line("settlement_csv", 1, "stripe", "T1", "sale", 100, "USD", 4)
    again = Line("settlement_csv", 2, "stripe", "T1", "sale", 100, "USD", 2)
    assert run_model(compiled, [sale], [again, first]) == {(sale.event_hash, first.line_id, False)}


def test_of_two_rows_of_one_file_naming_one_transaction_the_earlier_row_is_the_match(
    compiled: Compiled,
) -> None:
    # Rows 9 and 10: compared as the line ids' text, row 10 would come first.
    sale = event(f"{1:064x}", "stripe", "T1", "sale", 100, "USD", 5, "projected")
    row_9 = Line("settlement_csv", 9, "stripe", "T1", "sale", 100, "USD", 4)
    row_10 = Line("settlement_csv", 10, "stripe", "T1", "sale", 100, "USD", 4)
    assert row_10.line_id < row_9.line_id
    got = run_model(compiled, [sale], [row_10, row_9])
    assert got == {(sale.event_hash, row_9.line_id, False)}
    # The same by amount and date window (no id on either line).
    no_id_9 = Line("settlement_csv", 9, "stripe", None, "sale", 100, "USD", 4)
    no_id_10 = Line("settlement_csv", 10, "stripe", None, "sale", 100, "USD", 4)
    got = run_model(compiled, [sale], [no_id_10, no_id_9])
    assert got == {(sale.event_hash, no_id_9.line_id, True)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    copies=st.lists(
        st.tuples(st.sampled_from(["settlement_csv", "camt053"]), st.sampled_from([0, 1])),
        min_size=2,
        max_size=12,
    ),
    rows=st.permutations(list(range(1, 13))),
    txn=st.sampled_from(["T1", None]),
)
def test_of_lines_alike_but_for_where_they_landed_the_first_landed_is_the_match(
    compiled: Compiled, copies: list[tuple[str, int]], rows: list[int], txn: str | None
) -> None:
    sale = event(f"{1:064x}", "stripe", "T1", "sale", 100, "USD", 5, "projected")
    lines = [
        Line(
            table,
            row,
            "stripe" if table == "settlement_csv" else None,
            txn,
            "sale",
            100,
            "USD",
            4,
            landed,
        )
        for (table, landed), row in zip(copies, rows, strict=False)
    ]
    first = min(lines, key=Line.order)
    assert run_model(compiled, [sale], lines) == {(sale.event_hash, first.line_id, txn is None)}


def test_an_id_two_sources_share_pairs_one_event_with_a_line_naming_no_gateway(
    compiled: Compiled,
) -> None:
    by_stripe = event(f"{1:064x}", "stripe", "T1", "sale", 100, "USD", 5, "projected")
    by_paddle = event(f"{2:064x}", "paddle", "T1", "sale", 100, "USD", 5, "projected")
    bank = Line("camt053", 1, None, "T1", "sale", 100, "USD", 4)
    got = run_model(compiled, [by_paddle, by_stripe], [bank])
    assert got == {(by_stripe.event_hash, bank.line_id, False)}  # the smaller event hash

"""The warehouse layer on its own: landing, the ledger replica, confirmations.

Real DuckDB files, real SQLite and PostgreSQL ledgers; no Dagster here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import audit_log, db, migrate
from finsup_dagster.ledger.balance import available_balances
from finsup_dagster.ledger.confirmations import SettledMatch, confirm_matches
from finsup_dagster.ledger.journal import unbalanced_entries
from finsup_dagster.ledger.revenue import STATUS_RANK, RevenueEvent, ingest, parse_event
from finsup_dagster.ledger.schema import journal_entries, postings, revenue_events, transaction_log
from finsup_dagster.warehouse import raw
from finsup_dagster.warehouse.replica import replicate

DAY = "2026-11-21"
HEADER = (
    "settlement_id,gateway,gateway_txn_id,kind,amount,currency,fee,fee_currency,settled_on,"
    "occurred_at,batch_ref,batch_net_amount,description\n"
)


def _events(n: int, status: str = "projected") -> list[tuple[int, RevenueEvent]]:
    return [
        (
            i,
            parse_event(
                {
                    "source": "payoneer",
                    "external_id": f"PO-{i}",
                    "amount": f"{i}.00",
                    "currency": "USD",
                    "occurred_at": "2026-11-20T10:00:00Z",
                    "kind": "sale",
                    "status": status,
                }
            ),
        )
        for i in range(1, n + 1)
    ]


def _count(engine: Engine, table: sa.Table) -> int:
    with db.read(engine) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_replica_copies_only_what_changed(engine: Engine, tmp_path: Path) -> None:
    ingest(engine, _events(50))
    with db.write(engine) as conn:  # the history is old: nothing in the overlap window
        conn.execute(
            sa.update(revenue_events).values(status_changed_at="2026-01-01T00:00:00.000000Z")
        )
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as wh:
        first = replicate(engine, wh)
        assert first.copied["revenue_events"] == 50
        before = {t.name: _count(engine, t) for t in (journal_entries, postings, transaction_log)}

        ingest(
            engine,
            [
                (
                    1,
                    parse_event(
                        {
                            "source": "payoneer",
                            "external_id": "PO-7",
                            "amount": "7.00",
                            "currency": "USD",
                            "occurred_at": "2026-11-20T10:00:00Z",
                            "kind": "sale",
                            "status": "confirmed",
                        }
                    ),
                )
            ],
        )
        second = replicate(engine, wh)
        assert second.copied["revenue_events"] == 1  # the one event that changed
        for table in (journal_entries, postings, transaction_log):
            grew = _count(engine, table) - before[table.name]
            assert grew > 0 and second.copied[table.name] == grew, table.name
        assert second.totals == {t: _count(engine, getattr_table(t)) for t in second.totals}
        status = wh.execute(
            "SELECT status FROM ledger.revenue_events WHERE external_id = 'PO-7'"
        ).fetchall()
        assert status == [("confirmed",)]

        third = replicate(engine, wh)  # nothing new: the overlap re-reads, the upsert absorbs
        assert third.totals == second.totals
        assert (third.copied["journal_entries"], third.copied["postings"]) == (0, 0)

        # Every copy numbers what it writes; a row keeps the number of the copy that
        # first brought it, however often it is copied again.
        ingest(
            engine,
            [
                (
                    1,
                    parse_event(
                        {
                            "source": "payoneer",
                            "external_id": "PO-99",
                            "amount": "9.00",
                            "currency": "USD",
                            "occurred_at": "2026-11-20T10:00:00Z",
                            "kind": "sale",
                            "status": "projected",
                        }
                    ),
                )
            ],
        )
        replicate(engine, wh)
        seqs = dict(
            wh.execute(
                "SELECT external_id, (first_replicated_seq, replicated_seq)"
                " FROM ledger.revenue_events WHERE external_id IN ('PO-6', 'PO-7', 'PO-99')"
            ).fetchall()
        )
    assert seqs["PO-6"] == (1, 1)  # copied once, by the first copy
    first, last = seqs["PO-7"]  # changed, and re-read in the overlap since
    assert first == 1 and last >= 3
    assert seqs["PO-99"] == (last, last)  # new in the latest copy, which re-read PO-7 too


def getattr_table(name: str) -> sa.Table:
    return {
        "revenue_events": revenue_events,
        "journal_entries": journal_entries,
        "postings": postings,
        "transaction_log": transaction_log,
    }[name]


def test_landing_keeps_provenance_skips_resent_bytes_and_quarantines(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = home / "landing" / "settlement-csv" / DAY
    folder.mkdir(parents=True)
    good = folder / "a.csv"
    good.write_text(
        HEADER + "S-1,payoneer,PO-1,sale,1.00,USD,0.10,USD,2026-11-21,,,,\n"
        "S-2,payoneer,PO-2,sale,2500,JPY,25,JPY,2026-11-21,,,,\n"
    )
    shutil.copyfile(good, folder / "b-resent.csv")
    (folder / "c-broken.csv").write_text(
        HEADER + "S-3,payoneer,PO-3,sale,abc,USD,,,2026-11-21,,,,\n"
    )
    (folder / "a.csv.reason.txt").write_text("not an input")  # our own by-products are skipped
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as wh:
        report = raw.land_partition(wh, home, "settlement-csv", DAY)
        assert [f.file_name for f in report.landed] == [f"settlement-csv/{DAY}/a.csv"]
        assert report.already_landed == [
            (f"settlement-csv/{DAY}/b-resent.csv", f"settlement-csv/{DAY}/a.csv")
        ]
        assert [q.path.name for q in report.quarantined] == ["c-broken.csv"]
        assert "line 2" in report.quarantined[0].reason or "row" in report.quarantined[0].reason
        rows = wh.execute(
            "SELECT file_name, row_number, gross_minor, currency, length(content_sha256)"
            " FROM raw.settlement_csv ORDER BY row_number"
        ).fetchall()
        # row_number is the line in the file (the header is line 1), as an editor shows it.
        assert rows == [
            (f"settlement-csv/{DAY}/a.csv", 2, 100, "USD", 64),
            (f"settlement-csv/{DAY}/a.csv", 3, 2500, "JPY", 64),
        ]
        again = raw.land_partition(wh, home, "settlement-csv", DAY)
        assert (again.landed, again.quarantined) == ([], [])
        assert wh.execute("SELECT count(*) FROM raw.settlement_csv").fetchall() == [(2,)]
    held = home / "quarantine" / "settlement-csv" / DAY
    assert (held / "c-broken.csv").exists() and not (folder / "c-broken.csv").exists()
    assert "reason: " in (held / "c-broken.csv.reason.txt").read_text()


@settings(max_examples=20, deadline=None)
@given(
    fees=st.lists(st.integers(min_value=-300, max_value=300), min_size=1, max_size=8),
    confirmed=st.lists(st.booleans(), min_size=8, max_size=8),
    order=st.permutations(range(8)),
)
def test_confirming_matches_is_forward_only_idempotent_and_balanced(
    fees: list[int], confirmed: list[bool], order: list[int]
) -> None:
    """Any matches, applied twice in any order: every matched event ends confirmed, each
    fee is posted once, the journal balances, and the audit chain holds."""
    scratch = Path(tempfile.mkdtemp())
    try:
        engine = db.make_engine(f"sqlite:///{scratch / 'ledger.db'}")
        migrate.upgrade(engine)
        events = [ev for _, ev in _events(len(fees))]
        statuses = ["confirmed" if confirmed[i] else "projected" for i in range(len(fees))]
        ingest(
            engine,
            [
                (i, parse_event({**_raw(ev), "status": s}))
                for i, (ev, s) in enumerate(zip(events, statuses, strict=True))
            ],
        )
        matches = [
            SettledMatch(ev.event_hash, fee, "USD", "2026-11-21")
            for ev, fee in zip(events, fees, strict=True)
        ]
        shuffled = [matches[i] for i in order if i < len(matches)]
        first = confirm_matches(engine, shuffled, actor="test", run_label="r1")
        with db.read(engine) as conn:
            after_first = _balances(conn)
        second = confirm_matches(engine, list(reversed(shuffled)), actor="test", run_label="r2")
        assert first.confirmed == statuses.count("projected")
        assert second.confirmed == 0 and second.fees_posted == 0 and second.fee_credits_posted == 0
        assert first.fees_posted + first.fee_credits_posted == sum(1 for f in fees if f)
        with db.read(engine) as conn:
            assert _balances(conn) == after_first
            assert not unbalanced_entries(conn)
            assert audit_log.verify(conn).ok
            rows = conn.execute(sa.select(revenue_events.c.kind, revenue_events.c.status)).all()
        assert all(STATUS_RANK[s] >= STATUS_RANK["confirmed"] for _, s in rows)
        assert sum(1 for k, _ in rows if k == "fee") == sum(1 for f in fees if f > 0)
        # confirmed sales − fees charged + fees returned, to the minor unit
        expected = sum(i * 100 for i in range(1, len(fees) + 1)) - sum(fees)
        assert after_first == {"USD": expected}
        engine.dispose()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _raw(ev: RevenueEvent) -> dict[str, str]:
    return {
        "source": ev.source,
        "external_id": ev.external_id,
        "amount": f"{ev.amount_minor // 100}.{ev.amount_minor % 100:02d}",
        "currency": ev.currency,
        "occurred_at": ev.occurred_at,
        "kind": ev.kind,
    }


def _balances(conn: sa.Connection) -> dict[str, int]:
    return {b.currency: b.available_minor for b in available_balances(conn)}


def test_every_landed_settlement_file_gets_the_next_landing_number(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as wh:
        for n, day in enumerate(("2026-11-22", "2026-11-21", "2026-11-22"), 1):
            folder = home / "landing" / "settlement-csv" / day
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{n}.csv").write_text(
                HEADER
                + f"S-{n},stripe,ch_{n},sale,1.00,USD,,,{day},,,,\n"
                + f"S-{n}b,stripe,ch_{n}b,sale,1.00,USD,,,{day},,,,\n"
            )
            raw.land_partition(wh, home, "settlement-csv", day)
        got = wh.execute(
            "SELECT file_name, min(landing_seq), max(landing_seq) FROM raw.settlement_csv"
            " GROUP BY file_name ORDER BY min(landing_seq)"
        ).fetchall()
    # One number per file, rising in the order files landed (not the day they landed for).
    assert [name.rsplit("/", 1)[-1] for name, _, _ in got] == ["1.csv", "2.csv", "3.csv"]
    assert all(low == high for _, low, high in got)
    assert got[0][1] < got[1][1] < got[2][1]


def test_a_revenue_file_with_bad_rows_lands_whole_for_the_ledger_to_refuse(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = home / "landing" / "revenue" / DAY
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text(
        '{"external_id": "X1", "amount": "1.00", "currency": "USD", '
        '"occurred_at": "2026-11-20T10:00:00Z", "kind": "sale"}\n'
        '{"source": "s", "external_id": "X2", "amount": 5, "currency": "USD", '
        '"occurred_at": "2026-11-20T10:00:00Z", "kind": "sale"}\n'
        "not json\n"
    )
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as wh:
        report = raw.land_partition(wh, home, "revenue", DAY)
        assert report.quarantined == [] and report.rows == 3
        rows = wh.execute(
            "SELECT row_number, source, problem FROM raw.revenue_files ORDER BY row_number"
        ).fetchall()
    assert rows[0] == (1, None, None)  # missing source: the ledger's to refuse
    assert rows[1][2] is not None and "decimal string" in rows[1][2]  # a JSON number amount
    assert rows[2][2] is not None and "not valid JSON" in rows[2][2]


def test_a_replica_row_keeps_its_key_and_first_copy_number_when_copied_again(
    engine: Engine, tmp_path: Path
) -> None:
    ingest(engine, _events(2))
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as wh:
        replicate(engine, wh)
        ingest(engine, _events(3))  # one new event
        replicate(engine, wh)
        rows = wh.execute(
            "SELECT external_id, first_replicated_seq, replicated_seq, event_key"
            " FROM ledger.revenue_events ORDER BY external_id"
        ).fetchall()
        keys = {ext: key for ext, _, _, key in rows}
        ingest(engine, _events(4))
        replicate(engine, wh)  # re-reads the others (the overlap): they keep their keys
        again = dict(
            wh.execute("SELECT external_id, event_key FROM ledger.revenue_events").fetchall()
        )
    # The second copy re-read the first two (the overlap): they keep the number of the
    # copy that first brought them.
    assert [(ext, first) for ext, first, _, _ in rows] == [("PO-1", 1), ("PO-2", 1), ("PO-3", 2)]
    assert all(last >= first for _, first, last, _ in rows)
    # Every event has a key of its own, kept when the copy replaces its row.
    assert len(set(keys.values())) == 3 and None not in keys.values()
    assert {ext: again[ext] for ext in keys} == keys
    assert again["PO-4"] not in keys.values()


def test_a_warehouse_whose_key_sequence_is_behind_its_keys_is_refused(tmp_path: Path) -> None:
    # Lines copied in from another warehouse with their keys: the next line landed would
    # get a key already in use, so opening it is refused until that is put right.
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as wh:
        raw.ensure_schema(wh)
        wh.execute(
            "INSERT INTO raw.camt053 (partition_date, file_name, content_sha256, row_number,"
            " kind, gross_minor, currency, settled_on, raw, landing_seq, line_key)"
            " VALUES (?, 'f', 'sha', 1, 'sale', 100, 'USD', ?, '{}', 1, 5)",
            [DAY, DAY],
        ).fetchall()
        with pytest.raises(RuntimeError, match=r"raw\.line_key is at 0 but line_key 5"):
            raw.ensure_schema(wh)

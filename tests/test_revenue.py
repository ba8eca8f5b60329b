"""Revenue ingestion on SQLite and PostgreSQL: idempotent, forward-only, nothing lost."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import balance, db, journal, reports
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.revenue import event_hash, ingest, parse_event
from finsup_dagster.ledger.revenue_files import ingest_file
from finsup_dagster.ledger.schema import revenue_events
from tests.helpers.files import HEADER, write_csv


def events_in(engine: Engine) -> dict[str, str]:
    with db.read(engine) as conn:
        rows = conn.execute(sa.select(revenue_events.c.event_hash, revenue_events.c.status))
        return dict(rows.all())


def usd(engine: Engine) -> balance.Balance:
    with db.read(engine) as conn:
        return balance.available_balances(conn, "USD")[0]


def test_event_hash_is_the_documented_tuple() -> None:
    ev = parse_event(
        {
            "source": " PayPal ",
            "external_id": "T-1",
            "amount": "10.5",
            "currency": "usd",
            "occurred_at": "2026-01-01T12:00:00+02:00",
            "kind": "Sale",
            "status": "confirmed",
        }
    )
    body = "\x1f".join(
        ["finsup-revenue-v1", "paypal", "T-1", "1050", "USD", "2026-01-01T10:00:00.000000Z", "sale"]
    )
    assert ev.event_hash == hashlib.sha256(body.encode()).hexdigest()
    assert ev.event_hash == event_hash(
        "paypal", "T-1", 1050, "USD", "2026-01-01T10:00:00.000000Z", "sale"
    )


def test_same_event_in_any_formatting_is_ingested_once(engine: Engine, tmp_path: Path) -> None:
    first = write_csv(
        tmp_path / "a.csv",
        [["paypal", "T1", "10.0", "USD", "2026-01-01T12:00:00+02:00", "sale", "confirmed"]],
    )
    second = write_csv(
        tmp_path / "b.csv",
        [["PAYPAL", "T1", "10.00", "usd", "2026-01-01T10:00:00Z", "sale", "confirmed"]],
    )
    r1 = ingest_file(engine, first).result
    r2 = ingest_file(engine, second).result
    assert (r1.inserted, r2.inserted, r2.unchanged) == (1, 0, 1)
    assert len(events_in(engine)) == 1
    assert usd(engine).confirmed_revenue_minor == 1000


def test_status_moves_forward_and_backward_messages_are_logged_and_ignored(
    engine: Engine, tmp_path: Path
) -> None:
    row = ["paypal", "T1", "25.00", "USD", "2026-01-01T10:00:00Z", "sale"]
    ingest_file(engine, write_csv(tmp_path / "1.csv", [[*row, "projected"]]))
    assert usd(engine).confirmed_revenue_minor == 0  # projected revenue is not money yet

    res = ingest_file(engine, write_csv(tmp_path / "2.csv", [[*row, "confirmed"]])).result
    assert res.advanced == 1
    assert usd(engine).confirmed_revenue_minor == 2500

    # A later, different message (not 1.csv delivered again, which its fingerprint would skip).
    stale = write_csv(
        tmp_path / "3.csv", [[*row, "projected", "late resend"]], header=[*HEADER, "note"]
    )
    res = ingest_file(engine, stale).result
    assert (res.advanced, res.ignored_backward) == (0, 1)
    assert list(events_in(engine).values()) == ["confirmed"]
    with db.read(engine) as conn:
        logged = reports.transaction_logs(conn, entity_type="revenue_event")
    backward = [r for r in logged if r["action"] == "revenue_status_backward_ignored"]
    assert len(backward) == 1
    assert backward[0]["detail"]["current"] == "confirmed"
    assert backward[0]["detail"]["offered"] == "projected"

    res = ingest_file(engine, write_csv(tmp_path / "4.csv", [[*row, "reversed"]])).result
    assert res.advanced == 1
    assert list(events_in(engine).values()) == ["reversed"]
    assert usd(engine).confirmed_revenue_minor == 0  # the reversal took the revenue back out


def test_deductions_and_balance_formula(engine: Engine, tmp_path: Path) -> None:
    rows = [
        ["paypal", "S1", "100.00", "USD", "2026-01-01T10:00:00Z", "sale", "confirmed"],
        ["paypal", "S2", "50.00", "USD", "2026-01-01T10:00:00Z", "sale", "projected"],
        ["paypal", "R1", "10.00", "USD", "2026-01-01T11:00:00Z", "refund", "confirmed"],
        ["paypal", "C1", "5.00", "USD", "2026-01-01T11:00:00Z", "chargeback", "confirmed"],
        ["paypal", "F1", "2.90", "USD", "2026-01-01T11:00:00Z", "fee", "confirmed"],
        ["paypal", "F2", "1.00", "USD", "2026-01-01T11:00:00Z", "fee", "projected"],
    ]
    ingest_file(engine, write_csv(tmp_path / "day.csv", rows))
    b = usd(engine)
    assert b.confirmed_revenue_minor == 10000
    assert b.deductions_minor == 1000 + 500 + 290
    assert b.available_minor == 10000 - 1790
    with db.read(engine) as conn:
        assert journal.unbalanced_entries(conn) == []
        sums = journal.account_balances(conn)
    assert sums[(journal.Account.GATEWAY_CLEARING, "USD")] == 10000 - 1790


def test_bad_rows_go_to_rejects_file_and_good_rows_still_land(
    engine: Engine, tmp_path: Path
) -> None:
    rows = [
        ["paypal", "OK1", "10.00", "USD", "2026-01-01T10:00:00Z", "sale", "confirmed"],
        ["paypal", "BAD1", "10.001", "USD", "2026-01-01T10:00:00Z", "sale", "confirmed"],
        ["paypal", "BAD2", "12", "ZZZ", "2026-01-01T10:00:00Z", "sale", "confirmed"],
        ["paypal", "BAD3", "12", "USD", "2026-01-01T10:00:00", "sale", "confirmed"],
        ["paypal", "BAD4", "12", "USD", "2026-01-01T10:00:00Z", "gift", "confirmed"],
        ["paypal", "BAD5", "12", "USD", "2026-01-01T10:00:00Z", "sale", "settled"],
        ["paypal", "", "12", "USD", "2026-01-01T10:00:00Z", "sale", "confirmed"],
        ["paypal", "OK2", "1500", "USD", "2026-01-02T10:00:00Z", "sale", "projected"],
    ]
    path = write_csv(tmp_path / "mixed.csv", rows)
    res = ingest_file(engine, path)
    assert res.result.inserted == 2
    assert [r.row for r in res.result.rejected] == [2, 3, 4, 5, 6, 7]
    assert res.rejects_path == tmp_path / "mixed.csv.rejects.csv"
    with res.rejects_path.open() as fh:
        rejects = list(csv.DictReader(fh))
    reasons = {r["external_id"]: r["reject_reason"] for r in rejects}
    assert "USD allows 2" in reasons["BAD1"]
    assert "unknown currency 'ZZZ'" in reasons["BAD2"]
    assert "no UTC offset" in reasons["BAD3"]
    assert "kind 'gift'" in reasons["BAD4"]
    assert "status 'settled'" in reasons["BAD5"]
    assert "external_id is missing" in reasons[""]
    assert path.exists(), "the input is kept where it can be looked at again"

    # The rejects file has the input's columns: fix a row, feed the file back in.
    fixed = [{**r, "amount": "10.00"} if r["external_id"] == "BAD1" else r for r in rejects]
    with res.rejects_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rejects[0]))
        writer.writeheader()
        writer.writerows(fixed)
    again = ingest_file(engine, res.rejects_path).result
    assert again.inserted == 1
    assert len(again.rejected) == 5


def test_a_conflicting_duplicate_is_refused_not_double_counted(
    engine: Engine, tmp_path: Path
) -> None:
    ingest_file(
        engine,
        write_csv(
            tmp_path / "a.csv",
            [["paypal", "T9", "10.00", "USD", "2026-01-01T10:00:00Z", "sale", "confirmed"]],
        ),
    )
    res = ingest_file(
        engine,
        write_csv(
            tmp_path / "b.csv",
            [["paypal", "T9", "11.00", "USD", "2026-01-01T10:00:00Z", "sale", "confirmed"]],
        ),
    )
    assert res.result.inserted == 0
    assert "conflicts with event" in res.result.rejected[0].reason
    assert usd(engine).confirmed_revenue_minor == 1000


def test_jsonl_numbers_and_broken_lines_are_rejected_per_row(
    engine: Engine, tmp_path: Path
) -> None:
    good: dict[str, Any] = {
        "source": "payoneer",
        "external_id": "J1",
        "amount": "3200",
        "currency": "JPY",
        "occurred_at": "2026-01-01T19:10:00+09:00",
        "kind": "sale",
        "status": "confirmed",
    }
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps({**good, "external_id": "J2", "amount": 3200.0})
        + "\n"
        + "{not json\n"
        + "\n"
        + json.dumps(["a", "list"])
        + "\n"
    )
    res = ingest_file(engine, path)
    assert res.result.inserted == 1
    reasons = [r.reason for r in res.result.rejected]
    assert "got float 3200.0" in reasons[0]
    assert reasons[1].startswith("not valid JSON")
    assert reasons[2] == "not a JSON object"
    assert res.rejects_path is not None and res.rejects_path.name == "in.jsonl.rejects.jsonl"
    assert len(res.rejects_path.read_text().splitlines()) == 3
    with db.read(engine) as conn:
        jpy = balance.available_balances(conn, "JPY")[0]
    assert jpy.confirmed_revenue_minor == 3200


def test_a_file_without_required_columns_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        [["paypal", "T1", "10.00"]],
        header=["source", "external_id", "amount"],
    )
    with pytest.raises(InvalidInput, match="missing columns currency, occurred_at, kind"):
        ingest_file(engine, path)
    assert events_in(engine) == {}


def test_many_chunks_give_the_same_books_as_one(engine: Engine) -> None:
    raw = [
        {
            "source": "s",
            "external_id": f"E{i}",
            "amount": f"{i}.01",
            "currency": "EUR",
            "occurred_at": "2026-01-01T00:00:00Z",
            "kind": "sale",
            "status": "confirmed",
        }
        for i in range(1, 60)
    ]
    events = [(n, parse_event(r)) for n, r in enumerate(raw, 1)]
    res = ingest(engine, events, chunk_size=7)
    assert res.inserted == 59
    with db.read(engine) as conn:
        eur = balance.available_balances(conn, "EUR")[0]
    assert eur.confirmed_revenue_minor == sum(i * 100 + 1 for i in range(1, 60))


def test_the_same_file_again_is_answered_from_its_fingerprint(
    engine: Engine, tmp_path: Path
) -> None:
    rows = [
        ["paypal", f"T{i}", "1.00", "USD", "2026-01-01T10:00:00Z", "sale", "confirmed"]
        for i in range(5)
    ]
    path = write_csv(tmp_path / "day.csv", rows)
    assert ingest_file(engine, path).result.inserted == 5
    with db.read(engine) as conn:
        log_before = len(reports.transaction_logs(conn))
    again = ingest_file(
        engine, write_csv(tmp_path / "copy.csv", rows)
    ).result  # same bytes, other name
    assert (again.inserted, again.unchanged, again.rejected) == (0, 5, [])
    with db.read(engine) as conn:
        assert len(reports.transaction_logs(conn)) == log_before, (
            "nothing was read, nothing written"
        )

    bad = write_csv(
        tmp_path / "bad.csv",
        [*rows, ["paypal", "T9", "x", "USD", "2026-01-01T10:00:00Z", "sale", ""]],
    )
    first = ingest_file(engine, bad)
    second = ingest_file(
        engine, bad
    )  # a file with rejects is read again: its rejects file stays true
    assert (len(first.result.rejected), len(second.result.rejected)) == (1, 1)
    assert second.result.unchanged == 5 and second.rejects_path is not None


def test_a_missing_or_unsupported_file_is_one_clear_error(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"missing\.csv: no such file"):
        ingest_file(engine, tmp_path / "missing.csv")
    odd = tmp_path / "day.xlsx"
    odd.write_text("x")
    with pytest.raises(InvalidInput, match=r"unsupported file type \.xlsx"):
        ingest_file(engine, odd)

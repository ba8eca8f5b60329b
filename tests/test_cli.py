"""The `finsup` command as a user runs it: real processes, both databases, JSON contracts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_line_error, run, run_json
from tests.helpers.files import write_csv


def test_full_session(finsup_env: Path, tmp_path: Path) -> None:
    first = run("init")
    assert first.returncode == 0, first.stderr
    assert "books created at revision" in first.stdout
    assert "books up to date" in run("init").stdout

    day = write_csv(
        tmp_path / "day.csv",
        [
            ["paypal", "A1", "120.00", "USD", "2026-11-20T09:00:00Z", "sale", "confirmed"],
            ["paypal", "A1", "120.0", "usd", "2026-11-20T10:00:00+01:00", "sale", "confirmed"],
            ["paypal", "A2", "1.75", "USD", "2026-11-20T09:00:00Z", "fee", "confirmed"],
            ["paypal", "A3", "15000", "JPY", "2026-11-20T18:00:00+09:00", "sale", "confirmed"],
            ["paypal", "A4", "9.999", "USD", "2026-11-20T09:00:00Z", "sale", "confirmed"],
        ],
    )
    proc = run("ingest-revenue", str(day), "--json")
    assert proc.returncode == 1, "a rejected row makes the exit code say so"
    [summary] = json.loads(proc.stdout)
    assert {k: summary[k] for k in ("inserted", "unchanged", "status_advanced", "rejected")} == {
        "inserted": 3,
        "unchanged": 1,
        "status_advanced": 0,
        "rejected": 1,
    }
    assert summary["rejects_file"] == str(day) + ".rejects.csv"
    assert Path(summary["rejects_file"]).read_text().count("USD allows 2") == 1

    balances = run_json("available-balance")
    assert balances == [
        {
            "currency": "JPY",
            "available_minor": 15000,
            "confirmed_revenue_minor": 15000,
            "deductions_minor": 0,
            "reserve_minor": 0,
            "committed_minor": 0,
            "clawback_receivable_minor": 0,
        },
        {
            "currency": "USD",
            "available_minor": 11825,
            "confirmed_revenue_minor": 12000,
            "deductions_minor": 175,
            "reserve_minor": 0,
            "committed_minor": 0,
            "clawback_receivable_minor": 0,
        },
    ]
    assert run_json("available-balance", "--currency", "jpy") == balances[:1]

    table = run("available-balance")
    assert "118.25" in table.stdout and "15000" in table.stdout

    assert run("set-reserve", "25.00", "--currency", "USD", "--reason", "buffer").returncode == 0
    assert run_json("available-balance", "--currency", "USD")[0]["available_minor"] == 11825 - 2500

    assert run("set-reserve", "0.00", "--currency", "USD", "--reason", "cleared").returncode == 0
    assert run_json("available-balance", "--currency", "USD")[0]["reserve_minor"] == 0
    assert run("set-reserve", "25.00", "--currency", "USD", "--reason", "buffer").returncode == 0

    logs = run_json("report-transaction-logs", "--entity", "reserve")
    assert [(r["action"], r["amount_minor"], r["actor"]) for r in logs] == [
        ("reserve_set", 2500, "test-operator"),
        ("reserve_set", 0, "test-operator"),
        ("reserve_set", 2500, "test-operator"),
    ]
    assert run_json("report-transaction-logs", "--since", "2999-01-01T00:00:00Z") == []
    assert len(run_json("report-transaction-logs")) == 5  # migrated, ingested, three reserves
    # Each of those writes also sealed the rows it wrote, in a row of its own.
    everything = run_json("report-transaction-logs", "--seals")
    assert [r["action"] for r in everything].count("rows_sealed") == len(everything) - 5 >= 4

    ok = run("verify-audit-chain")
    assert ok.returncode == 0 and f"audit chain intact: {len(everything)} rows" in ok.stdout
    assert run_json("verify-audit-chain")["ok"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("available-balance", "--currency", "ZZZ"), "unknown currency 'ZZZ'"),
        (("ingest-revenue", "/nonexistent/file.csv"), "/nonexistent/file.csv: no such file"),
        (("report-transaction-logs", "--since", "yesterday"), "time 'yesterday' is not ISO 8601"),
        (("report-transaction-logs", "--limit", "0"), "--limit"),
        (("set-reserve", "1.001", "--currency", "USD", "--reason", "x"), "USD allows 2"),
        (("no-such-command",), "No such command"),
    ],
)
def test_bad_arguments_get_one_line(finsup_env: Path, args: tuple[str, ...], message: str) -> None:
    assert run("init").returncode == 0
    assert_one_line_error(run(*args), message)


def test_uninitialised_books_say_what_to_do(finsup_env: Path) -> None:
    assert_one_line_error(
        run("available-balance"), "the books are not initialised: run `finsup init`"
    )


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FINSUP_HOME": str(tmp_path),
        "FINSUP_LEDGER_URL": "postgresql://postgres@127.0.0.1:1/nothing",
    }
    assert_one_line_error(run("available-balance", env=env), "database error: connection failed")


def test_finsup_home_holds_the_default_ledger(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FINSUP_LEDGER_URL"}
    env["FINSUP_HOME"] = str(tmp_path / "home")
    assert run("init", env=env).returncode == 0
    assert (tmp_path / "home" / "ledger.db").is_file()

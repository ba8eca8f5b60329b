"""The reconciliation sample: every file reads as its format, broken ones are refused, same seed same bytes."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from finsup_dagster.formats import parse_file, parse_page
from finsup_dagster.ledger.errors import InvalidInput, MalformedFile
from finsup_dagster.ledger.revenue import FIELDS, parse_event
from finsup_dagster.sample_data.expected import (
    MATCH_WINDOW_DAYS,
    STALE_AFTER_DAYS,
    batch_outcome,
    event_outcome,
)
from finsup_dagster.sample_data.generate import (
    OUTCOMES,
    SCENARIOS,
    SampleManifest,
    generate_sample,
)
from finsup_dagster.warehouse.raw import read_file


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    root = tmp_path_factory.mktemp("sample")
    return generate_sample(root / "home", root / "sandbox")


def _fmt(manifest: SampleManifest, path: Path) -> str:
    return path.relative_to(manifest.home / "landing").parts[0]


def _day(manifest: SampleManifest, path: Path) -> str:
    return path.relative_to(manifest.home / "landing").parts[1]


def _good_files(manifest: SampleManifest) -> list[Path]:
    skip = {b.path for b in manifest.broken_files} | {r.path for r in manifest.redelivered}
    return [p for p in manifest.files if p not in skip]


def _sandbox_rows(manifest: SampleManifest) -> list[dict[str, object]]:
    infos = [
        json.loads(line)
        for line in manifest.sandbox_file.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    page = {
        "transaction_details": [{"transaction_info": info} for info in infos],
        "page": 1,
        "total_pages": 1,
        "total_items": len(infos),
    }
    return page_rows(json.dumps(page))


def page_rows(body: str) -> list[dict[str, object]]:
    return parse_page(body, "sandbox.json").rows


def _utc_day(instant: str) -> str:
    return datetime.fromisoformat(instant).astimezone(UTC).date().isoformat()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_every_good_file_parses_and_lands_in_its_day(sample: SampleManifest) -> None:
    assert sample.days == [f"2026-11-{d}" for d in range(16, 21)]
    formats = Counter(_fmt(sample, p) for p in _good_files(sample))
    assert set(formats) == {"revenue", "paypal-stl", "camt053", "settlement-csv"}
    for path in _good_files(sample):
        fmt, day = _fmt(sample, path), _day(sample, path)
        parsed = read_file(fmt, path)
        assert parsed.rows, path
        if fmt == "revenue":
            assert all(row["problem"] is None for row in parsed.rows), path
            assert {_utc_day(str(row["occurred_at"])) for row in parsed.rows} == {day}
        else:
            assert parse_file(fmt, path).rows == parsed.rows
            assert {row["settled_on"] for row in parsed.rows} == {day}, path


def test_settlement_lines_and_events_are_the_ones_expected(sample: SampleManifest) -> None:
    expected = sample.expected
    lines: dict[str, dict[str, object]] = {}
    events: dict[str, dict[str, object]] = {}
    rejected: list[str] = []
    for path in _good_files(sample):
        fmt = _fmt(sample, path)
        for row in read_file(fmt, path).rows:
            if fmt != "revenue":
                key = f"{fmt}:{row['record_ref']}"
                assert key not in lines
                lines[key] = row
                continue
            raw = {k: row[k] for k in FIELDS}
            try:
                events[str(row["external_id"])] = {**raw, "event": parse_event(raw)}
            except InvalidInput as exc:
                rejected.append(str(row["external_id"]))
                bad = next(r for r in sample.rejected_rows if r.external_id == row["external_id"])
                assert bad.reason in str(exc)
                assert bad.path == path and bad.row_number == row["row_number"]
    for row in _sandbox_rows(sample):
        events[str(row["external_id"])] = row
    assert rejected == [r.external_id for r in sample.rejected_rows] == expected["rejected_rows"]
    assert set(lines) == set(expected["lines"])
    assert set(events) == set(expected["events"])
    for key, want in expected["lines"].items():
        row = lines[key]
        fields = ("gateway_txn_id", "kind", "currency")
        assert [row[k] for k in fields] == [want[k] for k in fields], key
    for external_id, want in expected["events"].items():
        got = events[external_id]
        fields = ("source", "kind", "currency", "amount", "status")
        assert [got[k] for k in fields] == [want[k] for k in fields], external_id
        assert _utc_day(str(got["occurred_at"])) == want["occurred_on"]


def test_paypal_api_carries_pending_sales_and_a_refund(sample: SampleManifest) -> None:
    rows = _sandbox_rows(sample)
    assert sample.paypal_transactions == len(rows)
    assert {r["source"] for r in rows} == {"paypal"}
    assert {r["currency"] for r in rows} == {"USD", "EUR"}
    assert Counter(str(r["kind"]) for r in rows)["refund"] == 1
    projected = {str(r["external_id"]) for r in rows if r["status"] == "projected"}
    scenarios = sample.expected["scenarios"]
    assert projected == set(scenarios["paypal_projected_never_settled"]["events"]) | set(
        scenarios["paypal_pending_settled_late"]["events"]
    )
    stl_ids = {
        str(row["gateway_txn_id"])
        for p in _good_files(sample)
        if _fmt(sample, p) == "paypal-stl"
        for row in parse_file("paypal-stl", p).rows
    }
    assert stl_ids <= {str(r["external_id"]) for r in rows}


def test_broken_files_are_refused_with_their_reason(sample: SampleManifest) -> None:
    assert {b.fmt for b in sample.broken_files} == {"paypal-stl", "camt053"}
    for broken in sample.broken_files:
        assert broken.path in sample.files
        with pytest.raises(MalformedFile) as caught:
            read_file(broken.fmt, broken.path)
        assert type(caught.value).__name__ == broken.error
        assert broken.reason in str(caught.value)
        # the resend in the same folder is good
        resends = [
            p
            for p in _good_files(sample)
            if p.parent == broken.path.parent and _fmt(sample, p) == broken.fmt
        ]
        assert len(resends) == 1


def test_redelivered_file_is_byte_identical_and_only_one(sample: SampleManifest) -> None:
    assert len(sample.redelivered) == 1
    again = sample.redelivered[0]
    assert again.fmt == "settlement-csv" and again.path.name != again.original.name
    assert again.path.read_bytes() == again.original.read_bytes()
    assert _day(sample, again.path) > _day(sample, again.original)
    hashes = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in sample.files)
    assert sorted(hashes.values()) == [1] * (len(sample.files) - 2) + [2]


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = generate_sample(tmp_path / "a" / "home", tmp_path / "a" / "sandbox")
    b = generate_sample(tmp_path / "b" / "home", tmp_path / "b" / "sandbox")
    generate_sample(tmp_path / "c" / "home", tmp_path / "c" / "sandbox", seed=8)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")
    assert a.expected == b.expected
    assert json.dumps(a.to_json()) == json.dumps(b.to_json()).replace("/b/", "/a/")


def test_expectations_cover_every_scenario(sample: SampleManifest) -> None:
    expected: dict[str, Any] = sample.expected
    assert set(expected["scenarios"]) == set(SCENARIOS)
    for item in (*expected["events"].values(), *expected["lines"].values()):
        assert set(item["by_day"].values()) <= set(OUTCOMES)
        assert item["outcome"] == item["by_day"][sample.days[-1]]
    finals = Counter(
        item["outcome"] for item in (*expected["events"].values(), *expected["lines"].values())
    )
    for outcome in sorted(set(OUTCOMES) - {"stale_projected", "ignored:other"}):
        assert finals[outcome] >= 1, outcome
    assert "stale_projected" not in finals  # needs 8 days of age
    assert {b["outcome"] for b in expected["batches"].values()} == {"balanced", "amount_mismatch"}
    last = expected["by_day"][sample.days[-1]]["exceptions"]
    assert last == {
        "amount_mismatch": 1,
        "batch_amount_mismatch": 1,
        "currency_mismatch": 1,
        "duplicate_settlement": 2,  # one across two files, one repeated inside an STL
        "unmatched_revenue": 2,
        "unmatched_settlement": 1,
    }
    assert expected["by_day"][sample.days[0]]["exceptions"] == {}
    repeated = expected["scenarios"]["paypal_stl_repeated_row"]["lines"]
    assert len(repeated) == 1 and set(repeated.values()) == {"duplicate_settlement"}
    (key,) = repeated
    assert "#" in key and key.split("#")[0] in expected["lines"]  # the row it repeats, matched
    assert expected["lines"][key.split("#")[0]]["outcome"] == "matched:gateway_txn_id"
    assert set(expected["scenarios"]["appstore_batch_booking"]["batches"].values()) == {"balanced"}
    json.dumps(sample.to_json())  # plain data


def test_small_days(sample: SampleManifest) -> None:
    """About 20-40 events a day: revenue rows plus settlement lines."""
    per_day: Counter[str] = Counter()
    for item in sample.expected["events"].values():
        per_day[item["occurred_on"]] += 1
    for item in sample.expected["lines"].values():
        per_day[item["settled_on"]] += 1
    assert all(15 <= n <= 40 for n in per_day.values()), per_day


def test_longer_sample_turns_the_projected_sale_stale(tmp_path: Path) -> None:
    manifest = generate_sample(
        tmp_path / "home", tmp_path / "sandbox", start=date(2026, 12, 1), days=9, seed=3
    )
    scenario = manifest.expected["scenarios"]["paypal_projected_never_settled"]
    (external_id,) = scenario["events"]
    assert scenario["events"][external_id] == "stale_projected"
    by_day = manifest.expected["events"][external_id]["by_day"]
    assert by_day["2026-12-04"] == "awaiting_settlement"
    assert by_day["2026-12-05"] == "unmatched_revenue"
    assert by_day["2026-12-09"] == "stale_projected"
    for path in manifest.files:
        if path not in {b.path for b in manifest.broken_files}:
            read_file(_fmt(manifest, path), path)


def test_too_few_days_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 4"):
        generate_sample(tmp_path / "home", tmp_path / "sandbox", days=3)


def test_expected_outcomes_follow_the_documented_ages() -> None:
    """docs/reconciliation.md: awaiting settlement up to match_window_days, then an exception;
    a projected event older than stale_after_days is stale; a landed settlement decides."""
    assert (MATCH_WINDOW_DAYS, STALE_AFTER_DAYS) == (3, 7)  # the dbt defaults
    for status in ("confirmed", "projected"):
        assert event_outcome(None, 0, status) == "awaiting_settlement"
        assert event_outcome(None, 3, status) == "awaiting_settlement"
        assert event_outcome(None, 4, status) == "unmatched_revenue"
        assert event_outcome(None, 7, status) == "unmatched_revenue"
        assert event_outcome("matched:gateway_txn_id", 9, status) == "matched:gateway_txn_id"
    assert event_outcome(None, 8, "projected") == "stale_projected"
    assert event_outcome(None, 30, "confirmed") == "unmatched_revenue"
    assert batch_outcome(1000, 1000) == "balanced"
    assert batch_outcome(950, 1000) == "amount_mismatch"

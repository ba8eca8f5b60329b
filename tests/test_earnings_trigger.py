"""The swarm's trigger: ``POST /earnings`` over real HTTP, landed files, and the sensor.

What the swarm and the finance team rely on: an earning sent with the token is
in the books once however often it is sent; anything refused changes nothing,
says why in one line and is kept to look at again; new earnings (sent or
landed as a file) become a payout-batches run with nobody at the controls,
and a freeze stops that. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from finsup_dagster.assets import payouts as payout_assets
from finsup_dagster.jobs import create_payout_batches_job
from finsup_dagster.ledger import controls, db
from finsup_dagster.ledger.schema import earning_sources, earnings, payout_batches
from finsup_dagster.resources import LedgerResource, PayoutPolicyResource
from finsup_dagster.sensors import earnings as earnings_sensor
from finsup_dagster.sensors.earnings import MAX_RETRIES, earnings_landed_sensor
from finsup_dagster.web.earnings import TOKEN_ENV, kept_reasons, token_matches
from tests.helpers.payouts import beneficiary, sale
from tests.helpers.webhooks import log_actions, receiver

TOKEN = "earnings-token-never-shown-0123456789abcdef"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FINSUP_HOME and the token, as `finsup serve` reads them from the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FINSUP_HOME", str(home))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return home


@pytest.fixture
def funded(engine: Engine) -> str:
    """A verified beneficiary ann and a confirmed 100.00 USD sale; returns the sale's hash."""
    beneficiary(engine, "ann")
    return sale(engine, "S-1", "100.00")


def body(
    funding: str, external_id: str = "E-1", amount: str = "40.00", **kw: Any
) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "beneficiary": "ann",
        "amount": amount,
        "currency": "USD",
        "event_hashes": [funding],
        **kw,
    }


def post(url: str, payload: Any, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(f"{url}/earnings", content=content, headers=headers, timeout=10)


def books(engine: Engine) -> tuple[list[tuple[Any, ...]], int, int, list[str]]:
    """Earnings, their funding rows, batches and the log's actions (sealing is not money)."""
    with db.read(engine) as conn:
        rows = [
            tuple(r)
            for r in conn.execute(
                sa.select(
                    earnings.c.external_id,
                    earnings.c.amount_minor,
                    earnings.c.currency,
                    earnings.c.status,
                ).order_by(earnings.c.id)
            )
        ]
        sources = conn.execute(sa.select(sa.func.count()).select_from(earning_sources)).scalar_one()
        batches = conn.execute(sa.select(sa.func.count()).select_from(payout_batches)).scalar_one()
    return rows, sources, batches, [a for a in log_actions(engine) if a != "rows_sealed"]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real (temporary) Dagster instance: the sensor reads its runs, the runs land in it."""
    with dg.instance_for_test() as instance:
        yield instance


def tick(
    ledger: LedgerResource, cursor: str | None, instance: dg.DagsterInstance
) -> tuple[list[dg.RunRequest], str | None, str]:
    context = dg.build_sensor_context(
        cursor=cursor, resources={"ledger": ledger}, instance=instance
    )
    data = earnings_landed_sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor, data.skip_message or ""


def run_requested(
    ledger: LedgerResource, request: dg.RunRequest, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """The run the sensor asked for, executed in process: its job, its tags, real resources."""
    defs = dg.Definitions(
        assets=[payout_assets.earnings, payout_assets.payout_batches],
        jobs=[create_payout_batches_job],
        resources={"ledger": ledger, "payout_policy": PayoutPolicyResource()},
    )
    job = defs.resolve_job_def(create_payout_batches_job.name)
    return job.execute_in_process(tags=request.tags, instance=instance, raise_on_error=False)


def test_an_earning_is_accepted_once_and_a_duplicate_changes_nothing(
    engine: Engine, funded: str, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with receiver(engine) as url:
        first = post(url, body(funded))
        after_first = books(engine)
        again = post(url, body(funded))
    assert first.status_code == 201, first.text
    assert first.json() == {
        "status": "created",
        "earnings": [{"external_id": "E-1", "status": "created"}],
    }
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    assert after_first[0] == [("E-1", 4000, "USD", "accrued")] and after_first[1] == 1
    assert books(engine) == after_first, "a second delivery wrote nothing"
    assert kept_reasons(home) == []
    assert TOKEN not in caplog.text


def test_a_missing_or_wrong_token_is_401_and_changes_nothing(
    engine: Engine, funded: str, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = books(engine)
    with receiver(engine) as url:
        answers = [
            post(url, body(funded), token=None),
            post(url, body(funded), token=TOKEN[:-1] + "X"),
            post(url, body(funded), token=TOKEN + "X"),
            post(url, body(funded), token=None, headers={"Authorization": f"Basic {TOKEN}"}),
        ]
    for resp in answers:
        assert resp.status_code == 401, resp.text
        assert "token" in resp.json()["error"] and TOKEN not in resp.text
    assert books(engine) == before
    # Unauthenticated bodies are not kept: anyone can send one (docs/payouts.md).
    assert kept_reasons(home) == []
    assert TOKEN not in caplog.text


def test_the_route_is_off_without_a_token_on_the_server(
    engine: Engine, funded: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    before = books(engine)
    with receiver(engine) as url:
        resp = post(url, body(funded))
    assert resp.status_code == 503 and TOKEN_ENV in resp.json()["error"]
    assert books(engine) == before


def test_bad_bodies_get_a_4xx_with_the_reason_change_nothing_and_are_kept(
    engine: Engine, funded: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSUP_EARNINGS_MAX_BYTES", "2048")
    unknown = "f" * 64
    cases: list[tuple[Any, int, str, dict[str, str]]] = [
        (b'{"external_id": "E-9", ', 400, "not JSON", {}),
        (body(funded), 415, "Content-Type", {"Content-Type": "text/plain"}),
        (b"x" * 3000, 413, "over 2048 bytes", {}),
        ([1, 2], 422, "not an earning object", {}),
        ([], 422, "empty list", {}),
        (
            b'{"external_id": "E-9", "beneficiary": "ann", "amount": 12.5, "currency": "USD", '
            b'"event_hashes": ["' + funded.encode() + b'"]}',
            422,
            "decimal string",
            {},
        ),
        (body(funded, event_hashes=funded), 422, "JSON list", {}),
        (body(funded, beneficiary="nobody"), 422, "unknown beneficiary", {}),
        (body(funded, event_hashes=[unknown]), 422, "unknown revenue event", {}),
        (body(funded, amount="100.01"), 422, "exceeds", {}),
        (body(funded, currency="XXQ"), 422, "currency", {}),
        # All or nothing: the good first item is not kept when the second is refused.
        ([body(funded, "E-2"), body(funded, "E-3", beneficiary="nobody")], 422, "item 2", {}),
        ([body(funded, "E-4"), body(funded, "E-4")], 422, "twice", {}),
    ]
    before = books(engine)
    with receiver(engine) as url:
        answers = [(post(url, payload, headers=headers), payload) for payload, *_, headers in cases]
    for (resp, payload), (_, status, words, _) in zip(answers, cases, strict=True):
        assert resp.status_code == status, (payload, resp.text)
        error = resp.json()["error"]
        assert words in error and "\n" not in error, error
        kept = home / resp.json()["kept"]
        sent = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        assert kept.read_bytes() == sent[:2048]
    assert books(engine) == before, "a refusal changes nothing in the books"
    reasons = kept_reasons(home)
    assert [r["status"] for r in reasons] == [str(c[1]) for c in cases]
    assert all(r["reason"] for r in reasons)


def test_a_conflicting_redelivery_is_refused_and_the_first_stands(
    engine: Engine, funded: str, home: Path
) -> None:
    with receiver(engine) as url:
        assert post(url, body(funded)).status_code == 201
        before = books(engine)
        resp = post(url, body(funded, amount="41.00"))
    assert resp.status_code == 422 and "already exists" in resp.json()["error"]
    assert books(engine) == before


def test_a_posted_earning_reaches_approval_without_an_operator(
    engine: Engine, ledger_url: str, funded: str, home: Path, instance: dg.DagsterInstance
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(home))
    requests, cursor, _ = tick(ledger, None, instance)
    assert requests == [], "no earnings, no run"
    with receiver(engine) as url:
        assert post(url, body(funded)).status_code == 201
        requests, cursor, _ = tick(ledger, cursor, instance)
        assert len(requests) == 1
        result = run_requested(ledger, requests[0], instance)
        assert result.success
        with db.read(engine) as conn:
            [batch] = conn.execute(sa.select(payout_batches)).all()
        assert (batch.status, batch.total_minor, batch.currency) == (
            "pending_approval",
            4000,
            "USD",
        )
        assert batch.created_by == "sensor:earnings_landed"
        # The same earning again: nothing new, no second run.
        assert post(url, body(funded)).status_code == 200
    again, _, _ = tick(ledger, cursor, instance)
    assert again == []
    replay, _, _ = tick(ledger, None, instance)  # a lost cursor: nothing accrued is left unbatched
    assert replay == []


def test_a_landed_file_leads_to_a_run_whose_batches_wait_for_approval(
    engine: Engine, ledger_url: str, funded: str, home: Path, instance: dg.DagsterInstance
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(home))
    folder = ledger.landing / "earnings"
    folder.mkdir(parents=True)
    (folder / "swarm.csv").write_text(
        f"external_id,beneficiary,amount,currency,event_hashes\nE-F1,ann,25.00,USD,{funded}\n"
    )
    requests, cursor, _ = tick(ledger, None, instance)
    assert len(requests) == 1 and requests[0].run_key.startswith("earnings:0:")
    repeated, _, _ = tick(ledger, None, instance)
    assert [r.run_key for r in repeated] == [requests[0].run_key], "run keys come from data"
    assert run_requested(ledger, requests[0], instance).success
    with db.read(engine) as conn:
        [batch] = conn.execute(sa.select(payout_batches)).all()
    assert (batch.status, batch.total_minor) == ("pending_approval", 2500)
    again, _, _ = tick(ledger, cursor, instance)
    assert again == [], "the file already read and its earning batched: no second run"


def failed_first_run(
    engine: Engine,
    ledger_url: str,
    funded: str,
    home: Path,
    tmp_path: Path,
    instance: dg.DagsterInstance,
) -> tuple[LedgerResource, LedgerResource, dg.RunRequest, str | None]:
    """An earning posted and the sensor's first run failed for a real fault: the run's
    ledger is a database file that is not there to open. (good ledger, gone ledger, the
    first request, the cursor after it)."""
    ledger = LedgerResource(url=ledger_url, home=str(home))
    gone = LedgerResource(url=f"sqlite:///{tmp_path}/missing/dir/ledger.db", home=str(home))
    with receiver(engine) as url:
        assert post(url, body(funded)).status_code == 201
    [first], cursor, _ = tick(ledger, None, instance)
    assert not run_requested(gone, first, instance).success
    return ledger, gone, first, cursor


def test_a_failed_run_is_asked_for_again_a_bounded_number_of_times(
    engine: Engine,
    ledger_url: str,
    funded: str,
    home: Path,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(earnings_sensor, "RETRY_BACKOFF_SECONDS", 0)  # no waiting in the test
    ledger, gone, first, cursor = failed_first_run(
        engine, ledger_url, funded, home, tmp_path, instance
    )
    assert books(engine)[2] == 0
    keys = [first.run_key]
    for _ in range(MAX_RETRIES):
        [retry], cursor, _ = tick(ledger, cursor, instance)
        keys.append(retry.run_key)
        assert not run_requested(gone, retry, instance).success
    assert keys == [first.run_key] + [
        f"{first.run_key}:retry:{n}" for n in range(1, MAX_RETRIES + 1)
    ], "each retry has its own run key, derived from the data and the attempt"
    spent, cursor, skipped = tick(ledger, cursor, instance)
    assert spent == [] and "by hand" in skipped, skipped
    assert tick(ledger, cursor, instance)[0] == [], "no storm once retries are spent"
    # New earnings are a new key: the sensor tries again, and this time the ledger answers.
    with receiver(engine) as url:
        assert post(url, body(funded, external_id="E-2", amount="10.00")).status_code == 201
    [fresh], cursor, _ = tick(ledger, cursor, instance)
    assert run_requested(ledger, fresh, instance).success
    with db.read(engine) as conn:
        [batch] = conn.execute(sa.select(payout_batches)).all()
    assert (batch.status, batch.total_minor) == ("pending_approval", 5000), "both earnings"
    assert tick(ledger, cursor, instance)[0] == [], "a successful run is not retried"


def test_one_failure_then_a_retry_that_succeeds(
    engine: Engine,
    ledger_url: str,
    funded: str,
    home: Path,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(earnings_sensor, "RETRY_BACKOFF_SECONDS", 0)  # no waiting in the test
    ledger, _, first, cursor = failed_first_run(
        engine, ledger_url, funded, home, tmp_path, instance
    )
    [retry], cursor, _ = tick(ledger, cursor, instance)
    assert retry.run_key == f"{first.run_key}:retry:1"
    assert run_requested(ledger, retry, instance).success
    with db.read(engine) as conn:
        [batch] = conn.execute(sa.select(payout_batches)).all()
    assert (batch.status, batch.total_minor) == ("pending_approval", 4000)
    assert tick(ledger, cursor, instance)[0] == []


def test_a_retry_waits_for_its_back_off(
    engine: Engine,
    ledger_url: str,
    funded: str,
    home: Path,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger, _, first, cursor = failed_first_run(
        engine, ledger_url, funded, home, tmp_path, instance
    )
    waiting, cursor, skipped = tick(ledger, cursor, instance)
    assert waiting == [] and "asking again in" in skipped, "a short outage does not use it up"
    monkeypatch.setattr(earnings_sensor, "RETRY_BACKOFF_SECONDS", 0)  # the minute has passed
    [retry], _, _ = tick(ledger, cursor, instance)
    assert retry.run_key == f"{first.run_key}:retry:1"


def test_a_freeze_stops_the_trigger_and_the_unfreeze_releases_it(
    engine: Engine, ledger_url: str, funded: str, home: Path, instance: dg.DagsterInstance
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(home))
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, "cfo", "audit week")
    with receiver(engine) as url:
        # Recording what the swarm decided is not paying: the earning is taken.
        assert post(url, body(funded)).status_code == 201
    requests, cursor, skipped = tick(ledger, None, instance)
    assert requests == [] and "frozen" in skipped and "audit week" in skipped
    assert books(engine)[2] == 0, "no batch while frozen"
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, False, "cfo", "audit done")
    requests, _, _ = tick(ledger, cursor, instance)
    assert len(requests) == 1, "what landed during the freeze is batched after it"


@given(st.text(min_size=1, max_size=80))
def test_only_the_exact_token_opens_the_route(given_token: str) -> None:
    assert token_matches(TOKEN, f"Bearer {TOKEN}")
    assert token_matches(TOKEN, f"Bearer {given_token}") == (given_token.strip() == TOKEN)
    assert not token_matches("", f"Bearer {given_token}"), "no token configured opens nothing"
    assert not token_matches(TOKEN, given_token), "a bare token without the scheme is refused"

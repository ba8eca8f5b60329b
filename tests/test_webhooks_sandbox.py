"""The sandbox sends webhooks and finsup receives them: both over real sockets.

The sandbox notices status changes with no client polling, signs each
delivery, sends duplicates and out-of-order deliveries on request, retries
what is not answered 2xx, and answers PayPal's verify-webhook-signature call;
the receiver turns each into the books exactly once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from finsup_dagster.gateways.sandbox.webhooks import WebhookConfig
from finsup_dagster.web.pending import apply_stored
from finsup_dagster.web.serving import serve_in_thread
from tests.helpers.payout_sandbox import CLIENT_ID, CLIENT_SECRET
from tests.helpers.webhooks import (
    FAST,
    WEBHOOK_ID,
    approved,
    events,
    free_port,
    items,
    receiver,
    sending_sandbox,
    settings,
    submit,
    wait_for,
)


def delivered(sandbox: Any, event_type: str) -> list[dict[str, Any]]:
    return [e for e in sandbox.webhooks() if e["event_type"] == event_type and e["delivered"]]


def settle(engine: Engine, status: str) -> None:
    """Waits for the item to reach ``status``; an event that overtook our record of the
    submission (answered unknown_item, kept) is applied by the later pass meanwhile."""

    def reached() -> bool:
        apply_stored(engine)
        return [i.status for i in items(engine)] == [status]

    wait_for(reached)


def test_a_paypal_payout_reaches_the_books_by_webhook_alone(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    batch = approved(engine, "paypal", "ann@example.com")
    port = free_port()
    urls = {"paypal": f"http://127.0.0.1:{port}/webhooks/paypal"}
    with (
        receiver(engine, port=port),
        sending_sandbox(tmp_path, urls, outcome_delay=0.3) as sandbox,
    ):
        submit(engine, sandbox, ledger_url, tmp_path, batch)
        settle(engine, "paid")
        wait_for(lambda: delivered(sandbox, "PAYMENT.PAYOUTSBATCH.SUCCESS"))
    kinds = {(e.event_type, e.outcome) for e in events(engine)}
    assert ("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", "applied") in kinds
    assert ("PAYMENT.PAYOUTSBATCH.SUCCESS", "batch_event") in kinds
    assert all(e.signature_valid for e in events(engine))


def test_out_of_order_and_duplicate_deliveries_end_in_the_same_books(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    batch = approved(engine, "paypal", "ann+held-then-success@example.com")
    port = free_port()
    urls = {"paypal": f"http://127.0.0.1:{port}/webhooks/paypal"}
    with (
        receiver(engine, port=port),
        sending_sandbox(tmp_path, urls, outcome_delay=0.4) as sandbox,
    ):
        # The batch's PROCESSING, the item's HELD and SUCCEEDED: held, then sent newest first.
        assert sandbox.http.post("/_sandbox/webhooks/out-of-order", json={"count": 3}).is_success
        assert sandbox.http.post("/_sandbox/webhooks/duplicates", json={"count": 10}).is_success
        submit(engine, sandbox, ledger_url, tmp_path, batch)
        settle(engine, "paid")
        wait_for(lambda: delivered(sandbox, "PAYMENT.PAYOUTS-ITEM.HELD"))
        sent = [e for e in sandbox.webhooks() if e["event_type"].startswith("PAYMENT.PAYOUTS-")]
        succeeded = next(e for e in sent if e["event_type"].endswith("SUCCEEDED"))
        held = next(e for e in sent if e["event_type"].endswith("HELD"))
        assert succeeded["attempts"][0]["time"] <= held["attempts"][0]["time"]
        # A replay asked for by hand is one more duplicate.
        replay = sandbox.http.post(f"/_sandbox/webhooks/{succeeded['event_id']}/replay")
        assert replay.status_code == 201
        wait_for(lambda: all(e["delivered"] for e in sandbox.webhooks()))
    assert [i.status for i in items(engine)] == ["paid"]
    rows = events(engine)
    assert len({r.event_id for r in rows}) == len(rows)  # each event id kept once
    item_rows = {r.event_type: r.outcome for r in rows if "PAYOUTS-ITEM" in r.event_type}
    assert item_rows["PAYMENT.PAYOUTS-ITEM.SUCCEEDED"] == "applied"
    assert item_rows["PAYMENT.PAYOUTS-ITEM.HELD"] == "ignored"  # late, behind SUCCEEDED


def test_payoneer_statuses_arrive_by_webhook(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    batch = approved(engine, "payoneer", "PAYEE-7-FAILED")
    port = free_port()
    urls = {"payoneer": f"http://127.0.0.1:{port}/webhooks/payoneer"}
    with (
        receiver(engine, port=port),
        sending_sandbox(tmp_path, urls, outcome_delay=0.3) as sandbox,
    ):
        submit(engine, sandbox, ledger_url, tmp_path, batch)
        settle(engine, "failed")
    [row] = events(engine)
    assert row.gateway == "payoneer" and row.event_type == "payout.failed"
    assert json.loads(row.payload)["payout"]["status"] == "Failed"


@contextmanager
def flaky_endpoint(failures: int) -> Iterator[tuple[str, list[int]]]:
    """Answers 503 ``failures`` times, then 200; yields its URL and the answers given."""
    answers: list[int] = []
    lock = threading.Lock()

    async def hook(request: Request) -> Response:
        await request.body()
        with lock:
            status = 503 if len(answers) < failures else 200
            answers.append(status)
        return Response(status_code=status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with serve_in_thread(app) as url:
        yield f"{url}/hook", answers


def test_deliveries_not_answered_2xx_are_retried_with_backoff_then_given_up(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    batch = approved(engine, "paypal", "ann@example.com")
    config = WebhookConfig(urls={}, tick=0.02, retry_initial=0.1, retry_max=0.4, max_attempts=4)
    with (
        flaky_endpoint(failures=2) as (url, answers),
        sending_sandbox(tmp_path, {"paypal": url}, config) as sandbox,
    ):
        submit(engine, sandbox, ledger_url, tmp_path, batch)
        [item_event] = wait_for(lambda: delivered(sandbox, "PAYMENT.PAYOUTS-ITEM.SUCCEEDED"))
    statuses = [a["status"] for a in item_event["attempts"]]
    assert statuses[-1] == 200 and answers[:2] == [503, 503]

    dead = f"http://127.0.0.1:{free_port()}/nobody"
    batch = approved(engine, "paypal", "bo@example.com")
    with sending_sandbox(tmp_path / "2", {"paypal": dead}, config) as sandbox:
        submit(engine, sandbox, ledger_url, tmp_path / "2", batch)
        gave_up = wait_for(lambda: [e for e in sandbox.webhooks() if e["gave_up"]])
    attempts = gave_up[0]["attempts"]
    assert len(attempts) == 4 and all("error" in a for a in attempts)


@pytest.fixture
def api_receiver_port() -> int:
    return free_port()


def test_paypal_api_verification_against_the_sandbox(
    engine: Engine, ledger_url: str, tmp_path: Path, api_receiver_port: int
) -> None:
    batch = approved(engine, "paypal", "ann@example.com")
    urls = {"paypal": f"http://127.0.0.1:{api_receiver_port}/webhooks/paypal"}
    # Deliveries held until the receiver knows the sandbox's address.
    slow = WebhookConfig(urls={}, tick=0.02, retry_initial=0.05, retry_max=0.2, max_attempts=20)
    with sending_sandbox(tmp_path, urls, slow, outcome_delay=0.3) as sandbox:
        api = settings(
            secrets={},  # no HMAC secret: only PayPal's own verification can accept
            paypal_verify="api",
            paypal_webhook_id=WEBHOOK_ID,
            paypal_base_url=sandbox.base_url,
            paypal_client_id=CLIENT_ID,
            paypal_client_secret=CLIENT_SECRET,
        )
        with receiver(engine, api, port=api_receiver_port) as url:
            submit(engine, sandbox, ledger_url, tmp_path, batch)
            settle(engine, "paid")
            [sent] = wait_for(lambda: delivered(sandbox, "PAYMENT.PAYOUTS-ITEM.SUCCEEDED"))
            verify_calls = sandbox.requests("POST", "/v1/notifications/verify-webhook-signature")
            assert verify_calls and all(
                c["headers"]["authorization"] == "<redacted>" for c in verify_calls
            )
            # A genuine transmission's headers on another body: PayPal says FAILURE.
            [row] = [r for r in events(engine) if r.event_type.endswith("SUCCEEDED")]
            headers = {k: v for k, v in json.loads(row.headers).items() if k.startswith("paypal-")}
            forged = dict(sent["body"], id="WH-FORGED")
            resp = httpx.post(f"{url}/webhooks/paypal", json=forged, headers=headers)
            assert resp.status_code == 401 and resp.json() == {"error": "bad_signature"}
            bare = httpx.post(f"{url}/webhooks/paypal", json=forged)
            assert bare.status_code == 401 and bare.json() == {"error": "missing_signature"}
    outcomes = [r.outcome for r in events(engine) if r.event_id.startswith("refused:")]
    assert outcomes == ["refused:bad_signature", "refused:missing_signature"]
    assert [i.status for i in items(engine)] == ["paid"]


def test_the_webhook_controls_refuse_bad_input(tmp_path: Path) -> None:
    with sending_sandbox(tmp_path, {"paypal": "http://127.0.0.1:9/x"}, FAST) as sandbox:
        assert (
            sandbox.http.post("/_sandbox/webhooks/duplicates", json={"count": 0}).status_code == 400
        )
        assert sandbox.http.post("/_sandbox/webhooks/nope/replay").status_code == 404
        assert sandbox.http.get("/_sandbox/webhooks").json()["events"] == []

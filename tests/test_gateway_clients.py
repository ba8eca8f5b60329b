"""The PayPal Payouts and Payoneer clients against the sandbox, over real loopback HTTP.

No mocks of httpx: every fault is injected by the sandbox (``/_sandbox/faults``)
and every claim about what was sent is checked in what the sandbox recorded
(``/_sandbox/requests``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from finsup_dagster.gateways.http_client import RetryPolicy
from finsup_dagster.gateways.payoneer import PayoneerPayouts
from finsup_dagster.gateways.payouts import (
    GatewayError,
    GatewayRefused,
    GatewayUnavailable,
    PayoutGateway,
    PayoutLine,
    PayoutRequest,
)
from finsup_dagster.gateways.paypal_payouts import PayPalPayouts
from tests.helpers.payout_sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    PAYONEER_ID,
    PAYONEER_SECRET,
    PROGRAM,
    PayoutSandbox,
    payout_sandbox,
    request_for,
    wait_until,
)

PAYOUTS = "/v1/payments/payouts"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[PayoutSandbox]:
    with payout_sandbox(tmp_path, outcome_delay=0.3) as running:
        yield running


def _batch_posts(sb: PayoutSandbox) -> list[dict[str, object]]:
    return [e for e in sb.requests("POST") if e["path"] == PAYOUTS]


def test_both_clients_are_payout_gateways(sandbox: PayoutSandbox) -> None:
    gateways: list[PayoutGateway] = [sandbox.paypal(), sandbox.payoneer()]
    assert [g.name for g in gateways] == ["paypal", "payoneer"]


# --------------------------------------------------------------------------- PayPal round trips


def test_paypal_submit_poll_item_and_cancel(sandbox: PayoutSandbox) -> None:
    client = sandbox.paypal()
    request = request_for("PP-1", ["ann@example.com", "bob+unclaimed@example.com"])
    created = client.submit_batch(request)
    assert created.status == "PENDING" and not created.read_back
    assert client.find_batch(request, None) is None  # PayPal cannot be searched by key

    def moved() -> object:
        batch = client.get_batch(created.gateway_batch_id)
        return batch if batch.status == "SUCCESS" else None

    batch = wait_until(moved)
    assert {(i.item_id, i.status) for i in batch.items} == {(1, "SUCCESS"), (2, "UNCLAIMED")}
    unclaimed = next(i for i in batch.items if i.item_id == 2)
    assert client.get_item(unclaimed.gateway_item_id).status == "UNCLAIMED"
    assert client.cancel_item(unclaimed.gateway_item_id).status == "RETURNED"
    paid = next(i for i in batch.items if i.item_id == 1)
    with pytest.raises(GatewayRefused, match=r"^PayPal payouts: 400 ") as caught:
        client.cancel_item(paid.gateway_item_id)
    assert caught.value.status_code == 400 and caught.value.raw
    found = client.find_batch(request, created.gateway_batch_id)
    assert found is not None and found.gateway_batch_id == created.gateway_batch_id
    assert client.find_batch(request, "NOSUCHBATCH00") is None


def test_paypal_request_mapping_and_exact_amounts(sandbox: PayoutSandbox) -> None:
    client = sandbox.paypal()
    lines = (
        PayoutLine(7, "a@example.com", 1500, "JPY"),
        PayoutLine(8, "b@example.com", 1250, "KWD"),
        PayoutLine(9, "c@example.com", 1, "USD"),
    )
    client.submit_batch(PayoutRequest("b-1", "KEY-AMOUNTS", "USD", lines))
    (post,) = _batch_posts(sandbox)
    body = json.loads(str(post["body"]))
    assert body["sender_batch_header"]["sender_batch_id"] == "KEY-AMOUNTS"
    assert [
        (i["sender_item_id"], i["receiver"], i["amount"], i["recipient_type"])
        for i in body["items"]
    ] == [
        ("7", "a@example.com", {"value": "1500", "currency": "JPY"}, "EMAIL"),
        ("8", "b@example.com", {"value": "1.250", "currency": "KWD"}, "EMAIL"),
        ("9", "c@example.com", {"value": "0.01", "currency": "USD"}, "EMAIL"),
    ]


def test_paypal_duplicate_key_is_read_back_not_sent_twice(sandbox: PayoutSandbox) -> None:
    client = sandbox.paypal()
    request = request_for("PP-DUP", ["ann@example.com"])
    first = client.submit_batch(request)
    again = client.submit_batch(request)
    assert again.read_back and again.gateway_batch_id == first.gateway_batch_id
    assert [i.item_id for i in again.items] == [1]
    assert len(sandbox.state.paypal_batches) == 1

    other = request_for("PP-DUP", ["ann@example.com", "zed@example.com"])
    with pytest.raises(GatewayRefused, match="holds 1 items, not the 2"):
        client.submit_batch(other)


def test_paypal_too_many_items_is_refused_before_sending(sandbox: PayoutSandbox) -> None:
    request = request_for("BIG", [f"r{n}@example.com" for n in range(15_001)])
    with pytest.raises(GatewayRefused, match="15,000"):
        sandbox.paypal().submit_batch(request)
    assert _batch_posts(sandbox) == []


def test_paypal_token_is_cached_and_refreshed_once_on_401(sandbox: PayoutSandbox) -> None:
    client = sandbox.paypal()
    created = client.submit_batch(request_for("TOK", ["ann@example.com"]))
    client.get_batch(created.gateway_batch_id)
    assert sandbox.http.get("/_sandbox/tokens").json()["issued"] == 1
    sandbox.http.delete("/_sandbox/tokens")
    client.get_batch(created.gateway_batch_id)
    assert sandbox.http.get("/_sandbox/tokens").json()["issued"] == 2
    sandbox.fault(status=401, count=2, path_prefix=PAYOUTS)
    with pytest.raises(GatewayRefused, match="401 even with a new token"):
        client.get_batch(created.gateway_batch_id)


# --------------------------------------------------------------------------- PayPal faults


def test_5xx_then_success_is_retried(sandbox: PayoutSandbox) -> None:
    sandbox.fault(status=503, count=2, path_prefix=PAYOUTS)
    batch = sandbox.paypal().submit_batch(request_for("R-5XX", ["ann@example.com"]))
    assert batch.status == "PENDING"
    assert [e["fault"] for e in _batch_posts(sandbox)] == ["status", "status", None]


def test_429_retry_after_is_honoured(sandbox: PayoutSandbox) -> None:
    sandbox.fault(status=429, retry_after=1, count=1, path_prefix=PAYOUTS)
    started = time.monotonic()
    sandbox.paypal().submit_batch(request_for("R-429", ["ann@example.com"]))
    posts = _batch_posts(sandbox)
    assert len(posts) == 2
    gap = float(str(posts[1]["monotonic"])) - float(str(posts[0]["monotonic"]))
    assert gap >= 1.0  # not the policy's 10 ms: the provider's Retry-After
    assert time.monotonic() - started < 3


def test_retry_after_beyond_the_budget_gives_up_at_once(sandbox: PayoutSandbox) -> None:
    sandbox.fault(status=429, retry_after=60, count=1, path_prefix=PAYOUTS)
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable, match="429"):
        sandbox.paypal().submit_batch(request_for("R-429L", ["ann@example.com"]))
    assert time.monotonic() - started < 2


def test_slow_answer_times_out_and_the_retry_reads_back_one_batch(sandbox: PayoutSandbox) -> None:
    sandbox.fault(kind="slow", seconds=1.0, count=1, path_prefix=PAYOUTS)
    client = sandbox.paypal(timeout=0.3)
    batch = client.submit_batch(request_for("R-SLOW", ["ann@example.com"]))
    assert batch.gateway_batch_id
    # The slow first request finishes later and is refused as a duplicate:
    # whichever order, the sandbox holds one batch under the key.
    time.sleep(1.0)
    assert len(sandbox.state.paypal_batches) == 1
    assert len(_batch_posts(sandbox)) == 2


def test_accepted_then_dropped_ends_in_exactly_one_batch(sandbox: PayoutSandbox) -> None:
    sandbox.fault(kind="drop", count=1, path_prefix=PAYOUTS)
    client = sandbox.paypal()
    request = request_for("R-DROP", ["ann@example.com", "bob@example.com"])
    batch = client.submit_batch(request)
    assert batch.read_back  # the retry met the batch the dropped request created
    posts = _batch_posts(sandbox)
    assert [p["fault"] for p in posts] == ["drop", None]
    assert len(sandbox.state.paypal_batches) == 1
    assert batch.gateway_batch_id in sandbox.state.paypal_batches
    assert sorted(i.item_id or 0 for i in batch.items) == [1, 2]


def test_permanent_503_is_unavailable_within_the_budget(sandbox: PayoutSandbox) -> None:
    sandbox.fault(status=503, count=1000, path_prefix=PAYOUTS)
    policy = RetryPolicy(
        attempts=50, total_seconds=0.5, wait_initial=0.05, wait_max=0.1, wait_jitter=0.0
    )
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable) as caught:
        sandbox.paypal(retry=policy).submit_batch(request_for("R-DOWN", ["ann@example.com"]))
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.1 + 0.5  # budget + one wait + one request, at most
    assert caught.value.status_code == 503 and "SERVICE_UNAVAILABLE" in caught.value.raw
    message = str(caught.value)
    assert "\n" not in message and message.startswith("PayPal payouts: 503")
    tries = len(_batch_posts(sandbox))
    assert f"after {tries} attempts" in message and 2 <= tries < 50


def test_attempts_bound_the_retries(sandbox: PayoutSandbox) -> None:
    sandbox.fault(status=500, count=1000, path_prefix=PAYOUTS)
    with pytest.raises(GatewayUnavailable, match="after 4 attempts"):
        sandbox.paypal().submit_batch(request_for("R-4", ["ann@example.com"]))
    assert len(_batch_posts(sandbox)) == 4


def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    with payout_sandbox(tmp_path) as sb:
        client = sb.paypal()
    with pytest.raises(GatewayUnavailable, match="connection failed"):
        client.submit_batch(request_for("R-GONE", ["ann@example.com"]))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, "<html><body>Welcome</body></html>", GatewayRefused),
        (201, '{"batch_header": ', GatewayRefused),
        (201, '{"unexpected": true}', GatewayRefused),
        (400, "<html><body>Bad Request</body></html>", GatewayRefused),
    ],
)
def test_garbage_answers_are_one_line_refusals_with_raw_kept(
    sandbox: PayoutSandbox, status: int, body: str, error: type[GatewayError]
) -> None:
    sandbox.fault(kind="raw", status=status, body=body, path_prefix=PAYOUTS)
    with pytest.raises(error) as caught:
        sandbox.paypal().submit_batch(request_for("R-RAW", ["ann@example.com"]))
    assert caught.value.raw == body
    assert "\n" not in str(caught.value)
    assert len(_batch_posts(sandbox)) == 1  # a refusal is not retried


def test_an_html_502_from_a_proxy_is_transient(sandbox: PayoutSandbox) -> None:
    sandbox.fault(kind="raw", status=502, body="<html>502 Bad Gateway</html>", path_prefix=PAYOUTS)
    batch = sandbox.paypal().submit_batch(request_for("R-502", ["ann@example.com"]))
    assert batch.status == "PENDING"


def test_secrets_never_reach_messages_reprs_or_logs(
    sandbox: PayoutSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[GatewayError] = []
    wrong = PayPalPayouts(sandbox.base_url, CLIENT_ID, "wrong-secret-0xBAD", retry=None)
    with pytest.raises(GatewayRefused) as caught:
        wrong.submit_batch(request_for("S-1", ["ann@example.com"]))
    assert "check the client id and secret" in str(caught.value)
    errors.append(caught.value)

    client = sandbox.paypal()
    created = client.submit_batch(request_for("S-2", ["ann@example.com"]))
    for fault in [
        {"status": 500, "count": 10},
        {"status": 401, "count": 2},
        {"kind": "raw", "status": 200, "body": "<html>oops</html>"},
    ]:
        sandbox.fault(path_prefix=PAYOUTS, **fault)
        with pytest.raises(GatewayError) as caught:
            client.get_batch(created.gateway_batch_id)
        errors.append(caught.value)
        sandbox.http.delete("/_sandbox/faults")
    tokens = list(sandbox.state.tokens)
    assert tokens
    secrets = [CLIENT_SECRET, "wrong-secret-0xBAD", *tokens]
    shown = [str(e) for e in errors] + [repr(e) for e in errors]
    shown += [repr(client), repr(wrong), repr(client._http), caplog.text]
    for text in shown:
        for secret in secrets:
            assert secret not in text


# --------------------------------------------------------------------------- Payoneer


def test_payoneer_submit_find_poll_and_cancel(sandbox: PayoutSandbox) -> None:
    client = sandbox.payoneer()
    request = request_for(
        "PO-1", ["PAYEE-1", "PAYEE-2-UNCLAIMED"], currency="JPY", amount_minor=1500
    )
    assert client.find_batch(request, None) is None
    created = client.submit_batch(request)
    assert created.gateway_batch_id == "PO-1" and created.status == "PENDING"
    assert [(i.item_id, i.gateway_item_id, i.status) for i in created.items] == [
        (1, "PO-1-1", "Pending"),
        (2, "PO-1-2", "Pending"),
    ]
    (post,) = sandbox.requests("POST", f"/v4/programs/{PROGRAM}/masspayouts")
    assert '"amount":1500,' in str(post["body"])  # a JSON number, no float on the way
    assert json.loads(str(post["body"]))["Payments"][1] == {
        "client_reference_id": "PO-1-2",
        "payee_id": "PAYEE-2-UNCLAIMED",
        "amount": 1500,
        "currency": "JPY",
        "description": "finsup payout batch batch-PO-1",
    }

    def done() -> object:
        batch = client.find_batch(request, created.gateway_batch_id)
        return batch if batch is not None and batch.status == "COMPLETED" else None

    batch = wait_until(done)
    assert [i.status for i in batch.items] == ["Transferred", "Pending Payee Approval"]
    assert client.get_batch("PO-1").status == "COMPLETED"
    assert client.get_item("PO-1-1").status == "Transferred"
    assert client.cancel_item("PO-1-2").status == "Cancelled"
    with pytest.raises(GatewayRefused, match="cannot be cancelled"):
        client.cancel_item("PO-1-1")
    with pytest.raises(GatewayRefused, match="find_batch"):
        sandbox.payoneer().get_batch("PO-1")  # a fresh client has no references for it


def test_payoneer_kwd_amount_is_exact(sandbox: PayoutSandbox) -> None:
    sandbox.payoneer().submit_batch(request_for("PO-KWD", ["P"], currency="KWD", amount_minor=1005))
    (post,) = sandbox.requests("POST", "/v4/programs")
    assert '"amount":1.005,' in str(post["body"])
    assert sandbox.state.payoneer_payments["PO-KWD-1"].amount == "1.005"


def test_payoneer_reused_reference_is_read_back(sandbox: PayoutSandbox) -> None:
    client = sandbox.payoneer()
    request = request_for("PO-DUP", ["PAYEE-1", "PAYEE-2"])
    client.submit_batch(request)
    again = sandbox.payoneer().submit_batch(request)
    assert again.read_back
    assert [i.gateway_item_id for i in again.items] == ["PO-DUP-1", "PO-DUP-2"]
    assert len(sandbox.state.payoneer_payments) == 2


def test_payoneer_dropped_create_then_retry_pays_once(sandbox: PayoutSandbox) -> None:
    sandbox.fault(kind="drop", count=1, path_prefix=f"/v4/programs/{PROGRAM}/masspayouts")
    batch = sandbox.payoneer().submit_batch(request_for("PO-DROP", ["PAYEE-1", "PAYEE-2"]))
    assert batch.read_back and len(batch.items) == 2
    posts = sandbox.requests("POST", f"/v4/programs/{PROGRAM}/masspayouts")
    assert [p["fault"] for p in posts] == ["drop", None]
    assert sorted(sandbox.state.payoneer_payments) == ["PO-DROP-1", "PO-DROP-2"]


def test_payoneer_bad_credentials_and_unavailable(sandbox: PayoutSandbox) -> None:
    wrong = PayoneerPayouts(sandbox.base_url, PAYONEER_ID, "nope-0xBAD", PROGRAM)
    with pytest.raises(GatewayRefused) as caught:
        wrong.submit_batch(request_for("PO-X", ["P"]))
    assert "nope-0xBAD" not in str(caught.value) and PAYONEER_SECRET not in repr(wrong)
    sandbox.fault(status=503, count=100, path_prefix="/v4/")
    with pytest.raises(GatewayUnavailable, match="after 4 attempts"):
        sandbox.payoneer().submit_batch(request_for("PO-Y", ["P"]))

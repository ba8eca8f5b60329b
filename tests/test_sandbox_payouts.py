"""The sandbox's PayPal Payouts and Payoneer mass payout APIs, driven over loopback HTTP.

These pin the wire shapes the clients are written against (and that a human
reads in docs/gateways.md): creates, reads, cancels, duplicates, amounts,
outcomes moving over time, and every fault the control endpoint injects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from finsup_dagster.gateways.sandbox import (
    OUTCOME_TAGS,
    PAYPAL_MAX_PAYOUT_ITEMS,
    PAYPAL_STATUS,
    create_app,
    serve_in_thread,
)
from tests.helpers.payout_sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    PAYONEER_SECRET,
    PROGRAM,
    PayoutSandbox,
    payout_sandbox,
    paypal_token,
    wait_until,
)

DELAY = 1.0  # wide enough that a loaded machine still reads each step in its window


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[PayoutSandbox]:
    with payout_sandbox(tmp_path, outcome_delay=DELAY) as running:
        yield running


def _payout(sender_batch_id: str, *items: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "sender_batch_header": {"sender_batch_id": sender_batch_id, "recipient_type": "EMAIL"},
        "items": [
            {
                "recipient_type": "EMAIL",
                "amount": {"value": value, "currency": currency},
                "receiver": receiver,
                "sender_item_id": str(n),
            }
            for n, (receiver, value, currency) in enumerate(items, start=1)
        ],
    }


def _create(sb: PayoutSandbox, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or sb.paypal_token()}"}
    return sb.http.post("/v1/payments/payouts", json=body, headers=headers)


def _get(sb: PayoutSandbox, path: str, token: str) -> httpx.Response:
    return sb.http.get(path, headers={"Authorization": f"Bearer {token}"})


# --------------------------------------------------------------------------- PayPal


def test_paypal_create_read_and_items_move_after_the_delay(sandbox: PayoutSandbox) -> None:
    token = sandbox.paypal_token()
    resp = _create(sandbox, _payout("K-1", ("ann@example.com", "10.50", "USD")), token)
    assert resp.status_code == 201, resp.text
    header = resp.json()["batch_header"]
    assert header["batch_status"] == "PENDING"
    assert header["sender_batch_header"]["sender_batch_id"] == "K-1"
    batch_id = header["payout_batch_id"]
    assert len(batch_id) == 13
    assert resp.json()["links"][0]["href"].endswith(f"/v1/payments/payouts/{batch_id}")

    body = _get(sandbox, f"/v1/payments/payouts/{batch_id}", token).json()
    assert body["batch_header"]["batch_status"] == "PENDING"
    assert body["batch_header"]["amount"] == {"currency": "USD", "value": "10.50"}
    (item,) = body["items"]
    assert item["transaction_status"] == "PENDING"
    assert item["payout_item"]["sender_item_id"] == "1"
    assert item["payout_item"]["receiver"] == "ann@example.com"
    assert item["payout_item"]["amount"] == {"value": "10.50", "currency": "USD"}

    time.sleep(DELAY)
    body = _get(sandbox, f"/v1/payments/payouts/{batch_id}", token).json()
    assert body["batch_header"]["batch_status"] == "SUCCESS"
    assert body["items"][0]["transaction_status"] == "SUCCESS"
    one = _get(sandbox, f"/v1/payments/payouts-item/{item['payout_item_id']}", token).json()
    assert one["transaction_status"] == "SUCCESS"
    assert one["payout_batch_id"] == batch_id
    assert _get(sandbox, "/v1/payments/payouts/NOPE", token).status_code == 404


def test_payouts_need_a_paypal_bearer_token(sandbox: PayoutSandbox) -> None:
    body = _payout("K-auth", ("ann@example.com", "1.00", "USD"))
    assert sandbox.http.post("/v1/payments/payouts", json=body).status_code == 401
    assert _create(sandbox, body, token=sandbox.payoneer_token()).status_code == 401
    scope = sandbox.http.post(
        "/v1/oauth2/token",
        auth=(CLIENT_ID, CLIENT_SECRET),
        data={"grant_type": "client_credentials"},
    ).json()["scope"]
    assert "https://uri.paypal.com/payments/payouts" in scope.split()


def test_duplicate_sender_batch_id_is_refused_with_a_link_to_the_original(
    sandbox: PayoutSandbox,
) -> None:
    token = sandbox.paypal_token()
    first = _create(sandbox, _payout("DUP-7", ("a@example.com", "5.00", "USD")), token)
    original = first.json()["batch_header"]["payout_batch_id"]
    again = _create(sandbox, _payout("DUP-7", ("b@example.com", "6.00", "USD")), token)
    assert again.status_code == 400
    error = again.json()
    assert error["name"] == "USER_BUSINESS_ERROR"
    assert "DUP-7" in error["message"]
    hrefs = [link["href"] for link in error["links"] if link.get("method") == "GET"]
    assert hrefs == [f"{sandbox.base_url}/v1/payments/payouts/{original}"]
    assert error["details"][0]["link"][0]["href"] == hrefs[0]
    followed = _get(sandbox, httpx.URL(hrefs[0]).path, token).json()
    assert followed["items"][0]["payout_item"]["receiver"] == "a@example.com"
    assert len(sandbox.state.paypal_batches) == 1


def test_duplicate_window_is_thirty_days(sandbox: PayoutSandbox) -> None:
    token = sandbox.paypal_token()
    _create(sandbox, _payout("OLD", ("a@example.com", "5.00", "USD")), token)
    (batch,) = sandbox.state.paypal_batches.values()
    batch.created_wall -= 31 * 24 * 3600
    assert (
        _create(sandbox, _payout("OLD", ("a@example.com", "5.00", "USD")), token).status_code == 201
    )


# Who takes an amount, by currency: PayPal only one written with exactly the currency's
# decimals, Payoneer a JSON number with no more decimals than the currency has.
BOTH, PAYONEER, NEITHER = frozenset({"paypal", "payoneer"}), frozenset({"payoneer"}), frozenset()
TAKEN_BY: dict[str, dict[str, frozenset[str]]] = {
    "JPY": {"1500": BOTH, "1500.00": PAYONEER, "1500.5": NEITHER},
    "KWD": {"1.250": BOTH, "1.25": PAYONEER, "1.2505": NEITHER},
    "USD": {"10.50": BOTH, "10.5": PAYONEER, "10": PAYONEER, "-1.00": NEITHER, "0.00": NEITHER},
    "XXX": {"1.00": NEITHER},
}


@pytest.mark.parametrize(
    ("value", "currency", "taken_by"),
    [(value, currency, who) for currency, row in TAKEN_BY.items() for value, who in row.items()],
)
def test_amounts_must_use_the_currency_exponent(
    sandbox: PayoutSandbox, value: str, currency: str, taken_by: frozenset[str]
) -> None:
    paypal_ok = "paypal" in taken_by
    resp = _create(sandbox, _payout(f"AMT-{value}-{currency}", ("a@example.com", value, currency)))
    assert resp.status_code == (201 if paypal_ok else 400), resp.text
    if not paypal_ok:
        assert resp.json()["name"] == "VALIDATION_ERROR"
        assert resp.json()["details"][0]["field"].startswith("items[0].amount")
    resp = _mass(sandbox, [_payment("A", "P", value, currency)], sandbox.payoneer_token())
    assert resp.status_code == (200 if "payoneer" in taken_by else 400), resp.text


def test_more_than_15000_items_is_400(sandbox: PayoutSandbox) -> None:
    items = [(f"r{n}@example.com", "1.00", "USD") for n in range(PAYPAL_MAX_PAYOUT_ITEMS + 1)]
    resp = _create(sandbox, _payout("BIG", *items))
    assert resp.status_code == 400
    assert "15,000" in resp.json()["details"][0]["issue"]
    assert sandbox.state.paypal_batches == {}


def _after_one_delay(tag: str) -> str:
    """The step a tag's scripted path (``OUTCOME_TAGS``) has reached one delay after sending."""
    return [key for key, delays in OUTCOME_TAGS[tag] if delays <= 1][-1]


def test_each_paypal_tag_reaches_its_status_and_the_batch_follows(sandbox: PayoutSandbox) -> None:
    token = sandbox.paypal_token()
    items = [(f"ann+{tag}@example.com", "2.00", "USD") for tag in OUTCOME_TAGS]
    batch_id = _create(sandbox, _payout("TAGS", *items), token).json()["batch_header"][
        "payout_batch_id"
    ]
    path = f"/v1/payments/payouts/{batch_id}"
    assert {i["transaction_status"] for i in _get(sandbox, path, token).json()["items"]} == {
        "PENDING"
    }
    time.sleep(DELAY / 2)
    assert _get(sandbox, path, token).json()["batch_header"]["batch_status"] == "PROCESSING"
    time.sleep(DELAY / 2)
    body = _get(sandbox, path, token).json()
    got = {i["payout_item"]["receiver"]: i["transaction_status"] for i in body["items"]}
    expected = {f"ann+{t}@example.com": PAYPAL_STATUS[_after_one_delay(t)] for t in OUTCOME_TAGS}
    assert got == expected
    assert got["ann+held-then-success@example.com"] == "ONHOLD"
    assert body["batch_header"]["batch_status"] == "PROCESSING"  # items on hold
    time.sleep(DELAY)
    body = _get(sandbox, path, token).json()
    got = {i["payout_item"]["receiver"]: i["transaction_status"] for i in body["items"]}
    assert got["ann+held-then-success@example.com"] == "SUCCESS"
    assert got["ann+held@example.com"] == "ONHOLD"


def test_all_denied_batch_is_denied_and_held_free_batch_succeeds(tmp_path: Path) -> None:
    with payout_sandbox(tmp_path, outcome_delay=0) as sb:
        token = sb.paypal_token()
        denied = _create(sb, _payout("D", ("x+denied@example.com", "1.00", "USD")), token)
        mixed = _create(
            sb,
            _payout("M", ("x+failed@example.com", "1.00", "USD"), ("y@example.com", "1.00", "USD")),
            token,
        )
        for resp, status in [(denied, "DENIED"), (mixed, "SUCCESS")]:
            batch_id = resp.json()["batch_header"]["payout_batch_id"]
            body = _get(sb, f"/v1/payments/payouts/{batch_id}", token).json()
            assert body["batch_header"]["batch_status"] == status


def test_only_unclaimed_items_can_be_cancelled(tmp_path: Path) -> None:
    with payout_sandbox(tmp_path, outcome_delay=0) as sb:
        token = sb.paypal_token()
        resp = _create(
            sb,
            _payout(
                "C", ("u+unclaimed@example.com", "3.00", "USD"), ("s@example.com", "3.00", "USD")
            ),
            token,
        )
        batch_id = resp.json()["batch_header"]["payout_batch_id"]
        items = _get(sb, f"/v1/payments/payouts/{batch_id}", token).json()["items"]
        by_receiver = {i["payout_item"]["receiver"]: i["payout_item_id"] for i in items}
        auth = {"Authorization": f"Bearer {token}"}
        refused = sb.http.post(
            f"/v1/payments/payouts-item/{by_receiver['s@example.com']}/cancel", headers=auth
        )
        assert refused.status_code == 400
        cancelled = sb.http.post(
            f"/v1/payments/payouts-item/{by_receiver['u+unclaimed@example.com']}/cancel",
            headers=auth,
        )
        assert cancelled.status_code == 200
        assert cancelled.json()["transaction_status"] == "RETURNED"
        again = sb.http.post(
            f"/v1/payments/payouts-item/{by_receiver['u+unclaimed@example.com']}/cancel",
            headers=auth,
        )
        assert again.status_code == 400


def test_status_hook_sees_each_move(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str, str]] = []
    app = create_app(
        tmp_path,
        CLIENT_ID,
        CLIENT_SECRET,
        outcome_delay=0,
        on_status_change=lambda *a: seen.append(a),
    )
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url) as http:
        token = paypal_token(http)
        auth = {"Authorization": f"Bearer {token}"}
        resp = http.post(
            "/v1/payments/payouts",
            json=_payout("H", ("h+failed@example.com", "1.00", "USD")),
            headers=auth,
        )
        batch_id = resp.json()["batch_header"]["payout_batch_id"]
        http.get(f"/v1/payments/payouts/{batch_id}", headers=auth)
        http.get(f"/v1/payments/payouts/{batch_id}", headers=auth)
    assert [(s[0], s[2], s[3]) for s in seen] == [("paypal", "PENDING", "FAILED")]


# --------------------------------------------------------------------------- Payoneer


def _mass(sb: PayoutSandbox, payments: list[dict[str, Any]], token: str) -> httpx.Response:
    return sb.http.post(
        f"/v4/programs/{PROGRAM}/masspayouts",
        content=_json_with_numbers({"Payments": payments}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def _json_with_numbers(body: dict[str, Any]) -> str:
    from decimal import Decimal

    from finsup_dagster.gateways.exact_json import dumps_exact

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: Decimal(v) if k == "amount" else convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return dumps_exact(convert(body))


def _payment(ref: str, payee: str, amount: str = "12.50", currency: str = "USD") -> dict[str, Any]:
    return {
        "client_reference_id": ref,
        "payee_id": payee,
        "amount": amount,
        "currency": currency,
        "description": "test",
    }


def test_payoneer_token_needs_its_own_credentials(sandbox: PayoutSandbox) -> None:
    form = {"grant_type": "client_credentials", "scope": "read write"}
    wrong = sandbox.http.post("/api/v2/oauth2/token", auth=("payoneer-test-client", "x"), data=form)
    assert wrong.status_code == 401
    assert PAYONEER_SECRET not in wrong.text
    body = sandbox.http.post(
        "/api/v2/oauth2/token", auth=("payoneer-test-client", PAYONEER_SECRET), data=form
    ).json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    status = sandbox.http.get(
        f"/v4/programs/{PROGRAM}/payouts/x/status",
        headers={"Authorization": f"Bearer {sandbox.paypal_token()}"},
    )
    assert status.status_code == 401  # a PayPal token is not a Payoneer one


def test_payoneer_mass_payout_status_cancel_and_duplicates(sandbox: PayoutSandbox) -> None:
    token = sandbox.payoneer_token()
    auth = {"Authorization": f"Bearer {token}"}
    resp = _mass(
        sandbox,
        [_payment("K-1", "PAYEE-1"), _payment("K-2", "PAYEE-2", "1500", "JPY")],
        token,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"] == "Payments Created"
    status = sandbox.http.get(f"/v4/programs/{PROGRAM}/payouts/K-2/status", headers=auth)
    assert status.json()["result"]["status"] == "Pending"
    assert '"amount":1500,' in status.text  # a JSON number, digit for digit
    cancelled = sandbox.http.post(f"/v4/programs/{PROGRAM}/payouts/K-2/cancel", headers=auth)
    assert cancelled.json()["result"]["status"] == "Cancelled"

    dup = _mass(sandbox, [_payment("K-9", "PAYEE-9"), _payment("K-1", "PAYEE-1")], token)
    assert dup.status_code == 400
    assert dup.json()["error_details"]["code"] == 10302
    assert "K-1" in dup.json()["error_description"]
    missing = sandbox.http.get(f"/v4/programs/{PROGRAM}/payouts/K-9/status", headers=auth)
    assert missing.status_code == 404  # nothing of a refused request is created

    time.sleep(DELAY)
    status = sandbox.http.get(f"/v4/programs/{PROGRAM}/payouts/K-1/status", headers=auth)
    assert status.json()["result"]["status"] == "Transferred"
    late = sandbox.http.post(f"/v4/programs/{PROGRAM}/payouts/K-1/cancel", headers=auth)
    assert late.status_code == 400
    other = sandbox.http.get("/v4/programs/999/payouts/K-1/status", headers=auth)
    assert other.status_code == 404


def test_payoneer_suffixes_script_outcomes(tmp_path: Path) -> None:
    with payout_sandbox(tmp_path, outcome_delay=0) as sb:
        token = sb.payoneer_token()
        suffixes = {
            "": "Transferred",
            "-FAILED": "Failed",
            "-RETURNED": "Returned",
            "-BLOCKED": "Blocked",
            "-UNCLAIMED": "Pending Payee Approval",
            "-HELD-THEN-SUCCESS": "Transferred",
            "-DENIED": "Declined",
        }
        _mass(sb, [_payment(f"R{n}", f"P{n}{s}") for n, s in enumerate(suffixes)], token)
        auth = {"Authorization": f"Bearer {token}"}
        got = [
            sb.http.get(f"/v4/programs/{PROGRAM}/payouts/R{n}/status", headers=auth).json()[
                "result"
            ]["status"]
            for n in range(len(suffixes))
        ]
        assert got == list(suffixes.values())


# --------------------------------------------------------------------------- faults and controls


def test_requests_are_recorded_with_authorization_redacted(sandbox: PayoutSandbox) -> None:
    token = sandbox.paypal_token()
    _create(sandbox, _payout("REC", ("a@example.com", "1.00", "USD")), token)
    entries = sandbox.requests()
    assert [(e["method"], e["path"]) for e in entries] == [
        ("POST", "/v1/oauth2/token"),
        ("POST", "/v1/payments/payouts"),
    ]
    assert all(e["headers"]["authorization"] == "<redacted>" for e in entries)
    assert token not in str(entries) and CLIENT_SECRET not in str(entries)
    assert '"sender_batch_id":"REC"' in entries[1]["body"].replace(" ", "")
    assert sandbox.http.delete("/_sandbox/requests").status_code == 204
    assert sandbox.requests() == []


def test_drop_fault_creates_the_batch_then_cuts_the_connection(sandbox: PayoutSandbox) -> None:
    token = sandbox.paypal_token()
    sandbox.fault(kind="drop", path_prefix="/v1/payments/payouts")
    with pytest.raises(httpx.TransportError):
        _create(sandbox, _payout("DROP", ("a@example.com", "1.00", "USD")), token)
    assert len(sandbox.state.paypal_batches) == 1
    assert sandbox.requests("POST", "/v1/payments")[0]["fault"] == "drop"


def test_slow_fault_outlasts_a_client_timeout(sandbox: PayoutSandbox) -> None:
    token = sandbox.paypal_token()
    sandbox.fault(kind="slow", seconds=1.0, path_prefix="/v1/payments")
    with pytest.raises(httpx.ReadTimeout):
        sandbox.http.post(
            "/v1/payments/payouts",
            json=_payout("SLOW", ("a@example.com", "1.00", "USD")),
            headers={"Authorization": f"Bearer {token}"},
            timeout=0.2,
        )
    # The server still does the work once the wait is over.
    wait_until(lambda: len(sandbox.state.paypal_batches) == 1)


def test_status_fault_with_retry_after_and_bad_fault_bodies(sandbox: PayoutSandbox) -> None:
    sandbox.fault(status=429, retry_after=3, path_prefix="/v1/payments", count=2)
    resp = _create(sandbox, _payout("RL", ("a@example.com", "1.00", "USD")))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    assert sandbox.http.get("/_sandbox/faults").json()["faults"][0]["count"] == 1
    for bad in [
        {"kind": "nope"},
        {"kind": "slow"},
        {"kind": "slow", "seconds": 0},
        {"status": 418},
        {"kind": "raw", "status": 99},
    ]:
        assert sandbox.http.post("/_sandbox/faults", json=bad).status_code == 400, bad
    assert sandbox.http.post("/_sandbox/reset").status_code == 204
    assert sandbox.http.get("/_sandbox/faults").json() == {"faults": []}
    assert sandbox.requests() == []


def test_cli_sets_lists_and_clears_faults(sandbox: PayoutSandbox) -> None:
    from typer.testing import CliRunner

    import finsup_dagster.cli.sandbox  # noqa: F401 - registers `finsup sandbox ...`
    from finsup_dagster.cli.common import app

    runner = CliRunner()
    url = ["--url", sandbox.base_url]
    result = runner.invoke(
        app, ["sandbox", "fault", "status", "--status", "503", "--count", "2", *url]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sandbox", "fault", "slow", "--seconds", "1.5", *url])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sandbox", "fault", "drop", "--path-prefix", "/v4/", *url])
    assert result.exit_code == 0, result.output
    kinds = [f["kind"] for f in sandbox.http.get("/_sandbox/faults").json()["faults"]]
    assert kinds == ["status", "slow", "drop"]
    assert runner.invoke(app, ["sandbox", "fault", "slow", *url]).exit_code == 2
    bad = runner.invoke(app, ["sandbox", "fault", "status", "--status", "418", *url])
    assert bad.exit_code == 2 and "status must be one of" in bad.output
    assert runner.invoke(app, ["sandbox", "reset", *url]).exit_code == 0
    assert sandbox.http.get("/_sandbox/faults").json() == {"faults": []}
    result = runner.invoke(app, ["sandbox", "requests", *url])
    assert result.exit_code == 0 and '"requests": []' in result.output

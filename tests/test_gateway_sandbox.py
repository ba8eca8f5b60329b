"""The PayPal reporting client against the gateway sandbox, over real loopback HTTP.

No mocks: the sandbox is a real HTTP server in a thread, so retries, token
refresh, pagination and the 31-day windows are exercised exactly as they
would be against PayPal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from finsup_dagster.gateways.paypal_reporting import (
    GatewayError,
    PayPalCredentials,
    fetch_transaction_pages,
    split_windows,
)
from finsup_dagster.gateways.sandbox import (
    append_transactions,
    create_app,
    serve_in_thread,
    transaction_info,
)
from finsup_dagster.ledger.errors import InvalidInput, LedgerError
from tests.helpers.payout_sandbox import paypal_token

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret-do-not-print"
DAY = datetime(2026, 11, 20, tzinfo=UTC)


@dataclass
class Sandbox:
    base_url: str
    data_dir: Path
    http: httpx.Client

    @property
    def creds(self) -> PayPalCredentials:
        return PayPalCredentials(self.base_url, CLIENT_ID, CLIENT_SECRET)

    def token(self) -> str:
        return paypal_token(self.http, CLIENT_ID, CLIENT_SECRET)

    def search(self, token: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return self.http.get("/v1/reporting/transactions", params=params, headers=headers)

    def fault(self, status: int, count: int, path_prefix: str = "/v1/reporting") -> None:
        resp = self.http.post(
            "/_sandbox/faults", json={"status": status, "count": count, "path_prefix": path_prefix}
        )
        assert resp.status_code == 201, resp.text

    def fetch(self, start: datetime, end: datetime, **kwargs: Any) -> list[tuple[str, bytes]]:
        kwargs.setdefault("backoff_seconds", 0.0)
        return list(fetch_transaction_pages(self.creds, start, end, **kwargs))


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    data_dir = tmp_path / "sandbox"
    with (
        serve_in_thread(create_app(data_dir, CLIENT_ID, CLIENT_SECRET)) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as http,
    ):
        yield Sandbox(base_url, data_dir, http)


def _ids(pages: list[tuple[str, bytes]]) -> list[str]:
    return [
        d["transaction_info"]["transaction_id"]
        for _, body in pages
        for d in json.loads(body)["transaction_details"]
    ]


def _sales(n: int, first: datetime, step: timedelta, prefix: str = "TX") -> list[dict[str, Any]]:
    return [
        transaction_info(
            transaction_id=f"{prefix}{i:015d}", at=first + i * step, amount_minor=1000 + i
        )
        for i in range(n)
    ]


# --------------------------------------------------------------------------- server basics


def test_health_and_clean_shutdown(tmp_path: Path) -> None:
    with serve_in_thread(create_app(tmp_path, CLIENT_ID, CLIENT_SECRET)) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{base_url}/_sandbox/health").json() == {"status": "ok"}
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base_url}/_sandbox/health", timeout=1)


def test_token_requires_the_right_client_credentials(sandbox: Sandbox) -> None:
    form = {"grant_type": "client_credentials"}
    for auth in [(CLIENT_ID, "wrong"), ("someone-else", CLIENT_SECRET)]:
        resp = sandbox.http.post("/v1/oauth2/token", auth=auth, data=form)
        assert resp.status_code == 401
        assert resp.json()["error"] == "invalid_client"
        assert resp.json()["error_description"]
    assert sandbox.http.post("/v1/oauth2/token", data=form).status_code == 401
    resp = sandbox.http.post(
        "/v1/oauth2/token", auth=(CLIENT_ID, CLIENT_SECRET), data={"grant_type": "password"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"

    body = sandbox.http.post("/v1/oauth2/token", auth=(CLIENT_ID, CLIENT_SECRET), data=form).json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"] != sandbox.token()  # each request gets a fresh token


def test_search_requires_a_live_bearer_token(sandbox: Sandbox) -> None:
    params = {"start_date": "2026-11-20T00:00:00Z", "end_date": "2026-11-21T00:00:00Z"}
    assert sandbox.http.get("/v1/reporting/transactions", params=params).status_code == 401
    resp = sandbox.search(token="not-a-token", **params)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_token"
    token = sandbox.token()
    assert sandbox.search(token=token, **params).status_code == 200
    assert sandbox.http.delete("/_sandbox/tokens").status_code == 204
    assert sandbox.search(token=token, **params).status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"end_date": "2026-11-21T00:00:00Z"}, "start_date"),
        ({"start_date": "2026-11-20T00:00:00Z"}, "end_date"),
        ({"start_date": "2026-11-20T00:00:00", "end_date": "2026-11-21T00:00:00Z"}, "start_date"),
        ({"start_date": "20th November", "end_date": "2026-11-21T00:00:00Z"}, "start_date"),
        ({"start_date": "2026-11-20T00:00:00Z", "end_date": "2026-12-21T00:00:01Z"}, "end_date"),
        ({"start_date": "2026-11-21T00:00:00Z", "end_date": "2026-11-20T00:00:00Z"}, "end_date"),
        ({"page_size": "501"}, "page_size"),
        ({"page_size": "0"}, "page_size"),
        ({"page": "0"}, "page"),
        ({"page": "two"}, "page"),
        ({"transaction_status": "X"}, "transaction_status"),
    ],
)
def test_bad_search_parameters_are_400_invalid_request(
    sandbox: Sandbox, params: dict[str, str], field: str
) -> None:
    if "start_date" not in params and "end_date" not in params:
        params = {"start_date": "2026-11-20T00:00:00Z", "end_date": "2026-11-21T00:00:00Z"} | params
    resp = sandbox.search(**params)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["name"] == "INVALID_REQUEST"
    assert body["details"][0]["field"] == field


def test_exactly_31_days_is_allowed(sandbox: Sandbox) -> None:
    resp = sandbox.search(start_date="2026-11-01T00:00:00+0000", end_date="2026-12-02T00:00:00Z")
    assert resp.status_code == 200, resp.text
    assert resp.json()["total_pages"] == 0


# --------------------------------------------------------------------------- data and filtering


def test_transaction_info_is_shaped_like_paypal() -> None:
    at = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
    sale = transaction_info(at=at, amount_minor=1050, currency="usd", transaction_id="A1")
    assert sale["transaction_initiation_date"] == "2026-11-20T09:15:00+0000"
    assert sale["transaction_event_code"] == "T0006"
    assert sale["transaction_amount"] == {"currency_code": "USD", "value": "10.50"}
    assert sale["fee_amount"] == {"currency_code": "USD", "value": "-0.30"}
    assert sale["transaction_status"] == "S"

    refund = transaction_info(
        at=at, amount_minor=1500, currency="JPY", event_code="T1107", reference_id="A1"
    )
    assert refund["transaction_amount"] == {"currency_code": "JPY", "value": "-1500"}
    assert "fee_amount" not in refund
    assert refund["paypal_reference_id"] == "A1"
    assert len(refund["transaction_id"]) == 17

    with pytest.raises(ValueError):
        transaction_info(at=at.replace(tzinfo=None), amount_minor=1)
    with pytest.raises(ValueError):
        transaction_info(at=at, amount_minor=1, status="X")


def test_date_filter_is_half_open_and_reads_appended_data(sandbox: Sandbox) -> None:
    local_tz = transaction_info(transaction_id="LOCAL_TZ", at=DAY, amount_minor=1)
    local_tz["transaction_initiation_date"] = "2026-11-19T17:00:00-0700"  # = 00:00Z on the 20th
    append_transactions(
        sandbox.data_dir,
        [
            transaction_info(
                transaction_id="BEFORE", at=DAY - timedelta(seconds=1), amount_minor=1
            ),
            transaction_info(transaction_id="AT_START", at=DAY, amount_minor=1),
            local_tz,
            transaction_info(transaction_id="AT_END", at=DAY + timedelta(days=1), amount_minor=1),
        ],
    )
    params = {"start_date": "2026-11-20T00:00:00Z", "end_date": "2026-11-21T00:00:00+00:00"}
    body = sandbox.search(**params).json()
    ids = [d["transaction_info"]["transaction_id"] for d in body["transaction_details"]]
    assert ids == ["AT_START", "LOCAL_TZ"]  # sorted by date, then id
    assert body["account_number"]
    assert body["start_date"] == "2026-11-20T00:00:00+0000"
    assert body["end_date"] == "2026-11-21T00:00:00+0000"
    assert body["last_refreshed_datetime"]

    append_transactions(
        sandbox.data_dir,
        [transaction_info(transaction_id="LATE", at=DAY + timedelta(hours=5), amount_minor=1)],
    )
    body = sandbox.search(**params).json()
    assert body["total_items"] == 3
    pending_only = sandbox.search(transaction_status="P", **params).json()
    assert pending_only["total_items"] == 0


def test_pages_and_links(sandbox: Sandbox) -> None:
    append_transactions(sandbox.data_dir, _sales(250, DAY, timedelta(minutes=1)))
    params = {"start_date": "2026-11-20T00:00:00Z", "end_date": "2026-11-21T00:00:00Z"}
    body = sandbox.search(page_size="100", page="2", **params).json()
    assert (body["page"], body["total_items"], body["total_pages"]) == (2, 250, 3)
    assert len(body["transaction_details"]) == 100
    rels = {link["rel"]: link["href"] for link in body["links"]}
    assert set(rels) == {"self", "first", "next", "previous", "last"}
    assert "page=3" in rels["next"] and "page=3" in rels["last"]
    default_size = sandbox.search(**params).json()
    assert len(default_size["transaction_details"]) == 100  # PayPal's default page_size
    beyond = sandbox.search(page="9", **params).json()
    assert beyond["transaction_details"] == []


# --------------------------------------------------------------------------- the client


def test_fetch_walks_every_page_once(sandbox: Sandbox) -> None:
    append_transactions(sandbox.data_dir, _sales(1200, DAY, timedelta(seconds=30)))
    pages = sandbox.fetch(DAY, DAY + timedelta(days=1))
    assert [label for label, _ in pages] == [
        f"20261120T000000Z_20261121T000000Z_p{n}" for n in (1, 2, 3)
    ]
    assert [len(json.loads(body)["transaction_details"]) for _, body in pages] == [500, 500, 200]
    ids = _ids(pages)
    assert len(ids) == 1200 and set(ids) == {f"TX{i:015d}" for i in range(1200)}


def test_fetch_yields_bodies_exactly_as_received(sandbox: Sandbox) -> None:
    append_transactions(sandbox.data_dir, _sales(25, DAY, timedelta(hours=1)))
    received: list[bytes] = []

    def record(response: httpx.Response) -> None:
        if response.url.path == "/v1/reporting/transactions":
            received.append(response.read())

    with httpx.Client(timeout=5, event_hooks={"response": [record]}) as client:
        pages = sandbox.fetch(DAY, DAY + timedelta(days=2), page_size=10, client=client)
        assert not client.is_closed  # a caller's client is the caller's to close
    assert [label[-2:] for label, _ in pages] == ["p1", "p2", "p3"]
    assert [body for _, body in pages] == received


def test_fetch_splits_ranges_longer_than_31_days(sandbox: Sandbox) -> None:
    start = datetime(2026, 9, 1, tzinfo=UTC)
    end = datetime(2026, 11, 10, tzinfo=UTC)  # 70 days: 31 + 31 + 8
    append_transactions(sandbox.data_dir, _sales(70 * 4, start, timedelta(hours=6)))
    pages = sandbox.fetch(start, end, page_size=100)
    windows = sorted({label.rsplit("_p", 1)[0] for label, _ in pages})
    assert windows == [
        "20260901T000000Z_20261002T000000Z",
        "20261002T000000Z_20261102T000000Z",
        "20261102T000000Z_20261110T000000Z",
    ]
    ids = _ids(pages)
    assert len(ids) == len(set(ids)) == 280
    assert split_windows(start, end)[0] == (start, start + timedelta(days=31))


def test_empty_window_still_yields_its_first_page(sandbox: Sandbox) -> None:
    pages = sandbox.fetch(DAY, DAY + timedelta(days=40))
    assert [label for label, _ in pages] == [
        "20261120T000000Z_20261221T000000Z_p1",
        "20261221T000000Z_20261230T000000Z_p1",
    ]
    assert all(json.loads(body)["total_items"] == 0 for _, body in pages)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_are_retried(sandbox: Sandbox, status: int) -> None:
    append_transactions(sandbox.data_dir, _sales(20, DAY, timedelta(minutes=5)))
    sandbox.fault(status, 3)  # the 4th attempt gets through
    pages = sandbox.fetch(DAY, DAY + timedelta(days=1), page_size=10)
    assert len(_ids(pages)) == 20
    assert sandbox.http.get("/_sandbox/faults").json() == {"faults": []}


def test_token_request_is_retried_too(sandbox: Sandbox) -> None:
    sandbox.fault(503, 2, path_prefix="/v1/oauth2/token")
    assert len(sandbox.fetch(DAY, DAY + timedelta(days=1))) == 1


def test_persistent_failure_is_one_line_gateway_error(sandbox: Sandbox) -> None:
    append_transactions(sandbox.data_dir, _sales(20, DAY, timedelta(minutes=5)))
    pages = fetch_transaction_pages(
        sandbox.creds, DAY, DAY + timedelta(days=1), page_size=10, backoff_seconds=0.0
    )
    label, _ = next(pages)
    assert label.endswith("_p1")
    sandbox.fault(500, 100)
    with pytest.raises(GatewayError) as caught:
        next(pages)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "PayPal reporting: 500 after 4 attempts on page 2 of "
        "2026-11-20T00:00:00Z/2026-11-21T00:00:00Z"
    )
    assert isinstance(caught.value, LedgerError)
    faults = sandbox.http.get("/_sandbox/faults").json()["faults"]
    assert faults[0]["count"] == 96  # exactly max_attempts requests were made
    assert sandbox.http.delete("/_sandbox/faults").status_code == 204
    assert sandbox.http.get("/_sandbox/faults").json() == {"faults": []}


def test_expired_token_is_refreshed_once(sandbox: Sandbox) -> None:
    append_transactions(sandbox.data_dir, _sales(30, DAY, timedelta(minutes=5)))
    pages = fetch_transaction_pages(
        sandbox.creds, DAY, DAY + timedelta(days=1), page_size=10, backoff_seconds=0.0
    )
    first = [next(pages)]
    assert sandbox.http.get("/_sandbox/tokens").json()["issued"] == 1
    sandbox.http.delete("/_sandbox/tokens")  # the token "expires" mid-fetch
    rest = list(pages)
    assert len(_ids(first + rest)) == 30
    assert sandbox.http.get("/_sandbox/tokens").json()["issued"] == 2


def test_401_after_a_new_token_gives_up(sandbox: Sandbox) -> None:
    sandbox.fault(401, 2)
    with pytest.raises(GatewayError, match=r"^PayPal reporting: 401 invalid_token: .*new token$"):
        sandbox.fetch(DAY, DAY + timedelta(days=1))


def test_bad_credentials_never_echo_the_secret(sandbox: Sandbox) -> None:
    creds = PayPalCredentials(sandbox.base_url, CLIENT_ID, "wrong-secret-value")
    with pytest.raises(GatewayError) as caught:
        list(fetch_transaction_pages(creds, DAY, DAY + timedelta(days=1), backoff_seconds=0.0))
    message = str(caught.value)
    assert message.startswith("PayPal reporting: 401 invalid_client")
    assert "client id and secret" in message
    assert "wrong-secret-value" not in message and "\n" not in message
    assert "wrong-secret-value" not in repr(creds)


def test_connection_errors_are_retried_then_reported(tmp_path: Path) -> None:
    with serve_in_thread(create_app(tmp_path, CLIENT_ID, CLIENT_SECRET)) as base_url:
        pass  # the port is now closed
    creds = PayPalCredentials(base_url, CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(GatewayError) as caught:
        list(fetch_transaction_pages(creds, DAY, DAY + timedelta(days=1), backoff_seconds=0.0))
    assert str(caught.value) == (
        "PayPal reporting: connection failed (ConnectError) after 4 attempts on the token request"
    )


@pytest.mark.parametrize(
    ("start", "end", "kwargs"),
    [
        (DAY.replace(tzinfo=None), DAY + timedelta(days=1), {}),
        (DAY, DAY, {}),
        (DAY + timedelta(microseconds=5), DAY + timedelta(days=1), {}),
        (DAY, DAY + timedelta(days=1), {"page_size": 501}),
        (DAY, DAY + timedelta(days=1), {"max_attempts": 0}),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    start: datetime, end: datetime, kwargs: dict[str, Any]
) -> None:
    creds = PayPalCredentials("http://127.0.0.1:9", CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(InvalidInput):
        list(fetch_transaction_pages(creds, start, end, **kwargs))


def test_cli_command_is_registered() -> None:
    from typer.testing import CliRunner

    import finsup_dagster.cli.sandbox  # noqa: F401 - registers `finsup sandbox ...`
    from finsup_dagster.cli.common import app

    result = CliRunner().invoke(app, ["sandbox", "serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--data-dir", "--outcome-delay"):
        assert option in result.output
    result = CliRunner().invoke(app, ["sandbox", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("serve", "fault", "requests", "reset"):
        assert command in result.output

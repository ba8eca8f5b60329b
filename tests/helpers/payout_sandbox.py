"""The gateway sandbox serving payouts in a thread, and what tests ask of it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from finsup_dagster.gateways.http_client import RetryPolicy
from finsup_dagster.gateways.payoneer import PayoneerPayouts
from finsup_dagster.gateways.payouts import PayoutLine, PayoutRequest
from finsup_dagster.gateways.paypal_payouts import PayPalPayouts
from finsup_dagster.gateways.sandbox import (
    SANDBOX_PAYONEER_PROGRAM_ID,
    SandboxState,
    create_app,
    serve_in_thread,
)
from finsup_dagster.resources import LedgerResource
from finsup_dagster.resources.gateways import (
    BankOutboxResource,
    PayoneerResource,
    PayPalPayoutsResource,
)

CLIENT_ID = "payout-test-client"
CLIENT_SECRET = "payout-secret-never-shown-0x5EC"
PAYONEER_ID = "payoneer-test-client"
PAYONEER_SECRET = "payoneer-secret-never-shown-0x5EC"
PROGRAM = SANDBOX_PAYONEER_PROGRAM_ID
# Tiny waits: the retry tests take milliseconds, not seconds.
FAST_RETRY = RetryPolicy(
    attempts=4, total_seconds=5.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.01
)


def bearer_token(http: httpx.Client, path: str, auth: tuple[str, str], **form: str) -> str:
    """A token from the sandbox's OAuth endpoint at ``path`` (asserting it was issued)."""
    resp = http.post(path, auth=auth, data=form)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def paypal_token(
    http: httpx.Client, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET
) -> str:
    """A PayPal token for ``client_id``, the way the PayPal clients ask for one."""
    auth = (client_id, client_secret)
    return bearer_token(http, "/v1/oauth2/token", auth, grant_type="client_credentials")


@dataclass
class PayoutSandbox:
    base_url: str
    http: httpx.Client
    state: SandboxState

    def fault(self, **body: Any) -> None:
        resp = self.http.post("/_sandbox/faults", json=body)
        assert resp.status_code == 201, resp.text

    def requests(self, method: str | None = None, prefix: str = "/") -> list[dict[str, Any]]:
        entries = self.http.get("/_sandbox/requests").json()["requests"]
        return [
            e
            for e in entries
            if (method is None or e["method"] == method) and e["path"].startswith(prefix)
        ]

    def paypal_token(self) -> str:
        return paypal_token(self.http)

    def payoneer_token(self) -> str:
        return bearer_token(
            self.http,
            "/api/v2/oauth2/token",
            (PAYONEER_ID, PAYONEER_SECRET),
            grant_type="client_credentials",
            scope="read write",
        )

    def paypal(self, **kwargs: Any) -> PayPalPayouts:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("timeout", 5.0)
        return PayPalPayouts(self.base_url, CLIENT_ID, CLIENT_SECRET, **kwargs)

    def payoneer(self, **kwargs: Any) -> PayoneerPayouts:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("timeout", 5.0)
        return PayoneerPayouts(self.base_url, PAYONEER_ID, PAYONEER_SECRET, PROGRAM, **kwargs)


@contextmanager
def payout_sandbox(tmp_path: Path, outcome_delay: float = 0.0) -> Iterator[PayoutSandbox]:
    app = create_app(
        tmp_path / "sandbox",
        CLIENT_ID,
        CLIENT_SECRET,
        outcome_delay=outcome_delay,
        payoneer_client_id=PAYONEER_ID,
        payoneer_client_secret=PAYONEER_SECRET,
    )
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:
        yield PayoutSandbox(base_url, http, app.state.sandbox)


def request_for(
    key: str, receivers: list[str], *, currency: str = "USD", amount_minor: int = 1050
) -> PayoutRequest:
    lines = tuple(
        PayoutLine(item_id=n + 1, receiver=r, amount_minor=amount_minor, currency=currency)
        for n, r in enumerate(receivers)
    )
    return PayoutRequest(
        batch_id=f"batch-{key}", idempotency_key=key, currency=currency, lines=lines
    )


def wait_until(check: Any, timeout: float = 5.0) -> Any:
    """Polls ``check()`` until it returns something truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(0.02)


def submission_resources(
    sandbox: PayoutSandbox,
    ledger: LedgerResource,
    outbox: Path,
    *,
    timeout: float = 5.0,
    retry_attempts: int = 4,
    retry_seconds: float = 5.0,
) -> dict[str, Any]:
    """The submit job's resources: the books, and every gateway pointing at the sandbox
    (bank files into ``outbox``)."""
    limits: dict[str, Any] = {
        "timeout_seconds": timeout,
        "retry_attempts": retry_attempts,
        "retry_total_seconds": retry_seconds,
    }
    return {
        "ledger": ledger,
        "paypal_payouts": PayPalPayoutsResource(
            base_url=sandbox.base_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            **limits,
        ),
        "payoneer": PayoneerResource(
            base_url=sandbox.base_url,
            client_id=PAYONEER_ID,
            client_secret=PAYONEER_SECRET,
            program_id=PROGRAM,
            **limits,
        ),
        "bank_outbox": BankOutboxResource(
            outbox_dir=str(outbox),
            debtor_name="finsup test",
            debtor_iban="GB82WEST12345698765432",
            debtor_bic="WESTGB2L",
        ),
    }

"""The webhook receiver and the webhook-sending sandbox, served over real sockets for tests."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster import submission
from finsup_dagster.gateways.sandbox import create_app as sandbox_app
from finsup_dagster.gateways.sandbox import serve_in_thread as serve_sandbox
from finsup_dagster.gateways.sandbox.webhooks import WebhookConfig, WebhookSender
from finsup_dagster.gateways.webhook_signing import signed_headers
from finsup_dagster.ledger import db
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.schema import gateway_events, payout_items, transaction_log
from finsup_dagster.resources import LedgerResource
from finsup_dagster.resources.gateways import payout_gateway
from finsup_dagster.web import WebhookSettings, create_app
from finsup_dagster.web.serving import serve_in_thread
from tests.helpers.payout_sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    PAYONEER_ID,
    PAYONEER_SECRET,
    PayoutSandbox,
    submission_resources,
    wait_until,
)
from tests.helpers.payouts import approve, approver, beneficiary, earning, sale

PAYPAL_SECRET = "whsec-paypal-never-shown-0x5EC"
PAYONEER_WEBHOOK_SECRET = "whsec-payoneer-never-shown-0x5EC"
WEBHOOK_ID = "WHTEST0000000000000000001"
SECRETS = {"paypal": PAYPAL_SECRET, "payoneer": PAYONEER_WEBHOOK_SECRET}
POLICY = BatchPolicy(min_item={"*": "1"}, dual_approval_over={"*": "1000000"})
# Tiny waits: deliveries retried in milliseconds.
FAST = WebhookConfig(urls={}, tick=0.02, retry_initial=0.05, retry_max=0.2, max_attempts=5)


def settings(**overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {"secrets": SECRETS, "max_bytes": 4096, "max_age_seconds": 300}
    return WebhookSettings(**(values | overrides))


@contextmanager
def receiver(
    engine: Engine, config: WebhookSettings | None = None, *, port: int = 0, **kw: Any
) -> Iterator[str]:
    """The finsup web app over ``engine``, served in a thread; yields its base URL."""
    app = create_app(engine, config or settings(), **kw)
    with serve_in_thread(app, port=port) as url:
        yield url


def post_signed(
    url: str,
    event: dict[str, Any] | bytes,
    secret: str = PAYPAL_SECRET,
    *,
    at: float | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    signed = signed_headers(secret, int(time.time() if at is None else at), body)
    sent = {"Content-Type": "application/json", **signed, **(headers or {})}
    return httpx.post(url, content=body, headers=sent, timeout=10)


def paypal_item_event(
    item_id: int | str,
    status: str = "SUCCESS",
    event_type: str = "PAYMENT.PAYOUTS-ITEM.SUCCEEDED",
    *,
    gateway_item_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "transaction_status": status,
        "payout_item": {"sender_item_id": str(item_id), "receiver": "ann@example.com"},
    }
    if gateway_item_id is not None:
        resource["payout_item_id"] = gateway_item_id
    return {
        "id": event_id or f"WH-{uuid.uuid4().hex}",
        "event_type": event_type,
        "resource_type": "payouts_item",
        "resource": resource,
    }


def events(engine: Engine) -> list[Any]:
    """The webhooks kept (not the answers to our own calls, which carry no headers)."""
    with db.read(engine) as conn:
        return list(
            conn.execute(
                sa.select(gateway_events)
                .where(gateway_events.c.headers.is_not(None))
                .order_by(gateway_events.c.id)
            )
        )


def items(engine: Engine) -> list[Any]:
    with db.read(engine) as conn:
        return list(conn.execute(sa.select(payout_items).order_by(payout_items.c.id)))


def log_actions(engine: Engine) -> list[str]:
    with db.read(engine) as conn:
        return list(
            conn.execute(sa.select(transaction_log.c.action).order_by(transaction_log.c.seq))
            .scalars()
            .all()
        )


def approved(engine: Engine, method: str, destination: str, amount: str = "10.00") -> str:
    """One approved batch of ``method`` paying ``destination`` ``amount`` USD."""
    funding = sale(engine, f"S-{uuid.uuid4().hex[:8]}", "1000.00")
    who = f"b-{uuid.uuid4().hex[:8]}"
    beneficiary(engine, who, payout_method=method, destination=destination, country="DE")
    earning(engine, f"E-{who}", who, amount, funding)
    [batch] = build_batches(engine, POLICY, "maker").batches
    checker = approver(engine, f"checker-{who}", 10**9)
    approve(engine, checker, batch["batch_id"])
    return str(batch["batch_id"])


def submit(engine: Engine, sandbox: PayoutSandbox, ledger_url: str, tmp: Path, batch: str) -> Any:
    ledger = LedgerResource(url=ledger_url, home=str(tmp))
    res = submission_resources(sandbox, ledger, tmp / "outbox")

    def gateway_for(method: str) -> Any:
        return payout_gateway(method, paypal=res["paypal_payouts"], payoneer=res["payoneer"])

    return submission.submit(engine, gateway_for, batch, 1, "test")


@dataclass
class SendingSandbox(PayoutSandbox):
    sender: WebhookSender | None = None

    def webhooks(self) -> list[dict[str, Any]]:
        resp = self.http.get("/_sandbox/webhooks")
        assert resp.status_code == 200, resp.text
        events: list[dict[str, Any]] = resp.json()["events"]
        return events


@contextmanager
def sending_sandbox(
    tmp_path: Path, urls: dict[str, str], config: WebhookConfig = FAST, outcome_delay: float = 0.0
) -> Iterator[SendingSandbox]:
    """The gateway sandbox, posting its webhooks to ``urls`` (provider -> URL)."""
    app = sandbox_app(
        tmp_path / "sandbox",
        CLIENT_ID,
        CLIENT_SECRET,
        outcome_delay=outcome_delay,
        payoneer_client_id=PAYONEER_ID,
        payoneer_client_secret=PAYONEER_SECRET,
        webhook_urls=urls,
        webhook_secrets=SECRETS,
        paypal_webhook_id=WEBHOOK_ID,
        webhook_config=config,
    )
    state = app.state.sandbox
    try:
        with serve_sandbox(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:
            yield SendingSandbox(base_url, http, state, state.webhooks)
    finally:
        if state.webhooks is not None:
            state.webhooks.stop()


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    """``payout_sandbox.wait_until`` with the longer wait webhook deliveries need."""
    return wait_until(check, timeout)


def free_port() -> int:
    """A loopback port free now, for a receiver the sandbox must know before it starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

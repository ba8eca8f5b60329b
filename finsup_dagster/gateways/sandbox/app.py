"""The sandbox app: each gateway's routes behind the fault middleware, plus ``/_sandbox``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware

from finsup_dagster import settings
from finsup_dagster.gateways.sandbox.faults import FaultMiddleware, control_routes
from finsup_dagster.gateways.sandbox.payoneer import payoneer_routes
from finsup_dagster.gateways.sandbox.paypal_common import oauth_routes
from finsup_dagster.gateways.sandbox.paypal_payouts import payouts_routes
from finsup_dagster.gateways.sandbox.paypal_reporting import reporting_routes
from finsup_dagster.gateways.sandbox.state import SandboxState, StatusHook
from finsup_dagster.gateways.sandbox.webhooks import WebhookConfig, WebhookSender, webhook_routes

DEFAULT_OUTCOME_DELAY = 2.0
SANDBOX_PAYONEER_PROGRAM_ID = settings.SANDBOX_PAYONEER_PROGRAM_ID


def create_app(
    data_dir: Path,
    client_id: str,
    client_secret: str,
    *,
    token_ttl_seconds: int = 3600,
    outcome_delay: float = DEFAULT_OUTCOME_DELAY,
    payoneer_client_id: str | None = None,
    payoneer_client_secret: str | None = None,
    payoneer_program_id: str = SANDBOX_PAYONEER_PROGRAM_ID,
    on_status_change: StatusHook | None = None,
    webhook_urls: Mapping[str, str] | None = None,
    webhook_secrets: Mapping[str, str] | None = None,
    paypal_webhook_id: str = settings.SANDBOX_PAYPAL_WEBHOOK_ID,
    webhook_config: WebhookConfig | None = None,
) -> Starlette:
    """PayPal (OAuth, transaction search, payouts) and Payoneer (OAuth, mass payouts).

    ``outcome_delay`` is how long after submission an item leaves PENDING
    (0: at once). Payoneer's credentials default to PayPal's.
    ``on_status_change`` is called when a read sees an item's status move.
    ``webhook_urls`` (provider -> URL) starts the webhook sender (``webhooks``):
    signed with ``webhook_secrets`` (default: the local settings' secrets);
    ``webhook_config`` overrides its timings (its urls and secrets are replaced).
    """
    if outcome_delay < 0:
        raise ValueError(f"outcome_delay must be >= 0 seconds, got {outcome_delay}")
    state = SandboxState(
        Path(data_dir),
        client_id,
        client_secret,
        payoneer_client_id=client_id if payoneer_client_id is None else payoneer_client_id,
        payoneer_client_secret=(
            client_secret if payoneer_client_secret is None else payoneer_client_secret
        ),
        payoneer_program_id=payoneer_program_id,
        token_ttl_seconds=token_ttl_seconds,
        outcome_delay=outcome_delay,
        on_status_change=on_status_change,
        paypal_webhook_id=paypal_webhook_id,
    )
    urls = {k: v for k, v in (webhook_urls or {}).items() if v}
    if urls:
        secrets = webhook_secrets or {
            "paypal": settings.SANDBOX_WEBHOOK_SECRET_PAYPAL,
            "payoneer": settings.SANDBOX_WEBHOOK_SECRET_PAYONEER,
        }
        config = replace(
            webhook_config or WebhookConfig(urls={}),
            urls=urls,
            secrets=secrets,
            paypal_webhook_id=paypal_webhook_id,
        )
        sender = WebhookSender(state, config)
        state.webhooks = sender
        chained = on_status_change

        def notify(provider: str, item_id: str, old: str, new: str) -> None:
            sender.on_status_change(provider, item_id, old, new)
            if chained is not None:
                chained(provider, item_id, old, new)

        state.on_status_change = notify
        sender.start()
    app = Starlette(
        routes=[
            *control_routes(state),
            *oauth_routes(state),
            *reporting_routes(state),
            *payouts_routes(state),
            *payoneer_routes(state),
            *webhook_routes(state),
        ],
        middleware=[Middleware(FaultMiddleware, state=state)],
    )
    app.state.sandbox = state
    return app

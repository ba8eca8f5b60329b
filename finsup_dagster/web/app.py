"""The ASGI app ``finsup serve`` runs: webhooks, ``/metrics``, ``/healthz`` and the approvals page."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from finsup_dagster.gateways.webhooks_paypal import PayPalApiVerifier
from finsup_dagster.web.approvals import ApprovalsSettings, approvals_app
from finsup_dagster.web.config import WebhookSettings
from finsup_dagster.web.earnings import earnings_routes
from finsup_dagster.web.health import health_routes
from finsup_dagster.web.metrics import WebhookMetrics, metrics_routes, new_registry
from finsup_dagster.web.webhooks import WebhookReceiver, read_bounded, webhook_routes

BARE_PATH = "/_bench/bare"


def bare_routes(settings: WebhookSettings) -> list[BaseRoute]:
    """A baseline for benchmarks/webhooks.py: the same server and body read, no books."""

    async def bare(request: Request) -> Response:
        await read_bounded(request, settings.max_bytes)
        return Response(b'{"status":"ok"}', media_type="application/json")

    return [Route(BARE_PATH, bare, methods=["POST"])]


def create_app(
    engine: Engine,
    settings: WebhookSettings | None = None,
    *,
    paypal_verifier: PayPalApiVerifier | None = None,
    clock: Callable[[], float] = time.time,
    bare_endpoint: bool = False,
    approvals: ApprovalsSettings | None = None,
) -> Starlette:
    """The app over the books at ``engine``; ``settings`` default to the environment's.

    ``app.state`` holds ``registry`` (add collectors to it), ``ledger_gauges``
    (add gauges read from the books) and ``receiver``.
    """
    settings = settings or WebhookSettings.from_env()
    registry, ledger_gauges = new_registry(engine)
    receiver = WebhookReceiver(
        engine, settings, WebhookMetrics(registry), paypal_verifier=paypal_verifier, clock=clock
    )
    routes = [*webhook_routes(receiver), *metrics_routes(registry), *health_routes(engine)]
    routes += earnings_routes(engine)  # POST /earnings, settings from the environment
    if bare_endpoint:
        routes += bare_routes(settings)
    if approvals is not None:
        # Last: the webhook, metrics and health routes are matched first; the approvals
        # page (its own sessions, CSRF and security headers) has every other path.
        routes.append(Mount("/", app=approvals_app(engine, approvals)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            receiver.close()  # the PayPal verifier's HTTP pool

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.registry = registry
    app.state.ledger_gauges = ledger_gauges
    app.state.receiver = receiver
    return app

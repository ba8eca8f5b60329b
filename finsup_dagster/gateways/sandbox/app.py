"""The sandbox app: each gateway's routes behind the fault middleware, plus ``/_sandbox``."""

from __future__ import annotations

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
) -> Starlette:
    """PayPal (OAuth, transaction search, payouts) and Payoneer (OAuth, mass payouts).

    ``outcome_delay`` is how long after submission an item leaves PENDING
    (0: at once). Payoneer's credentials default to PayPal's.
    ``on_status_change`` is called when a read sees an item's status move.
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
    )
    app = Starlette(
        routes=[
            *control_routes(state),
            *oauth_routes(state),
            *reporting_routes(state),
            *payouts_routes(state),
            *payoneer_routes(state),
        ],
        middleware=[Middleware(FaultMiddleware, state=state)],
    )
    app.state.sandbox = state
    return app

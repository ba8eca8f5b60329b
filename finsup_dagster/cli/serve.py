"""`finsup serve`: the web side (approvals page, webhook receiver, the earnings intake,
/metrics, /healthz) under uvicorn.

Settings come from the environment (docs/webhooks.md): the webhook secrets
are never command-line options, where they would show in the process list.
"""

from __future__ import annotations

from typing import Annotated

import typer

from finsup_dagster import logs
from finsup_dagster.cli.common import app, engine, out
from finsup_dagster.ledger.errors import LedgerError


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the approvals page (/), the webhook receiver (/webhooks/paypal,
    /webhooks/payoneer), the swarm's earnings intake (POST /earnings, with
    FINSUP_EARNINGS_TOKEN), /metrics and /healthz."""
    import uvicorn  # slow to import: only when serving

    from finsup_dagster.web import WebhookSettings, create_app
    from finsup_dagster.web.approvals import ApprovalsSettings

    logs.configure_from_env()
    settings = WebhookSettings.from_env()  # a bad setting is one `error:` line, before binding
    try:
        approvals: ApprovalsSettings | None = ApprovalsSettings.from_env()
    except LedgerError as exc:
        # The webhooks must not wait for the approvers' key: served without the page.
        out.print(f"approvals page off: {exc}")
        approvals = None
    asgi = create_app(engine(), settings, approvals=approvals)
    out.print(
        f"finsup serve on http://{host}:{port} (approvals page "
        f"{'on' if approvals else 'off'}; PayPal webhooks verified by "
        f"{settings.paypal_verify}; bodies up to {settings.max_bytes} bytes, "
        f"at most {settings.max_age_seconds:g}s old)"
    )
    uvicorn.run(asgi, host=host, port=port, log_level="info")

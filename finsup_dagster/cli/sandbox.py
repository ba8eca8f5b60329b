"""`finsup sandbox ...`: a local stand-in for the payment gateways, for the demo and manual tests.

``serve`` runs it (PayPal reporting and payouts, Payoneer mass payouts);
``fault``, ``faults``, ``requests`` and ``reset`` drive a running one through
its ``/_sandbox`` controls. The client id and secret come from the
environment (never a command-line option, where they would show in the
process list), with throw-away defaults matching what the local settings
expect.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from finsup_dagster.cli.common import app, fail, out
from finsup_dagster.settings import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_URL,
    SANDBOX_WEBHOOK_SECRET_PAYONEER,
    SANDBOX_WEBHOOK_SECRET_PAYPAL,
)

DEFAULT_CLIENT_ID = SANDBOX_CLIENT_ID
DEFAULT_CLIENT_SECRET = SANDBOX_CLIENT_SECRET
DEFAULT_URL = SANDBOX_URL

sandbox_app = typer.Typer(
    name="sandbox",
    help="The local gateway sandbox: serve it, inject faults, read what it received.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")

UrlOption = Annotated[str, typer.Option("--url", help="The running sandbox's base URL.")]


@sandbox_app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where paypal_transactions.jsonl is read from [default: $FINSUP_HOME/sandbox].",
        ),
    ] = None,
    outcome_delay: Annotated[
        float,
        typer.Option(
            "--outcome-delay",
            min=0.0,
            help="Seconds before a payout item leaves PENDING for its outcome (0: at once).",
        ),
    ] = 2.0,
    webhook_url_paypal: Annotated[
        str | None,
        typer.Option(
            "--webhook-url-paypal",
            help="POST PayPal webhooks here [default: $FINSUP_SANDBOX_WEBHOOK_URL_PAYPAL; none].",
        ),
    ] = None,
    webhook_url_payoneer: Annotated[
        str | None,
        typer.Option(
            "--webhook-url-payoneer",
            help="POST Payoneer webhooks here [default: $FINSUP_SANDBOX_WEBHOOK_URL_PAYONEER].",
        ),
    ] = None,
) -> None:
    """Serve the PayPal and Payoneer stand-in until Ctrl-C.

    Credentials: FINSUP_PAYPAL_CLIENT_ID / FINSUP_PAYPAL_CLIENT_SECRET and
    FINSUP_PAYONEER_CLIENT_ID / FINSUP_PAYONEER_CLIENT_SECRET (defaults
    sandbox-client / sandbox-secret). Webhooks are signed with
    FINSUP_WEBHOOK_SECRET_PAYPAL / FINSUP_WEBHOOK_SECRET_PAYONEER (docs/webhooks.md).
    """
    from finsup_dagster.gateways import sandbox as gateway_sandbox  # uvicorn is slow to import

    directory = data_dir or Path(os.environ.get("FINSUP_HOME", ".finsup")) / "sandbox"
    if directory.exists() and not directory.is_dir():
        fail(f"{directory}: not a directory")
    client_id = os.environ.get("FINSUP_PAYPAL_CLIENT_ID") or DEFAULT_CLIENT_ID
    client_secret = os.environ.get("FINSUP_PAYPAL_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET
    payoneer_id = os.environ.get("FINSUP_PAYONEER_CLIENT_ID") or DEFAULT_CLIENT_ID
    payoneer_secret = os.environ.get("FINSUP_PAYONEER_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET
    urls = {
        "paypal": webhook_url_paypal or os.environ.get("FINSUP_SANDBOX_WEBHOOK_URL_PAYPAL", ""),
        "payoneer": webhook_url_payoneer
        or os.environ.get("FINSUP_SANDBOX_WEBHOOK_URL_PAYONEER", ""),
    }
    secrets = {
        "paypal": os.environ.get("FINSUP_WEBHOOK_SECRET_PAYPAL") or SANDBOX_WEBHOOK_SECRET_PAYPAL,
        "payoneer": os.environ.get("FINSUP_WEBHOOK_SECRET_PAYONEER")
        or SANDBOX_WEBHOOK_SECRET_PAYONEER,
    }
    hooks = ", ".join(f"{k} -> {v}" for k, v in urls.items() if v) or "none"
    out.print(
        f"gateway sandbox on http://{host}:{port} (PayPal client id {client_id}; Payoneer "
        f"client id {payoneer_id}, program {gateway_sandbox.SANDBOX_PAYONEER_PROGRAM_ID}; "
        f"outcome delay {outcome_delay:g}s; webhooks {hooks}; "
        f"data {directory / gateway_sandbox.PAYPAL_TRANSACTIONS_FILE})"
    )
    gateway_sandbox.run(
        directory,
        host,
        port,
        client_id,
        client_secret,
        outcome_delay=outcome_delay,
        payoneer_client_id=payoneer_id,
        payoneer_client_secret=payoneer_secret,
        webhook_urls=urls,
        webhook_secrets=secrets,
    )


def _control(method: str, url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    try:
        resp = httpx.request(method, f"{url.rstrip('/')}/_sandbox/{path}", json=body, timeout=10)
    except httpx.TransportError as exc:
        fail(f"sandbox at {url} did not answer ({type(exc).__name__})")
    if resp.status_code >= 400:
        fail(f"sandbox answered {resp.status_code}: {resp.text.strip()[:200]}")
    return resp.json() if resp.content else None


@sandbox_app.command()
def fault(
    kind: Annotated[
        str, typer.Argument(help="status (answer --status), slow (wait --seconds) or drop.")
    ] = "status",
    status: Annotated[
        int | None, typer.Option(help="For kind status: 401, 403, 429, 500, 502, 503, 504.")
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="How many requests meet the fault.")] = 1,
    path_prefix: Annotated[
        str, typer.Option("--path-prefix", help="Only requests under this path.")
    ] = "/",
    retry_after: Annotated[
        int, typer.Option("--retry-after", min=0, help="Retry-After seconds on a 429.")
    ] = 0,
    seconds: Annotated[float | None, typer.Option(help="For kind slow: the wait.")] = None,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Inject a fault into a running sandbox (POST /_sandbox/faults)."""
    body: dict[str, Any] = {"kind": kind, "count": count, "path_prefix": path_prefix}
    if kind == "status":
        if status is None:
            fail("kind status needs --status")
        body |= {"status": status, "retry_after": retry_after}
    elif kind == "slow":
        if seconds is None:
            fail("kind slow needs --seconds")
        body["seconds"] = seconds
    out.print(json.dumps(_control("POST", url, "faults", body)))


@sandbox_app.command()
def faults(url: UrlOption = DEFAULT_URL) -> None:
    """List the faults still pending in a running sandbox."""
    out.print(json.dumps(_control("GET", url, "faults")))


@sandbox_app.command()
def requests(url: UrlOption = DEFAULT_URL) -> None:
    """Print every request the sandbox received (Authorization redacted) as JSON."""
    out.print(json.dumps(_control("GET", url, "requests"), indent=2))


@sandbox_app.command()
def reset(url: UrlOption = DEFAULT_URL) -> None:
    """Forget faults, recorded requests, tokens and payouts."""
    _control("POST", url, "reset")
    out.print("sandbox reset")

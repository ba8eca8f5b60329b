"""`finsup sandbox`: a local stand-in for the payment gateways, for the demo and manual tests.

It lets the PayPal reporting pipeline run end to end with no network and no
real credentials. The client id and secret come from the environment (never
a command-line option, where they would show in the process list), with
throw-away defaults matching what the local settings expect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from finsup_dagster.cli.common import app, fail, out
from finsup_dagster.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

DEFAULT_CLIENT_ID = SANDBOX_CLIENT_ID
DEFAULT_CLIENT_SECRET = SANDBOX_CLIENT_SECRET


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where paypal_transactions.jsonl is read from [default: $FINSUP_HOME/sandbox].",
        ),
    ] = None,
) -> None:
    """Serve a local PayPal stand-in (OAuth token + transaction search) until Ctrl-C.

    Credentials: FINSUP_PAYPAL_CLIENT_ID / FINSUP_PAYPAL_CLIENT_SECRET
    (defaults sandbox-client / sandbox-secret).
    """
    from finsup_dagster.gateways import sandbox as gateway_sandbox  # uvicorn is slow to import

    directory = data_dir or Path(os.environ.get("FINSUP_HOME", ".finsup")) / "sandbox"
    if directory.exists() and not directory.is_dir():
        fail(f"{directory}: not a directory")
    client_id = os.environ.get("FINSUP_PAYPAL_CLIENT_ID") or DEFAULT_CLIENT_ID
    client_secret = os.environ.get("FINSUP_PAYPAL_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET
    out.print(
        f"gateway sandbox on http://{host}:{port} (PayPal client id {client_id}; "
        f"data {directory / gateway_sandbox.PAYPAL_TRANSACTIONS_FILE})"
    )
    gateway_sandbox.run(directory, host, port, client_id, client_secret)

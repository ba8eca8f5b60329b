"""Serving the sandbox: in a thread for tests and the demo, in the foreground for the CLI."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

from finsup_dagster.gateways.sandbox.app import DEFAULT_OUTCOME_DELAY, create_app
from finsup_dagster.gateways.sandbox.faults import CONTROL_PREFIX


@contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serves ``app`` with uvicorn in a daemon thread; yields its base URL.

    ``port=0`` picks a free port: the socket is bound here, before the thread
    starts, so the URL is known without racing the server for it.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{url_host}:{bound_port}"
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox:{bound_port}", daemon=True
    )
    thread.start()
    try:
        _wait_until_up(base_url, server, thread)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_until_up(base_url: str, server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 10
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError(f"sandbox server at {base_url} stopped while starting")
            if server.started:
                try:
                    if client.get(f"{base_url}{CONTROL_PREFIX}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.01)
    raise RuntimeError(f"sandbox server at {base_url} did not answer within 10 s")


def run(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    client_id: str = "sandbox-client",
    client_secret: str = "sandbox-secret",
    *,
    outcome_delay: float = DEFAULT_OUTCOME_DELAY,
    payoneer_client_id: str | None = None,
    payoneer_client_secret: str | None = None,
    webhook_urls: dict[str, str] | None = None,
    webhook_secrets: dict[str, str] | None = None,
) -> None:
    """Serves the sandbox in the foreground until interrupted."""
    data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(
        data_dir,
        client_id,
        client_secret,
        outcome_delay=outcome_delay,
        payoneer_client_id=payoneer_client_id,
        payoneer_client_secret=payoneer_client_secret,
        webhook_urls=webhook_urls,
        webhook_secrets=webhook_secrets,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")

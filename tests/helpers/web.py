"""Serving the approvals page for tests: uvicorn in a thread, a clock the test moves, forms."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp

from finsup_dagster.ledger.approvals import ApprovalPolicy
from finsup_dagster.web.approvals import ApprovalsSettings, approvals_app
from tests.helpers.payouts import BOX, BOX_KEY, T0, Approver


@dataclass
class Clock:
    """The page's clock: set to the instant of the code an approver types, moved on to expire."""

    t: float = T0

    def __call__(self) -> float:
        return self.t

    def at(self, who: Approver) -> str:
        """``who``'s next fresh code, the clock moved on to its instant (never back)."""
        who.t = max(who.t, self.t)
        code, self.t = who.next_code()
        return code


def settings(clock: Clock, **overrides: object) -> ApprovalsSettings:
    values: dict[str, object] = {
        "session_key": BOX_KEY,
        "box": BOX,
        "policy": ApprovalPolicy(),
        "clock": clock,
        **overrides,
    }
    return ApprovalsSettings(**values)  # type: ignore[arg-type]


@contextmanager
def serve(engine: Engine, clock: Clock, **overrides: object) -> Iterator[str]:
    """The approvals sub-app over ``engine``, served by uvicorn on a free port; yields its URL."""
    with serve_app(approvals_app(engine, settings(clock, **overrides))) as url:
        yield url


@contextmanager
def serve_app(app: ASGIApp) -> Iterator[str]:
    """Any ASGI app served by uvicorn in a daemon thread on a free port; yields its URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the approvals page at {base_url} did not start")
            time.sleep(0.01)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: httpx.Client, clock: Clock, who: Approver) -> httpx.Response:
    """Signs ``who`` in through the form (spending one fresh code); returns the answer."""
    token = csrf_of(client.get("/sign-in").text)
    return client.post(
        "/sign-in", data={"csrf": token, "approver": who.name, "code": clock.at(who)}
    )


def post_form(client: httpx.Client, page: str, action: str, data: dict[str, str]) -> httpx.Response:
    """Posts ``data`` to ``action`` with the CSRF token the page ``page`` hands out."""
    token = csrf_of(client.get(page).text)
    return client.post(action, data={"csrf": token, **data})

"""A local alert receiver over real sockets: records every POST, answers as scripted per path."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from finsup_dagster.gateways.sandbox import serve_in_thread
from finsup_dagster.gateways.sandbox.serving import CONTROL_PREFIX


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    base_url: str
    requests: list[Received] = field(default_factory=list)
    # path -> the status codes to answer, in turn (the last one repeats); default 200/202.
    script: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def on(self, path: str, *statuses: int) -> None:
        with self.lock:
            self.script["/" + path.lstrip("/")] = list(statuses)

    def at(self, path: str) -> list[Any]:
        """The JSON bodies POSTed to ``path``, in order."""
        with self.lock:
            return [r.body for r in self.requests if r.path == "/" + path.lstrip("/")]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


def _app(receiver: Receiver) -> Starlette:
    async def record(request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        with receiver.lock:
            receiver.requests.append(Received(path, dict(request.headers), json.loads(raw)))
            statuses = receiver.script.get(path, [])
            status = statuses.pop(0) if len(statuses) > 1 else (statuses[0] if statuses else 0)
        if path.startswith("/pagerduty"):
            status = status or 202
            return JSONResponse(
                {"status": "success" if status < 300 else "error", "message": "Event processed"},
                status_code=status,
            )
        return PlainTextResponse("ok" if not status or status < 300 else "no", status or 200)

    async def health(request: Request) -> Response:  # what serve_in_thread waits for
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route(f"{CONTROL_PREFIX}/health", health, methods=["GET"]),
            Route("/{path:path}", record, methods=["POST"]),
        ]
    )


@contextmanager
def alert_receiver() -> Iterator[Receiver]:
    receiver = Receiver(base_url="")
    with serve_in_thread(_app(receiver)) as base_url:
        receiver.base_url = base_url
        yield receiver


def closed_port_url() -> str:
    """A URL on this machine where nothing listens: the connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"

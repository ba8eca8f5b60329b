"""The controls under ``/_sandbox`` and the middleware that records requests and injects faults.

The middleware sits in front of every gateway route, before authentication,
like a load balancer or rate limiter in front of the real API. It records
every request it sees (Authorization redacted) so a test can prove what was
sent and how often, then applies the first matching fault, if any:

- ``status``: answer 5xx / 429 (with ``Retry-After``) / 401 / 403 instead.
- ``slow``: wait ``seconds`` first, then handle the request (past a client's
  read timeout, the client gives up while the server still does the work).
- ``drop``: handle the request (a batch IS created), start the answer with
  its full ``Content-Length``, send half the body, then cut the connection:
  the client sees a transport error after the provider accepted.
- ``raw``: answer ``status`` with ``body`` as is (an HTML error page from a
  proxy, a truncated JSON): what a client must survive without a traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finsup_dagster.gateways.sandbox.paypal_common import paypal_error
from finsup_dagster.gateways.sandbox.state import Fault, SandboxState

CONTROL_PREFIX = "/_sandbox"
SANDBOX_PREFIX = CONTROL_PREFIX  # the old name, kept for callers
FAULT_STATUSES = frozenset({401, 403, 429, 500, 502, 503, 504})
FAULT_KINDS = ("status", "slow", "drop", "raw")
MAX_SLOW_SECONDS = 300.0
Endpoint = Callable[[Request], Awaitable[Response]]


class FaultMiddleware:
    """Records each gateway request, then answers it with an injected fault or passes it on."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL_PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        replay = _replayer(body, receive)
        fault = self.state.take_fault(path)
        self.state.record(_entry(scope, body, fault))
        if fault is None:
            await self.app(scope, replay, send)
        elif fault.kind == "status":
            await fault_response(fault)(scope, replay, send)
        elif fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
            await self.app(scope, replay, send)
        elif fault.kind == "raw":
            content_type = "text/html" if fault.body.lstrip().startswith("<") else "text/plain"
            await Response(fault.body, fault.status, media_type=content_type)(scope, replay, send)
        else:
            await _drop_after_handling(self.app, scope, replay, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replayer(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _entry(scope: Scope, body: bytes, fault: Fault | None) -> dict[str, Any]:
    headers = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        headers[name] = "<redacted>" if name == "authorization" else raw_value.decode("latin-1")
    return {
        "method": scope.get("method", ""),
        "path": scope.get("path", ""),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
        "time": datetime.now(UTC).isoformat(timespec="microseconds"),
        "monotonic": time.monotonic(),
        "fault": fault.kind if fault else None,
    }


async def _drop_after_handling(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    messages: list[Message] = []

    async def capture(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, capture)  # the work is done: the batch exists now
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    full = body or b"{}"
    headers.append((b"content-length", str(len(full)).encode()))
    await send({"type": "http.response.start", "status": start["status"], "headers": headers})
    await send({"type": "http.response.body", "body": full[: len(full) // 2], "more_body": True})
    # Returning with the answer unfinished makes uvicorn close the connection
    # (it logs one line, "ASGI callable returned without completing response").


def fault_response(fault: Fault) -> Response:
    if fault.status == 401:
        return JSONResponse(
            {"error": "invalid_token", "error_description": "Access Token not found in cache"},
            status_code=401,
        )
    names = {
        403: ("NOT_AUTHORIZED", "Authorization failed due to insufficient permissions."),
        429: ("RATE_LIMIT_REACHED", "Too many requests. Blocked due to rate limiting."),
        500: ("INTERNAL_SERVICE_ERROR", "An internal service error has occurred."),
        502: ("INTERNAL_SERVICE_ERROR", "Bad gateway."),
        503: ("SERVICE_UNAVAILABLE", "Service Unavailable."),
        504: ("INTERNAL_SERVICE_ERROR", "Gateway timeout."),
    }
    name, message = names[fault.status]
    headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else None
    return paypal_error(fault.status, name, message, headers=headers)


def parse_fault(body: object) -> Fault | str:
    """A fault from ``POST /_sandbox/faults``'s body, or the reason it is not one."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    kind = body.get("kind", "status")
    count, prefix = body.get("count", 1), body.get("path_prefix", "/")
    if kind not in FAULT_KINDS:
        return f"kind must be one of {', '.join(FAULT_KINDS)}"
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return "count must be a positive integer"
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        return "path_prefix must start with /"
    if kind == "status":
        status, retry_after = body.get("status"), body.get("retry_after", 0)
        if status not in FAULT_STATUSES:
            allowed = ", ".join(str(s) for s in sorted(FAULT_STATUSES))
            return f"status must be one of {allowed}"
        if not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 0:
            return "retry_after must be >= 0 seconds"
        return Fault("status", count, prefix, status=status, retry_after=retry_after)
    if kind == "slow":
        seconds = body.get("seconds")
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or not 0 < seconds <= MAX_SLOW_SECONDS
        ):
            return f"seconds must be a number in (0, {MAX_SLOW_SECONDS:g}]"
        return Fault("slow", count, prefix, seconds=float(seconds))
    if kind == "raw":
        status, text = body.get("status", 200), body.get("body", "")
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            return "status must be an HTTP status from 200 to 599"
        if not isinstance(text, str):
            return "body must be a string"
        return Fault("raw", count, prefix, status=status, body=text)
    return Fault("drop", count, prefix)


# What a reset forgets (faults, recorded requests, tokens, payouts): a fresh sandbox.
CLEARED_BY_RESET = (
    "faults",
    "requests",
    "tokens",
    "paypal_batches",
    "paypal_by_sender_id",
    "paypal_items",
    "payoneer_payments",
)


def control_routes(state: SandboxState) -> list[BaseRoute]:
    def fault_list() -> list[dict[str, Any]]:
        return [f.as_dict() for f in state.faults]

    def request_list() -> list[dict[str, Any]]:
        return list(state.requests)

    def listing(key: str, read: Callable[[], list[dict[str, Any]]]) -> Endpoint:
        """``GET``: ``{key: read()}``, read under the lock."""

        async def list_entries(request: Request) -> Response:
            with state.lock:
                entries = read()
            return JSONResponse({key: entries})

        return list_entries

    def clearing(*names: str) -> Endpoint:
        """``DELETE`` / reset: empties the state's collections ``names``."""

        async def clear(request: Request) -> Response:
            with state.lock:
                for name in names:
                    getattr(state, name).clear()
            return Response(status_code=204)

        return clear

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def add_fault(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        fault = parse_fault(body)
        if isinstance(fault, str):
            return JSONResponse({"error": fault}, status_code=400)
        with state.lock:
            state.faults.append(fault)
            faults = fault_list()
        return JSONResponse({"faults": faults}, status_code=201)

    async def token_stats(request: Request) -> Response:
        now = time.monotonic()
        with state.lock:
            live = sum(1 for exp, _ in state.tokens.values() if exp > now)
            issued = state.tokens_issued
        return JSONResponse({"issued": issued, "live": live})

    p = CONTROL_PREFIX
    return [
        Route(f"{p}/health", health, methods=["GET"]),
        Route(f"{p}/faults", add_fault, methods=["POST"]),
        Route(f"{p}/faults", listing("faults", fault_list), methods=["GET"]),
        Route(f"{p}/faults", clearing("faults"), methods=["DELETE"]),
        Route(f"{p}/tokens", token_stats, methods=["GET"]),
        # Forgets every token, as if they had all expired: clients must fetch a new one.
        Route(f"{p}/tokens", clearing("tokens"), methods=["DELETE"]),
        Route(f"{p}/requests", listing("requests", request_list), methods=["GET"]),
        Route(f"{p}/requests", clearing("requests"), methods=["DELETE"]),
        Route(f"{p}/reset", clearing(*CLEARED_BY_RESET), methods=["POST"]),
    ]

"""A local HTTP stand-in for the payment gateways finsup reads from.

Why it exists: the reporting clients (``paypal_reporting``) must be tested over
real HTTP - retries, token refresh, pagination, date windows - and the demo
must run without a network or gateway credentials. Mocking ``httpx`` would
test our assumptions against themselves; this server speaks the wire format of
the real APIs (as far as finsup uses them) so the client code runs unchanged
against it and against the gateway.

Layout: one Starlette app. Each gateway contributes its own group of routes
(``_paypal_routes``); ``/sandbox/*`` holds the controls tests use (health,
injected faults, token revocation). Faults are applied by a middleware in
front of every gateway route, before authentication, like a load balancer or
rate limiter in front of the real API.

State (tokens, faults) is in memory; the transactions are read from
``data_dir`` on every request, so a test or the demo can append to the file
between calls and see the change without restarting anything.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from finsup_dagster.ledger.money import format_minor, normalise_currency

PAYPAL_TRANSACTIONS_FILE = "paypal_transactions.jsonl"
PAYPAL_ACCOUNT_NUMBER = "FINSUPSANDBOX"  # 13 characters, like a PayPal payer id
PAYPAL_MAX_RANGE = timedelta(days=31)
PAYPAL_MAX_PAGE_SIZE = 500
PAYPAL_DEFAULT_PAGE_SIZE = 100
PAYPAL_SCOPE = "https://uri.paypal.com/services/reporting/search/read"
FAULT_STATUSES = frozenset({401, 403, 429, 500, 502, 503, 504})
SANDBOX_PREFIX = "/sandbox"

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --------------------------------------------------------------------------- state


@dataclass
class Fault:
    """The next ``remaining`` requests under ``path_prefix`` answer ``status``."""

    status: int
    remaining: int
    path_prefix: str
    retry_after: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "count": self.remaining,
            "path_prefix": self.path_prefix,
            "retry_after": self.retry_after,
        }


@dataclass
class SandboxState:
    """Everything the sandbox remembers between requests (none of it on disk)."""

    data_dir: Path
    client_id: str
    client_secret: str = field(repr=False)
    token_ttl_seconds: int = 3600
    tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    faults: list[Fault] = field(default_factory=list)
    tokens_issued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def issue_token(self) -> str:
        token = "A21AA" + secrets.token_urlsafe(48)
        now = time.monotonic()
        with self.lock:
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
            self.tokens[token] = now + self.token_ttl_seconds
            self.tokens_issued += 1
        return token

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and expiry > time.monotonic()

    def take_fault(self, path: str) -> Fault | None:
        """Consumes one use of the first fault matching ``path``."""
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    hit = Fault(fault.status, 1, fault.path_prefix, fault.retry_after)
                    self.faults = [f for f in self.faults if f.remaining > 0]
                    return hit
        return None


# --------------------------------------------------------------------------- app


def create_app(
    data_dir: Path, client_id: str, client_secret: str, *, token_ttl_seconds: int = 3600
) -> Starlette:
    """The sandbox app: PayPal's token and transaction-search endpoints plus ``/sandbox``."""
    state = SandboxState(
        Path(data_dir), client_id, client_secret, token_ttl_seconds=token_ttl_seconds
    )
    app = Starlette(
        routes=[*_sandbox_routes(state), *_paypal_routes(state)],
        middleware=[Middleware(_FaultMiddleware, state=state)],
    )
    app.state.sandbox = state
    return app


class _FaultMiddleware:
    """Answers a request with an injected fault instead of passing it to the route."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(SANDBOX_PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        fault = self.state.take_fault(path)
        if fault is None:
            await self.app(scope, receive, send)
            return
        await _fault_response(fault)(scope, receive, send)


def _fault_response(fault: Fault) -> Response:
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
    return _paypal_error(fault.status, name, message, headers=headers)


# --------------------------------------------------------------------------- /sandbox


def _sandbox_routes(state: SandboxState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def add_fault(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        status, count = body.get("status"), body.get("count", 1)
        prefix, retry_after = body.get("path_prefix", "/"), body.get("retry_after", 0)
        if status not in FAULT_STATUSES:
            allowed = ", ".join(str(s) for s in sorted(FAULT_STATUSES))
            return JSONResponse({"error": f"status must be one of {allowed}"}, status_code=400)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            return JSONResponse({"error": "count must be a positive integer"}, status_code=400)
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            return JSONResponse({"error": "path_prefix must start with /"}, status_code=400)
        if not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 0:
            return JSONResponse({"error": "retry_after must be >= 0 seconds"}, status_code=400)
        with state.lock:
            state.faults.append(Fault(status, count, prefix, retry_after))
            faults = [f.as_dict() for f in state.faults]
        return JSONResponse({"faults": faults}, status_code=201)

    async def list_faults(request: Request) -> Response:
        with state.lock:
            faults = [f.as_dict() for f in state.faults]
        return JSONResponse({"faults": faults})

    async def clear_faults(request: Request) -> Response:
        with state.lock:
            state.faults.clear()
        return Response(status_code=204)

    async def token_stats(request: Request) -> Response:
        now = time.monotonic()
        with state.lock:
            live = sum(1 for exp in state.tokens.values() if exp > now)
            issued = state.tokens_issued
        return JSONResponse({"issued": issued, "live": live})

    async def revoke_tokens(request: Request) -> Response:
        """Forgets every token, as if they had all expired: clients must fetch a new one."""
        with state.lock:
            state.tokens.clear()
        return Response(status_code=204)

    return [
        Route(f"{SANDBOX_PREFIX}/health", health, methods=["GET"]),
        Route(f"{SANDBOX_PREFIX}/faults", add_fault, methods=["POST"]),
        Route(f"{SANDBOX_PREFIX}/faults", list_faults, methods=["GET"]),
        Route(f"{SANDBOX_PREFIX}/faults", clear_faults, methods=["DELETE"]),
        Route(f"{SANDBOX_PREFIX}/tokens", token_stats, methods=["GET"]),
        Route(f"{SANDBOX_PREFIX}/tokens", revoke_tokens, methods=["DELETE"]),
    ]


# --------------------------------------------------------------------------- PayPal


def _paypal_error(
    status: int,
    name: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """PayPal's REST error body (``name``, ``message``, ``debug_id``, ``details``)."""
    body: dict[str, Any] = {"name": name, "message": message, "debug_id": secrets.token_hex(7)}
    if details:
        body["details"] = details
    body["links"] = [
        {
            "href": "https://developer.paypal.com/docs/api/transaction-search/v1/#error-" + name,
            "rel": "information_link",
        }
    ]
    return JSONResponse(body, status_code=status, headers=headers)


def _invalid_request(field_name: str, value: str | None, issue: str) -> JSONResponse:
    return _paypal_error(
        400,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        [{"field": field_name, "value": value or "", "location": "query", "issue": issue}],
    )


def _paypal_routes(state: SandboxState) -> list[BaseRoute]:
    async def oauth_token(request: Request) -> Response:
        if not _basic_auth_ok(request.headers.get("authorization"), state):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status_code=401,
            )
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        if grant != "client_credentials":
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Grant Type is {grant or 'NULL'}",
                },
                status_code=400,
            )
        return JSONResponse(
            {
                "scope": PAYPAL_SCOPE,
                "access_token": state.issue_token(),
                "token_type": "Bearer",
                "app_id": "APP-FINSUPSANDBOX",
                "expires_in": state.token_ttl_seconds,
                "nonce": f"{_paypal_time(datetime.now(UTC))}{secrets.token_urlsafe(16)}",
            }
        )

    async def transactions(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return JSONResponse(
                {"error": "invalid_token", "error_description": "Authorization header is missing"},
                status_code=401,
            )
        if not state.token_valid(token.strip()):
            return JSONResponse(
                {"error": "invalid_token", "error_description": "Access Token not found in cache"},
                status_code=401,
            )
        return _search(request, state)

    return [
        Route("/v1/oauth2/token", oauth_token, methods=["POST"]),
        Route("/v1/reporting/transactions", transactions, methods=["GET"]),
    ]


def _basic_auth_ok(header: str | None, state: SandboxState) -> bool:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, sep, secret = decoded.partition(":")
    # Both compared every time: no early exit to time.
    id_ok = secrets.compare_digest(client_id.encode(), state.client_id.encode())
    secret_ok = secrets.compare_digest(secret.encode(), state.client_secret.encode())
    return bool(sep) and id_ok and secret_ok


def _parse_query_time(name: str, raw: str | None) -> datetime | JSONResponse:
    if not raw:
        return _invalid_request(name, raw, f"{name} is required")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return _invalid_request(name, raw, f"{name} is not an ISO 8601 date-time")
    if parsed.tzinfo is None:
        return _invalid_request(name, raw, f"{name} must carry a time zone offset")
    return parsed.astimezone(UTC)


def _parse_query_int(name: str, raw: str | None, default: int, high: int) -> int | JSONResponse:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return _invalid_request(name, raw, f"{name} must be an integer")
    if not 1 <= value <= high:
        return _invalid_request(name, raw, f"{name} must be between 1 and {high}")
    return value


def _search(request: Request, state: SandboxState) -> Response:
    q = request.query_params
    start = _parse_query_time("start_date", q.get("start_date"))
    if isinstance(start, JSONResponse):
        return start
    end = _parse_query_time("end_date", q.get("end_date"))
    if isinstance(end, JSONResponse):
        return end
    if end <= start:
        return _invalid_request("end_date", q.get("end_date"), "end_date must be after start_date")
    if end - start > PAYPAL_MAX_RANGE:
        return _invalid_request("end_date", q.get("end_date"), "Date range is greater than 31 days")
    page = _parse_query_int("page", q.get("page"), 1, 10**6)
    if isinstance(page, JSONResponse):
        return page
    page_size = _parse_query_int(
        "page_size", q.get("page_size"), PAYPAL_DEFAULT_PAGE_SIZE, PAYPAL_MAX_PAGE_SIZE
    )
    if isinstance(page_size, JSONResponse):
        return page_size
    status_filter = q.get("transaction_status")
    if status_filter is not None and status_filter not in {"D", "P", "S", "V"}:
        return _invalid_request(
            "transaction_status", status_filter, "transaction_status must be D, P, S or V"
        )
    id_filter = q.get("transaction_id")

    try:
        rows = _load_paypal_transactions(state.data_dir)
    except ValueError as exc:
        return _paypal_error(500, "INTERNAL_SERVICE_ERROR", f"sandbox data: {exc}")
    selected = sorted(
        (
            (at, info)
            for at, info in rows
            if start <= at < end
            and (status_filter is None or info.get("transaction_status") == status_filter)
            and (id_filter is None or info.get("transaction_id") == id_filter)
        ),
        key=lambda pair: (pair[0], str(pair[1].get("transaction_id", ""))),
    )
    total_items = len(selected)
    total_pages = math.ceil(total_items / page_size)
    chunk = selected[(page - 1) * page_size : page * page_size]
    body = {
        "transaction_details": [{"transaction_info": info} for _, info in chunk],
        "account_number": PAYPAL_ACCOUNT_NUMBER,
        "start_date": _paypal_time(start),
        "end_date": _paypal_time(end),
        "last_refreshed_datetime": _paypal_time(datetime.now(UTC).replace(microsecond=0)),
        "page": page,
        "total_items": total_items,
        "total_pages": total_pages,
        "links": _page_links(request, page, total_pages),
    }
    return JSONResponse(body, headers={"Paypal-Debug-Id": secrets.token_hex(7)})


def _page_links(request: Request, page: int, total_pages: int) -> list[dict[str, str]]:
    def href(n: int) -> str:
        return str(request.url.include_query_params(page=n))

    links = [{"href": href(page), "rel": "self", "method": "GET"}]
    if total_pages:
        links.append({"href": href(1), "rel": "first", "method": "GET"})
    if page < total_pages:
        links.append({"href": href(page + 1), "rel": "next", "method": "GET"})
    if 1 < page <= total_pages:
        links.append({"href": href(page - 1), "rel": "previous", "method": "GET"})
    if total_pages:
        links.append({"href": href(total_pages), "rel": "last", "method": "GET"})
    return links


def _load_paypal_transactions(data_dir: Path) -> list[tuple[datetime, dict[str, Any]]]:
    path = data_dir / PAYPAL_TRANSACTIONS_FILE
    if not path.exists():
        return []
    rows: list[tuple[datetime, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                info = json.loads(line)
                at = datetime.fromisoformat(info["transaction_initiation_date"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path.name} line {number}: {type(exc).__name__}") from None
            if at.tzinfo is None:
                raise ValueError(f"{path.name} line {number}: date has no offset")
            rows.append((at.astimezone(UTC), info))
    return rows


def _paypal_time(instant: datetime) -> str:
    """PayPal's date text: ``2026-11-20T09:15:00+0000`` (always UTC here)."""
    if instant.tzinfo is None:
        raise ValueError(f"time {instant.isoformat()} has no UTC offset")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


# --------------------------------------------------------------------------- data helpers


def paypal_transaction_id() -> str:
    """A random 17-character id shaped like PayPal's (e.g. ``5TY05013RG002845M``)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


def transaction_info(
    *,
    at: datetime,
    amount_minor: int,
    currency: str = "USD",
    event_code: str = "T0006",
    status: str = "S",
    transaction_id: str | None = None,
    fee_minor: int | None = None,
    updated_at: datetime | None = None,
    reference_id: str | None = None,
    invoice_id: str | None = None,
) -> dict[str, Any]:
    """A PayPal ``transaction_info`` dict as the Transaction Search API returns it.

    ``amount_minor`` is the positive size of the payment in minor units; the
    sign follows the event: a sale (T0006) is money in, a refund (T1107) is
    money out and printed negative. When ``fee_minor`` is None a sale carries
    a 2.9% fee (negative, as PayPal prints it) and a refund carries none.
    """
    if amount_minor <= 0:
        raise ValueError(f"amount_minor must be positive, got {amount_minor}")
    if status not in {"D", "P", "S", "V"}:
        raise ValueError(f"status must be D, P, S or V, got {status!r}")
    code = normalise_currency(currency)
    refund = event_code == "T1107"
    if fee_minor is None and not refund:
        fee_minor = -((amount_minor * 29 + 500) // 1000)
    info: dict[str, Any] = {
        "transaction_id": transaction_id or paypal_transaction_id(),
        "transaction_event_code": event_code,
        "transaction_initiation_date": _paypal_time(at),
        "transaction_updated_date": _paypal_time(updated_at or at),
        "transaction_amount": {
            "currency_code": code,
            "value": format_minor(-amount_minor if refund else amount_minor, code),
        },
        "transaction_status": status,
    }
    if fee_minor:
        info["fee_amount"] = {"currency_code": code, "value": format_minor(fee_minor, code)}
    if reference_id:
        info["paypal_reference_id"] = reference_id
        info["paypal_reference_id_type"] = "TXN"
    if invoice_id:
        info["invoice_id"] = invoice_id
    return info


def append_transactions(data_dir: Path, transactions: Iterable[dict[str, Any]]) -> int:
    """Appends ``transaction_info`` dicts to the PayPal data file; returns how many."""
    lines = [json.dumps(t, sort_keys=True, separators=(",", ":")) + "\n" for t in transactions]
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / PAYPAL_TRANSACTIONS_FILE).open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
    return len(lines)


# --------------------------------------------------------------------------- serving


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
                    if client.get(f"{base_url}{SANDBOX_PREFIX}/health").status_code == 200:
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
) -> None:
    """Serves the sandbox in the foreground until interrupted."""
    data_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        create_app(data_dir, client_id, client_secret), host=host, port=port, log_level="info"
    )

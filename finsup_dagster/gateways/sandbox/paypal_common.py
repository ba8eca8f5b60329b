"""What PayPal's APIs share in the sandbox: the error body, client auth, the token, times."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.gateways.sandbox.state import SandboxState

PAYPAL_SCOPE = " ".join(
    [
        "https://uri.paypal.com/services/reporting/search/read",
        "https://uri.paypal.com/payments/payouts",
    ]
)
T = TypeVar("T")
ERROR_DOCS = "https://developer.paypal.com/docs/api/transaction-search/v1/#error-"


def paypal_error(
    status: int,
    name: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    *,
    docs: str = ERROR_DOCS,
    links: list[dict[str, str]] | None = None,
) -> JSONResponse:
    """PayPal's REST error body (``name``, ``message``, ``debug_id``, ``details``, ``links``)."""
    body: dict[str, Any] = {"name": name, "message": message, "debug_id": secrets.token_hex(7)}
    if details:
        body["details"] = details
    body["links"] = [*(links or []), {"href": docs + name, "rel": "information_link"}]
    return JSONResponse(body, status_code=status, headers=headers)


def basic_auth_ok(header: str | None, client_id: str, client_secret: str) -> bool:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    got_id, sep, secret = decoded.partition(":")
    # Both compared every time: no early exit to time.
    id_ok = secrets.compare_digest(got_id.encode(), client_id.encode())
    secret_ok = secrets.compare_digest(secret.encode(), client_secret.encode())
    return bool(sep) and id_ok and secret_ok and bool(client_id)


def bearer_refusal(request: Request, state: SandboxState, provider: str) -> Response | None:
    """None when the request carries a live bearer token of ``provider``, else the 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return JSONResponse(
            {"error": "invalid_token", "error_description": "Authorization header is missing"},
            status_code=401,
        )
    if not state.token_valid(token.strip(), provider):
        return JSONResponse(
            {"error": "invalid_token", "error_description": "Access Token not found in cache"},
            status_code=401,
        )
    return None


@dataclass(frozen=True)
class TokenRefusals:
    """How a provider answers a bad token request: its JSON response and its words."""

    respond: type[Response]
    bad_client: str
    bad_grant: Callable[[str], str]  # the grant_type sent -> error_description


PAYPAL_REFUSALS = TokenRefusals(
    JSONResponse, "Client Authentication failed", lambda grant: f"Grant Type is {grant or 'NULL'}"
)


async def token_form(
    request: Request, client_id: str, client_secret: str, refusals: TokenRefusals
) -> dict[str, list[str]] | Response:
    """A client-credentials token request's form, or the OAuth error answer.

    The Basic auth must be ``client_id:client_secret`` (else 401
    ``invalid_client``) and the grant ``client_credentials`` (else 400
    ``unsupported_grant_type``).
    """
    respond = refusals.respond
    if not basic_auth_ok(request.headers.get("authorization"), client_id, client_secret):
        return respond({"error": "invalid_client", "error_description": refusals.bad_client}, 401)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    grant = form.get("grant_type", [""])[0]
    if grant != "client_credentials":
        error = {"error": "unsupported_grant_type", "error_description": refusals.bad_grant(grant)}
        return respond(error, 400)
    return form


def lookup_route(
    state: SandboxState,
    guard: Callable[[Request], Response | None],
    param: str,
    find: Callable[[str], T | None],
    missing: Callable[[str], Response],
    answer: Callable[[Request, T], Response],
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint for one held thing named by the path parameter ``param``.

    ``guard`` refuses the request (or returns None); under the state's lock
    ``find`` looks the thing up, ``missing`` answers when it is not there and
    ``answer`` reads (or changes) it.
    """

    async def route(request: Request) -> Response:
        refusal = guard(request)
        if refusal is not None:
            return refusal
        key = request.path_params[param]
        with state.lock:
            found = find(key)
            if found is None:
                return missing(key)
            return answer(request, found)

    return route


def paypal_time(instant: datetime) -> str:
    """PayPal's date text: ``2026-11-20T09:15:00+0000`` (always UTC here)."""
    if instant.tzinfo is None:
        raise ValueError(f"time {instant.isoformat()} has no UTC offset")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def oauth_routes(state: SandboxState) -> list[BaseRoute]:
    async def oauth_token(request: Request) -> Response:
        form = await token_form(request, state.client_id, state.client_secret, PAYPAL_REFUSALS)
        if isinstance(form, Response):
            return form
        return JSONResponse(
            {
                "scope": PAYPAL_SCOPE,
                "access_token": state.issue_token("paypal"),
                "token_type": "Bearer",
                "app_id": "APP-FINSUPSANDBOX",
                "expires_in": state.token_ttl_seconds,
                "nonce": f"{paypal_time(datetime.now(UTC))}{secrets.token_urlsafe(16)}",
            }
        )

    return [Route("/v1/oauth2/token", oauth_token, methods=["POST"])]

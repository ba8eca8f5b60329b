"""Security headers on every answer, and the CSRF check of every form.

CSRF: a per-session token (in the signed session cookie) must come back in the
form's hidden ``csrf`` field, compared in constant time. That works with plain
HTML form posts and no JavaScript, which a double-submit header scheme does
not. ``SameSite=Strict`` and the ``Origin`` check below are a second and third
line, not the first.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No script at all: the page needs none, so none may run (nor inline style).
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with
    # its form posts, and the Origin check could no longer tell this site from another.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
CSRF_REFUSED = (
    "this form is stale or did not come from this page (CSRF token missing or wrong): "
    "reload the page and try again"
)


class SecurityHeaders:
    """Pure ASGI middleware: adds ``HEADERS``; pages are never cached (they show money)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_ok(expected: str, submitted: object) -> bool:
    return (
        isinstance(submitted, str)
        and bool(submitted)
        and hmac.compare_digest(expected.encode(), submitted.encode())
    )


def same_origin(request: Request) -> bool:
    """A browser says where a form came from; another site's form is refused outright."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # No Origin (older clients, some privacy settings): the token alone decides.
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host

"""Signed session cookies: who is signed in, since when, last seen, and the CSRF token.

The cookie is signed with itsdangerous under the secret key (a salt of its own,
so a session signature is good for nothing else). It is not encrypted: it
holds an approver's name, two instants and random tokens, never a code or a
secret. Times come from the page's clock, so the idle and absolute timeouts
are checked against the same instant the TOTP codes are.

Signing out forgets the session id in this process (``Revoked``), so the
cookie, even if copied, stops working at once here; another process serving
the same page stops it at the idle timeout at the latest.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "finsup_approvals"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str
    approver: str | None = None  # None: not signed in (the sign-in form still needs a token)
    signed_in_at: float = 0.0
    last_seen: float = 0.0
    notice: str | None = None  # one line to show on the next page (after a redirect)

    @classmethod
    def anonymous(cls) -> Session:
        return cls(sid=secrets.token_urlsafe(16), csrf=secrets.token_urlsafe(32))

    def signed_in(self, approver: str, now: float) -> Session:
        # A new id and token on sign-in: a session planted before it is worth nothing after.
        return Session(
            sid=secrets.token_urlsafe(16),
            csrf=secrets.token_urlsafe(32),
            approver=approver,
            signed_in_at=now,
            last_seen=now,
        )

    def seen(self, now: float) -> Session:
        return replace(self, last_seen=max(self.last_seen, now))


class Revoked:
    """Session ids signed out in this process, kept until they would have expired anyway."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, sid: str, until: float, now: float) -> None:
        self.prune(now)  # so the set holds only sessions that would still be live
        with self._lock:
            self._until[sid] = until

    def __contains__(self, sid: object) -> bool:
        with self._lock:
            return sid in self._until

    def prune(self, now: float) -> None:
        with self._lock:
            for sid in [s for s, t in self._until.items() if t < now]:
                del self._until[sid]


class Sessions:
    """Reads and writes the session cookie; decides nothing about payouts."""

    def __init__(self, key: str, idle_seconds: float, absolute_seconds: float) -> None:
        self._serializer = URLSafeSerializer(key, salt="finsup.approvals.session")
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        self.revoked = Revoked()

    def read(self, request: Request) -> tuple[Session | None, bool]:
        """The request's session, if its signature is good; and whether one was presented."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None, False
        try:
            data: Any = self._serializer.loads(raw)
            session = Session(**data)
        except (BadSignature, TypeError, ValueError):
            return None, True
        if session.sid in self.revoked:
            return None, True
        return session, True

    def expired(self, session: Session, now: float) -> bool:
        if session.approver is None:
            return False
        idle = now - session.last_seen > self.idle_seconds
        absolute = now - session.signed_in_at > self.absolute_seconds
        return idle or absolute

    def write(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(asdict(session)),
            max_age=int(self.absolute_seconds),
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
        )

    def clear(
        self, response: Response, request: Request, session: Session | None, now: float = 0.0
    ) -> None:
        if session is not None:
            self.revoked.add(session.sid, session.signed_in_at + self.absolute_seconds, now)
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies(request)
        )


def secure_cookies(request: Request) -> bool:
    """Secure everywhere but on this machine, where the page may be served over plain HTTP."""
    return (request.url.hostname or "") not in _LOCAL_HOSTS

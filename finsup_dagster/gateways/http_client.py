"""What the payout clients share: an OAuth client-credentials token, retries, error mapping.

Why one place: PayPal and Payoneer differ in paths and bodies, not in how a
call can fail. Every call here either returns a parsed JSON answer with its
status (2xx, or a 4xx the caller reads: a duplicate, a not-found) or raises
one of the gateway errors of ``payouts.py`` with a one-line message that
never holds the client secret or the bearer token.

Retries (``stamina``): connection errors, timeouts, 5xx and 429 are
transient. They are retried with exponential backoff and jitter, bounded by
``RetryPolicy.attempts`` and ``RetryPolicy.total_seconds`` (stamina stops
once the total is spent; one wait and one request may overrun it). A 429's
``Retry-After`` is honoured as the wait, unless it is longer than what is
left of the budget: then it gives up at once. When the budget is spent the
call raises :class:`GatewayUnavailable` carrying the last answer.

A 401 on an API call means the token expired or was revoked: the token is
fetched again once and the call repeated; a second 401 is a refusal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Self

import httpx
import stamina
import stamina.instrumentation

from finsup_dagster.gateways.exact_json import loads_exact
from finsup_dagster.gateways.payouts import (
    GatewayRefused,
    GatewayUnavailable,
    TransientGatewayError,
)

log = logging.getLogger("finsup.gateways")


def _log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    # The cause's type only: an httpx error's text holds the URL, which may carry a key.
    log.info(
        "retrying %s (retry %d in %.2f s) after %s",
        details.name,
        details.retry_num,
        details.wait_for,
        type(details.caused_by).__name__,
    )


# stamina's default hook prints through structlog when it is installed, which writes to
# stdout: that would break a CLI's --json document. Retries go to the gateway log instead.
stamina.instrumentation.set_on_retry_hooks([_log_retry])

REDACTED = "[redacted]"
MAX_DETAIL = 200


@dataclass(frozen=True)
class RetryPolicy:
    """How long transient failures are retried: at most ``attempts`` tries in ``total_seconds``."""

    attempts: int = 5
    total_seconds: float = 60.0
    wait_initial: float = 0.5
    wait_max: float = 10.0
    wait_jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.total_seconds <= 0:
            raise ValueError(f"total_seconds must be > 0, got {self.total_seconds}")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # parsed JSON (numbers other than ints are Decimals)
    raw: str


class GatewayHttp:
    """One provider's HTTP session: base URL, token, retry policy."""

    def __init__(
        self,
        label: str,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        token_form: dict[str, str],
        timeout: float,
        retry: RetryPolicy,
        client: httpx.Client | None = None,
    ) -> None:
        self.label = label
        self.base_url = base_url.rstrip("/")
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_form = token_form
        self._retry = retry
        self._http = client or httpx.Client(timeout=httpx.Timeout(timeout))
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GatewayHttp({self.label!r}, {self.base_url!r}, client_id={self._client_id!r})"

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ calls

    def call(self, method: str, path: str, *, content: str | None = None, what: str) -> Answer:
        """The provider's answer to one request, transient failures retried.

        Returns 2xx and 4xx answers (other than 401/429) for the caller to read;
        raises GatewayRefused on a garbage 2xx or a second 401, and
        GatewayUnavailable once the retry budget is spent.
        """
        started = time.monotonic()
        tries = 0

        def backoff(exc: Exception) -> bool | float:
            if not isinstance(exc, TransientGatewayError):
                return False
            if exc.retry_after is not None:
                left = self._retry.total_seconds - (time.monotonic() - started)
                return exc.retry_after if exc.retry_after <= left else False
            return True

        try:
            for attempt in stamina.retry_context(
                on=backoff,
                attempts=self._retry.attempts,
                timeout=self._retry.total_seconds,
                wait_initial=self._retry.wait_initial,
                wait_max=self._retry.wait_max,
                wait_jitter=self._retry.wait_jitter,
            ):
                with attempt:
                    tries += 1
                    return self._attempt(method, path, content)
        except TransientGatewayError as exc:
            elapsed = time.monotonic() - started
            raise GatewayUnavailable(
                f"{exc} (gave up on {what} after {tries} attempt{'s' * (tries != 1)} "
                f"in {elapsed:.1f}s)",
                raw=exc.raw,
                status_code=exc.status_code,
            ) from None
        raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover

    def _attempt(self, method: str, path: str, content: str | None) -> Answer:
        resp = self._send(method, path, content, self._bearer())
        if resp.status_code == 401:
            self._forget_token()
            resp = self._send(method, path, content, self._bearer())
            if resp.status_code == 401:
                raise self.refused(
                    self._answer(resp, lenient=True), "401 even with a new token", path
                )
        return self._classify(resp, path)

    def _send(self, method: str, path: str, content: str | None, token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        with self._transport_errors(f"{method} {path}"):
            resp = self._http.request(
                method, self.base_url + path, content=content, headers=headers
            )
        log.debug("%s: %s %s -> %s", self.label, method, path, resp.status_code)
        return resp

    @contextmanager
    def _transport_errors(self, what: str) -> Iterator[None]:
        """A timeout or a connection failure in the block as a transient error naming ``what``."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise TransientGatewayError(
                f"{self.label}: {what} timed out ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise TransientGatewayError(
                f"{self.label}: {what} connection failed ({type(exc).__name__})"
            ) from None

    def _classify(self, resp: httpx.Response, path: str) -> Answer:
        status = resp.status_code
        if status == 429 or status >= 500:
            answer = self._answer(resp, lenient=True)
            retry_after = _retry_after(resp.headers.get("retry-after")) if status == 429 else None
            raise TransientGatewayError(
                self._message(answer, path),
                raw=answer.raw,
                status_code=status,
                retry_after=retry_after,
            )
        answer = self._answer(resp, lenient=status >= 400)
        return answer

    def _answer(self, resp: httpx.Response, *, lenient: bool) -> Answer:
        raw = resp.text
        try:
            body = loads_exact(raw) if raw.strip() else None
        except ValueError:
            body = None
        if not lenient and not isinstance(body, dict):
            kind = "an HTML page" if raw.lstrip().startswith("<") else "a body that is not JSON"
            raise GatewayRefused(
                f"{self.label}: {resp.request.method} {resp.request.url.path} answered "
                f"{resp.status_code} with {kind}",
                raw=raw,
                status_code=resp.status_code,
            )
        return Answer(resp.status_code, body, raw)

    def refused(self, answer: Answer, why: str, path: str) -> GatewayRefused:
        return GatewayRefused(
            self._message(answer, path, why), raw=answer.raw, status_code=answer.status
        )

    def _message(self, answer: Answer, path: str, why: str = "") -> str:
        """``PayPal payouts: 400 VALIDATION_ERROR: ... on /v1/...``: one line, scrubbed."""
        body = answer.body if isinstance(answer.body, dict) else {}
        name = body.get("name") or body.get("error") or ""
        detail = body.get("message") or body.get("error_description") or ""
        if not body and answer.raw.strip():
            detail = "an HTML page" if answer.raw.lstrip().startswith("<") else "not JSON"
        parts = [str(answer.status), str(name), str(detail)[:MAX_DETAIL], why]
        text = " ".join(p for p in parts if p)
        return self.scrub(f"{self.label}: {text} on {path}")

    def scrub(self, text: str) -> str:
        """One line with no secret or token in it, whatever a provider echoed back."""
        text = " ".join(text.split())
        for secret in (self._client_secret, self._token):
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    # ------------------------------------------------------------------ token

    def _bearer(self) -> str:
        with self._lock:
            if self._token is not None and time.monotonic() < self._token_expires:
                return self._token
        token, ttl = self._fetch_token()
        with self._lock:
            self._token = token
            # Refreshed a little before the provider's expiry, so no call races it.
            self._token_expires = time.monotonic() + max(ttl - min(60.0, ttl * 0.1), 0.0)
        return token

    def _forget_token(self) -> None:
        with self._lock:
            self._token = None
            self._token_expires = 0.0

    def _fetch_token(self) -> tuple[str, float]:
        path = httpx.URL(self._token_url).path
        with self._transport_errors("token request"):
            resp = self._http.post(
                self._token_url,
                data=self._token_form,
                auth=(self._client_id, self._client_secret),
                headers={"Accept": "application/json"},
            )
        if resp.status_code == 429 or resp.status_code >= 500:
            self._classify(resp, path)
        answer = self._answer(resp, lenient=True)
        if resp.status_code in {400, 401, 403}:
            raise self.refused(answer, "(check the client id and secret)", path)
        body = answer.body if isinstance(answer.body, dict) else {}
        token, ttl = body.get("access_token"), body.get("expires_in")
        if resp.status_code != 200 or not isinstance(token, str) or not token:
            raise GatewayRefused(
                f"{self.label}: token request answered {resp.status_code} without an access_token",
                status_code=resp.status_code,
            )
        return token, float(ttl) if isinstance(ttl, int) and ttl > 0 else 300.0


def _retry_after(header: str | None) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), None when absent or unreadable."""
    if not header:
        return None
    try:
        return max(float(header.strip()), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class HttpGateway:
    """What a payout client over one :class:`GatewayHttp` (kept as ``_http``) closes with."""

    _http: GatewayHttp

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

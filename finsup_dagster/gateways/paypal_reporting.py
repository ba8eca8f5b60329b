"""Reads PayPal's Transaction Search API page by page, as raw bytes.

Why raw bytes: the caller lands each response on disk exactly as PayPal sent
it, before anything parses it into the books. The landed file is the evidence
a reconciliation is checked against, so this module only reads what it needs
to walk the pages (``total_pages``) and never rewrites a body.

What it handles so callers need not:

* OAuth2 client credentials (``POST /v1/oauth2/token``), with the token
  refreshed before it expires and once more if the API answers 401;
* PayPal's limit of 31 days per query: ``[start, end)`` is cut into windows;
* pagination (``page``, ``page_size`` up to 500, ``total_pages``);
* transient failures: 429, 5xx and connection errors are retried with
  exponential backoff, honouring ``Retry-After``; anything else, or running
  out of attempts, raises ``GatewayError`` with a one-line message.

Secrets never reach a log line or an error message: the client secret only
goes into the Basic auth header of the token request, and the bearer token
only into the Authorization header.

No Dagster imports: the asset that calls this owns scheduling and storage.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial

import httpx

from finsup_dagster.ledger.errors import InvalidInput, LedgerError
from finsup_dagster.text import one_line

log = logging.getLogger(__name__)

MAX_WINDOW = timedelta(days=31)
MAX_PAGE_SIZE = 500
TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # a 500-row page can take PayPal a while
MAX_RETRY_AFTER_SECONDS = 120.0
TOKEN_REFRESH_MARGIN_SECONDS = 120.0
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class GatewayError(LedgerError):
    """A payment gateway refused, failed or answered nonsense; the message is one line."""


@dataclass(frozen=True)
class PayPalCredentials:
    """Where PayPal is (``https://api-m.paypal.com``, the sandbox URL) and the REST app's keys."""

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)


def fetch_transaction_pages(
    creds: PayPalCredentials,
    start: datetime,
    end: datetime,
    *,
    page_size: int = MAX_PAGE_SIZE,
    client: httpx.Client | None = None,
    max_attempts: int = 4,
    backoff_seconds: float = 0.5,
) -> Iterator[tuple[str, bytes]]:
    """Yields ``(label, body)`` for every page of transactions initiated in ``[start, end)``.

    ``label`` is safe as a file name and unique within one call, e.g.
    ``20261120T000000Z_20261121T000000Z_p1`` (window start, window end, page).
    ``body`` is the response body exactly as received. A window with no
    transactions still yields its (empty) first page.

    ``start`` and ``end`` must carry an offset and be whole seconds. When
    ``client`` is None a client is created, with explicit timeouts, and closed
    when the iterator finishes or is closed.
    """
    windows = split_windows(start, end)
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInput(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    if max_attempts < 1:
        raise InvalidInput(f"max_attempts must be at least 1, got {max_attempts}")
    if backoff_seconds < 0:
        raise InvalidInput(f"backoff_seconds must be >= 0, got {backoff_seconds}")
    own_client = client is None
    http = client if client is not None else httpx.Client(timeout=TIMEOUT)
    session = _Session(creds, http, max_attempts, backoff_seconds)
    try:
        for window_start, window_end in windows:
            span = f"{_param_time(window_start)}/{_param_time(window_end)}"
            page = 1
            while True:
                what = f"page {page} of {span}"
                body = session.get_page(
                    {
                        "start_date": _param_time(window_start),
                        "end_date": _param_time(window_end),
                        "fields": "transaction_info",
                        "page_size": str(page_size),
                        "page": str(page),
                    },
                    what,
                )
                total_pages = _total_pages(body, what)
                yield f"{_label_time(window_start)}_{_label_time(window_end)}_p{page}", body
                if page >= total_pages:
                    break
                page += 1
    finally:
        if own_client:
            http.close()


def split_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` in UTC, cut into consecutive windows of at most 31 days."""
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None:
            raise InvalidInput(f"{name} {value.isoformat()} has no UTC offset")
        if value.microsecond:
            raise InvalidInput(f"{name} {value.isoformat()} must be a whole second")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise InvalidInput(f"end {end.isoformat()} is not after start {start.isoformat()}")
    windows = []
    cursor = start
    while cursor < end:
        upper = min(cursor + MAX_WINDOW, end)
        windows.append((cursor, upper))
        cursor = upper
    return windows


def _param_time(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label_time(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _total_pages(body: bytes, what: str) -> int:
    try:
        parsed = json.loads(body)
    except ValueError:
        raise GatewayError(f"PayPal reporting: {what} is not JSON") from None
    total = parsed.get("total_pages") if isinstance(parsed, dict) else None
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise GatewayError(f"PayPal reporting: {what} has no valid total_pages")
    return total


def _describe_error(response: httpx.Response) -> str:
    """``400 INVALID_REQUEST: Date range is greater than 31 days (debug_id …)``, one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    parts = [str(response.status_code)]
    if isinstance(body, dict):
        name = body.get("name") or body.get("error")
        message = body.get("message") or body.get("error_description")
        details = body.get("details")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            issue = details[0].get("issue")
            if issue:
                message = f"{details[0].get('field', '?')}: {issue}"
        if name:
            parts.append(f"{name}:" if message else str(name))
        if message:
            parts.append(str(message))
        if body.get("debug_id"):
            parts.append(f"(debug_id {body['debug_id']})")
    return one_line(" ".join(parts), 200)


class _Session:
    """One access token and the retry policy, shared across all pages of a fetch."""

    def __init__(
        self,
        creds: PayPalCredentials,
        http: httpx.Client,
        max_attempts: int,
        backoff_seconds: float,
    ) -> None:
        self.base_url = creds.base_url.rstrip("/")
        self.creds = creds
        self.http = http
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.token: str | None = None
        self.token_expires = 0.0

    def get_page(self, params: dict[str, str], what: str) -> bytes:
        refreshed = False
        while True:
            token = self._token()
            response = self._with_retries(partial(self._search, params, token), what)
            if response.status_code == 401 and not refreshed:
                log.info("PayPal reporting: 401 on %s, fetching a new token", what)
                self.token = None
                refreshed = True
                continue
            if response.status_code == 401:
                raise GatewayError(
                    f"PayPal reporting: {_describe_error(response)} on {what}, "
                    "again after a new token"
                )
            if response.status_code != 200:
                raise GatewayError(f"PayPal reporting: {_describe_error(response)} on {what}")
            return response.content

    def _search(self, params: dict[str, str], token: str) -> httpx.Response:
        return self.http.get(
            f"{self.base_url}/v1/reporting/transactions",
            params=params,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )

    def _token(self) -> str:
        if self.token is not None and time.monotonic() < self.token_expires:
            return self.token
        what = "the token request"
        response = self._with_retries(
            lambda: self.http.post(
                f"{self.base_url}/v1/oauth2/token",
                auth=(self.creds.client_id, self.creds.client_secret),
                data={"grant_type": "client_credentials"},
                headers={"Accept": "application/json"},
            ),
            what,
        )
        if response.status_code == 401:
            raise GatewayError(
                f"PayPal reporting: {_describe_error(response)} on {what}; "
                "check the client id and secret"
            )
        if response.status_code != 200:
            raise GatewayError(f"PayPal reporting: {_describe_error(response)} on {what}")
        try:
            body = response.json()
            token, expires_in = body["access_token"], body.get("expires_in", 0)
        except (ValueError, KeyError, TypeError):
            raise GatewayError(f"PayPal reporting: {what} answered without a token") from None
        if not isinstance(token, str) or not token:
            raise GatewayError(f"PayPal reporting: {what} answered without a token")
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            expires_in = 0
        # Refresh a little early; a short-lived token is used for at least one request.
        lifetime = max(float(expires_in) - TOKEN_REFRESH_MARGIN_SECONDS, float(expires_in) / 2)
        self.token, self.token_expires = token, time.monotonic() + lifetime
        return token

    def _with_retries(self, send: Callable[[], httpx.Response], what: str) -> httpx.Response:
        """Sends until the answer is not retryable or attempts run out."""
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = send()
            except httpx.TransportError as exc:
                problem = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code not in _RETRYABLE:
                    return response
                problem = str(response.status_code)
                retry_after = _retry_after(response)
            if attempt == self.max_attempts:
                break
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            if retry_after is not None:
                delay = retry_after
            log.warning(
                "PayPal reporting: %s on %s, retrying in %.2fs (attempt %d of %d)",
                problem,
                what,
                delay,
                attempt,
                self.max_attempts,
            )
            time.sleep(delay)
        raise GatewayError(
            f"PayPal reporting: {problem} after {self.max_attempts} attempts on {what}"
        )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or HTTP date), capped; None if absent."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)

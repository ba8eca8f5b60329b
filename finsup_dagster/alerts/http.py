"""One JSON POST to an alert endpoint: retried briefly, never raising, never leaking its URL.

Why it never raises: an alert is a side effect of the money flow, not part of
it. A dead Slack must not fail a sensor tick, a run, or the next channel; the
caller gets the failure as one line and records it.

Why the URL never appears: a Slack incoming-webhook URL *is* its credential,
as is a PagerDuty routing key inside the body. Errors name the channel and
what happened (status, exception type), and anything an endpoint echoes back
is scrubbed of every secret the channel holds.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with
``stamina`` under a small budget: alerts are worth a few seconds, not a minute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import stamina

from finsup_dagster.gateways.http_client import RetryPolicy

REDACTED = "[redacted]"
MAX_ECHO = 120  # characters of an endpoint's refusal kept in the error line

# Alerts get a much smaller budget than payouts: three tries within eight seconds.
ALERT_RETRY = RetryPolicy(
    attempts=3, total_seconds=8.0, wait_initial=0.5, wait_max=2.0, wait_jitter=0.5
)


@dataclass(frozen=True)
class Delivery:
    """What one POST ended in: ``error`` is None when the endpoint took it."""

    channel: str
    status: int | None
    attempts: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Transient(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def scrub(text: str, secrets: Sequence[str]) -> str:
    """One line with none of ``secrets`` in it."""
    line = " ".join(text.split())
    for secret in secrets:
        if secret:
            line = line.replace(secret, REDACTED)
    return line


def post_json(
    client: httpx.Client,
    channel: str,
    url: str,
    body: Any,
    *,
    secrets: Sequence[str],
    retry: RetryPolicy = ALERT_RETRY,
) -> Delivery:
    """POSTs ``body`` as JSON to ``url``; the outcome, never an exception."""
    content = json.dumps(body, sort_keys=True, separators=(",", ":"))
    started = time.monotonic()
    tries = 0
    status: int | None = None

    def attempt_once() -> httpx.Response:
        nonlocal tries, status
        tries += 1
        try:
            resp = client.post(url, content=content, headers={"Content-Type": "application/json"})
        except httpx.TimeoutException as exc:
            raise _Transient(f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            # The exception's text can hold the URL: only its type is kept.
            raise _Transient(f"connection failed ({type(exc).__name__})") from None
        status = resp.status_code
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Transient(f"answered {resp.status_code}", resp.status_code)
        return resp

    try:
        for attempt in stamina.retry_context(
            on=_Transient,
            attempts=retry.attempts,
            timeout=retry.total_seconds,
            wait_initial=retry.wait_initial,
            wait_max=retry.wait_max,
            wait_jitter=retry.wait_jitter,
        ):
            with attempt:
                resp = attempt_once()
    except _Transient as exc:
        elapsed = time.monotonic() - started
        return Delivery(
            channel,
            status,
            tries,
            f"{channel}: {exc} (gave up after {tries} attempt{'s' * (tries != 1)} "
            f"in {elapsed:.1f}s)",
        )
    except Exception as exc:  # a bug or an odd URL must not take the other channels down
        return Delivery(channel, status, tries, f"{channel}: {type(exc).__name__}")
    if resp.is_success:
        return Delivery(channel, resp.status_code, tries)
    echo = scrub(resp.text[:MAX_ECHO], secrets)
    return Delivery(
        channel,
        resp.status_code,
        tries,
        f"{channel}: refused with {resp.status_code}" + (f": {echo}" if echo else ""),
    )

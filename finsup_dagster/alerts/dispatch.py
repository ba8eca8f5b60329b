"""One alert to several channels at once; a dead channel costs one try per tick, not one per alert.

A channel whose send failed (after its retries) is marked dead for the rest of
this dispatcher's life, one sensor tick: the alerts after it are recorded as
failed on that channel at once, with the same reason, instead of each waiting
out the retry budget. The other channels are unaffected. Every failure is a
one-line warning on the given logger (the sensor's log in Dagster).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Self

import httpx

from finsup_dagster.alerts.channels import Channel
from finsup_dagster.alerts.http import ALERT_RETRY, Delivery, post_json, scrub
from finsup_dagster.alerts.message import Alert
from finsup_dagster.gateways.http_client import RetryPolicy

log = logging.getLogger("finsup.alerts")


class Dispatcher:
    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        timeout: float = 3.0,
        retry: RetryPolicy = ALERT_RETRY,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.channels = list(channels)
        self._retry = retry
        self._log = logger or log
        # Connecting is quick or hopeless: a dead host is not given the whole timeout.
        self._http = client or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)), follow_redirects=False
        )
        self._dead: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.channels]

    @property
    def dead(self) -> dict[str, str]:
        """Channels that failed this tick, with why."""
        return dict(self._dead)

    def send(self, alert: Alert, only: Collection[str] | None = None) -> dict[str, str | None]:
        """``alert`` to every channel (or those named in ``only``): channel -> error or None."""
        outcome: dict[str, str | None] = {}
        for channel in self.channels:
            if only is not None and channel.name not in only:
                continue
            try:
                body = channel.body(alert)
            except Exception as exc:  # a bug in one body must not silence the others
                outcome[channel.name] = self._failed(channel, alert, f"{type(exc).__name__}")
                continue
            if body is None:
                continue
            if channel.name in self._dead:
                outcome[channel.name] = f"not tried: {self._dead[channel.name]}"
                continue
            delivery = post_json(
                self._http,
                channel.name,
                channel.url,
                body,
                secrets=channel.secrets,
                retry=self._retry,
            )
            outcome[channel.name] = self._record(channel, alert, delivery)
        return outcome

    def _record(self, channel: Channel, alert: Alert, delivery: Delivery) -> str | None:
        if delivery.ok:
            return None
        assert delivery.error is not None
        return self._failed(channel, alert, delivery.error)

    def _failed(self, channel: Channel, alert: Alert, error: str) -> str:
        error = scrub(error, channel.secrets)
        self._dead[channel.name] = error
        self._log.warning(f"alert {alert.key} not delivered to {channel.name}: {error}")
        return error

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

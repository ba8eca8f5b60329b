"""What every alert channel is: a name, an endpoint, its secrets, and a body per alert."""

from __future__ import annotations

from typing import Any, Protocol

from finsup_dagster.alerts.message import Alert


class Channel(Protocol):
    """One place alerts go. ``secrets`` are scrubbed from every error line it causes."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def secrets(self) -> tuple[str, ...]: ...

    def body(self, alert: Alert) -> dict[str, Any] | None:
        """The JSON to POST for ``alert``, or None when this channel says nothing about it."""
        ...

"""What an alert says, independent of the channel that carries it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TRIGGER = "trigger"
RESOLVE = "resolve"
SEVERITIES = ("critical", "error", "warning", "info")  # PagerDuty's four; Slack shows them


@dataclass(frozen=True)
class Alert:
    """One message about one subject (a stuck item, a failed run).

    ``key`` is stable for the subject: PagerDuty's dedup_key, the ledger's alerts
    row, and what a person greps for. ``fields`` are (label, value) pairs shown in
    order; ``detail`` is the machine-readable form the generic webhook carries.
    """

    key: str
    kind: str
    action: str  # TRIGGER | RESOLVE
    title: str
    severity: str = "error"
    fields: tuple[tuple[str, str], ...] = ()
    reminder: bool = False
    detail: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: str = ""  # canonical UTC text: when the condition was seen

    def __post_init__(self) -> None:
        if self.action not in (TRIGGER, RESOLVE):
            raise ValueError(f"alert action must be trigger or resolve, not {self.action!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {SEVERITIES}, not {self.severity!r}")

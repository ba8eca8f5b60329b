"""What the approvals page is configured with: keys, policy, timeouts and its clock.

The clock is a parameter, not a global: tests give the page the instant their
approvers' TOTP codes were made for, and move it on to expire a session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from finsup_dagster import settings
from finsup_dagster.ledger.approvals import ApprovalPolicy
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.secret_box import MIN_PASSPHRASE, SecretBox

# Defaults: documented in docs/payouts.md, "The approvals page".
WEB_DEFAULTS = {
    "FINSUP_WEB_IDLE_MINUTES": "15",
    "FINSUP_WEB_SESSION_HOURS": "8",
}


@dataclass(frozen=True)
class ApprovalsSettings:
    """``session_key`` signs the session cookie; ``box`` opens the approvers' TOTP secrets."""

    session_key: str
    box: SecretBox
    policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    idle_minutes: int = 15
    session_hours: int = 8
    stuck_after_hours: float = 48.0  # FINSUP_STUCK_AFTER_HOURS, read as the CLI reads it
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if len(self.session_key) < MIN_PASSPHRASE:
            raise LedgerError(f"the session key must be {MIN_PASSPHRASE}+ characters")
        if self.idle_minutes <= 0 or self.session_hours <= 0:
            raise LedgerError("FINSUP_WEB_IDLE_MINUTES and FINSUP_WEB_SESSION_HOURS must be > 0")

    @classmethod
    def from_env(cls, clock: Callable[[], float] = time.time) -> ApprovalsSettings:
        """From FINSUP_SECRET_KEY (the same key the CLI opens TOTP secrets with),
        FINSUP_WEB_IDLE_MINUTES / FINSUP_WEB_SESSION_HOURS, and the CLI's own readers of
        the lock-out policy and FINSUP_STUCK_AFTER_HOURS."""
        box = settings.secret_box()  # refuses a missing key in one line, as the CLI does
        key = os.environ.get("FINSUP_SECRET_KEY") or settings.demo_key_path().read_text().strip()
        return cls(
            session_key=key,
            box=box,
            policy=settings.approval_policy(),
            idle_minutes=_whole("FINSUP_WEB_IDLE_MINUTES"),
            session_hours=_whole("FINSUP_WEB_SESSION_HOURS"),
            stuck_after_hours=settings.stuck_after_hours(),
            clock=clock,
        )


def _whole(name: str) -> int:
    raw = os.environ.get(name, "").strip() or WEB_DEFAULTS[name]
    try:
        return int(raw)
    except ValueError:
        raise LedgerError(f"{name} must be a whole number, got {raw!r:.20}") from None

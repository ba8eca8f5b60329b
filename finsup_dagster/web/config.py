"""The receiver's settings, read from the environment (docs/webhooks.md lists them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from finsup_dagster.ledger.errors import LedgerError

DEFAULT_MAX_AGE_SECONDS = 300
DEFAULT_MAX_BYTES = 256 * 1024
VERIFY_MODES = ("hmac", "api")


@dataclass(frozen=True)
class WebhookSettings:
    """``secrets``: gateway -> HMAC secret (empty: that gateway's webhooks are all refused).

    ``paypal_verify`` is ``hmac`` (the sandbox's signature) or ``api`` (PayPal's
    verify-webhook-signature call, with ``paypal_webhook_id`` and the PayPal
    client credentials at ``paypal_base_url``).
    """

    secrets: Mapping[str, str] = field(repr=False, default_factory=dict)
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES
    paypal_verify: str = "hmac"
    paypal_webhook_id: str = ""
    paypal_base_url: str = ""
    paypal_client_id: str = ""
    paypal_client_secret: str = field(repr=False, default="")

    def __post_init__(self) -> None:
        if self.paypal_verify not in VERIFY_MODES:
            raise LedgerError(
                f"FINSUP_PAYPAL_WEBHOOK_VERIFY={self.paypal_verify!r}: use hmac or api"
            )
        if self.max_bytes < 1 or self.max_age_seconds <= 0:
            raise LedgerError(
                "FINSUP_WEBHOOK_MAX_BYTES and FINSUP_WEBHOOK_MAX_AGE_SECONDS must be positive"
            )
        if self.paypal_verify == "api" and not (self.paypal_webhook_id and self.paypal_base_url):
            raise LedgerError(
                "FINSUP_PAYPAL_WEBHOOK_VERIFY=api needs FINSUP_PAYPAL_WEBHOOK_ID and "
                "FINSUP_PAYPAL_PAYOUTS_BASE_URL"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if env is None else env
        try:
            max_age = float(env.get("FINSUP_WEBHOOK_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS))
            max_bytes = int(env.get("FINSUP_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES))
        except ValueError:
            raise LedgerError(
                "FINSUP_WEBHOOK_MAX_AGE_SECONDS and FINSUP_WEBHOOK_MAX_BYTES must be numbers"
            ) from None
        return cls(
            secrets={
                "paypal": env.get("FINSUP_WEBHOOK_SECRET_PAYPAL", ""),
                "payoneer": env.get("FINSUP_WEBHOOK_SECRET_PAYONEER", ""),
            },
            max_age_seconds=max_age,
            max_bytes=max_bytes,
            paypal_verify=env.get("FINSUP_PAYPAL_WEBHOOK_VERIFY", "hmac") or "hmac",
            paypal_webhook_id=env.get("FINSUP_PAYPAL_WEBHOOK_ID", ""),
            paypal_base_url=env.get("FINSUP_PAYPAL_PAYOUTS_BASE_URL", ""),
            paypal_client_id=env.get("FINSUP_PAYPAL_CLIENT_ID", ""),
            paypal_client_secret=env.get("FINSUP_PAYPAL_CLIENT_SECRET", ""),
        )

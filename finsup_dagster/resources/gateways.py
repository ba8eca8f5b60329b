"""The payout gateways as Dagster resources (the local sandbox by default, locally).

``PayPalPayoutsResource`` and ``PayoneerResource`` hold where each provider
is and its credentials, read from the environment through ``dg.EnvVar``
(``gateway_resources_from_env``); ``payout_gateway(method, ...)`` returns
the :class:`PayoutGateway` for a batch's payout method. Nothing here is
wired into a job yet: the submission job takes these as its resources.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from finsup_dagster.gateways.bank_pain001 import BankFileGateway
from finsup_dagster.gateways.http_client import RetryPolicy
from finsup_dagster.gateways.payoneer import PayoneerPayouts
from finsup_dagster.gateways.payouts import PayoutGateway
from finsup_dagster.gateways.paypal_payouts import PayPalPayouts
from finsup_dagster.ledger.errors import LedgerError


class _RetrySettings(dg.ConfigurableResource):
    timeout_seconds: float = Field(default=10.0, description="Per request (connect and read).")
    retry_attempts: int = Field(default=5, description="Tries per call, the first included.")
    retry_total_seconds: float = Field(
        default=60.0, description="Time budget per call across all its tries."
    )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.retry_attempts, total_seconds=self.retry_total_seconds)


class PayPalPayoutsResource(_RetrySettings):
    """PayPal Payouts API v1: the REST app's keys need the payouts scope."""

    base_url: str = Field(
        default="", description="FINSUP_PAYPAL_PAYOUTS_BASE_URL, e.g. https://api-m.paypal.com"
    )
    client_id: str = Field(default="", description="FINSUP_PAYPAL_CLIENT_ID")
    client_secret: str = Field(default="", description="FINSUP_PAYPAL_CLIENT_SECRET")

    def gateway(self) -> PayPalPayouts:
        _switched_on(self.base_url, "FINSUP_PAYPAL_PAYOUTS_BASE_URL", "PayPal")
        return PayPalPayouts(
            self.base_url.strip(),
            self.client_id,
            self.client_secret,
            timeout=self.timeout_seconds,
            retry=self.retry_policy(),
        )


class PayoneerResource(_RetrySettings):
    """Payoneer mass payouts (API v4) for one program."""

    base_url: str = Field(
        default="", description="FINSUP_PAYONEER_BASE_URL, e.g. https://api.payoneer.com"
    )
    auth_url: str = Field(
        default="",
        description="FINSUP_PAYONEER_AUTH_URL, e.g. https://login.payoneer.com (empty: base_url)",
    )
    client_id: str = Field(default="", description="FINSUP_PAYONEER_CLIENT_ID")
    client_secret: str = Field(default="", description="FINSUP_PAYONEER_CLIENT_SECRET")
    program_id: str = Field(default="", description="FINSUP_PAYONEER_PROGRAM_ID")

    def gateway(self) -> PayoneerPayouts:
        _switched_on(self.base_url, "FINSUP_PAYONEER_BASE_URL", "Payoneer")
        _switched_on(self.program_id, "FINSUP_PAYONEER_PROGRAM_ID", "Payoneer")
        return PayoneerPayouts(
            self.base_url.strip(),
            self.client_id,
            self.client_secret,
            self.program_id.strip(),
            auth_url=self.auth_url.strip() or None,
            timeout=self.timeout_seconds,
            retry=self.retry_policy(),
        )


class BankOutboxResource(dg.ConfigurableResource):
    """One pain.001.001.09 file per bank batch, for an operator to hand to the bank."""

    outbox_dir: str = Field(default="", description="FINSUP_BANK_OUTBOX (…/outbox/bank)")
    debtor_name: str = Field(default="", description="FINSUP_BANK_DEBTOR_NAME: the payer")
    debtor_iban: str = Field(default="", description="FINSUP_BANK_DEBTOR_IBAN")
    debtor_bic: str = Field(default="", description="FINSUP_BANK_DEBTOR_BIC")

    def gateway(self) -> BankFileGateway:
        _switched_on(self.outbox_dir, "FINSUP_BANK_OUTBOX", "bank")
        return BankFileGateway(
            Path(self.outbox_dir), self.debtor_name, self.debtor_iban, self.debtor_bic
        )


def _switched_on(value: str, variable: str, what: str) -> None:
    """An empty setting turns a gateway off: its batches are refused before the books change."""
    if not value.strip():
        raise LedgerError(f"{variable} is empty: {what} payouts are off")


def payout_gateway(
    method: str,
    *,
    paypal: PayPalPayoutsResource | None = None,
    payoneer: PayoneerResource | None = None,
    bank: BankOutboxResource | None = None,
) -> PayoutGateway:
    """The gateway for a batch's payout method (``paypal`` | ``payoneer`` | ``bank``).

    Refuses, before anything is sent, a gateway whose credentials are missing.
    """
    if method == "paypal" and paypal is not None:
        _credentials(paypal.client_id, paypal.client_secret, "FINSUP_PAYPAL_CLIENT")
        return paypal.gateway()
    if method == "payoneer" and payoneer is not None:
        _credentials(payoneer.client_id, payoneer.client_secret, "FINSUP_PAYONEER_CLIENT")
        return payoneer.gateway()
    if method == "bank" and bank is not None:
        return bank.gateway()
    raise LedgerError(f"no payout gateway configured for method {method!r}")


def _credentials(client_id: str, client_secret: str, prefix: str) -> None:
    missing = [
        f"{prefix}_{name}"
        for name, value in (("ID", client_id), ("SECRET", client_secret))
        if not value.strip()
    ]
    if missing:
        raise LedgerError(f"{' and '.join(missing)} not set: the gateway cannot be called")


def gateway_resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """``paypal_payouts`` and ``payoneer``, every field from the environment."""
    return {
        "paypal_payouts": PayPalPayoutsResource(
            base_url=dg.EnvVar("FINSUP_PAYPAL_PAYOUTS_BASE_URL"),
            client_id=dg.EnvVar("FINSUP_PAYPAL_CLIENT_ID"),
            client_secret=dg.EnvVar("FINSUP_PAYPAL_CLIENT_SECRET"),
        ),
        "payoneer": PayoneerResource(
            base_url=dg.EnvVar("FINSUP_PAYONEER_BASE_URL"),
            auth_url=dg.EnvVar("FINSUP_PAYONEER_AUTH_URL"),
            client_id=dg.EnvVar("FINSUP_PAYONEER_CLIENT_ID"),
            client_secret=dg.EnvVar("FINSUP_PAYONEER_CLIENT_SECRET"),
            program_id=dg.EnvVar("FINSUP_PAYONEER_PROGRAM_ID"),
        ),
    }

"""PayPal's reporting API as a Dagster resource (the sandbox by default, locally)."""

import dagster as dg
from pydantic import Field

from finsup_dagster.gateways.paypal_reporting import PayPalCredentials


class PayPalReportingResource(dg.ConfigurableResource):
    """Where to read PayPal transactions from; an empty base URL turns the fetch off."""

    base_url: str = Field(
        default="", description="FINSUP_PAYPAL_BASE_URL, e.g. https://api-m.paypal.com"
    )
    client_id: str = Field(default="", description="FINSUP_PAYPAL_CLIENT_ID")
    client_secret: str = Field(default="", description="FINSUP_PAYPAL_CLIENT_SECRET")

    @property
    def enabled(self) -> bool:
        return bool(self.base_url.strip())

    def credentials(self) -> PayPalCredentials:
        return PayPalCredentials(self.base_url.rstrip("/"), self.client_id, self.client_secret)

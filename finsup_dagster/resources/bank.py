"""Bank payouts as a Dagster resource: where pain.001 files go and which account pays."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from finsup_dagster.gateways.bank_pain001 import BankFileGateway


class BankOutboxResource(dg.ConfigurableResource):
    """One pain.001.001.09 file per bank batch, for an operator to hand to the bank."""

    outbox_dir: str = Field(description="FINSUP_BANK_OUTBOX, e.g. $FINSUP_HOME/outbox/bank")
    debtor_name: str = Field(description="FINSUP_BANK_DEBTOR_NAME: the paying account's name")
    debtor_iban: str = Field(description="FINSUP_BANK_DEBTOR_IBAN")
    debtor_bic: str = Field(description="FINSUP_BANK_DEBTOR_BIC")

    def gateway(self) -> BankFileGateway:
        return BankFileGateway(
            Path(self.outbox_dir), self.debtor_name, self.debtor_iban, self.debtor_bic
        )

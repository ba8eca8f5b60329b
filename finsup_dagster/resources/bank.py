"""Bank payouts as a Dagster resource: where pain.001 files go and which account pays."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from finsup_dagster.gateways.bank_pain001 import BankFileGateway
from finsup_dagster.ledger.errors import LedgerError


class BankOutboxResource(dg.ConfigurableResource):
    """One pain.001.001.09 file per bank batch, for an operator to hand to the bank.

    Empty settings turn bank payouts off: a bank batch is then refused before
    the books change, and the other gateways work as before.
    """

    outbox_dir: str = Field(default="", description="FINSUP_BANK_OUTBOX (…/outbox/bank)")
    debtor_name: str = Field(default="", description="FINSUP_BANK_DEBTOR_NAME: the payer")
    debtor_iban: str = Field(default="", description="FINSUP_BANK_DEBTOR_IBAN")
    debtor_bic: str = Field(default="", description="FINSUP_BANK_DEBTOR_BIC")

    def gateway(self) -> BankFileGateway:
        if not self.outbox_dir.strip():
            raise LedgerError("FINSUP_BANK_OUTBOX is empty: bank payouts are off")
        return BankFileGateway(
            Path(self.outbox_dir), self.debtor_name, self.debtor_iban, self.debtor_bic
        )

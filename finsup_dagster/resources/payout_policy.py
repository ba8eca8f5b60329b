"""The payout batching policy as a resource, from FINSUP_MIN_ITEM, FINSUP_MAX_BATCH_TOTAL, FINSUP_DUAL_APPROVAL_OVER."""

import dagster as dg
from pydantic import Field

from finsup_dagster.ledger.batching import BatchPolicy
from finsup_dagster.ledger.money import parse_amount_map


class PayoutPolicyResource(dg.ConfigurableResource):
    """Per-currency amounts written ``USD=25.00,JPY=3000,*=10`` (``*``: every other currency)."""

    min_item: str = Field(
        default="*=1.00", description="smallest item worth paying (FINSUP_MIN_ITEM)"
    )
    max_batch_total: str = Field(
        default="*=50000.00", description="largest batch (FINSUP_MAX_BATCH_TOTAL)"
    )
    dual_approval_over: str = Field(
        default="*=10000.00",
        description="batches above this need two approvers (FINSUP_DUAL_APPROVAL_OVER)",
    )

    def policy(self) -> BatchPolicy:
        return BatchPolicy(
            min_item=parse_amount_map(self.min_item),
            max_batch_total=parse_amount_map(self.max_batch_total),
            dual_approval_over=parse_amount_map(self.dual_approval_over),
        )

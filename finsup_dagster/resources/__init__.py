"""Dagster resources, each fed by environment variables through ``dg.EnvVar``."""

import dagster as dg
from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource

from finsup_dagster.resources.dbt import dbt_executable, dbt_project
from finsup_dagster.resources.gateways import BankOutboxResource, gateway_resources_from_env
from finsup_dagster.resources.ledger import LedgerResource
from finsup_dagster.resources.payout_policy import PayoutPolicyResource
from finsup_dagster.resources.paypal import PayPalReportingResource
from finsup_dagster.resources.reconciliation import ReconciliationPolicyResource

__all__ = [
    "LedgerResource",
    "PayPalReportingResource",
    "PayoutPolicyResource",
    "ReconciliationPolicyResource",
    "resources_from_env",
]


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources every definition uses; dev, CI and production differ only in env."""
    return {
        "ledger": LedgerResource(
            url=dg.EnvVar("FINSUP_LEDGER_URL"),
            home=dg.EnvVar("FINSUP_HOME"),
            audit_key=dg.EnvVar("FINSUP_AUDIT_KEY"),
        ),
        "payout_policy": PayoutPolicyResource(
            min_item=dg.EnvVar("FINSUP_MIN_ITEM"),
            max_batch_total=dg.EnvVar("FINSUP_MAX_BATCH_TOTAL"),
            dual_approval_over=dg.EnvVar("FINSUP_DUAL_APPROVAL_OVER"),
        ),
        "duckdb": DuckDBResource(database=dg.EnvVar("FINSUP_WAREHOUSE_PATH")),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
        "paypal": PayPalReportingResource(
            base_url=dg.EnvVar("FINSUP_PAYPAL_BASE_URL"),
            client_id=dg.EnvVar("FINSUP_PAYPAL_CLIENT_ID"),
            client_secret=dg.EnvVar("FINSUP_PAYPAL_CLIENT_SECRET"),
        ),
        "reconciliation_policy": ReconciliationPolicyResource(
            unmatched_rate_threshold=dg.EnvVar("FINSUP_UNMATCHED_RATE_THRESHOLD")
        ),
        **gateway_resources_from_env(),
        "bank_outbox": BankOutboxResource(
            outbox_dir=dg.EnvVar("FINSUP_BANK_OUTBOX"),
            debtor_name=dg.EnvVar("FINSUP_BANK_DEBTOR_NAME"),
            debtor_iban=dg.EnvVar("FINSUP_BANK_DEBTOR_IBAN"),
            debtor_bic=dg.EnvVar("FINSUP_BANK_DEBTOR_BIC"),
        ),
    }

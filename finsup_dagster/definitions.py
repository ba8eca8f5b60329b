"""The one Definitions object of the finsup code location."""

import dagster as dg

from finsup_dagster import logs
from finsup_dagster.assets import (
    audit,
    balances,
    ledger_replica,
    payouts,
    raw,
    reconciliation,
    revenue,
)
from finsup_dagster.executors import executor_for
from finsup_dagster.jobs import (
    create_payout_batches_job,
    nightly_reconciliation_job,
    submit_payout_batch,
)
from finsup_dagster.jobs_statuses import sync_payout_statuses
from finsup_dagster.resources import resources_from_env
from finsup_dagster.resources.alerts import alerts_resource_from_env
from finsup_dagster.schedules import (
    monthly_audit_snapshot_schedule,
    nightly_reconciliation_schedule,
)
from finsup_dagster.sensors.alerts import money_job_failure_alert, stuck_payouts_sensor
from finsup_dagster.sensors.approved_batches import approved_batches_sensor
from finsup_dagster.sensors.earnings import earnings_landed_sensor
from finsup_dagster.sensors.payout_status import payout_status_sensor
from finsup_dagster.settings import load_secrets_file

# Before the resources read their EnvVars: the webserver, daemon and run workers of a
# deployment get the gateways' credentials from FINSUP_SECRETS_FILE when it is set.
load_secrets_file()
logs.configure_from_env()  # FINSUP_LOG_FORMAT=json: JSON lines from every Dagster process

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [raw, revenue, ledger_replica, reconciliation, balances, payouts, audit]
    ),
    asset_checks=dg.load_asset_checks_from_modules([balances]),
    jobs=[
        nightly_reconciliation_job,
        create_payout_batches_job,
        submit_payout_batch,
        sync_payout_statuses,
        audit.audit_snapshot_job,
    ],
    schedules=[nightly_reconciliation_schedule, monthly_audit_snapshot_schedule],
    sensors=[
        approved_batches_sensor,
        payout_status_sensor,
        stuck_payouts_sensor,
        money_job_failure_alert,
        earnings_landed_sensor,
    ],
    resources={**resources_from_env(), "alerts": alerts_resource_from_env()},
    # Jobs that name no executor (the UI's ad hoc materialisations): FINSUP_EXECUTOR.
    executor=executor_for(None),
)

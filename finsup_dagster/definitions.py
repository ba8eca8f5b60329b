"""The one Definitions object of the finsup code location."""

import dagster as dg

from finsup_dagster.assets import balances, payouts, revenue
from finsup_dagster.jobs import books_job, create_payout_batches_job, submit_payout_batch
from finsup_dagster.resources import resources_from_env
from finsup_dagster.sensors.approved_batches import approved_batches_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([revenue, balances, payouts]),
    asset_checks=dg.load_asset_checks_from_modules([balances]),
    jobs=[books_job, create_payout_batches_job, submit_payout_batch],
    sensors=[approved_batches_sensor],
    resources=resources_from_env(),
)

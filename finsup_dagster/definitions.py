"""The one Definitions object of the finsup code location."""

import dagster as dg

from finsup_dagster.assets import balances, revenue
from finsup_dagster.jobs import books_job
from finsup_dagster.resources import resources_from_env

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([revenue, balances]),
    asset_checks=dg.load_asset_checks_from_modules([balances]),
    jobs=[books_job],
    resources=resources_from_env(),
)

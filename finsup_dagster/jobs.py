"""Jobs: named selections of assets."""

import dagster as dg

# The main job: land revenue in the books and work out what is available.
books_job = dg.define_asset_job(
    "books",
    selection=dg.AssetSelection.groups("ingestion", "balances"),
    description="Ingest landed revenue into the ledger and compute the available balance.",
)

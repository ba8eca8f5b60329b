"""The daily partitions every day-shaped asset shares."""

import os

import dagster as dg

# Days in FINSUP_TIMEZONE, the finance team's day. end_offset=1 lets the
# nightly run for "yesterday" exist even where the local day ends before UTC's.
daily = dg.DailyPartitionsDefinition(
    start_date="2025-01-01",
    timezone=os.environ.get("FINSUP_TIMEZONE", "UTC"),
    end_offset=1,
)

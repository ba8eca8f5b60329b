"""The DuckDB warehouse: raw landed files, the ledger replica, and what dbt builds.

Only Dagster runs write it, one at a time (pool ``warehouse``); the CLI reads it
read-only. No Dagster imports here: assets are a thin layer over these modules.
"""

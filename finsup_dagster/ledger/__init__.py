"""The books: finsup's system of record for money.

Nothing in this package imports Dagster: assets, sensors, the CLI and the web
app are thin layers over these functions, so the rules live in one place.
"""

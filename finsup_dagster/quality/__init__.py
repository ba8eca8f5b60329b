"""Data quality: pandera contracts for frames, and a Great Expectations report on inputs.

``schemas`` holds the pandera models and ``validate`` (one-line ``InvalidInput``): the
contracts a frame must meet where it crosses a Python boundary, landing first.
``expectations`` reports on a day's landed settlement inputs as a whole (footer counts,
day coverage, currency mix, amount range) and imports Great Expectations only when
called. The dbt tests hold the models; each rule has one home (docs/reconciliation.md,
"One home per rule"). Nothing here imports Dagster.
"""

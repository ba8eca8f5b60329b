"""The auditor's snapshot and the finance team's exports (no Dagster imports here).

``snapshot`` writes one DuckDB file of the books, ``canonical`` defines the
manifest hashes, ``verify`` checks a snapshot from the file alone, ``as_of``
rebuilds the books as they stood at an earlier instant, ``reconciliation`` and
``tax_report`` write the finance team's files. See docs/audit.md.
"""

{{ config(meta={"dagster": {"ref": {"name": "reconciliation_open_lines"}}}) }}

-- The night's open lines are exactly the lines no night up to it matched; a bank
-- charge is never open (macros/open_items.sql: open_items_complete).
{{ open_items_complete('line', 'settlement_lines', open_line(), 'no such line, or a bank charge') }}

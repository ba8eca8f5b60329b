{{ config(meta={"dagster": {"ref": {"name": "reconciliation_match_keys"}}}) }}

-- Every pair matched tonight names an event and a settlement line the warehouse
-- has: reconciliation_matches (the view readers use) joins them back, and a
-- pair whose key named nothing would drop out of it unseen.
with

tonight as (
    select event_key, line_key from {{ ref('reconciliation_match_keys') }}
    where run_date = {{ run_date_text() }}
)

-- By name: a missing event's row has no line_key, a missing line's no event_key.
select tonight.event_key from tonight
anti join {{ ref('stg_ledger__revenue_events') }} as events
    on events.event_key = tonight.event_key
union all by name
select tonight.line_key from tonight
anti join {{ ref('settlement_lines') }} as lines on lines.line_key = tonight.line_key

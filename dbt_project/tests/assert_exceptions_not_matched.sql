{{ config(meta={"dagster": {"ref": {"name": "reconciliation_exceptions"}}}) }}

-- An item is either matched or open on the night being built, never both.
-- Two equality joins (lines by id, revenue-side items by event), so the test
-- costs what the night costs, not exceptions × matches.
with

tonight as (
    select * from {{ ref('reconciliation_exceptions') }}
    where run_date = {{ run_date_text() }}
),

matches as (
    select event_hash, settlement_line_id from {{ ref('reconciliation_matches') }}
    where run_date <= {{ run_date_text() }}
)

select tonight.*
from tonight
inner join matches on matches.settlement_line_id = tonight.settlement_line_id

union all

select tonight.*
from tonight
inner join matches on matches.event_hash = tonight.event_hash
where tonight.settlement_line_id is null

{{ config(meta={"dagster": {"ref": {"name": "reconciliation_matches"}}}) }}

-- No event and no settlement line matched tonight was matched on another night.
-- With the unique tests on tonight's matches, this keeps every event and every
-- line in at most one match over all nights, at the cost of two equality joins
-- of tonight's few matches against the others (not a uniqueness scan of history).
with

tonight as (
    select event_hash, settlement_line_id from {{ ref('reconciliation_matches') }}
    where run_date = {{ run_date_text() }}
),

other_nights as (
    select event_hash, settlement_line_id, run_date from {{ ref('reconciliation_matches') }}
    where run_date <> {{ run_date_text() }}
)

select tonight.*, other_nights.run_date as also_matched_on
from tonight
inner join other_nights on other_nights.event_hash = tonight.event_hash

union all

select tonight.*, other_nights.run_date
from tonight
inner join other_nights on other_nights.settlement_line_id = tonight.settlement_line_id

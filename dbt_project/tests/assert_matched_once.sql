{{ config(meta={"dagster": {"ref": {"name": "reconciliation_matches"}}}) }}

-- No event and no settlement line matched tonight was matched on another night.
-- With the unique tests on tonight's matches, this keeps every event and every
-- line in at most one match over all nights, at the cost of one pass over the
-- other nights' matches against tonight's few (not a uniqueness scan of history).
with

tonight as (
    select event_hash, settlement_line_id from {{ ref('reconciliation_matches') }}
    where run_date = {{ run_date_text() }}
)

select other.event_hash, other.settlement_line_id, other.run_date as also_matched_on
from {{ ref('reconciliation_matches') }} as other
left join tonight as same_event on same_event.event_hash = other.event_hash
left join tonight as same_line on same_line.settlement_line_id = other.settlement_line_id
where other.run_date <> {{ run_date_text() }}
  and (same_event.event_hash is not null or same_line.settlement_line_id is not null)

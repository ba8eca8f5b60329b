{{ config(meta={"dagster": {"ref": {"name": "reconciliation_match_keys"}}}) }}

-- No event and no settlement line matched tonight was matched on another night.
-- With the unique tests on tonight's matches, this keeps every event and every
-- line in at most one match over all nights, at the cost of one pass over the
-- other nights' matches against tonight's few (not a uniqueness scan of history).
with

tonight as (
    select event_key, line_key from {{ ref('reconciliation_match_keys') }}
    where run_date = {{ run_date_text() }}
)

select other.event_key, other.line_key, other.run_date as also_matched_on
from {{ ref('reconciliation_match_keys') }} as other
left join tonight as same_event on same_event.event_key = other.event_key
left join tonight as same_line on same_line.line_key = other.line_key
where other.run_date <> {{ run_date_text() }}
  and (same_event.event_key is not null or same_line.line_key is not null)

{{ config(meta={"dagster": {"ref": {"name": "reconciliation_open_events"}}}) }}

-- Every sale, refund and chargeback the books have not reversed is, on the
-- night being built, either open or matched (that night or before), never
-- both: the open events and the matched ones not reversed since add up to all
-- of them, and none is in both (macros/open_items.sql).
with

open_events as (
    select event_hash from {{ ref('reconciliation_open_events') }}
    where run_date = {{ run_date_text() }}
),

matched as (
    select event_hash from {{ ref('reconciliation_matches') }}
    where run_date <= {{ run_date_text() }}
),

reversed as (
    select event_hash from {{ ref('stg_ledger__revenue_events') }}
    where status = 'reversed'
),

counts as (
    select
        (select count(*) from {{ ref('stg_ledger__revenue_events') }} as events
         where {{ open_event() }}) as events,
        (select count(*) from open_events) as open,
        (select count(*) from matched) as matched,
        (select count(*) from matched semi join reversed using (event_hash)) as matched_reversed
)

select 'open and matched' as problem, open_events.event_hash, null as events, null as open,
    null as matched
from open_events
semi join matched on matched.event_hash = open_events.event_hash

union all

select 'open + matched <> events', null, events, open, matched - matched_reversed
from counts
where open + matched - matched_reversed <> events

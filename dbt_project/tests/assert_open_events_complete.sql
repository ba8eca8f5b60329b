{{ config(meta={"dagster": {"ref": {"name": "reconciliation_open_events"}}}) }}

-- The night's open events are exactly the events no night up to it matched:
-- each is a sale, refund or chargeback the books have not reversed, once, and
-- not matched; and they and the matched ones not reversed since add up to all
-- such events. Passes over the events (and their few reversed ones) and over
-- the matches (macros/open_items.sql).
with

open_events as (
    select event_key from {{ ref('reconciliation_open_events') }}
    where run_date = {{ run_date_text() }}
),

reversed as (
    select event_key from {{ ref('stg_ledger__revenue_events') }}
    where status = 'reversed'
),

events as (
    select
        count(*) filter (where {{ open_event() }}) as can_be_open,
        count(open_events.event_key) filter (where {{ open_event() }}) as open_found
    from {{ ref('stg_ledger__revenue_events') }} as events
    left join open_events on open_events.event_key = events.event_key
),

-- A matched event the books reversed since no longer counts (looked up in the
-- few reversed ones).
matches as (
    select
        count(*) filter (where matches.event_key not in (select event_key from reversed))
            as matched,
        count(open_events.event_key) as open_and_matched
    from {{ ref('reconciliation_match_keys') }} as matches
    left join open_events on open_events.event_key = matches.event_key
    where matches.run_date <= {{ run_date_text() }}
),

open as (
    select count(*) as open, count(distinct event_key) as distinct_open
    from open_events
)

-- By name: each problem with the count found and, where there is one, the count expected.
select 'open twice' as problem, open as found, distinct_open as expected
from open where distinct_open <> open
union all by name
select 'open but no such event, reversed, or a fee' as problem, open as found, open_found as expected
from open, events where open_found <> open
union all by name
select 'open and matched' as problem, open_and_matched as found
from matches where open_and_matched > 0
union all by name
select 'open + matched <> events that can be open' as problem, open + matched as found,
    can_be_open as expected
from open, matches, events where open + matched <> can_be_open

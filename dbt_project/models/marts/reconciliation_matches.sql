{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='run_date',
    on_schema_change='fail',
) }}

-- Matched pairs (revenue event, settlement line), one-to-one, with the rule that
-- matched them. Incremental by run_date: a nightly run only pairs events and
-- lines no other run matched (anti-joins, so history costs a scan of two id
-- columns, not a rebuild); running a day again replaces that day's matches.
-- Every join is on equality keys, so DuckDB hash-joins them: the amount
-- tolerance and the date window are enumerated offsets, not range predicates.
with

matched_elsewhere as (
    {% if is_incremental() %}
    select event_hash, settlement_line_id from {{ this }}
    where run_date <> {{ run_date_text() }}
    {% else %}
    select cast(null as varchar) as event_hash, cast(null as varchar) as settlement_line_id
    where false
    {% endif %}
),

lines as (
    select lines.*
    from {{ ref('settlement_lines') }} as lines
    anti join matched_elsewhere as m on m.settlement_line_id = lines.settlement_line_id
    where lines.kind <> 'other'
      and lines.settled_on <= {{ run_date() }}
),

events as (
    select events.*
    from {{ ref('stg_ledger__revenue_events') }} as events
    anti join matched_elsewhere as m on m.event_hash = events.event_hash
    where events.kind in ('sale', 'refund', 'chargeback')
      and events.status <> 'reversed'
      and events.occurred_at < {{ run_end_text() }}
),

amount_offsets as (
    select unnest(range(-{{ var('amount_tolerance_minor') }},
                        {{ var('amount_tolerance_minor') }} + 1)) as delta
),

day_offsets as (
    select unnest(range(0, {{ var('match_window_days') }} + 1)) as days
),

-- Rule 1: the gateway's transaction id names the event, same kind, same
-- currency, amount within the tolerance (else it is an exception, not a
-- match). The earliest settled line wins; a later one is a duplicate.
by_id as (
    select
        events.event_hash,
        lines.settlement_line_id,
        row_number() over (
            partition by events.event_hash
            order by lines.settled_on, lines.settlement_line_id
        ) as nth_for_event,
        row_number() over (
            partition by lines.settlement_line_id
            order by events.event_hash
        ) as nth_for_line
    from lines
    inner join events
        on lines.gateway_txn_id = events.external_id
        and lines.kind = events.kind
        and lines.currency = events.currency
    where coalesce(lines.gateway, events.source) = events.source
      and abs(lines.gross_minor - events.amount_minor) <= {{ var('amount_tolerance_minor') }}
),

id_matches as (
    select event_hash, settlement_line_id, 'gateway_txn_id' as rule
    from by_id
    where nth_for_event = 1 and nth_for_line = 1
),

-- Rule 2: lines without an id, by kind, currency, amount (within the
-- tolerance) and settled 0..match_window_days after the event's day. Only
-- mutual best candidates pair up, so an ambiguous line is left for a human.
candidates as (
    select
        lines.settlement_line_id,
        lines.kind,
        lines.currency,
        lines.gateway,
        lines.gross_minor + amount_offsets.delta as amount_minor,
        lines.settled_on - cast(day_offsets.days as integer) as occurred_on,
        day_offsets.days as lag_days
    from lines
    cross join amount_offsets
    cross join day_offsets
    where lines.gateway_txn_id is null
),

open_events as (
    select events.*
    from events
    anti join id_matches on id_matches.event_hash = events.event_hash
),

by_amount as (
    select
        open_events.event_hash,
        candidates.settlement_line_id,
        row_number() over (
            partition by candidates.settlement_line_id
            order by candidates.lag_days, open_events.occurred_at, open_events.event_hash
        ) as pick_for_line,
        row_number() over (
            partition by open_events.event_hash
            order by candidates.lag_days, candidates.settlement_line_id
        ) as pick_for_event
    from candidates
    inner join open_events
        on open_events.kind = candidates.kind
        and open_events.currency = candidates.currency
        and open_events.amount_minor = candidates.amount_minor
        and open_events.occurred_on = candidates.occurred_on
    where coalesce(candidates.gateway, open_events.source) = open_events.source
),

amount_matches as (
    select event_hash, settlement_line_id, 'amount_date_window' as rule
    from by_amount
    where pick_for_line = 1 and pick_for_event = 1
),

matched as (
    select * from id_matches
    union all
    select * from amount_matches
)

select
    matched.event_hash,
    events.source,
    events.external_id,
    events.kind,
    events.amount_minor as revenue_amount_minor,
    events.currency as revenue_currency,
    events.occurred_at,
    lines.settlement_line_id,
    lines.settlement_source,
    cast(lines.settled_on as varchar) as settled_on,
    lines.gross_minor,
    lines.currency,
    lines.fee_minor,
    lines.fee_currency,
    lines.gross_minor - events.amount_minor as amount_difference_minor,
    -- A line that is one of many under one bank credit was matched through its batch.
    case when lines.batch_ref is not null then 'batch_reference' else matched.rule end
        as match_rule,
    lines.batch_ref,
    lines.file_name,
    lines.record_ref,
    {{ run_date_text() }} as run_date
from matched
inner join events on events.event_hash = matched.event_hash
inner join lines on lines.settlement_line_id = matched.settlement_line_id

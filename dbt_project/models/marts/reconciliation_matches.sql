{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='run_date',
    on_schema_change='fail',
) }}

-- Matched pairs (revenue event, settlement line), one-to-one, with the rule that
-- matched them. Incremental by run_date: a nightly run only looks at events and
-- lines no other run matched, so its cost follows the new day and the open
-- items, not the whole history; running a day again replaces that day's matches.
with

lines as (
    select * from {{ ref('settlement_lines') }}
    where kind <> 'other'
      and settled_on <= {{ run_date() }}
    {% if is_incremental() %}
      and settlement_line_id not in (
          select settlement_line_id from {{ this }} where run_date <> {{ run_date_text() }}
      )
    {% endif %}
),

events as (
    select * from {{ ref('stg_ledger__revenue_events') }}
    where kind in ('sale', 'refund', 'chargeback')
      and status <> 'reversed'
      and occurred_at < {{ run_end() }}
    {% if is_incremental() %}
      and event_hash not in (
          select event_hash from {{ this }} where run_date <> {{ run_date_text() }}
      )
    {% endif %}
),

-- Rule 1: the gateway's transaction id names the event. Amount within the
-- tolerance and the same currency, else it is an exception, not a match. The
-- earliest settled line wins; a second one is a duplicate settlement.
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
    from events
    inner join lines
        on lines.gateway_txn_id = events.external_id
        and lines.kind = events.kind
        and coalesce(lines.gateway, events.source) = events.source
    where lines.currency = events.currency
      and abs(lines.gross_minor - events.amount_minor) <= {{ var('amount_tolerance_minor') }}
),

id_matches as (
    select event_hash, settlement_line_id, 'gateway_txn_id' as rule
    from by_id
    where nth_for_event = 1 and nth_for_line = 1
),

-- Rule 2: lines without an id, by kind, currency, amount and a date window
-- (occurred at most match_window_days before settlement). Only mutual best
-- candidates pair up, so an ambiguous line is left for a human.
by_amount as (
    select
        events.event_hash,
        lines.settlement_line_id,
        row_number() over (
            partition by lines.settlement_line_id
            order by date_diff('day', cast(events.occurred_at as date), lines.settled_on),
                     events.occurred_at, events.event_hash
        ) as pick_for_line,
        row_number() over (
            partition by events.event_hash
            order by date_diff('day', cast(events.occurred_at as date), lines.settled_on),
                     lines.settlement_line_id
        ) as pick_for_event
    from events
    inner join lines
        on lines.gateway_txn_id is null
        and lines.kind = events.kind
        and coalesce(lines.gateway, events.source) = events.source
        and lines.currency = events.currency
        and abs(lines.gross_minor - events.amount_minor) <= {{ var('amount_tolerance_minor') }}
        and date_diff('day', cast(events.occurred_at as date), lines.settled_on)
            between 0 and {{ var('match_window_days') }}
    where events.event_hash not in (select event_hash from id_matches)
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
    strftime(events.occurred_at, '%Y-%m-%dT%H:%M:%S.%fZ') as occurred_at,
    lines.settlement_line_id,
    lines.settlement_source,
    strftime(lines.settled_on, '%Y-%m-%d') as settled_on,
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

-- Everything still open after the run for run_date, one row per item, each in
-- exactly one kind (first that applies, in the order of docs/reconciliation.md):
--   settlement lines: duplicate_settlement > currency_mismatch > amount_mismatch
--                     > unmatched_settlement
--   revenue events:   (reported with their line above) > stale_projected
--                     > unmatched_revenue; events younger than the match window
--                     are awaiting settlement, not exceptions.
--   batch credits:    amount_mismatch when the lines under one bank credit do
--                     not add up, net of fees, to the credited amount.
-- A snapshot per run_date: open items as that day closed.
with

-- What the night left open and is due (reconciliation_open_lines / _events).
open_lines as (
    select lines.* exclude (run_date) from {{ ref('reconciliation_open_lines') }} as lines
    where lines.run_date = {{ run_date_text() }} and {{ line_due() }}
),

open_events as (
    select
        events.event_key, events.event_hash, events.source, events.external_id, events.kind,
        events.amount_minor,
        events.currency, events.occurred_at, events.status, events.source_file,
        date_diff('day', events.occurred_on, {{ run_date() }}) as age_days
    from {{ ref('reconciliation_open_events') }} as events
    where events.run_date = {{ run_date_text() }} and {{ event_due() }}
),

-- The event an open line's transaction id names, matched already or not,
-- with the event's columns the report shows.
named as (
    select
        open_lines.line_key,
        events.event_key,
        events.event_hash,
        events.source,
        events.external_id,
        events.amount_minor,
        events.currency,
        events.occurred_at,
        events.event_key not in (select event_key from open_events) as already_matched,
        events.currency <> open_lines.currency as other_currency
    from open_lines
    inner join {{ ref('stg_ledger__revenue_events') }} as events
        on events.external_id = open_lines.gateway_txn_id
        and events.kind = open_lines.kind
    where coalesce(open_lines.gateway, events.source) = events.source
      and {{ open_event() }} and {{ event_due() }}
    qualify row_number() over (
        partition by open_lines.line_key
        order by events.occurred_at, events.event_hash
    ) = 1
),

line_exceptions as (
    select
        case
            when named.already_matched then 'duplicate_settlement'
            when named.other_currency then 'currency_mismatch'
            when named.event_hash is not null then 'amount_mismatch'
            else 'unmatched_settlement'
        end as exception_kind,
        named.event_key,
        named.event_hash,
        named.source as event_source,
        named.external_id as event_external_id,
        named.amount_minor as event_amount_minor,
        named.currency as event_currency,
        named.occurred_at as event_occurred_at,
        open_lines.*
    from open_lines
    left join named on named.line_key = open_lines.line_key
),

event_exceptions as (
    select
        case
            when open_events.status = 'projected'
                and open_events.age_days > {{ var('stale_after_days') }}
                then 'stale_projected'
            else 'unmatched_revenue'
        end as exception_kind,
        open_events.*
    from open_events
    anti join line_exceptions on line_exceptions.event_key = open_events.event_key
    where open_events.age_days > {{ var('match_window_days') }}
),

batches as (
    select
        batch_ref,
        settlement_source,
        any_value(currency) as currency,
        max(settled_on) as settled_on,
        any_value(file_name) as file_name,
        -- The credited (or debited) amount is unsigned, as the bank states it.
        abs(sum(case when direction = 'credit' then gross_minor else -gross_minor end)
            - sum(fee_minor)) as lines_net_minor,
        min(batch_net_minor) as batch_net_minor,
        count(*) as line_count
    from {{ ref('settlement_lines') }}
    where batch_ref is not null and batch_net_minor is not null
      and kind <> 'other' and settled_on <= {{ run_date() }}
    group by batch_ref, settlement_source
    -- Only a batch in one currency, fees included, can be added up; finsup
    -- never converts, and a mixed batch shows up line by line instead.
    having count(distinct currency) = 1 and bool_and(fee_currency = currency)
),

batch_exceptions as (
    select * from batches
    where abs(lines_net_minor - batch_net_minor) > {{ var('amount_tolerance_minor') }}
)

select
    {{ run_date_text() }} as run_date,
    line_exceptions.exception_kind,
    line_exceptions.event_hash,
    line_exceptions.event_source as source,
    line_exceptions.event_external_id as external_id,
    line_exceptions.settlement_line_id,
    line_exceptions.settlement_source,
    line_exceptions.gateway_txn_id,
    line_exceptions.kind,
    line_exceptions.event_amount_minor as revenue_amount_minor,
    line_exceptions.event_currency as revenue_currency,
    line_exceptions.gross_minor,
    line_exceptions.currency,
    line_exceptions.fee_minor,
    case when line_exceptions.event_currency = line_exceptions.currency
        then line_exceptions.gross_minor - line_exceptions.event_amount_minor
    end as amount_difference_minor,
    line_exceptions.event_occurred_at as occurred_at,
    cast(line_exceptions.settled_on as varchar) as settled_on,
    date_diff('day', line_exceptions.settled_on, {{ run_date() }}) as age_days,
    line_exceptions.file_name,
    line_exceptions.record_ref,
    case line_exceptions.exception_kind
        when 'duplicate_settlement' then 'transaction already settled by an earlier line'
        when 'currency_mismatch' then 'settled in ' || line_exceptions.currency
            || ', revenue in ' || line_exceptions.event_currency
        when 'amount_mismatch' then 'settled ' || cast(line_exceptions.gross_minor as varchar)
            || ', revenue ' || cast(line_exceptions.event_amount_minor as varchar)
            || ' (minor units)'
        else 'no revenue event for this settlement line'
    end as detail,
    line_exceptions.fee_currency
from line_exceptions

-- By name: the columns the events and batches do not have are NULL, in the
-- lines' order and types (the mart's columns).
union all by name

select
    {{ run_date_text() }} as run_date,
    exception_kind,
    event_hash,
    source,
    external_id,
    kind,
    amount_minor as revenue_amount_minor,
    currency as revenue_currency,
    occurred_at,
    age_days,
    source_file as file_name,
    case exception_kind
        when 'stale_projected' then 'projected and unsettled for ' || cast(age_days as varchar)
            || ' days'
        else 'no settlement line after ' || cast(age_days as varchar) || ' days'
    end as detail
from event_exceptions

union all by name

select
    {{ run_date_text() }} as run_date,
    'amount_mismatch' as exception_kind,
    settlement_source,
    'batch' as kind,
    lines_net_minor as gross_minor,
    currency,
    lines_net_minor - batch_net_minor as amount_difference_minor,
    cast(settled_on as varchar) as settled_on,
    date_diff('day', settled_on, {{ run_date() }}) as age_days,
    file_name,
    batch_ref as record_ref,
    'batch ' || batch_ref || ': ' || cast(line_count as varchar) || ' lines net '
        || cast(lines_net_minor as varchar) || ', credited '
        || cast(batch_net_minor as varchar) || ' (minor units)' as detail
from batch_exceptions

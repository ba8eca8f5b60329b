-- One row per run_date, category and currency: what finance reads first.
-- matched counts the matches the run for run_date made; the exception kinds and
-- awaiting_settlement count what was open when that day closed. Amounts are
-- signed in minor units (refunds and chargebacks negative).
with

-- The night's matched lines (amounts as settled).
matched_lines as (
    select lines.kind, lines.gross_minor, lines.currency, lines.fee_minor, lines.fee_currency
    from {{ ref('reconciliation_match_keys') }} as matches
    inner join {{ ref('settlement_lines') }} as lines on lines.line_key = matches.line_key
    where matches.run_date = {{ run_date_text() }}
),

-- Fees are summed in their own currency, which need not be the line's.
matched as (
    select
        'matched' as category,
        currency,
        count(*) as items,
        sum(case when kind = 'sale' then gross_minor else -gross_minor end) as net_amount_minor,
        0 as fee_minor
    from matched_lines
    group by currency
    union all by name
    select
        'matched' as category,
        fee_currency as currency,
        0 as items,
        0 as net_amount_minor,
        sum(fee_minor) as fee_minor
    from matched_lines
    group by fee_currency
),

exceptions as (
    select
        exception_kind as category,
        coalesce(currency, revenue_currency) as currency,
        count(*) as items,
        sum(
            case when kind in ('refund', 'chargeback') then -1 else 1 end
            * coalesce(gross_minor, revenue_amount_minor)
        ) as net_amount_minor,
        0 as fee_minor
    from {{ ref('reconciliation_exceptions') }}
    where run_date = {{ run_date_text() }}
    group by all
    union all by name
    select
        exception_kind as category,
        fee_currency as currency,
        0 as items,
        0 as net_amount_minor,
        sum(fee_minor) as fee_minor
    from {{ ref('reconciliation_exceptions') }}
    where run_date = {{ run_date_text() }} and fee_currency is not null
    group by all
),

exception_events as (
    select event_hash from {{ ref('reconciliation_exceptions') }}
    where run_date = {{ run_date_text() }} and event_hash is not null
),

-- Open events still within the match window (not exceptions yet).
awaiting as (
    select
        'awaiting_settlement' as category,
        events.currency,
        count(*) as items,
        sum(case when events.kind = 'sale' then events.amount_minor else -events.amount_minor end)
            as net_amount_minor,
        0 as fee_minor
    from {{ ref('reconciliation_open_events') }} as events
    anti join exception_events on exception_events.event_hash = events.event_hash
    where events.run_date = {{ run_date_text() }} and {{ event_due() }}
      and events.occurred_at
          >= strftime({{ run_date() }} - {{ var('match_window_days') }}, '%Y-%m-%d')
    group by events.currency
),

all_rows as (
    select * from matched
    union all by name
    select * from exceptions
    union all by name
    select * from awaiting
)

select
    {{ run_date_text() }} as run_date,
    category,
    currency,
    sum(items) as items,
    sum(net_amount_minor) as net_amount_minor,
    sum(fee_minor) as fee_minor
from all_rows
group by category, currency

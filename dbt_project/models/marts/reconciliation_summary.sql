{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='run_date',
    on_schema_change='fail',
) }}

-- One row per run_date, category and currency: what finance reads first.
-- matched counts the matches the run for run_date made; the exception kinds and
-- awaiting_settlement count what was open when that day closed. Amounts are
-- signed in minor units (refunds and chargebacks negative).
with

matched as (
    select
        'matched' as category,
        currency,
        count(*) as items,
        sum(case when kind = 'sale' then gross_minor else -gross_minor end) as net_amount_minor,
        sum(fee_minor) as fee_minor
    from {{ ref('reconciliation_matches') }}
    where run_date = {{ run_date_text() }}
    group by currency
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
        coalesce(sum(fee_minor), 0) as fee_minor
    from {{ ref('reconciliation_exceptions') }}
    where run_date = {{ run_date_text() }}
    group by all
),

awaiting as (
    select
        'awaiting_settlement' as category,
        currency,
        count(*) as items,
        sum(case when kind = 'sale' then amount_minor else -amount_minor end),
        0
    from {{ ref('stg_ledger__revenue_events') }}
    where kind in ('sale', 'refund', 'chargeback')
      and status <> 'reversed'
      and occurred_at < {{ run_end() }}
      and date_diff('day', cast(occurred_at as date), {{ run_date() }})
          <= {{ var('match_window_days') }}
      and event_hash not in (
          select event_hash from {{ ref('reconciliation_matches') }}
          where run_date <= {{ run_date_text() }}
      )
      and event_hash not in (
          select event_hash from {{ ref('reconciliation_exceptions') }}
          where run_date = {{ run_date_text() }} and event_hash is not null
      )
    group by currency
)

select {{ run_date_text() }} as run_date, * from matched
union all
select {{ run_date_text() }}, * from exceptions
union all
select {{ run_date_text() }}, * from awaiting

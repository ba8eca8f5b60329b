-- Matched pairs (revenue event, settlement line), one-to-one, with the rule that
-- matched them. Incremental by run_date: a nightly run only pairs events and
-- lines no other run matched (the open items: macros/open_items.sql); running a
-- day again replaces that day's matches.
-- Every join is on equality keys, so DuckDB hash-joins them: the amount
-- tolerance and the date window are enumerated offsets, not range predicates.
{{ config(pre_hook="{{ forget_nights_from_run_date() }}") }}
with

{% set line_columns -%}
    lines.settlement_line_id, lines.settlement_source, lines.gateway, lines.gateway_txn_id,
    lines.kind, lines.gross_minor, lines.currency, lines.fee_minor, lines.fee_currency,
    lines.settled_on, lines.batch_ref, lines.partition_date, lines.file_name, lines.row_number,
    lines.record_ref
{%- endset %}
{% set event_columns -%}
    events.event_hash, events.source, events.external_id, events.kind,
    events.amount_minor, events.currency, events.occurred_at, events.occurred_on
{%- endset %}
{#- What a match keeps of its line, for both rules. -#}
{% set stored_line_columns -%}
    lines.settlement_line_id, lines.settlement_source, lines.settled_on, lines.gross_minor,
    lines.currency, lines.fee_minor, lines.fee_currency, lines.batch_ref, lines.file_name,
    lines.record_ref
{%- endset %}
{#- Which of several qualifying lines comes first, after the settlement day: the
    one landed first (landing day, then file name), then the earlier row of its
    file; the line id (unique) settles the rest. -#}
{% set line_order -%}
    partition_date, file_name, row_number, settlement_line_id
{%- endset %}
{#- Open and due tonight (macros/open_items.sql). -#}
{% set line_filter -%}
    {{ open_line() }} and {{ line_due() }}
{%- endset %}
{% set event_filter -%}
    {{ open_event() }} and {{ event_due() }}
{%- endset %}

{% set night = previous_night() if is_incremental() else none %}
{% if night %}
-- Tonight's open items: the previous night's, and what arrived since.
lines as (
    select {{ line_columns }}
    from ({{ recent_open_lines(night) }}) as lines
    where {{ line_due() }}
),

events as (
    select {{ event_columns }}
    from ({{ recent_open_events(night) }}) as events
    where {{ event_due() }}
),
{% elif is_incremental() %}
-- No previous night to start from: history is anti-joined on the id column
-- alone, and only the few ids left fetch their other columns (an anti-join
-- carrying every column of a year of lines costs several times more).
matched_elsewhere as (
    select event_hash, settlement_line_id from {{ this }}
    where run_date <> {{ run_date_text() }}
),

open_line_ids as (
    select lines.settlement_line_id
    from {{ ref('settlement_lines') }} as lines
    anti join matched_elsewhere as m on m.settlement_line_id = lines.settlement_line_id
    where {{ line_filter }}
),

open_event_hashes as (
    select events.event_hash
    from {{ ref('stg_ledger__revenue_events') }} as events
    anti join matched_elsewhere as m on m.event_hash = events.event_hash
    where {{ event_filter }}
),

lines as (
    select {{ line_columns }}
    from {{ ref('settlement_lines') }} as lines
    semi join open_line_ids as o on o.settlement_line_id = lines.settlement_line_id
),

events as (
    select {{ event_columns }}
    from {{ ref('stg_ledger__revenue_events') }} as events
    semi join open_event_hashes as o on o.event_hash = events.event_hash
),
{% else %}
lines as (
    select {{ line_columns }}
    from {{ ref('settlement_lines') }} as lines
    where {{ line_filter }}
),

events as (
    select {{ event_columns }}
    from {{ ref('stg_ledger__revenue_events') }} as events
    where {{ event_filter }}
),
{% endif %}

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
-- Each pair carries every column the table stores, so nothing is joined back.
pairs_by_id as (
    select
        events.event_hash,
        events.source,
        events.external_id,
        events.kind,
        events.amount_minor as revenue_amount_minor,
        events.currency as revenue_currency,
        events.occurred_at,
        {{ stored_line_columns }},
        lines.partition_date,
        lines.row_number,
        hash(events.external_id) as id_key
    from lines
    inner join events
        on lines.gateway_txn_id = events.external_id
        and lines.kind = events.kind
        and lines.currency = events.currency
    where coalesce(lines.gateway, events.source) = events.source
      and abs(lines.gross_minor - events.amount_minor) <= {{ var('amount_tolerance_minor') }}
),

-- Almost every id names one event and one line: that pair needs no ranking.
-- Ids named twice on either side go to the exact ranking below. They are found
-- by a 64-bit hash of the id, for speed: a collision only sends a few more
-- pairs through the ranking, it never pairs anything differently.
repeated_ids as (
    select hash(gateway_txn_id) as id_key from lines
    where gateway_txn_id is not null
    group by id_key
    having count(*) > 1
    union
    select hash(external_id) as id_key from events
    group by id_key
    having count(*) > 1
),

id_matches as (
    select * exclude (id_key), 'gateway_txn_id' as rule
    from pairs_by_id
    where id_key not in (select id_key from repeated_ids)
    union all
    select * exclude (id_key), 'gateway_txn_id' as rule
    from pairs_by_id
    where id_key in (select id_key from repeated_ids)
    qualify row_number() over (
            partition by event_hash order by settled_on, {{ line_order }}
        ) = 1
        and row_number() over (partition by settlement_line_id order by event_hash) = 1
),

-- Rule 2: lines without an id, by kind, currency, amount (within the
-- tolerance) and settled 0..match_window_days after the event's day, for
-- events rule 1 left open. Only mutual best candidates pair up, so an
-- ambiguous line is left for a human. Ranked on narrow rows; the line's
-- columns are joined once to the winners.
candidates as (
    select
        lines.settlement_line_id,
        lines.kind,
        lines.currency,
        lines.gateway,
        lines.gross_minor + amount_offsets.delta as amount_minor,
        lines.settled_on - cast(day_offsets.days as integer) as occurred_on,
        day_offsets.days as lag_days,
        lines.partition_date,
        lines.file_name,
        lines.row_number
    from lines
    cross join amount_offsets
    cross join day_offsets
    where lines.gateway_txn_id is null
),

by_amount as (
    select
        events.event_hash,
        events.source,
        events.external_id,
        events.amount_minor as revenue_amount_minor,
        events.currency as revenue_currency,
        events.occurred_at,
        candidates.settlement_line_id,
        candidates.lag_days
    from candidates
    inner join events
        on events.kind = candidates.kind
        and events.currency = candidates.currency
        and events.amount_minor = candidates.amount_minor
        and events.occurred_on = candidates.occurred_on
    anti join id_matches on id_matches.event_hash = events.event_hash
    where coalesce(candidates.gateway, events.source) = events.source
    qualify row_number() over (
            partition by candidates.settlement_line_id
            order by candidates.lag_days, events.occurred_at, events.event_hash
        ) = 1
        and row_number() over (
            partition by events.event_hash
            order by candidates.lag_days, {{ line_order }}
        ) = 1
),

amount_matches as (
    select
        by_amount.event_hash,
        by_amount.source,
        by_amount.external_id,
        lines.kind,
        by_amount.revenue_amount_minor,
        by_amount.revenue_currency,
        by_amount.occurred_at,
        {{ stored_line_columns }},
        'amount_date_window' as rule
    from by_amount
    inner join lines on lines.settlement_line_id = by_amount.settlement_line_id
),

matched as (
    select * from id_matches
    union all by name
    select * from amount_matches
)

select
    event_hash,
    source,
    external_id,
    kind,
    revenue_amount_minor,
    revenue_currency,
    occurred_at,
    settlement_line_id,
    settlement_source,
    cast(settled_on as varchar) as settled_on,
    gross_minor,
    currency,
    fee_minor,
    fee_currency,
    gross_minor - revenue_amount_minor as amount_difference_minor,
    -- A line that is one of many under one bank credit was matched through its batch.
    case when batch_ref is not null then 'batch_reference' else rule end as match_rule,
    batch_ref,
    file_name,
    record_ref,
    {{ run_date_text() }} as run_date
from matched

-- Matched pairs (revenue event, settlement line), one-to-one, and the rule that
-- matched them, stored as the integer keys of the event and the line
-- (event_key, line_key): matching a million pairs writes a million rows of two
-- numbers, and the marts after it join integers. reconciliation_matches (a
-- view) shows each pair with its ids, amounts, fees and files.
-- Incremental by run_date: a nightly run only pairs events and lines no other
-- run matched (the open items: macros/open_items.sql); running a day again
-- replaces that day's matches.
-- Every join is on equality keys, so DuckDB hash-joins them: the amount
-- tolerance and the date window are enumerated offsets, not range predicates.
{{ config(pre_hook="{{ forget_nights_from_run_date() }}") }}
with

{% set line_columns -%}
    lines.line_key, lines.gateway, lines.gateway_txn_id, lines.kind, lines.gross_minor,
    lines.currency, lines.settled_on, lines.partition_date, lines.file_name, lines.row_number
{%- endset %}
{% set event_columns -%}
    events.event_key, events.event_hash, events.source, events.external_id, events.kind,
    events.amount_minor, events.currency, events.occurred_at, events.occurred_on
{%- endset %}
{#- Which of several qualifying lines comes first, after the settlement day: the
    one landed first (landing day, then file name), then the earlier row of its
    file; the line key (unique) settles the rest. -#}
{% set line_order -%}
    partition_date, file_name, row_number, line_key
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
-- No previous night to start from: history is anti-joined on the key column
-- alone, and only the few keys left fetch their other columns (an anti-join
-- carrying every column of a year of lines costs several times more).
matched_elsewhere as (
    select event_key, line_key from {{ this }}
    where run_date <> {{ run_date_text() }}
),

open_line_keys as (
    select lines.line_key
    from {{ ref('settlement_lines') }} as lines
    anti join matched_elsewhere as m on m.line_key = lines.line_key
    where {{ line_filter }}
),

open_event_keys as (
    select events.event_key
    from {{ ref('stg_ledger__revenue_events') }} as events
    anti join matched_elsewhere as m on m.event_key = events.event_key
    where {{ event_filter }}
),

lines as (
    select {{ line_columns }}
    from {{ ref('settlement_lines') }} as lines
    semi join open_line_keys as o on o.line_key = lines.line_key
),

events as (
    select {{ event_columns }}
    from {{ ref('stg_ledger__revenue_events') }} as events
    semi join open_event_keys as o on o.event_key = events.event_key
),
{% else %}
-- Everything, on a first build: not materialized, so each use below reads only
-- the columns it needs from the tables (a copy of a million events costs more).
lines as not materialized (
    select {{ line_columns }}
    from {{ ref('settlement_lines') }} as lines
    where {{ line_filter }}
),

events as not materialized (
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
pairs_by_id as materialized (
    select
        events.event_key,
        lines.line_key,
        lines.settled_on,
        lines.partition_date,
        lines.file_name,
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
-- Ids with more than one pair go to the exact ranking below (an id with one
-- pair names one qualifying event and one qualifying line). They are found by
-- a 64-bit hash of the id, for speed: a collision only sends a few more pairs
-- through the ranking, it never pairs anything differently.
repeated_ids as (
    select id_key from pairs_by_id
    group by id_key
    having count(*) > 1
),

repeated_pairs as materialized (
    select pairs.* from pairs_by_id as pairs
    semi join repeated_ids on repeated_ids.id_key = pairs.id_key
),

-- Of several events one line names, the smallest event hash wins: a rule that
-- does not depend on the order the warehouse first saw them (the keys enter a
-- ranking only as the last word between equals).
id_matches as (
    select pairs.event_key, pairs.line_key, 'gateway_txn_id' as rule
    from pairs_by_id as pairs
    anti join repeated_ids on repeated_ids.id_key = pairs.id_key
    union all by name
    select pairs.event_key, pairs.line_key, 'gateway_txn_id' as rule
    from repeated_pairs as pairs
    inner join events on events.event_key = pairs.event_key
    qualify row_number() over (
            partition by pairs.event_key order by pairs.settled_on, {{ line_order }}
        ) = 1
        and row_number() over (partition by pairs.line_key order by events.event_hash) = 1
),

-- Rule 2: lines without an id, by kind, currency, amount (within the
-- tolerance) and settled 0..match_window_days after the event's day, for
-- events rule 1 left open. Only mutual best candidates pair up, so an
-- ambiguous line is left for a human.
candidates as (
    select
        lines.line_key,
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

amount_matches as (
    select events.event_key, candidates.line_key, 'amount_date_window' as rule
    from candidates
    inner join events
        on events.kind = candidates.kind
        and events.currency = candidates.currency
        and events.amount_minor = candidates.amount_minor
        and events.occurred_on = candidates.occurred_on
    anti join id_matches on id_matches.event_key = events.event_key
    where coalesce(candidates.gateway, events.source) = events.source
    qualify row_number() over (
            partition by candidates.line_key
            order by candidates.lag_days, events.occurred_at, events.event_hash
        ) = 1
        and row_number() over (
            partition by events.event_key
            order by candidates.lag_days, {{ line_order }}
        ) = 1
)

-- The rule as found; reconciliation_matches reports a line under a bank batch
-- credit as matched by `batch_reference`.
select event_key, line_key, rule as match_rule, {{ run_date_text() }} as run_date
from id_matches
union all by name
select event_key, line_key, rule as match_rule, {{ run_date_text() }} as run_date
from amount_matches

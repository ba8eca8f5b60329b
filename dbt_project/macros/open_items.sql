{#- Open items: the settlement lines and revenue events no match has taken.

    Every night keeps what it left open (reconciliation_open_lines and
    reconciliation_open_events, one slice per run_date: every line that is not
    a bank charge and every sale, refund or chargeback the books have not
    reversed, that no night up to it matched, those not due yet included) and,
    once both are written, a row in reconciliation_nights with the landing and
    replication watermarks it saw. The next night starts from those instead of
    from the whole history:

      lines  = last night's open lines
             + lines landed since (landing_seq above its landing watermark)
      events = last night's open events, those the books changed since
               taken again from the books (a reversal drops one)
             + events first copied since (first_replicated_seq above its
               replica watermark)

    Nothing else can be open: a line or an event known to last night was open
    then or matched (matches are made by nights only), and one that was neither
    is a bank charge, a fee or reversed, which it stays. So the cost is the open
    items and what arrived, not the history. What is due tonight (settled, or
    occurred, by its end) is then filtered from them.

    The previous night is used only when it is the last word on the earlier
    nights: its nights row exists (written only by an invocation that built
    the night's matches and both slices; those models delete the nights rows
    of the night they rebuild and of every later one before they start, so
    rebuilding an earlier night, or part of one, voids them), it is within
    open_items_nights_kept nights, its slices still hold what it counted, and
    no night after it, other than tonight, has matches (and the var
    open_items_from_previous_night is not false). Otherwise, and on a first
    build, every line and event is anti-joined with the matches of the other
    nights (the full way, its cost grows with history). The dbt tests assert_open_*_complete check every
    night, either way, that open and matched items add up to all of them.
-#}

{#- The previous night to start from, as a dict (run_date, landing_watermark,
    replica_watermark), or none: take the full way. -#}
{% macro previous_night() -%}
  {%- if not execute or not var('open_items_from_previous_night') -%}{{ return(none) }}{%- endif -%}
  {%- set nights = _relation('reconciliation_nights') -%}
  {%- set matches = _relation('reconciliation_match_keys') -%}
  {%- set lines = _relation('reconciliation_open_lines') -%}
  {%- set events = _relation('reconciliation_open_events') -%}
  {%- if nights is none or matches is none or lines is none or events is none -%}
    {{ return(none) }}
  {%- endif -%}
  {#- The latest earlier night, if its slices are still kept. -#}
  {%- set found = run_query(
      "select run_date, landing_watermark, replica_watermark, open_lines, open_events from "
      ~ nights ~ " where run_date < " ~ run_date_text() ~ " and run_date >= strftime("
      ~ run_date() ~ " - " ~ var('open_items_nights_kept') ~ ", '%Y-%m-%d')"
      ~ " order by run_date desc limit 1") -%}
  {%- if found.rows | length == 0 -%}{{ return(none) }}{%- endif -%}
  {%- set night = found.rows[0] -%}
  {#- Its slices as it wrote them, and no later night's matches but tonight's. -#}
  {%- set check = run_query(
      "select (select count(*) from " ~ lines ~ " where run_date = '" ~ night[0] ~ "'),"
      ~ " (select count(*) from " ~ events ~ " where run_date = '" ~ night[0] ~ "'),"
      ~ " (select count(*) from " ~ matches ~ " where run_date > '" ~ night[0]
      ~ "' and run_date <> " ~ run_date_text() ~ ")") -%}
  {%- set counts = check.rows[0] -%}
  {%- if counts[0] != night[3] or counts[1] != night[4] or counts[2] > 0 -%}
    {{ return(none) }}
  {%- endif -%}
  {{ return({'run_date': night[0], 'landing_watermark': night[1] | int,
             'replica_watermark': night[2] | int}) }}
{%- endmacro %}

{#- A sibling model's table by name, none before it exists. Not ref(): these
    are earlier nights' outputs, read by models they depend on. -#}
{% macro _relation(name) -%}
  {{ return(adapter.get_relation(database=this.database, schema=this.schema, identifier=name)) }}
{%- endmacro %}

{#- Tonight's candidate lines from the previous night (see above), due or not. -#}
{% macro recent_open_lines(night) -%}
    select {{ open_line_columns('previous') }}
    from {{ _relation('reconciliation_open_lines') }} as previous
    where previous.run_date = '{{ night.run_date }}'
    union all
    select {{ open_line_columns('lines') }} from {{ ref('settlement_lines') }} as lines
    where lines.landing_seq > {{ night.landing_watermark }} and {{ open_line() }}
{%- endmacro %}

{#- Tonight's candidate events from the previous night (see above), occurred
    or not. -#}
{% macro recent_open_events(night) -%}
    {%- set events = ref('stg_ledger__revenue_events') -%}
    {%- set previous -%}
        (select {{ open_event_columns('slice') }}
         from {{ _relation('reconciliation_open_events') }} as slice
         where slice.run_date = '{{ night.run_date }}')
    {%- endset -%}
    {%- set changed -%}
        (select * from {{ events }} where replicated_seq > {{ night.replica_watermark }})
    {%- endset -%}
    select {{ open_event_columns('previous') }} from {{ previous }} as previous
    anti join {{ changed }} as changed on changed.event_key = previous.event_key
    union all
    select {{ open_event_columns('events') }} from {{ changed }} as events
    semi join {{ previous }} as previous on previous.event_key = events.event_key
    where {{ open_event() }} and events.first_replicated_seq <= {{ night.replica_watermark }}
    union all
    select {{ open_event_columns('events') }} from {{ changed }} as events
    where events.first_replicated_seq > {{ night.replica_watermark }} and {{ open_event() }}
{%- endmacro %}

{#- What an open-item slice keeps: the columns matching and the reports use. -#}
{% macro open_line_columns(alias) -%}
    {%- set columns = ['line_key', 'settlement_line_id', 'settlement_source', 'gateway', 'gateway_txn_id',
                       'kind', 'gross_minor', 'currency', 'fee_minor', 'fee_currency',
                       'settled_on', 'batch_ref', 'partition_date', 'file_name', 'row_number',
                       'record_ref'] -%}
    {%- for column in columns %}{{ alias }}.{{ column }}{{ ', ' if not loop.last }}{% endfor -%}
{%- endmacro %}

{% macro open_event_columns(alias) -%}
    {%- set columns = ['event_key', 'event_hash', 'source', 'external_id', 'kind', 'amount_minor', 'currency',
                       'occurred_at', 'occurred_on', 'status', 'source_file'] -%}
    {%- for column in columns %}{{ alias }}.{{ column }}{{ ', ' if not loop.last }}{% endfor -%}
{%- endmacro %}

{#- What can be open at all, due or not (on the aliases `lines`, `events`). -#}
{% macro open_line() -%}
    lines.kind <> 'other'
{%- endmacro %}

{% macro open_event() -%}
    events.kind in ('sale', 'refund', 'chargeback') and events.status <> 'reversed'
{%- endmacro %}

{#- What is due on the night being built. -#}
{% macro line_due() -%}
    lines.settled_on <= {{ run_date() }}
{%- endmacro %}

{% macro event_due() -%}
    events.occurred_at < {{ run_end_text() }}
{%- endmacro %}

{#- Before a night's matches or open-item slices are rebuilt: the nights rows
    of that night and every later one go, so no later night starts from open
    items the rebuilt ones could contradict (the nights model writes the row
    again only when the same invocation built all three). -#}
{% macro forget_nights_from_run_date() -%}
  {%- set nights = _relation('reconciliation_nights') if execute else none -%}
  {%- if nights is not none -%}
    delete from {{ nights }} where run_date >= {{ run_date_text() }}
  {%- else -%}
    select 1
  {%- endif -%}
{%- endmacro %}

{#- After a night's open items are written: slices older than
    open_items_nights_kept nights go (reconciliation_exceptions keeps what every
    night left open); a night older than that starts the full way. -#}
{% macro forget_old_nights() -%}
    delete from {{ this }}
    where run_date < strftime({{ run_date() }} - {{ var('open_items_nights_kept') }}, '%Y-%m-%d')
{%- endmacro %}

{#- A night's open-item slice, `item` 'lines' or 'events': the body of
    reconciliation_open_lines and reconciliation_open_events, which differ only
    in the key, the table, the columns kept and what can be open at all.
    From the previous night (if any): its open items and what arrived since,
    less tonight's matches. Else every item against every match up to run_date,
    by key, then the open ones' columns (DuckDB reads those only for the items
    the keys let through). -#}
{% macro open_items_slice(item) -%}
  {%- if item == 'lines' -%}
    {%- set key, items, columns, can_be_open, recent = 'line_key', ref('settlement_lines'),
        open_line_columns(item), open_line(), recent_open_lines -%}
  {%- else -%}
    {%- set key, items, columns, can_be_open, recent = 'event_key', ref('stg_ledger__revenue_events'),
        open_event_columns(item), open_event(), recent_open_events -%}
  {%- endif -%}
  {%- set night = previous_night() if is_incremental() else none %}
with

{% if night -%}
candidates as (
    {{ recent(night) }}
),

matched as (
    select {{ key }} from {{ ref('reconciliation_match_keys') }}
    where run_date = {{ run_date_text() }}
)

select {{ run_date_text() }} as run_date, candidates.*
from candidates
anti join matched on matched.{{ key }} = candidates.{{ key }}
{%- else -%}
matched as (
    select {{ key }} from {{ ref('reconciliation_match_keys') }}
    where run_date <= {{ run_date_text() }}
),

open_keys as (
    select {{ item }}.{{ key }}
    from {{ items }} as {{ item }}
    anti join matched on matched.{{ key }} = {{ item }}.{{ key }}
    where {{ can_be_open }}
)

select {{ run_date_text() }} as run_date, {{ columns }}
from {{ items }} as {{ item }}
semi join open_keys on open_keys.{{ key }} = {{ item }}.{{ key }}
{%- endif %}
{%- endmacro %}

{#- The completeness test of one kind of open item (tests/assert_open_*_complete.sql):
    the night's open items are exactly the items no night up to it matched. Each
    is an item that can be open, once, and not matched; and they and the matches
    add up to all such items, so an item missing from the open items cannot be
    made up for by another in its place. One pass over the items and one over the
    matches, whichever way the open items were found. `still_counts` filters the
    matches that still count (a matched event the books reversed since does not). -#}
{% macro open_items_complete(item, items_model, can_be_open, not_open_reason, still_counts='true') -%}
with

open_items as (
    select {{ item }}_key as item_key from {{ ref('reconciliation_open_' ~ item ~ 's') }}
    where run_date = {{ run_date_text() }}
),

items as (
    select
        count(*) filter (where {{ can_be_open }}) as can_be_open,
        count(open_items.item_key) filter (where {{ can_be_open }}) as open_found
    -- Aliased as open_line() / open_event() expect (`lines`, `events`).
    from {{ ref(items_model) }} as {{ item }}s
    left join open_items on open_items.item_key = {{ item }}s.{{ item }}_key
),

matches as (
    select
        count(*) filter (where {{ still_counts }}) as matched,
        count(open_items.item_key) as open_and_matched
    from {{ ref('reconciliation_match_keys') }} as matches
    left join open_items on open_items.item_key = matches.{{ item }}_key
    where matches.run_date <= {{ run_date_text() }}
),

open as (
    select count(*) as open, count(distinct item_key) as distinct_open
    from open_items
)

-- By name: each problem with the count found and, where there is one, the count expected.
select 'open twice' as problem, open as found, distinct_open as expected
from open where distinct_open <> open
union all by name
select 'open but {{ not_open_reason }}' as problem, open as found, open_found as expected
from open, items where open_found <> open
union all by name
select 'open and matched' as problem, open_and_matched as found
from matches where open_and_matched > 0
union all by name
select 'open + matched <> {{ item }}s that can be open' as problem, open + matched as found,
    can_be_open as expected
from open, matches, items where open + matched <> can_be_open
{%- endmacro %}

{{ config(post_hook="{{ forget_old_nights() }}") }}
-- One row per night whose open items are complete: when it was built, the
-- watermarks of what it had seen (the last landing number of a settlement file,
-- the last warehouse copy of the books) and how many items it left open. A row
-- is written only by a dbt invocation that also built the night's matches and
-- both open-item slices (so nothing can have landed in between: the invocation
-- holds the warehouse); built after them, it says the night finished. The
-- matches and slice models delete the rows of the night they rebuild and of
-- every later one first (macros/open_items.sql).
{%- set chain = ['reconciliation_match_keys', 'reconciliation_open_lines',
                 'reconciliation_open_events'] %}
{%- set ns = namespace(whole=execute) %}
{%- for name in chain if execute %}
    {%- if 'model.' ~ model.package_name ~ '.' ~ name not in selected_resources %}
        {%- set ns.whole = false %}
    {%- endif %}
{%- endfor %}
select
    {{ run_date_text() }} as run_date,
    now() as built_at,
    (select coalesce(max(landing_seq), 0) from {{ ref('settlement_lines') }}) as landing_watermark,
    (select coalesce(max(replicated_seq), 0) from {{ ref('stg_ledger__revenue_events') }})
        as replica_watermark,
    (select count(*) from {{ ref('reconciliation_open_lines') }}
     where run_date = {{ run_date_text() }}) as open_lines,
    (select count(*) from {{ ref('reconciliation_open_events') }}
     where run_date = {{ run_date_text() }}) as open_events
where {{ 'true' if ns.whole else 'false' }}

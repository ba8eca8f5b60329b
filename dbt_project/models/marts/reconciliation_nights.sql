{{ config(post_hook="{{ forget_old_nights() }}") }}
-- One row per night whose open items are complete: when it was built and the
-- watermarks of what it had seen (the last landing number of a settlement file,
-- the last warehouse copy of the books). Built after both open-item slices, so
-- a row here says the night finished; the matches model deletes the rows of the
-- night it rebuilds and of every later one first (macros/open_items.sql).
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

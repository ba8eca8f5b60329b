{{ config(pre_hook="{{ forget_nights_from_run_date() }}", post_hook="{{ forget_old_nights() }}") }}
-- The revenue events open when run_date closed: every sale, refund and chargeback
-- the books have not reversed and that no night up to run_date matched, those
-- within the match window and those that occur later included, with the columns
-- matching and the reports use (open_event_columns). The next night starts from this slice
-- (macros/open_items.sql); reconciliation_exceptions reports the ones past the
-- match window.
{% set night = previous_night() if is_incremental() else none %}
with

{% if night %}
-- The previous night's open events (taken again from the books where they
-- changed since) and those first copied since, less tonight's matches.
candidates as (
    {{ recent_open_events(night) }}
),

matched as (
    select event_key from {{ ref('reconciliation_match_keys') }}
    where run_date = {{ run_date_text() }}
)

select {{ run_date_text() }} as run_date, candidates.*
from candidates
anti join matched on matched.event_key = candidates.event_key
{% else %}
-- Every event against every match up to run_date, by key; then the open ones'
-- columns (DuckDB reads those only for the events the keys let through).
matched as (
    select event_key from {{ ref('reconciliation_match_keys') }}
    where run_date <= {{ run_date_text() }}
),

open_keys as (
    select events.event_key
    from {{ ref('stg_ledger__revenue_events') }} as events
    anti join matched on matched.event_key = events.event_key
    where {{ open_event() }}
)

select {{ run_date_text() }} as run_date, {{ open_event_columns('events') }}
from {{ ref('stg_ledger__revenue_events') }} as events
semi join open_keys on open_keys.event_key = events.event_key
{% endif %}

{{ config(pre_hook="{{ forget_nights_from_run_date() }}", post_hook="{{ forget_old_nights() }}") }}
-- The settlement lines open when run_date closed: every line that is not a bank
-- charge and that no night up to run_date matched, those settled later (a report
-- dated ahead) included, with the columns matching and the reports use
-- (macros/open_items.sql, open_line_columns). The next night starts
-- from this slice (macros/open_items.sql); reconciliation_exceptions reports the
-- ones due.
{% set night = previous_night() if is_incremental() else none %}
with

{% if night %}
-- The previous night's open lines and those landed since, less tonight's matches.
candidates as (
    {{ recent_open_lines(night) }}
),

matched as (
    select line_key from {{ ref('reconciliation_match_keys') }}
    where run_date = {{ run_date_text() }}
)

select {{ run_date_text() }} as run_date, candidates.*
from candidates
anti join matched on matched.line_key = candidates.line_key
{% else %}
-- Every line against every match up to run_date, by key; then the open ones'
-- columns (DuckDB reads those only for the lines the keys let through).
matched as (
    select line_key from {{ ref('reconciliation_match_keys') }}
    where run_date <= {{ run_date_text() }}
),

open_keys as (
    select lines.line_key
    from {{ ref('settlement_lines') }} as lines
    anti join matched on matched.line_key = lines.line_key
    where {{ open_line() }}
)

select {{ run_date_text() }} as run_date, {{ open_line_columns('lines') }}
from {{ ref('settlement_lines') }} as lines
semi join open_keys on open_keys.line_key = lines.line_key
{% endif %}

{{ config(meta={"dagster": {"ref": {"name": "reconciliation_open_lines"}}}) }}

-- Every settlement line that is not a bank charge is, on the night being
-- built, either open or matched (that night or before), never both: the open
-- lines and the matches add up to all such lines, and none is in both. Counts
-- and one join of tonight's open lines, so the check costs little whichever way
-- the open lines were found (macros/open_items.sql).
with

open_lines as (
    select settlement_line_id from {{ ref('reconciliation_open_lines') }}
    where run_date = {{ run_date_text() }}
),

matched as (
    select settlement_line_id from {{ ref('reconciliation_matches') }}
    where run_date <= {{ run_date_text() }}
),

counts as (
    select
        (select count(*) from {{ ref('settlement_lines') }} as lines
         where {{ open_line() }}) as lines,
        (select count(*) from open_lines) as open,
        (select count(*) from matched) as matched
)

select 'open and matched' as problem, open_lines.settlement_line_id, null as lines,
    null as open, null as matched
from open_lines
semi join matched on matched.settlement_line_id = open_lines.settlement_line_id

union all

select 'open + matched <> lines', null, lines, open, matched
from counts
where open + matched <> lines

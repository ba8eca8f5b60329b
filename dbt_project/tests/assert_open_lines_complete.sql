{{ config(meta={"dagster": {"ref": {"name": "reconciliation_open_lines"}}}) }}

-- The night's open lines are exactly the lines no night up to it matched: each
-- is a line that can be open (not a bank charge), once, and not matched; and
-- they and the matches add up to all such lines. So a line missing from the
-- open items cannot be made up for by another in its place. One pass over the
-- lines and one over the matches, whichever way the open lines were found
-- (macros/open_items.sql).
with

open_lines as (
    select line_key from {{ ref('reconciliation_open_lines') }}
    where run_date = {{ run_date_text() }}
),

lines as (
    select
        count(*) filter (where {{ open_line() }}) as can_be_open,
        count(open_lines.line_key) filter (where {{ open_line() }}) as open_found
    from {{ ref('settlement_lines') }} as lines
    left join open_lines on open_lines.line_key = lines.line_key
),

matches as (
    select
        count(*) as matched,
        count(open_lines.line_key) as open_and_matched
    from {{ ref('reconciliation_match_keys') }} as matches
    left join open_lines on open_lines.line_key = matches.line_key
    where matches.run_date <= {{ run_date_text() }}
),

open as (
    select count(*) as open, count(distinct line_key) as distinct_open
    from open_lines
)

-- By name: each problem with the count found and, where there is one, the count expected.
select 'open twice' as problem, open as found, distinct_open as expected
from open where distinct_open <> open
union all by name
select 'open but no such line, or a bank charge' as problem, open as found, open_found as expected
from open, lines where open_found <> open
union all by name
select 'open and matched' as problem, open_and_matched as found
from matches where open_and_matched > 0
union all by name
select 'open + matched <> lines that can be open' as problem, open + matched as found,
    can_be_open as expected
from open, matches, lines where open + matched <> can_be_open

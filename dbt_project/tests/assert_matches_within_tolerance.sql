{{ config(meta={"dagster": {"ref": {"name": "reconciliation_match_keys"}}}) }}

-- A match never pairs different currencies or amounts further apart than the
-- tolerance: those are exceptions, not matches. Checks the night being built,
-- reading only the amounts and currencies of its events and lines.
select matches.event_key, matches.line_key, matches.run_date
from {{ ref('reconciliation_match_keys') }} as matches
inner join {{ ref('stg_ledger__revenue_events') }} as events
    on events.event_key = matches.event_key
inner join {{ ref('settlement_lines') }} as lines
    on lines.line_key = matches.line_key
where matches.run_date = {{ run_date_text() }}
  and (lines.currency <> events.currency
       or abs(lines.gross_minor - events.amount_minor) > {{ var('amount_tolerance_minor') }})

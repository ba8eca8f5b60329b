{{ config(materialized='view') }}

-- The matched pairs as finance reads them: the pairs of reconciliation_match_keys
-- (the narrow table the nightly run writes) with the event's and the line's ids,
-- amounts, fees and files, joined back by their integer keys. A view: a reader
-- filtering on run_date joins only that night's pairs.
select
    events.event_hash,
    events.source,
    events.external_id,
    events.kind,
    events.amount_minor as revenue_amount_minor,
    events.currency as revenue_currency,
    events.occurred_at,
    lines.settlement_line_id,
    lines.settlement_source,
    cast(lines.settled_on as varchar) as settled_on,
    lines.gross_minor,
    lines.currency,
    lines.fee_minor,
    lines.fee_currency,
    lines.gross_minor - events.amount_minor as amount_difference_minor,
    -- A line that is one of many under one bank credit was matched through its batch.
    case when lines.batch_ref is not null then 'batch_reference' else matches.match_rule end
        as match_rule,
    lines.batch_ref,
    lines.file_name,
    lines.record_ref,
    matches.run_date
from {{ ref('reconciliation_match_keys') }} as matches
inner join {{ ref('stg_ledger__revenue_events') }} as events
    on events.event_key = matches.event_key
inner join {{ ref('settlement_lines') }} as lines
    on lines.line_key = matches.line_key

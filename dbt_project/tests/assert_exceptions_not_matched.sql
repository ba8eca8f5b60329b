{{ config(meta={"dagster": {"ref": {"name": "reconciliation_exceptions"}}}) }}

-- An item is either matched or open on a given day, never both.
select exceptions.*
from {{ ref('reconciliation_exceptions') }} as exceptions
inner join {{ ref('reconciliation_matches') }} as matches
    on matches.run_date <= exceptions.run_date
    and (
        matches.settlement_line_id = exceptions.settlement_line_id
        or (exceptions.settlement_line_id is null and matches.event_hash = exceptions.event_hash)
    )

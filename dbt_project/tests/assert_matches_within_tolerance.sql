-- A match never pairs different currencies or amounts further apart than the
-- tolerance: those are exceptions, not matches.
select *
from {{ ref('reconciliation_matches') }}
where currency <> revenue_currency
   or abs(amount_difference_minor) > {{ var('amount_tolerance_minor') }}

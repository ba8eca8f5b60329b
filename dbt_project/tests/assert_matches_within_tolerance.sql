-- A match never pairs different currencies or amounts further apart than the
-- tolerance: those are exceptions, not matches. Checks the night being built.
select *
from {{ ref('reconciliation_matches') }}
where run_date = {{ run_date_text() }}
  and (currency <> revenue_currency
       or abs(amount_difference_minor) > {{ var('amount_tolerance_minor') }})

-- One settlement line per row of the landed paypal-stl files, in the shared column set.
select {{ settlement_line_columns('paypal-stl') }}
from {{ source('raw', 'paypal_stl') }}

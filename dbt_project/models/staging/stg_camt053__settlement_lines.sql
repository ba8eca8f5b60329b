-- One settlement line per row of the landed camt053 files, in the shared column set.
select {{ settlement_line_columns('camt053') }}
from {{ source('raw', 'camt053') }}

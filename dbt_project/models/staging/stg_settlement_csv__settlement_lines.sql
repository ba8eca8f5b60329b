-- One settlement line per row of the landed settlement-csv files, in the shared column set.
select {{ settlement_line_columns('settlement-csv') }}
from {{ source('raw', 'settlement_csv') }}

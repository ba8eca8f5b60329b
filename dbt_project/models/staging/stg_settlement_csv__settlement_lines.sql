with source as (
    select * from {{ source('raw', 'settlement_csv') }}
),

renamed as (
    select
        {{ settlement_line_columns('settlement-csv') }}
    from source
)

select * from renamed

with source as (
    select * from {{ source('raw', 'settlement_csv') }}
),

renamed as (
    select
        {{ settlement_line_columns('settlement-csv', "lower(nullif(trim(json_extract_string(raw, '$.gateway')), ''))") }}
    from source
)

select * from renamed

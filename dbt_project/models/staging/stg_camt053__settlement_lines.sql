with source as (
    select * from {{ source('raw', 'camt053') }}
),

renamed as (
    select
        {{ settlement_line_columns('camt053') }}
    from source
)

select * from renamed

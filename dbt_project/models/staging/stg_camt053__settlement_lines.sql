with source as (
    select * from {{ source('raw', 'camt053') }}
),

renamed as (
    select
        {{ settlement_line_columns('camt053', "cast(null as varchar)") }}
    from source
)

select * from renamed

with source as (
    select * from {{ source('raw', 'paypal_stl') }}
),

renamed as (
    select
        {{ settlement_line_columns('paypal-stl') }}
    from source
)

select * from renamed

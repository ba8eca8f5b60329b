with source as (
    select * from {{ source('raw', 'paypal_stl') }}
),

renamed as (
    select
        content_sha256 || ':' || cast(row_number as varchar) as settlement_line_id,
        'paypal-stl' as settlement_source,
        'paypal' as gateway,
        partition_date,
        file_name,
        row_number,
        record_ref,
        nullif(trim(gateway_txn_id), '') as gateway_txn_id,
        batch_ref,
        batch_net_minor,
        event_code,
        kind,
        direction,
        gross_minor,
        currency,
        fee_minor,
        fee_currency,
        cast(settled_on as date) as settled_on,
        occurred_at,
        description
    from source
)

select * from renamed

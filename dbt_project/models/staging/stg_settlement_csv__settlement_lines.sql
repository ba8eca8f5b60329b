with source as (
    select * from {{ source('raw', 'settlement_csv') }}
),

renamed as (
    select
        content_sha256 || ':' || cast(row_number as varchar) as settlement_line_id,
        'settlement-csv' as settlement_source,
        lower(nullif(trim(json_extract_string(raw, '$.gateway')), '')) as gateway,
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

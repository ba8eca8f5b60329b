with source as (
    select * from {{ source('ledger', 'revenue_events') }}
),

renamed as (
    select
        event_hash,
        source,
        external_id,
        kind,
        amount_minor,
        currency,
        {{ utc_instant('occurred_at') }} as occurred_at,
        status,
        source_file
    from source
)

select * from renamed

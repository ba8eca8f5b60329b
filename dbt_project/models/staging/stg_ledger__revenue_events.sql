with source as (
    select * from {{ source('ledger', 'revenue_events') }}
),

renamed as (
    select
        event_hash,
        -- The event's integer key in the warehouse (finsup_dagster/warehouse/replica.py):
        -- what the marts join on.
        event_key,
        source,
        external_id,
        kind,
        amount_minor,
        currency,
        -- Canonical UTC text (YYYY-MM-DDTHH:MM:SS.ffffffZ) sorts as time does, so it is
        -- compared as text: no parsing of every event every night.
        occurred_at,
        cast(left(occurred_at, 10) as date) as occurred_on,
        status,
        -- When the books last changed the event (canonical UTC text): the dbt tests
        -- check what changed since the night began, late arrivals included.
        status_changed_at,
        source_file,
        -- The warehouse copy that last wrote the row and the one that first brought it
        -- (finsup_dagster/warehouse/replica.py): new and changed events, exactly.
        replicated_seq,
        first_replicated_seq
    from source
)

select * from renamed

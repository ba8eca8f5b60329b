{#- The one shape every settlement source is staged into. Each staging model
    names its source (the settlement_source label). `gateway` (who settled the
    line, lower-case, NULL when the file does not say) comes from the parser. -#}
{% macro settlement_line_columns(settlement_source) -%}
        content_sha256 || ':' || cast(row_number as varchar) as settlement_line_id,
        -- The line's integer key (finsup_dagster/warehouse/raw.py): what the marts join on.
        line_key,
        '{{ settlement_source }}' as settlement_source,
        gateway,
        partition_date,
        -- One number per landed file, in landing order (finsup_dagster/warehouse/raw.py).
        landing_seq,
        file_name,
        row_number,
        -- The row's line id, unique in its file; settler_ref is the settler's own
        -- reference as written (a bank's batch booking repeats it in every detail).
        record_ref,
        settler_ref,
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
{%- endmacro %}

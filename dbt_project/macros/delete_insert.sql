{#- Corrects dbt-duckdb's delete+insert (dbt-duckdb 1.11,
    include/duckdb/macros/materializations/incremental_strategy/delete_insert.sql:
    `delete from <target> where (run_date) in (select (run_date) from <new rows>)`)
    for the state and mart tables (unique_key run_date): the night's old rows
    are deleted by the night itself, `run_date = <night>`. Two reasons: a night run
    again that now has no rows (no matches, say) still loses its old ones —
    with the IN form nothing is deleted and the stale rows stay; and a constant
    lets DuckDB skip every row group of other nights by its min/max, so the
    delete does not scan a year of exception snapshots. Other unique keys keep
    dbt-duckdb's own SQL. -#}
{% macro duckdb__get_delete_insert_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) -%}
  {%- if unique_key == 'run_date' and not incremental_predicates -%}
    {%- set dest_cols_csv = get_quoted_csv(dest_columns | map(attribute="name")) -%}
    delete from {{ target }} where run_date = {{ run_date_text() }};

    insert into {{ target }} ({{ dest_cols_csv }})
    (
        select {{ dest_cols_csv }}
        from {{ source }}
    )
  {%- else -%}
    {{ default__get_delete_insert_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) }}
  {%- endif -%}
{%- endmacro %}

{#- dbt's hook for a test's `where` config (dbt-adapters 1.24,
    default__get_where_subquery, pastes the `where` verbatim), overridden so a yml test can say
    `__run_date__` for the night being built and `__run_end__` for the day after
    it, both as 'YYYY-MM-DD' text (yml configs cannot call macros).
    Staging tests check the rows the night brings, not a year of history again:
    see docs/reconciliation.md, "Checks". A `where` naming the night applies only
    when a night is given (var run_date); an ad-hoc `dbt test` without one checks
    every row. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where and '__run_' in where and not var('run_date') -%}
        {%- set where = none -%}
    {%- endif -%}
    {%- if where -%}
        {%- set where = where | replace('__run_date__', run_date_text())
                              | replace('__run_end__', run_end_text()) -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

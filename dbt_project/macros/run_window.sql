{#- The day being reconciled, and the first instant after it. Without a
    run_date var: the UTC day the dbt invocation started, one date for every
    model and hook of it (current_date, read by each statement on its own,
    could change between them at midnight). -#}
{% macro run_date() -%}
  {%- if var('run_date') -%} cast('{{ var("run_date") }}' as date)
  {%- else -%} cast('{{ run_started_at.strftime("%Y-%m-%d") }}' as date)
  {%- endif -%}
{%- endmacro %}

{#- The next day as text: a canonical instant before it happened on or before run_date. -#}
{% macro run_end_text() -%}
  strftime({{ run_date() }} + interval 1 day, '%Y-%m-%d')
{%- endmacro %}

{#- The run date as the text stored in run_date columns (partition keys are text). -#}
{% macro run_date_text() -%}
  strftime({{ run_date() }}, '%Y-%m-%d')
{%- endmacro %}

{#- The day being reconciled, and the first instant after it. -#}
{% macro run_date() -%}
  {%- if var('run_date') -%} cast('{{ var("run_date") }}' as date)
  {%- else -%} current_date
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

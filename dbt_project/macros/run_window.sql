{#- The day being reconciled, and the first instant after it. -#}
{% macro run_date() -%}
  {%- if var('run_date') -%} cast('{{ var("run_date") }}' as date)
  {%- else -%} current_date
  {%- endif -%}
{%- endmacro %}

{% macro run_end() -%}
  cast({{ run_date() }} + interval 1 day as timestamp)
{%- endmacro %}

{#- Ledger instants are canonical UTC text: YYYY-MM-DDTHH:MM:SS.ffffffZ. -#}
{% macro utc_instant(column) -%}
  strptime({{ column }}, '%Y-%m-%dT%H:%M:%S.%fZ')
{%- endmacro %}

{#- The run date as the text stored in run_date columns (partition keys are text). -#}
{% macro run_date_text() -%}
  strftime({{ run_date() }}, '%Y-%m-%d')
{%- endmacro %}

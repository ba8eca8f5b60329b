{{ config(materialized='view') }}

-- Every settlement line from every settlement source, in one shape. A view: the
-- nightly run reads only what the incremental models below have not seen yet.
-- By name: the staging models' columns (macros/settlement_line_columns.sql).
{% set sources = ['paypal_stl', 'camt053', 'settlement_csv'] %}
{% for src in sources %}
select * from {{ ref('stg_' ~ src ~ '__settlement_lines') }}
{% if not loop.last %}union all by name{% endif %}
{% endfor %}

{{ config(meta={"dagster": {"ref": {"name": "reconciliation_open_events"}}}) }}

-- The night's open events are exactly the events no night up to it matched: a
-- sale, refund or chargeback the books have not reversed, and not a fee. A
-- matched event the books reversed since no longer counts (looked up in the few
-- reversed ones). macros/open_items.sql: open_items_complete.
{% set reversed -%}
    select event_key from {{ ref('stg_ledger__revenue_events') }} where status = 'reversed'
{%- endset %}
{{ open_items_complete('event', 'stg_ledger__revenue_events', open_event(),
    'no such event, reversed, or a fee', still_counts='matches.event_key not in (' ~ reversed ~ ')') }}

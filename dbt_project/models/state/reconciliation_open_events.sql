{{ config(pre_hook="{{ forget_nights_from_run_date() }}", post_hook="{{ forget_old_nights() }}") }}
-- The revenue events open when run_date closed: every sale, refund and chargeback
-- the books have not reversed and that no night up to run_date matched, those
-- within the match window and those that occur later included, with the columns
-- matching and the reports use (open_event_columns). The next night starts from this slice
-- (macros/open_items.sql); reconciliation_exceptions reports the ones past the
-- match window.
{{ open_items_slice('events') }}

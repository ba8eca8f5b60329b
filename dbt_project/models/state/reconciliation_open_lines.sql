{{ config(pre_hook="{{ forget_nights_from_run_date() }}", post_hook="{{ forget_old_nights() }}") }}
-- The settlement lines open when run_date closed: every line that is not a bank
-- charge and that no night up to run_date matched, those settled later (a report
-- dated ahead) included, with the columns matching and the reports use
-- (macros/open_items.sql, open_line_columns). The next night starts
-- from this slice (macros/open_items.sql); reconciliation_exceptions reports the
-- ones due.
{{ open_items_slice('lines') }}

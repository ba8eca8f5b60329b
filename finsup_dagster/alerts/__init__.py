"""Alerts: what is said (``message``), where it goes (``slack``, ``pagerduty``, ``webhook``
over ``http``), sending to several channels at once (``dispatch``), and what the books
remember of each alert so a stuck payout is told once, reminded, and resolved
(``state``, ``stuck``). Failed money jobs are told by ``job_failure``.

No Dagster here except in the sensors and the resource that build these.
"""

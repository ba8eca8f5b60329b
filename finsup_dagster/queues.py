"""The celery queues a step is sent to, named for what the step does.

Only the celery executor reads these tags (``dagster-celery/queue``); in process
and in subprocesses they change nothing. A worker listens on one or more queues
(``celery ... worker -Q warehouse`` or ``-Q ledger,gateway``: one ``-Q`` with a
comma-separated list, since celery keeps only the last of repeated ``-Q`` flags).

- ``warehouse``: steps that write the DuckDB warehouse. One worker, one process
  (``-c 1``), on the box whose disk holds ``FINSUP_WAREHOUSE_PATH``: DuckDB lets a
  single process open the file read-write. The Dagster pool ``warehouse`` already
  serialises these steps across runs; the one worker keeps them on one machine.
- ``gateway``: steps that call a payment gateway (submission, status polls): any
  number of workers, on the boxes allowed out to the providers.
- ``ledger``: steps that only read and write the books (PostgreSQL): every step
  without a queue tag goes there (the executor's default queue), so the ledger-only
  assets and checks carry no tag.
"""

from __future__ import annotations

from typing import Final

QUEUE_TAG: Final = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG

WAREHOUSE: Final = "warehouse"
GATEWAY: Final = "gateway"
LEDGER: Final = "ledger"
ALL: Final = (WAREHOUSE, GATEWAY, LEDGER)
DEFAULT: Final = LEDGER

WAREHOUSE_TAGS: Final = {QUEUE_TAG: WAREHOUSE}
GATEWAY_TAGS: Final = {QUEUE_TAG: GATEWAY}

"""Group commit: the webhooks arriving together are written in one transaction.

Why: every write transaction over the books carries a fixed cost (the writer
lock, the row seals and their log row, the commit), larger than storing one
event. Under concurrent deliveries, one thread writes whatever has queued
meanwhile in one ``db.write`` and releases each request only after that
commit, so nothing is answered 2xx before it is durable, and the cost is
shared. It also makes the process a single writer: its requests never wait
on each other in SQLite's busy loop.

If a group's transaction fails, each job is run again on its own
(``alone``), so one bad event never costs the others theirs.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import db

log = logging.getLogger("finsup.web.writer")
MAX_GROUP = 64


@dataclass
class Job:
    together: Callable[[Connection], Any]  # its part of a shared transaction
    alone: Callable[[], Any]  # the same work in transactions of its own
    done: Future[Any] = field(default_factory=Future)


class GroupWriter:
    def __init__(self, engine: Engine, max_group: int = MAX_GROUP) -> None:
        self.engine = engine
        self.max_group = max_group
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook-writer", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def run(self, together: Callable[[Connection], Any], alone: Callable[[], Any]) -> Any:
        """Blocks until the job's transaction committed; returns its result (or raises)."""
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True
        job = Job(together, alone)
        self._queue.put(job)
        return job.done.result()

    def close(self) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            self._write(group)

    def _write(self, group: list[Job]) -> None:
        try:
            with db.write(self.engine) as conn:
                results = [job.together(conn) for job in group]
        except Exception as exc:
            if len(group) == 1:
                log.warning("webhook write failed (%s); retrying it alone", type(exc).__name__)
            else:
                log.warning("a group of %d failed (%s); each alone", len(group), type(exc).__name__)
            for job in group:
                try:
                    job.done.set_result(job.alone())
                except Exception as alone_exc:
                    job.done.set_exception(alone_exc)
            return
        for job, result in zip(group, results, strict=True):
            job.done.set_result(result)

"""Group commit: the webhooks arriving together are written in one transaction.

Why: every write transaction over the books carries a fixed cost (the writer
lock, the row seals and their log row, the commit), larger than storing one
event, and every SQL statement carries a fixed Python cost of its own. Under
concurrent deliveries, one thread takes whatever has queued meanwhile and
hands the whole group to ``write_group`` inside one ``db.write``, which
writes it in a few statements for the group rather than a few per event
(``webhooks.WebhookReceiver.write_group``). Each request is released only
after that commit, so nothing is answered 2xx before it is durable, and the
cost is shared. It also makes the process a single writer: its requests
never wait on each other in SQLite's busy loop.

Requests wait on an asyncio future (``submit``), not on a thread of the
server's pool: a hundred waiting deliveries hold no threads.

If a group's transaction fails, each job is run again on its own
(``write_alone``), so one bad event never costs the others theirs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import db

log = logging.getLogger("finsup.web.writer")
MAX_GROUP = 64
T = TypeVar("T")


@dataclass
class _Queued(Generic[T]):
    job: T
    done: Future[Any] = field(default_factory=Future)


class GroupWriter(Generic[T]):
    """One writer thread; ``write_group(conn, jobs)`` returns one result per job, in order."""

    def __init__(
        self,
        engine: Engine,
        write_group: Callable[[Connection, Sequence[T]], Sequence[Any]],
        write_alone: Callable[[T], Any],
        max_group: int = MAX_GROUP,
    ) -> None:
        self.engine = engine
        self.write_group = write_group
        self.write_alone = write_alone
        self.max_group = max_group
        self._queue: queue.Queue[_Queued[T] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook-writer", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True

    async def submit(self, job: T) -> Any:
        """Waits (without a thread) until the job's transaction committed; its result."""
        self._start()
        queued: _Queued[T] = _Queued(job)
        self._queue.put(queued)
        return await asyncio.wrap_future(queued.done)

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
            # A request given up on (the client went away) is not written: it got no 2xx.
            # The rest can no longer be cancelled, so setting their results cannot fail.
            live = [q for q in group if q.done.set_running_or_notify_cancel()]
            if live:
                self._write(live)

    def write_now(self, jobs: Sequence[T]) -> list[Future[Any]]:
        """Writes ``jobs`` as one group on the calling thread, exactly as the writer thread
        writes each group it takes (tests use it to choose a group); their futures, done."""
        group = [_Queued(job) for job in jobs]
        for q in group:
            q.done.set_running_or_notify_cancel()
        self._write(group)
        return [q.done for q in group]

    def _write(self, group: list[_Queued[T]]) -> None:
        try:
            with db.write(self.engine) as conn:
                results = self.write_group(conn, [q.job for q in group])
        except Exception as exc:
            if len(group) == 1:
                log.warning("webhook write failed (%s); retrying it alone", type(exc).__name__)
            else:
                log.warning("a group of %d failed (%s); each alone", len(group), type(exc).__name__)
            for q in group:
                try:
                    q.done.set_result(self.write_alone(q.job))
                except Exception as alone_exc:
                    q.done.set_exception(alone_exc)
            return
        for q, result in zip(group, results, strict=True):
            q.done.set_result(result)

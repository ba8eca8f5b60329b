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

Requests on their way (``coming``: taken by the server, still being read,
verified or parsed) are waited for, briefly (at most ``linger`` seconds), before
a group is written: PostgreSQL's ``commit_delay``/``commit_siblings`` idea.
Without it, the first request back after a commit is written alone while the
others are still being verified, and the groups alternate small and large
(measured at 4 clients on PostgreSQL: 1, 3, 1, 3, two events a group on
average). It also waits for as many jobs as the commits of the last
``ACTIVE_WINDOW_SECONDS`` answered: those senders are likely to deliver again, and
the first one back is otherwise written alone before the others reach the server.
Nothing is waited for when no request is on its way and nobody was answered lately,
so a lone delivery is written at once.

If a group's transaction fails, each job is run again on its own
(``write_alone``), so one bad event never costs the others theirs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import db

log = logging.getLogger("finsup.web.writer")
MAX_GROUP = 64
# Longest wait for requests on their way: a few requests' verification and parsing on a
# loaded box, well under the commit it saves (p99 target 50 ms).
LINGER_SECONDS = 0.003
# Answers given this recently count as senders likely to deliver again (see the module doc).
ACTIVE_WINDOW_SECONDS = 0.025
T = TypeVar("T")


@dataclass
class _Queued(Generic[T]):
    job: T
    done: Future[Any] = field(default_factory=Future)


class Coming:
    """One request on its way to ``GroupWriter.submit``; released once, whichever comes first."""

    def __init__(self, writer: GroupWriter[Any]) -> None:
        self._writer: GroupWriter[Any] | None = writer

    def release(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer._arrived()


class GroupWriter(Generic[T]):
    """One writer thread; ``write_group(conn, jobs)`` returns one result per job, in order."""

    def __init__(
        self,
        engine: Engine,
        write_group: Callable[[Connection, Sequence[T]], Sequence[Any]],
        write_alone: Callable[[T], Any],
        max_group: int = MAX_GROUP,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self.engine = engine
        # Its own pool, without the pre-ping's two round trips a transaction (db.for_one_writer).
        self._writes = db.for_one_writer(engine)
        self.write_group = write_group
        self.write_alone = write_alone
        self.max_group = max_group
        self.linger = linger
        self._coming = 0  # requests on their way to ``submit``: see ``on_its_way``
        # When each of the recent answers was given (the writer thread's own): see _run.
        self._answered: deque[float] = deque()
        self._queue: queue.Queue[_Queued[T] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook-writer", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True

    @contextmanager
    def on_its_way(self) -> Iterator[Coming]:
        """Around a request that may ``submit``: while it is read, verified and parsed, a
        group being formed waits (up to ``linger``) for its job. Pass the token to
        ``submit``; it is let go on every path, so a refused or failed request never keeps
        the writer waiting."""
        token = Coming(self)
        with self._lock:
            self._coming += 1
        try:
            yield token
        finally:
            token.release()

    def _arrived(self) -> None:
        with self._lock:
            self._coming -= 1

    async def submit(self, job: T, coming: Coming | None = None) -> Any:
        """Waits (without a thread) until the job's transaction committed; its result."""
        self._start()
        queued: _Queued[T] = _Queued(job)
        self._queue.put(queued)
        if coming is not None:
            coming.release()  # after the put: the writer may wait for it, never miss it
        return await asyncio.wrap_future(queued.done)

    def close(self) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout=10)
        # Anything queued after the stop was never written: it fails (a 500, so the
        # provider delivers it again) rather than waiting for ever.
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None and left.done.set_running_or_notify_cancel():
                left.done.set_exception(RuntimeError("the webhook writer stopped first"))
        if self._writes is not self.engine:
            self._writes.dispose()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            now = time.monotonic()
            until = now + self.linger
            while self._answered and self._answered[0] < now - ACTIVE_WINDOW_SECONDS:
                self._answered.popleft()
            senders = min(len(self._answered), self.max_group)
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    wait = until - time.monotonic()
                    if wait <= 0 or (self._coming <= 0 and len(group) >= senders):
                        break
                    try:
                        more = self._queue.get(timeout=min(wait, 0.0005))
                    except queue.Empty:
                        continue  # still on its way, or given up: look again
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            # A request given up on (the client went away) is not written: it got no 2xx.
            # The rest can no longer be cancelled, so setting their results cannot fail.
            live = [q for q in group if q.done.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                self._write(live)
            except BaseException as exc:
                # The thread must outlive any fault: a dead writer would leave every later
                # request waiting for ever. Nothing unanswered here got a 2xx.
                log.exception("the webhook writer failed outside a transaction; going on")
                for q in live:
                    if not q.done.done():
                        q.done.set_exception(exc)

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
            with db.write(self._writes) as conn:
                results = self.write_group(conn, [q.job for q in group])
                if len(results) != len(group):  # checked before the commit, not after
                    raise RuntimeError(f"{len(results)} results for a group of {len(group)}")
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
        answered = time.monotonic()
        self._answered.extend(answered for _ in group)

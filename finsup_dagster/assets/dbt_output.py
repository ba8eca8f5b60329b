"""dbt's own output, kept in the run's log instead of printed on stdout.

dagster-dbt echoes every dbt log line to ``sys.stdout``: in a terminal run
(`finsup reconcile`) that is ~140 lines above the one summary an operator
reads. Redirected here, each line becomes a DEBUG event of the run, where the
Dagster UI shows it beside the step.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from typing import Any, TypeVar

import dagster as dg

T = TypeVar("T")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RunLogWriter(io.TextIOBase):
    """A text stream whose every line goes to ``context.log.debug``."""

    def __init__(self, log: dg.DagsterLogManager, prefix: str = "dbt: ") -> None:
        self._log = log
        self._prefix = prefix
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""

    def _emit(self, line: str) -> None:
        clean = _ANSI.sub("", line).rstrip()
        if clean:
            self._log.debug(self._prefix + clean)


def quietly(events: Iterator[T], context: dg.AssetExecutionContext) -> Iterator[T]:
    """Yields ``events``, with whatever producing each one prints sent to the run's log.

    stdout is redirected only while the next event is produced, never while
    Dagster handles the one yielded.
    """
    writer = RunLogWriter(context.log)
    while True:
        with contextlib.redirect_stdout(writer):
            event: Any = next(events, _DONE)
        writer.flush()
        if event is _DONE:
            return
        yield event


_DONE = object()

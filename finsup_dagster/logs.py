"""Structured JSON logs, one object a line, with a correlation id that follows a batch.

Standard library only: ``logging`` with :class:`JsonFormatter`, and context
held in a ``contextvars.ContextVar`` so it follows the code that set it
(threads and asyncio tasks each see their own). The correlation id of a
payout is its batch id: ``bind(batch_id=...)`` where a batch is created,
submitted, polled or told about a webhook, and every line logged inside
carries ``"batch_id"`` until the block ends::

    with logs.bound(batch_id=batch_id):
        log.info("submitting")   # {"ts": ..., "level": "info", "logger": ..., "msg": "submitting",
                                 #  "batch_id": "pb_...", ...}

A line's own ``extra={...}`` fields are added too. Secrets never belong in a
log line: callers log ids and outcomes, never destinations, URLs or keys.

``configure()`` installs the formatter on the ``finsup`` logger (the CLI,
``finsup serve``); in Dagster runs the lines go to Dagster's handlers as
well, and :func:`bind` still enriches them for any JSON handler attached.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TextIO, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("finsup.trail")
# The trail is for a configured JSON handler (``configure``) or Dagster's; with none, Python's
# last-resort handler would print its warnings to a CLI user's stderr, which is for errors.
log.addHandler(logging.NullHandler())

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "finsup_log_context", default=None
)

# The attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def context() -> dict[str, Any]:
    """What is bound now (a copy)."""
    return dict(_context.get() or {})


def bind(**values: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Adds ``values`` to every line logged from here on in this context; returns the token
    :func:`unbind` takes to put the previous context back."""
    return _context.set({**(_context.get() or {}), **values})


def unbind(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """``bind`` for the length of a block."""
    token = bind(**values)
    try:
        yield
    finally:
        unbind(token)


def correlation_id() -> str | None:
    """The batch id bound now, if any."""
    value = (_context.get() or {}).get("batch_id")
    return str(value) if value is not None else None


def correlated(argument: str, event: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Binds the call's ``argument`` (e.g. ``batch_id``) for the length of the call, and logs
    ``<event> started`` / ``<event> finished`` (with seconds, and the error's type if it
    raised): one decorator line gives a function its place in the batch's trail."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            value = signature.bind_partial(*args, **kwargs).arguments.get(argument)
            started = time.monotonic()
            with bound(**{argument: value}):
                log.info(f"{event} started", extra={"event": event})
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    log.warning(
                        f"{event} failed",
                        extra={
                            "event": event,
                            "error": type(exc).__name__,
                            "seconds": round(time.monotonic() - started, 3),
                        },
                    )
                    raise
                outcome = getattr(result, "status", None)
                log.info(
                    f"{event} finished",
                    extra={
                        "event": event,
                        "seconds": round(time.monotonic() - started, 3),
                        **({"outcome": outcome} if isinstance(outcome, str) else {}),
                    },
                )
                return result

        return wrapper

    return decorate


class ContextFilter(logging.Filter):
    """Puts the bound context on each record (for handlers that are not JSON, too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", <bound context>, <extra>, "exc"?}``, sorted keys."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_context.get() or {})
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, sort_keys=True, default=str)


def configure(
    level: int | str = logging.INFO, stream: TextIO | None = None, logger_name: str = "finsup"
) -> logging.Handler:
    """JSON lines for the ``finsup`` loggers on ``stream`` (stderr); idempotent."""
    logger = logging.getLogger(logger_name)
    for handler in logger.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def configure_from_env() -> logging.Handler | None:
    """``configure()`` when ``FINSUP_LOG_FORMAT=json`` (level ``FINSUP_LOG_LEVEL``, default
    INFO); off by default, so a CLI user's stderr stays for one-line errors."""
    import os

    if os.environ.get("FINSUP_LOG_FORMAT", "").strip().lower() != "json":
        return None
    level = os.environ.get("FINSUP_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    return configure(level if level in logging.getLevelNamesMapping() else logging.INFO)

"""UTC instants in one canonical text form.

The books store instants as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` text: it sorts in
time order, reads the same on SQLite and PostgreSQL, and hashes identically
wherever it is recomputed (the event hash and the audit chain depend on that).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from finsup_dagster.ledger.errors import InvalidInput


def canonical(instant: datetime) -> str:
    if instant.tzinfo is None:
        raise InvalidInput(f"time {instant.isoformat()} has no UTC offset")
    try:
        instant = instant.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"time {instant.isoformat()} is out of range") from None
    # isoformat is C and much faster than strftime; the naive UTC value prints as we want.
    return instant.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_instant(raw: object, name: str = "time") -> str:
    """ISO 8601 with an offset (or Z) to the canonical UTC form; naive times are refused.

    ``name`` is the field the error names (``occurred_at 'yesterday' is not ISO 8601``).
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{name} must be an ISO 8601 time with an offset, got {raw!r:.40}")
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(f"{name} {raw!r:.60} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise InvalidInput(
            f"{name} {raw!r:.60} has no UTC offset; write e.g. 2026-01-31T12:00:00+00:00"
        )
    return canonical(parsed)


def now() -> str:
    return canonical(datetime.now(UTC))


def days_between(first: date, last: date) -> list[str]:
    """Every day from ``first`` to ``last``, both included, as ISO dates."""
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]

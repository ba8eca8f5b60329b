"""Earnings the swarm sends one request at a time (``POST /earnings``), into the books.

The same path as a landed file: every record goes through
``earnings.parse_earning`` (JSON rules: ``amount`` a decimal string,
``event_hashes`` a list) and ``earnings.add_earning``, so a file row and a
request body are accepted or refused for the same reasons, and an earning's
``external_id`` makes a second delivery ``unchanged``.

Unlike a file (row by row, rejects beside it), a request is all or nothing:
one transaction for every record of the body, so a refusal changes nothing and
the sender can fix the body and send it whole again.

Also here: ``new_earnings_mark``, what the earnings sensor compares between
ticks (the newest accrued earning not yet in a batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import db
from finsup_dagster.ledger.earnings import add_earning, parse_earning
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.schema import earnings

# One request is one decision of the swarm, not a bulk load: files are for bulk.
MAX_RECORDS = 500


@dataclass(frozen=True)
class Recorded:
    external_id: str
    status: str  # created | unchanged


def records_of(body: Any) -> list[Mapping[str, Any]]:
    """The earning objects of a JSON body: one object, or a list of them."""
    records = body if isinstance(body, list) else [body]
    if not records:
        raise InvalidInput("the body is an empty list: send one earning object or a list of them")
    if len(records) > MAX_RECORDS:
        raise InvalidInput(
            f"{len(records)} earnings in one request; at most {MAX_RECORDS} (land a file for more)"
        )
    for n, record in enumerate(records, 1):
        if not isinstance(record, dict):
            where = "the body" if not isinstance(body, list) else f"item {n}"
            raise InvalidInput(f"{where} is a JSON {type(record).__name__}, not an earning object")
    return records


def record_earnings(engine: Engine, body: Any, actor: str) -> list[Recorded]:
    """Records every earning of ``body`` in one transaction, or none (raises InvalidInput)."""
    records = records_of(body)
    parsed = []
    for n, raw in enumerate(records, 1):
        try:
            parsed.append(parse_earning(raw, from_json=True))
        except InvalidInput as exc:
            raise InvalidInput(_where(n, len(records), raw, exc)) from None
    seen: set[str] = set()
    for n, earning in enumerate(parsed, 1):
        if earning.external_id in seen:
            raise InvalidInput(
                f"item {n}: external_id {earning.external_id!r} is in the body twice"
            )
        seen.add(earning.external_id)
    done = []
    with db.write(engine) as conn:
        for n, (raw, earning) in enumerate(zip(records, parsed, strict=True), 1):
            try:
                status = add_earning(conn, earning, actor)
            except InvalidInput as exc:
                raise InvalidInput(_where(n, len(records), raw, exc)) from None
            done.append(Recorded(earning.external_id, status))
    return done


def _where(n: int, total: int, raw: Mapping[str, Any], exc: Exception) -> str:
    if total == 1:
        return str(exc)
    ext = raw.get("external_id")
    named = f" ({ext!r})" if isinstance(ext, str) and len(ext) <= 64 else ""
    return f"item {n}{named}: {exc}"


def new_earnings_mark(conn: Connection) -> int:
    """The id of the newest accrued earning not yet in a batch (0: none)."""
    e = earnings.c
    newest: int | None = conn.execute(
        sa.select(sa.func.max(e.id)).where(e.status == "accrued", e.payout_item_id.is_(None))
    ).scalar_one()
    return int(newest or 0)

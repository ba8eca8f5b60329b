"""Earnings: what the swarm decided each beneficiary earned, and the revenue that funds it.

Files (CSV/JSONL) have ``external_id, beneficiary, amount, currency,
event_hashes`` and optionally ``earned_at, description``. ``beneficiary`` is the
beneficiary's external id; ``event_hashes`` lists the revenue events that fund
the earning (in CSV separated by ``;`` or spaces, in JSONL a list of strings).

An earning is refused when its beneficiary or any cited event is unknown,
when a cited event is not a confirmed sale in the earning's currency, or when
it would take more than what is left of the revenue it cites. Funding is
allocated over the cited events in the order given, each giving what it has
left; ``earning_sources`` records how much each event funds (a cancelled
earning funds nothing any more).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import audit_log, clock, holds
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.files import RowsResult, apply_rows, file_format
from finsup_dagster.ledger.money import format_minor, normalise_currency, to_minor
from finsup_dagster.ledger.schema import beneficiaries, earning_sources, earnings, revenue_events
from finsup_dagster.ledger.text import clean_text, optional_text

COLUMNS = (
    "external_id",
    "beneficiary",
    "amount",
    "currency",
    "event_hashes",
    "earned_at",
    "description",
)
REQUIRED = ("external_id", "beneficiary", "amount", "currency", "event_hashes")
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class EarningInput:
    external_id: str
    beneficiary: str
    amount_minor: int
    currency: str
    event_hashes: tuple[str, ...]
    earned_at: str
    description: str | None


def parse_earning(raw: Mapping[str, Any], *, from_json: bool = False) -> EarningInput:
    """Validates one record; ``from_json`` records must give ``event_hashes`` as a list."""
    ext = clean_text(raw.get("external_id"), "external_id")
    who = clean_text(raw.get("beneficiary"), "beneficiary")
    currency = normalise_currency(raw.get("currency"))
    amount = to_minor(raw.get("amount"), currency)
    hashes = _cited_hashes(raw.get("event_hashes"), from_json)
    earned = raw.get("earned_at")
    return EarningInput(
        ext,
        who,
        amount,
        currency,
        hashes,
        clock.parse_instant(earned, "earned_at") if earned else clock.now(),
        optional_text(raw.get("description"), "description", max_len=500),
    )


def _cited_hashes(cited: Any, from_json: bool) -> tuple[str, ...]:
    if from_json and not isinstance(cited, list):
        # A string would be split on separators by guesswork; JSON has lists for this.
        got = "nothing" if cited is None else type(cited).__name__
        raise InvalidInput(f"event_hashes must be a JSON list of event hashes, got {got}")
    if isinstance(cited, list):
        if not all(isinstance(h, str) for h in cited):
            raise InvalidInput("event_hashes must list event hashes as strings")
        parts = cited
    else:
        parts = re.split(r"[;\s]+", str(cited or "").strip())
    hashes = tuple(dict.fromkeys(h.strip().lower() for h in parts if h.strip()))
    if not hashes:
        raise InvalidInput("event_hashes is empty: an earning must cite the revenue that funds it")
    bad = [h for h in hashes if not _HASH.match(h)]
    if bad:
        raise InvalidInput(f"event hash {bad[0][:20]!r} is not 64 hex characters")
    return hashes


def remaining_funding(conn: Connection, hashes: tuple[str, ...]) -> dict[str, tuple[Any, int]]:
    """For each known event: (its row, minor units not yet funding an earning)."""
    ev = revenue_events.c
    rows = {
        r.event_hash: r
        for r in conn.execute(sa.select(revenue_events).where(ev.event_hash.in_(hashes)))
    }
    used: dict[str, Any] = dict(
        conn.execute(
            sa.select(earning_sources.c.event_hash, sa.func.sum(earning_sources.c.amount_minor))
            .join(earnings, earnings.c.id == earning_sources.c.earning_id)
            .where(earning_sources.c.event_hash.in_(hashes), earnings.c.status != "cancelled")
            .group_by(earning_sources.c.event_hash)
        ).all()
    )
    return {h: (row, row.amount_minor - int(used.get(h) or 0)) for h, row in rows.items()}


def add_earning(conn: Connection, earning: EarningInput, actor: str) -> str:
    """Records one earning with its funding; returns created or unchanged; raises InvalidInput."""
    existing = conn.execute(
        sa.select(earnings).where(earnings.c.external_id == earning.external_id)
    ).first()
    ben = conn.execute(
        sa.select(beneficiaries.c.id).where(beneficiaries.c.external_id == earning.beneficiary)
    ).scalar_one_or_none()
    if ben is None:
        raise InvalidInput(f"unknown beneficiary {earning.beneficiary!r}")
    if existing is not None:
        if (existing.beneficiary_id, existing.amount_minor, existing.currency) == (
            ben,
            earning.amount_minor,
            earning.currency,
        ):
            return "unchanged"
        raise InvalidInput(
            f"earning {earning.external_id!r} already exists with another beneficiary or amount"
        )
    funding = remaining_funding(conn, earning.event_hashes)
    unknown = [h for h in earning.event_hashes if h not in funding]
    if unknown:
        raise InvalidInput(f"unknown revenue event {unknown[0][:12]}…")
    for h in earning.event_hashes:
        row, _ = funding[h]
        if row.kind != "sale" or row.status != "confirmed":
            raise InvalidInput(
                f"revenue event {h[:12]}… is a {row.status} {row.kind}, not a confirmed sale"
            )
        if row.currency != earning.currency:
            raise InvalidInput(
                f"revenue event {h[:12]}… is in {row.currency}, the earning in {earning.currency}"
            )
    left = sum(rest for _, rest in funding.values())
    if earning.amount_minor > left:
        cur = earning.currency
        raise InvalidInput(
            f"earning of {format_minor(earning.amount_minor, cur)} {cur} exceeds the "
            f"{format_minor(left, cur)} {cur} of confirmed revenue its events have left"
        )
    earning_id = conn.execute(
        sa.insert(earnings)
        .values(
            external_id=earning.external_id,
            beneficiary_id=ben,
            amount_minor=earning.amount_minor,
            currency=earning.currency,
            status="accrued",
            description=earning.description,
            earned_at=earning.earned_at,
            created_at=clock.now(),
        )
        .returning(earnings.c.id)
    ).scalar_one()
    need, sources = earning.amount_minor, []
    for h in earning.event_hashes:
        take = min(need, funding[h][1])
        if take > 0:
            sources.append({"earning_id": earning_id, "event_hash": h, "amount_minor": take})
            need -= take
    conn.execute(sa.insert(earning_sources), sources)
    # Funded by a sale a refund or chargeback already names: held from the start.
    holds.apply_holds(conn, actor, earning_ids=[earning_id])
    audit_log.log(
        conn,
        "earning_accrued",
        "earning",
        earning.external_id,
        actor=actor,
        amount_minor=earning.amount_minor,
        currency=earning.currency,
        detail={
            "beneficiary": earning.beneficiary,
            "funded_by": {s["event_hash"]: s["amount_minor"] for s in sources},
        },
    )
    return "created"


def ingest_file(engine: Engine, path: Path, actor: str = "system") -> RowsResult:
    """Every valid earning goes in; the rest go to the rejects file."""
    from_json = file_format(path) == "jsonl"
    return apply_rows(
        engine,
        path,
        REQUIRED,
        COLUMNS,
        ("created", "unchanged"),
        lambda conn, raw: add_earning(conn, parse_earning(raw, from_json=from_json), actor),
    )

"""Payouts that left the building and have not come back: what a person must look at.

Two kinds, oldest first:

- an **item** still ``submitted`` or ``processing`` (the provider took it and has
  said nothing final) longer than the threshold since its batch was submitted;
- a **batch** still ``submitting`` longer than the threshold since it last
  became submitting: the provider may or may not hold it, and the sensor's
  automatic resumes have not settled it.

Age counts from when the payout left (the batch's ``submitted_at``), not from the
item's last change: a provider that keeps answering "processing" still has not
paid, and each poll must not restart the clock. The item's last status and when
it changed (``payout_items.updated_at``) are reported beside it.

No Dagster here: the CLI, the sensor and the metrics all read this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import clock
from finsup_dagster.ledger.schema import payout_batches, payout_items, transaction_log

# Taken by the provider, nothing final yet. held/unclaimed are committed too, but the
# provider has said why (a review, a payee to sign up); unclaimed has its own release.
STUCK_ITEM_STATUSES = ("submitted", "processing")
STUCK_BATCH_STATUSES = ("submitting",)


@dataclass(frozen=True)
class StuckItem:
    """One payout stuck at (or on the way to) its provider."""

    kind: str  # "item" | "batch" (a whole batch still submitting: no item has left alone)
    batch_id: str
    item_id: int | None
    method: str
    gateway_batch_id: str | None
    gateway_item_id: str | None
    amount_minor: int
    currency: str
    status: str  # the last status the books hold
    provider_status: str | None  # the provider's own last word ("PENDING", "In Process", ...)
    status_changed_at: str  # when it became that status (canonical UTC text)
    since: str  # when the payout left: submitted_at, or when the batch became submitting
    age_seconds: int  # now - since

    @property
    def key(self) -> str:
        """The alert key: one alert per stuck item (or batch), ever open at once."""
        subject = self.item_id if self.kind == "item" else self.batch_id
        return f"stuck:{self.kind}:{subject}"

    @property
    def subject_id(self) -> str:
        return str(self.item_id) if self.kind == "item" else self.batch_id

    @property
    def age_hours(self) -> float:
        return round(self.age_seconds / 3600, 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "age_hours": self.age_hours}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stuck_items(
    conn: Connection, older_than: timedelta, now: datetime | None = None
) -> list[StuckItem]:
    """Items submitted/processing and batches submitting for longer than ``older_than``."""
    moment = now or datetime.now(UTC)
    cutoff = clock.canonical(moment - older_than)
    found = _items(conn, cutoff, moment) + _batches(conn, cutoff, moment)
    return sorted(found, key=lambda s: (s.since, s.batch_id, s.item_id or 0))


def _items(conn: Connection, cutoff: str, now: datetime) -> list[StuckItem]:
    i, b = payout_items.c, payout_batches.c
    # A batch submitted before the items' ids were written has submitted_at; an item
    # whose batch somehow lacks it counts from its own last change.
    since = sa.func.coalesce(b.submitted_at, i.updated_at)
    rows = conn.execute(
        sa.select(
            i.id,
            i.batch_id,
            b.method,
            b.gateway_batch_id,
            i.gateway_item_id,
            i.amount_minor,
            i.currency,
            i.status,
            i.provider_status,
            i.updated_at,
            since.label("since"),
        )
        .join(payout_batches, b.id == i.batch_id)
        .where(i.status.in_(STUCK_ITEM_STATUSES), since <= cutoff)
    ).all()
    return [
        StuckItem(
            kind="item",
            batch_id=r.batch_id,
            item_id=int(r.id),
            method=r.method,
            gateway_batch_id=r.gateway_batch_id,
            gateway_item_id=r.gateway_item_id,
            amount_minor=int(r.amount_minor),
            currency=r.currency,
            status=r.status,
            provider_status=r.provider_status,
            status_changed_at=r.updated_at,
            since=r.since,
            age_seconds=_age(r.since, now),
        )
        for r in rows
    ]


def _batches(conn: Connection, cutoff: str, now: datetime) -> list[StuckItem]:
    b, t = payout_batches.c, transaction_log.c
    # When it last became submitting (a retried batch starts again), from the log.
    became = (
        sa.select(t.entity_id, sa.func.max(t.occurred_at).label("at"))
        .where(t.entity_type == "payout_batch", t.action == "batch_submitting")
        .group_by(t.entity_id)
        .subquery()
    )
    since = sa.func.coalesce(became.c.at, b.updated_at)
    rows = conn.execute(
        sa.select(
            b.id,
            b.method,
            b.gateway_batch_id,
            b.total_minor,
            b.currency,
            b.status,
            b.updated_at,
            since.label("since"),
        )
        .select_from(payout_batches.outerjoin(became, became.c.entity_id == b.id))
        .where(b.status.in_(STUCK_BATCH_STATUSES), since <= cutoff)
    ).all()
    return [
        StuckItem(
            kind="batch",
            batch_id=r.id,
            item_id=None,
            method=r.method,
            gateway_batch_id=r.gateway_batch_id,
            gateway_item_id=None,
            amount_minor=int(r.total_minor),
            currency=r.currency,
            status=r.status,
            provider_status=None,
            status_changed_at=r.updated_at,
            since=r.since,
            age_seconds=_age(r.since, now),
        )
        for r in rows
    ]


def _age(since: str, now: datetime) -> int:
    return max(int((now - _instant(since)).total_seconds()), 0)


def current_status(conn: Connection, kind: str, subject_id: str) -> str | None:
    """What a once-stuck item (or batch) is now, for the message that resolves its alert."""
    if kind == "item":
        status: str | None = conn.execute(
            sa.select(payout_items.c.status).where(payout_items.c.id == int(subject_id))
        ).scalar_one_or_none()
        return status
    status = conn.execute(
        sa.select(payout_batches.c.status).where(payout_batches.c.id == subject_id)
    ).scalar_one_or_none()
    return status

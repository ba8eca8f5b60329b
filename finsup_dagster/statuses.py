"""Statuses come back by polling: ask each gateway where its open batches are, and book it.

The books' side of a status is ``ledger/payout_status.py`` (one mapping table,
one ``apply_report`` shared with the webhook receiver); the provider's is
behind :class:`~finsup_dagster.gateways.payouts.PayoutGateway`. This module
only orders them (no Dagster here: the op in ``jobs_statuses.py`` and the
``finsup sync-payout-statuses`` command both call :func:`sync`):

1. Each submitted batch (not final) is read from its gateway. The raw answer
   is kept in ``gateway_events`` (``api.poll.response``, or ``api.poll.error``
   with the error line) in a transaction of its own, so it is evidence even
   if booking it fails. Then every item the gateway lists becomes a
   ``StatusReport(source="poll")`` applied in **one** write transaction per
   batch: a batch is booked whole or not at all, and a gateway fault on one
   batch never stops the others (it is reported in the result).
2. Items ``unclaimed`` for longer than ``FINSUP_UNCLAIMED_RELEASE_DAYS`` are
   cancelled at the provider first; only the provider's answer to the cancel
   (``source="cancel"``) moves them, so money is never released while the
   provider could still pay it. A refused cancel leaves the item as it is.
3. Webhook events stored but not yet applied (an event that came before its
   item's submission committed) are applied by the receiver's own later
   pass (``web/pending.py``): one parser, one way in.

Polling the same answer twice changes nothing: ``apply_report`` answers
``unchanged`` for a status the item already has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.gateways.payouts import (
    GatewayBatch,
    GatewayError,
    GatewayItem,
    GatewayUnavailable,
    PayoutGateway,
    TransientGatewayError,
)
from finsup_dagster.ledger import clock, db, payout_status, payouts
from finsup_dagster.ledger import submission as books
from finsup_dagster.ledger.errors import LedgerError, NotFound
from finsup_dagster.ledger.schema import payout_batches, payout_items, transaction_log
from finsup_dagster.submission import request_for

# Batches whose items may still move at the provider: the only ones polled.
OPEN_BATCH_STATUSES = ("submitted",)
# Payout methods with no status API: a bank file is paid (or not) as the bank
# statement says, which reconciliation reads; polling has nothing to ask.
NO_STATUS_API = {"bank": "a bank file has no status API: its outcome comes from the bank statement"}
DEFAULT_ACTOR = "finsup:status-poll"


@dataclass(frozen=True)
class ItemChange:
    """What one reported item status came to in the books."""

    item_id: int | None
    gateway_item_id: str | None
    provider_status: str
    outcome: str  # apply_report's answer: applied | unchanged | ignored | unknown_*
    status: str | None  # the item's status in the books afterwards (None: unknown item)


@dataclass(frozen=True)
class BatchSync:
    """One batch polled: its status before and after, each item's change, or why not."""

    batch_id: str
    method: str
    status_before: str
    status_after: str
    changes: tuple[ItemChange, ...] = ()
    error: str | None = None  # the gateway's fault, one line (the batch is left as it was)
    transient: bool = False  # the fault was the gateway being unreachable (worth a retry)
    skipped: str | None = None  # why it was not polled at all (a bank batch)

    @property
    def applied(self) -> tuple[ItemChange, ...]:
        return tuple(c for c in self.changes if c.outcome == "applied")


@dataclass(frozen=True)
class Release:
    """One unclaimed item cancelled at the provider (or refused) to release its money."""

    item_id: int
    batch_id: str
    unclaimed_since: str
    outcome: str  # apply_report's answer to the cancel, or "refused" / "error"
    status: str  # the item's status in the books afterwards
    detail: str | None = None  # the provider's refusal, one line
    transient: bool = False


@dataclass(frozen=True)
class SyncResult:
    batches: tuple[BatchSync, ...] = ()
    releases: tuple[Release, ...] = ()
    # Stored webhook events applied by this pass: outcome -> count (web/pending.py's words).
    webhooks: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        """Every fault, one line each, for the run's failure and the CLI."""
        found = [f"batch {b.batch_id}: {b.error}" for b in self.batches if b.error]
        found += [
            f"item {r.item_id} (batch {r.batch_id}): cancel {r.outcome}: {r.detail}"
            for r in self.releases
            if r.outcome in ("refused", "error")
        ]
        malformed = self.webhooks.get("malformed", 0)
        if malformed:
            found.append(f"{malformed} stored webhook events could not be parsed (kept, closed)")
        return found

    @property
    def failures(self) -> list[str]:
        """The faults that fail a run: a batch the gateway could not answer for, and a
        cancel that could not reach it. A refused cancel is a normal race (the payee
        claimed it meanwhile) and a stored event that cannot be parsed (kept, closed as
        malformed) only warn."""
        found = [f"batch {b.batch_id}: {b.error}" for b in self.batches if b.error]
        return found + [
            f"item {r.item_id} (batch {r.batch_id}): cancel {r.outcome}: {r.detail}"
            for r in self.releases
            if r.transient
        ]

    @property
    def unreachable(self) -> bool:
        """A gateway could not be reached for some batch or cancel: trying again may help."""
        return any(b.transient for b in self.batches) or any(r.transient for r in self.releases)

    @property
    def applied(self) -> int:
        return (
            sum(len(b.applied) for b in self.batches)
            + sum(1 for r in self.releases if r.outcome == "applied")
            + sum(n for outcome, n in self.webhooks.items() if "applied" in outcome.split("+"))
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON for the run's metadata and ``--json``."""
        return {
            "batches": [
                {
                    "batch_id": b.batch_id,
                    "method": b.method,
                    "status_before": b.status_before,
                    "status_after": b.status_after,
                    "error": b.error,
                    "skipped": b.skipped,
                    "changes": [
                        {
                            "item_id": c.item_id,
                            "gateway_item_id": c.gateway_item_id,
                            "provider_status": c.provider_status,
                            "outcome": c.outcome,
                            "status": c.status,
                        }
                        for c in b.changes
                    ],
                }
                for b in self.batches
            ],
            "releases": [
                {
                    "item_id": r.item_id,
                    "batch_id": r.batch_id,
                    "unclaimed_since": r.unclaimed_since,
                    "outcome": r.outcome,
                    "status": r.status,
                    "detail": r.detail,
                }
                for r in self.releases
            ],
            "webhooks": dict(self.webhooks),
            "applied": self.applied,
            "errors": self.errors,
        }


GatewayFor = Callable[[str], PayoutGateway]


def sync(
    engine: Engine,
    gateway_for: GatewayFor,
    batch_id: str | None = None,
    now: datetime | None = None,
    *,
    release_after: timedelta | None = None,
    actor: str = DEFAULT_ACTOR,
) -> SyncResult:
    """Polls every open batch (or just ``batch_id``), releases stale unclaimed items, and
    applies stored webhook events left unprocessed.

    ``gateway_for`` gives the gateway of a payout method (as for submission).
    ``now`` is when the unclaimed age is measured (tests move it forward);
    ``release_after`` defaults to ``FINSUP_UNCLAIMED_RELEASE_DAYS``. A batch
    asked for by id that does not exist raises :class:`NotFound`; one that is
    not open is reported as it is, with nothing asked.
    """
    from finsup_dagster import settings

    moment = now or datetime.now(UTC)
    after = release_after if release_after is not None else settings.unclaimed_release_after()
    batches = _open_batches(engine, batch_id)
    gateways: dict[str, PayoutGateway | str] = {}
    synced: list[BatchSync] = []
    releases: list[Release] = []
    try:
        for batch in batches:
            gateway = _gateway(gateways, gateway_for, batch.method)
            if isinstance(gateway, str):
                synced.append(_skipped(batch, gateway))
                continue
            polled = _poll_batch(engine, gateway, batch, actor)
            synced.append(polled)
            if polled.error is None:  # the provider's word is fresh: only now is age meaningful
                releases += _release_unclaimed(engine, gateway, batch.id, moment, after, actor)
    finally:
        for gateway in gateways.values():
            close = getattr(gateway, "close", None)
            if callable(close):
                close()  # the HTTP clients' connection pools
    webhooks = _apply_stored_webhooks(engine) if batch_id is None else {}
    return SyncResult(tuple(synced), tuple(releases), webhooks)


# ---------------------------------------------------------------------- batches


def _open_batches(engine: Engine, batch_id: str | None) -> list[Any]:
    b = payout_batches.c
    stmt = sa.select(b.id, b.method, b.status, b.gateway_batch_id, b.approval_version)
    with db.read(engine) as conn:
        if batch_id is not None:
            row = conn.execute(stmt.where(b.id == batch_id)).first()
            if row is None:
                raise NotFound(f"no payout batch {batch_id!r}")
            return [row]
        return list(
            conn.execute(stmt.where(b.status.in_(OPEN_BATCH_STATUSES)).order_by(b.id)).all()
        )


def open_batch_ids(conn: Connection) -> list[str]:
    """The batches a poll would ask a gateway about (the sensor starts a run for them)."""
    b = payout_batches.c
    return list(
        conn.execute(
            sa.select(b.id)
            .where(b.status.in_(OPEN_BATCH_STATUSES), b.method.not_in(list(NO_STATUS_API)))
            .order_by(b.id)
        ).scalars()
    )


def _gateway(
    cache: dict[str, PayoutGateway | str], gateway_for: GatewayFor, method: str
) -> PayoutGateway | str:
    """The method's gateway, built once per sync; a string says why there is none."""
    if method not in cache:
        if method in NO_STATUS_API:
            cache[method] = NO_STATUS_API[method]
        else:
            try:
                cache[method] = gateway_for(method)
            except LedgerError as exc:  # not configured: every batch of it is reported
                cache[method] = str(exc)
    return cache[method]


def _skipped(batch: Any, why: str) -> BatchSync:
    if batch.method in NO_STATUS_API:
        return BatchSync(batch.id, batch.method, batch.status, batch.status, skipped=why)
    return BatchSync(batch.id, batch.method, batch.status, batch.status, error=why)


def _poll_batch(engine: Engine, gateway: PayoutGateway, batch: Any, actor: str) -> BatchSync:
    if batch.status not in OPEN_BATCH_STATUSES:
        why = f"batch is {batch.status}: only a submitted batch is polled"
        return BatchSync(batch.id, batch.method, batch.status, batch.status, skipped=why)
    with db.read(engine) as conn:
        # The request as it was sent (same key, same items): Payoneer knows a batch only
        # by its payments' references, which the request names.
        key = payouts.idempotency_key(batch.id, int(batch.approval_version))
        request = request_for(batch.id, key, books.lines_for(conn, batch.id))
    try:
        held = gateway.find_batch(request, batch.gateway_batch_id)
    except GatewayError as exc:
        _keep(engine, gateway, batch.id, "poll.error", exc.raw or str(exc), exc.status_code)
        return BatchSync(
            batch.id,
            batch.method,
            batch.status,
            batch.status,
            error=str(exc),
            transient=isinstance(exc, TransientGatewayError | GatewayUnavailable),
        )
    if held is None:
        why = (
            f"the gateway does not hold {batch.gateway_batch_id or key}, which the books submitted"
        )
        _keep(engine, gateway, batch.id, "poll.error", why, None)
        return BatchSync(batch.id, batch.method, batch.status, batch.status, error=why)
    _keep(engine, gateway, batch.id, "poll.response", _raw(held), None)
    with db.write(engine) as conn:  # the whole batch in one transaction
        changes = tuple(_apply(conn, gateway.name, item, "poll", actor) for item in held.items)
        after = _batch_status(conn, batch.id)
    return BatchSync(batch.id, batch.method, batch.status, after, changes)


def _raw(held: GatewayBatch) -> str:
    """The provider's answer as kept: Payoneer's batch is its payments' answers, listed."""
    if held.raw:
        return held.raw
    return "[" + ",".join(item.raw or "{}" for item in held.items) + "]"


def _apply(
    conn: Connection, gateway: str, item: GatewayItem, source: str, actor: str
) -> ItemChange:
    report = payout_status.StatusReport(
        gateway=gateway,
        provider_status=item.status,
        item_id=item.item_id,
        gateway_item_id=item.gateway_item_id,
        source=source,
    )
    outcome = payout_status.apply_report(conn, report, actor)
    return ItemChange(
        item.item_id, item.gateway_item_id, item.status, outcome, _item_status(conn, item.item_id)
    )


def _item_status(conn: Connection, item_id: int | None) -> str | None:
    if item_id is None:
        return None
    status: str | None = conn.execute(
        sa.select(payout_items.c.status).where(payout_items.c.id == item_id)
    ).scalar_one_or_none()
    return status


def _batch_status(conn: Connection, batch_id: str) -> str:
    status: str = conn.execute(
        sa.select(payout_batches.c.status).where(payout_batches.c.id == batch_id)
    ).scalar_one()
    return status


def _keep(
    engine: Engine,
    gateway: PayoutGateway,
    batch_id: str,
    kind: str,
    raw: str,
    status_code: int | None,
) -> None:
    """The provider's raw answer (or the error line) kept, committed whatever follows."""
    with db.write(engine) as conn:
        books.record_gateway_answer(conn, gateway.name, batch_id, kind, raw, status_code)


# ---------------------------------------------------------------------- unclaimed release


def unclaimed_items(
    conn: Connection, batch_id: str, older_than: timedelta, now: datetime
) -> list[tuple[int, str | None, str]]:
    """(item id, gateway item id, unclaimed since) of the batch's items unclaimed too long.

    Since when: the latest ``item_unclaimed`` row of the transaction log (the
    move that made it unclaimed), else the item's ``updated_at``.
    """
    i, t = payout_items.c, transaction_log.c
    since = (
        sa.select(sa.func.max(t.occurred_at))
        .where(
            t.entity_type == "payout_item",
            t.entity_id == sa.cast(i.id, sa.String),
            t.action == "item_unclaimed",
        )
        .scalar_subquery()
    )
    rows = conn.execute(
        sa.select(i.id, i.gateway_item_id, sa.func.coalesce(since, i.updated_at).label("since"))
        .where(i.batch_id == batch_id, i.status == "unclaimed")
        .order_by(i.id)
    ).all()
    cutoff = clock.canonical(now - older_than)
    return [(int(r.id), r.gateway_item_id, str(r.since)) for r in rows if str(r.since) <= cutoff]


def _release_unclaimed(
    engine: Engine,
    gateway: PayoutGateway,
    batch_id: str,
    now: datetime,
    older_than: timedelta,
    actor: str,
) -> list[Release]:
    with db.read(engine) as conn:
        stale = unclaimed_items(conn, batch_id, older_than, now)
    return [
        _release(engine, gateway, batch_id, item_id, gid, since, actor)
        for item_id, gid, since in stale
    ]


def _release(
    engine: Engine,
    gateway: PayoutGateway,
    batch_id: str,
    item_id: int,
    gateway_item_id: str | None,
    since: str,
    actor: str,
) -> Release:
    if gateway_item_id is None:
        return Release(
            item_id, batch_id, since, "refused", "unclaimed", "no gateway item id to cancel"
        )
    try:
        answer = gateway.cancel_item(gateway_item_id)
    except GatewayError as exc:
        _keep(engine, gateway, batch_id, "cancel.error", exc.raw or str(exc), exc.status_code)
        transient = isinstance(exc, TransientGatewayError | GatewayUnavailable)
        outcome = "error" if transient else "refused"
        # Left as it is: the provider may still pay it; the next poll shows where it is.
        return Release(item_id, batch_id, since, outcome, "unclaimed", str(exc), transient)
    _keep(engine, gateway, batch_id, "cancel.response", answer.raw or answer.status, None)
    # The item is the one we asked to cancel, whatever id the answer echoes.
    item = GatewayItem(item_id, answer.gateway_item_id or gateway_item_id, answer.status, "")
    with db.write(engine) as conn:
        change = _apply(conn, gateway.name, item, "cancel", actor)
    return Release(item_id, batch_id, since, change.outcome, change.status or "unclaimed")


# ---------------------------------------------------------------------- stored webhooks


def _apply_stored_webhooks(engine: Engine) -> dict[str, int]:
    """Accepted webhook events not yet applied (one that overtook its item's submission),
    applied now by the receiver's own later pass: one parser and one way into the books
    for an event, whoever applies it. Returns outcome -> count."""
    from finsup_dagster.web.pending import apply_stored

    return dict(sorted(apply_stored(engine).items()))

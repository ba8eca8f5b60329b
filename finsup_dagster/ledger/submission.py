"""The books' side of submitting a payout batch to a gateway (no HTTP here).

The submission op calls these, each inside a ``db.write`` transaction it
opens, and talks to the gateway in between (``gateways/`` is never imported
here: everything comes in as plain values). One attempt goes:

1. In one write transaction: ``lines_for`` (what to send), build the
   gateway request under ``payouts.idempotency_key(batch, version)``, then
   ``prepare_attempt`` with the request's payload hash. The batch is
   ``submitting`` with its key and payload hash stored, the attempt counted,
   and the kill switch, the payees' screening and their funding checked again
   now, before anything leaves. It commits before the call.
2. The call. Whatever the provider answers (a batch, an error, garbage, an
   HTML error page) goes to ``record_gateway_answer`` in a write transaction
   of its own, so the answer is kept even when what follows rolls back.
3. As soon as the provider's batch id is known, ``record_gateway_batch_id``
   (its own transaction, committed before anything else can fail), then
   ``record_submitted`` with the items' gateway ids: batch and items
   ``submitted``. Or, when the provider refused the batch for good (nothing
   was accepted), ``record_submission_failed``: the amount stays reserved
   until an approver retries (``retry``) or cancels (``approvals.cancel``).
   A timeout or a dropped connection is neither: the batch stays
   ``submitting`` and the next attempt asks the provider under the same key.

A crash anywhere is resumed by running the attempt again: ``prepare_attempt``
finds the batch ``submitting`` under the same key and returns it as it is
(with the provider's id if one was recorded), or ``submitted`` (nothing left
to send); ``record_submitted`` called again with the same ids changes nothing.

Retrying a ``submission_failed`` batch moves it back to ``approved``
(``batch_retry_approved`` in the log), keeping its approval version and so its
idempotency key, so the provider can still recognise a batch it did accept;
the sensor asks for one run per retry row. See docs/payouts.md, "Submission".
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import audit_log, clock, holds, payouts, state_machine
from finsup_dagster.ledger.approvals import ApprovalRefused
from finsup_dagster.ledger.beneficiaries import ensure_batch_payable
from finsup_dagster.ledger.controls import ensure_not_frozen
from finsup_dagster.ledger.errors import IllegalTransition, InvalidInput, LedgerError, NotFound
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.schema import (
    beneficiaries,
    gateway_events,
    payout_batches,
    payout_items,
    transaction_log,
)
from finsup_dagster.text import has_control_or_space, one_line

SUBMITTABLE = frozenset({"approved", "submitting"})
REASON_MAX = 512
_KIND = re.compile(r"[a-z]+(\.[a-z_]+)+")


class PayloadChanged(LedgerError):
    """An attempt under a stored idempotency key would send another payload than the first."""


class PayeeChangedSinceApproval(LedgerError):
    """A payee's destination, method or name changed after the approver approved the batch."""


# What the gateway is told about a payee: a change after approval is not what was approved.
PAYMENT_FIELDS = ("destination", "payout_method", "name")


class GatewayIdMismatch(LedgerError):
    """The provider's batch id differs from the one the books already recorded."""


@dataclass(frozen=True)
class AttemptLine:
    """One item as the gateway request needs it. ``destination`` is the full one: never log it."""

    item_id: int
    beneficiary_id: int
    destination: str
    name: str
    amount_minor: int
    currency: str
    method: str  # the beneficiary's payout method


@dataclass(frozen=True)
class Attempt:
    """What one submission attempt sends, and what the books already know of earlier ones.

    ``status`` is ``submitting`` (send, or first ask the provider what it holds
    under the key when ``resumed``) or ``submitted`` (an earlier attempt got
    through: nothing to send).
    """

    batch_id: str
    approval_version: int
    idempotency_key: str
    status: str
    method: str
    currency: str
    total_minor: int
    gateway_batch_id: str | None
    attempts: int  # submission attempts so far, this one included
    resumed: bool  # the batch was already submitting (a crash or a timeout before)
    lines: tuple[AttemptLine, ...]


def _batch(conn: Connection, batch_id: str) -> Any:
    batch = conn.execute(sa.select(payout_batches).where(payout_batches.c.id == batch_id)).first()
    if batch is None:
        raise NotFound(f"no payout batch {batch_id!r}")
    return batch


def _set_batch(conn: Connection, batch_id: str, **values: Any) -> None:
    conn.execute(sa.update(payout_batches).where(payout_batches.c.id == batch_id).values(**values))


def method_of(conn: Connection, batch_id: str) -> str:
    """The batch's payout method (paypal | payoneer | bank): which gateway it goes through."""
    return str(_batch(conn, batch_id).method)


def ensure_payees_as_approved(conn: Connection, batch_id: str) -> None:
    """Refuses a batch whose payees' payment details changed after its latest approval.

    The approver approved paying these destinations; a beneficiaries import
    since then must not redirect the money. Read from the transaction log, which
    names every changed field of every update.
    """
    t = transaction_log.c
    approved_at: str | None = conn.execute(
        sa.select(sa.func.max(t.occurred_at)).where(
            t.entity_type == "payout_batch",
            t.entity_id == batch_id,
            t.action.in_(["batch_approved", "batch_retry_approved"]),
        )
    ).scalar_one()
    if approved_at is None:
        return
    payees = (
        sa.select(beneficiaries.c.external_id)
        .join(payout_items, payout_items.c.beneficiary_id == beneficiaries.c.id)
        .where(payout_items.c.batch_id == batch_id)
    )
    updates = conn.execute(
        sa.select(t.entity_id, t.detail)
        .where(
            t.entity_type == "beneficiary",
            t.action == "beneficiary_updated",
            t.entity_id.in_(payees.scalar_subquery()),
            t.occurred_at > approved_at,
        )
        .order_by(t.seq)
    ).all()
    for payee, detail in updates:
        changed = sorted(set(json.loads(str(detail)).get("changed", {})) & set(PAYMENT_FIELDS))
        if changed:
            raise PayeeChangedSinceApproval(
                f"batch {batch_id}: payee {payee}'s {', '.join(changed)} changed after the batch "
                "was approved; it is not sent (cancel it and build it again)"
            )


def submitting_since(conn: Connection, batch_id: str) -> str | None:
    """When the batch last became ``submitting`` (canonical UTC text), from the log."""
    t = transaction_log.c
    since: str | None = conn.execute(
        sa.select(sa.func.max(t.occurred_at)).where(
            t.entity_type == "payout_batch",
            t.entity_id == batch_id,
            t.action == "batch_submitting",
        )
    ).scalar_one()
    return since


def approval_version_of(conn: Connection, batch_id: str) -> int:
    """The approval version a submission of the batch runs under (its idempotency key's)."""
    return int(_batch(conn, batch_id).approval_version)


def lines_for(conn: Connection, batch_id: str) -> tuple[AttemptLine, ...]:
    """The batch's items with their payees' full destinations, by item id."""
    _batch(conn, batch_id)
    i, b = payout_items.c, beneficiaries.c
    rows = conn.execute(
        sa.select(
            i.id,
            i.beneficiary_id,
            b.destination,
            b.name,
            i.amount_minor,
            i.currency,
            b.payout_method,
        )
        .select_from(payout_items.outerjoin(beneficiaries, b.id == i.beneficiary_id))
        .where(i.batch_id == batch_id)
        .order_by(i.id)
    ).all()
    missing = [str(r.id) for r in rows if r.beneficiary_id is None]
    if missing:
        raise InvalidInput(
            f"batch {batch_id}: item {missing[0]} names no beneficiary to pay; cancel the batch"
        )
    return tuple(
        AttemptLine(
            item_id=int(r.id),
            beneficiary_id=int(r.beneficiary_id),
            destination=r.destination,
            name=r.name,
            amount_minor=int(r.amount_minor),
            currency=r.currency,
            method=r.payout_method,
        )
        for r in rows
    )


def prepare_attempt(
    conn: Connection,
    batch_id: str,
    approval_version: int,
    payload_hash: str,
    actor: str,
    lines: tuple[AttemptLine, ...] | None = None,
) -> Attempt:
    """Starts (or resumes) one submission attempt; commit it before calling the gateway.

    An approved batch becomes ``submitting`` with its idempotency key
    (``payouts.start_submission``); one already ``submitting`` under the same
    key is a resumed attempt and stays as it is. Either way the attempt is
    counted, the payload hash stored the first time and compared every time
    after, and the kill switch, screening and funding are checked again now.
    A batch already ``submitted`` under that key is returned as it is:
    nothing to send, nothing counted. ``lines``: ``lines_for`` as the caller
    already read it in this transaction (to hash the payload), not read again.
    """
    batch = _batch(conn, batch_id)
    key = payouts.idempotency_key(batch_id, approval_version)
    if batch.status == "submitted" and batch.idempotency_key == key:
        return _attempt(conn, batch_id, resumed=True, lines=lines)
    if batch.status not in SUBMITTABLE:
        raise IllegalTransition(
            f"batch {batch_id} is {batch.status}; only an approved or submitting batch "
            "can be submitted"
        )
    if batch.approval_version != approval_version:
        raise IllegalTransition(
            f"batch {batch_id} is at approval version {batch.approval_version}, "
            f"not {approval_version}"
        )
    if not re.fullmatch(r"[0-9a-f]{64}", payload_hash):
        raise InvalidInput(f"batch {batch_id}: the payload hash must be 64 hex digits")
    resumed = batch.status == "submitting"
    if resumed and batch.idempotency_key != key:  # pragma: no cover - the version pins the key
        raise IllegalTransition(f"batch {batch_id} is submitting under another idempotency key")
    if batch.submission_hash is not None and batch.submission_hash != payload_hash:
        raise PayloadChanged(
            f"batch {batch_id}: same idempotency key with a different payload; "
            "cancel it and create a new batch"
        )
    # Asked again now, even when resumed: the freeze or a payee's screening may have
    # changed since the batch was approved, or since the attempt that crashed.
    ensure_not_frozen(conn, f"submitting batch {batch_id}")
    ensure_batch_payable(conn, batch_id)
    holds.ensure_batch_funded(conn, batch_id)
    ensure_payees_as_approved(conn, batch_id)
    if not resumed:
        payouts.start_submission(conn, batch_id, approval_version, actor)
    _set_batch(
        conn,
        batch_id,
        submission_hash=payload_hash,
        submission_attempts=payout_batches.c.submission_attempts + 1,
        updated_at=clock.now(),
    )
    return _attempt(conn, batch_id, resumed=resumed, lines=lines)


def _attempt(
    conn: Connection, batch_id: str, *, resumed: bool, lines: tuple[AttemptLine, ...] | None
) -> Attempt:
    batch = _batch(conn, batch_id)
    return Attempt(
        batch_id=batch_id,
        approval_version=int(batch.approval_version),
        idempotency_key=batch.idempotency_key,
        status=batch.status,
        method=batch.method,
        currency=batch.currency,
        total_minor=int(batch.total_minor),
        gateway_batch_id=batch.gateway_batch_id,
        attempts=int(batch.submission_attempts),
        resumed=resumed,
        lines=lines if lines is not None else lines_for(conn, batch_id),
    )


def record_gateway_answer(
    conn: Connection,
    gateway: str,
    batch_id: str,
    kind: str,
    raw: str | bytes,
    status_code: int | None = None,
) -> int:
    """Keeps a provider's raw answer to one of our calls in ``gateway_events``; returns its id.

    ``kind`` names the call and its outcome, e.g. ``submit.response``,
    ``submit.error``, ``find.response``: the event type is ``api.<kind>``.
    Call it in a write transaction of its own, committed whatever happens
    next: the answer is evidence even when recording its outcome fails.
    """
    if not _KIND.fullmatch(kind) or len(kind) > 60:
        raise InvalidInput(f"answer kind {kind!r} must read like submit.response")
    if not re.fullmatch(r"[a-z]{2,16}", gateway):
        raise InvalidInput(f"gateway {gateway!r} must be a short lower-case name")
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    now = clock.now()
    event_id: int = conn.execute(
        sa.insert(gateway_events)
        .values(
            gateway=gateway,
            event_id=f"call:{uuid.uuid4()}",
            event_type=f"api.{kind}",
            resource_id=batch_id,
            payload=text,
            # An answer to our own authenticated call over TLS, not a webhook: there is
            # no signature to check, and it is as trustworthy as the call itself.
            signature_valid=True,
            status_code=status_code,
            received_at=now,
            # Nothing is left to do with it (webhook processing picks unprocessed rows).
            processed_at=now,
        )
        .returning(gateway_events.c.id)
    ).scalar_one()
    return event_id


def record_gateway_batch_id(conn: Connection, batch_id: str, gateway_batch_id: str) -> None:
    """Stores the provider's batch id as soon as it is known; the same id again changes nothing."""
    batch = _batch(conn, batch_id)
    gateway_batch_id = _gateway_id(gateway_batch_id, f"batch {batch_id}: the gateway batch id")
    if batch.gateway_batch_id == gateway_batch_id:
        return
    if batch.gateway_batch_id is not None:
        raise GatewayIdMismatch(
            f"batch {batch_id} is {batch.gateway_batch_id} at the gateway, "
            f"not {gateway_batch_id}; ask the gateway before going on"
        )
    if batch.status not in ("submitting", "submission_failed"):
        raise IllegalTransition(
            f"batch {batch_id} is {batch.status}; a gateway batch id is recorded only "
            "while it is submitting"
        )
    _set_batch(conn, batch_id, gateway_batch_id=gateway_batch_id, updated_at=clock.now())
    audit_log.log(
        conn,
        "batch_gateway_id_recorded",
        "payout_batch",
        batch_id,
        actor="system",
        detail={"gateway_batch_id": gateway_batch_id, "method": batch.method},
    )


def _gateway_id(value: str | None, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise InvalidInput(f"{what} must be 1-128 characters")
    if has_control_or_space(value):
        raise InvalidInput(f"{what} must hold no spaces or control characters")
    return value


def record_submitted(
    conn: Connection,
    batch_id: str,
    gateway_batch_id: str,
    item_ids: Mapping[int, str | None],
    actor: str,
) -> None:
    """The provider holds the batch: batch and items ``submitted``, with the provider's ids.

    ``item_ids`` maps every item of the batch to its gateway item id (None
    when the provider gives none yet). Called again with the same ids, after a
    crash after commit, it changes and logs nothing.
    """
    batch = _batch(conn, batch_id)
    gateway_batch_id = _gateway_id(gateway_batch_id, f"batch {batch_id}: the gateway batch id")
    if batch.status not in ("submitting", "submitted"):
        raise IllegalTransition(
            f"batch {batch_id} is {batch.status}; only a submitting batch can become submitted"
        )
    items = {
        int(r.id): r
        for r in conn.execute(
            sa.select(
                payout_items.c.id, payout_items.c.status, payout_items.c.gateway_item_id
            ).where(payout_items.c.batch_id == batch_id)
        )
    }
    given = {int(k): v for k, v in item_ids.items()}
    if set(given) != set(items):
        extra, missing = sorted(set(given) - set(items)), sorted(set(items) - set(given))
        raise InvalidInput(
            f"batch {batch_id}: the gateway's answer does not list exactly its items "
            f"(not in the batch: {extra or 'none'}; missing: {missing or 'none'})"
        )
    for item_id, gid in given.items():
        if gid is not None:
            _gateway_id(gid, f"item {item_id}: the gateway item id")
        known = items[item_id].gateway_item_id
        if gid is not None and known is not None and known != gid:
            raise GatewayIdMismatch(
                f"item {item_id} is {known} at the gateway, not {gid}; ask the gateway"
            )
    record_gateway_batch_id(conn, batch_id, gateway_batch_id)
    now = clock.now()
    if batch.status == "submitting":
        _set_batch(conn, batch_id, submitted_at=now, status_reason=None)
        state_machine.move_batch(
            conn,
            batch_id,
            "submitted",
            actor,
            detail={"gateway_batch_id": gateway_batch_id, "idempotency_key": batch.idempotency_key},
        )
    for item_id, gid in sorted(given.items()):
        item = items[item_id]
        if gid is not None and item.gateway_item_id is None:
            conn.execute(
                sa.update(payout_items)
                .where(payout_items.c.id == item_id)
                .values(gateway_item_id=gid)
            )
        if item.status == "pending":
            state_machine.move_item(conn, item_id, "submitted", actor, reason="batch submitted")


def record_submission_failed(conn: Connection, batch_id: str, reason: str, actor: str) -> None:
    """The provider refused the batch for good: ``submission_failed``, the amount still reserved.

    Only for a definite refusal (nothing was accepted): a timeout or a dropped
    connection leaves the batch ``submitting`` for the next attempt to ask the
    provider. Items stay pending and their earnings batched until an approver
    retries or cancels the batch.
    """
    batch = _batch(conn, batch_id)
    line = one_line(reason, REASON_MAX, "no reason given")
    if batch.status == "submission_failed" and batch.status_reason == line:
        return  # the same failure recorded again (a resumed attempt): nothing new
    state_machine.check(
        state_machine.BATCH_TRANSITIONS, f"batch {batch_id}", batch.status, "submission_failed"
    )
    _set_batch(conn, batch_id, status_reason=line)
    state_machine.move_batch(
        conn,
        batch_id,
        "submission_failed",
        actor,
        reason=line,
        detail={"attempts": int(batch.submission_attempts)},
    )


def retry(conn: Connection, approver: Any, batch_id: str) -> dict[str, Any]:
    """An approver sends a ``submission_failed`` batch back to ``approved``, same key and version.

    The caller has checked the approver's code (``approvals.authorised``). The
    maker-checker rule and the approver's limit hold as for an approval;
    screening, funding and the freeze are asked again by the next attempt.
    """
    ensure_not_frozen(conn, f"retrying batch {batch_id}")
    batch = _batch(conn, batch_id)
    if batch.status != "submission_failed":
        raise ApprovalRefused(
            f"batch {batch_id} is {batch.status}; only a submission_failed batch can be retried"
        )
    if batch.created_by == approver.name:
        raise ApprovalRefused(f"{approver.name} created batch {batch_id} and cannot retry it")
    if batch.currency != approver.limit_currency or batch.total_minor > approver.limit_minor:
        limit = format_minor(approver.limit_minor, approver.limit_currency)
        raise ApprovalRefused(
            f"batch {batch_id} of {format_minor(batch.total_minor, batch.currency)} "
            f"{batch.currency} is over {approver.name}'s limit of {limit} {approver.limit_currency}"
        )
    _set_batch(conn, batch_id, status_reason=None)
    state_machine.move_batch(
        conn,
        batch_id,
        "approved",
        approver.name,
        reason=batch.status_reason,
        detail={
            "approval_version": int(batch.approval_version),
            "idempotency_key": batch.idempotency_key,
            "attempts": int(batch.submission_attempts),
        },
    )
    return {
        "batch_id": batch_id,
        "status": "approved",
        "approval_version": int(batch.approval_version),
        "idempotency_key": batch.idempotency_key,
    }

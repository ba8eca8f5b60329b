"""One approved payout batch sent to its gateway, exactly once, whatever fails on the way.

The books' side of each step is ``ledger/submission.py``; the provider's is
behind :class:`~finsup_dagster.gateways.payouts.PayoutGateway`. This module
only orders them, and the order is what makes a batch leave once:

1. In one books transaction, committed before any call: the request is built
   from the batch's items under the idempotency key stored first, its payload
   hash stored (or compared: a changed batch is a new batch), and the kill
   switch and the payees' screening asked again.
2. The provider is asked what it already holds under that key (or the id the
   books recorded) **before** anything is sent; only if it holds nothing is
   the batch created. A create the provider refuses as a duplicate is read
   back by the client, not treated as a failure.
3. The provider's answer is kept in ``gateway_events`` (its own transaction),
   its batch id recorded the moment it is known, then batch and items become
   ``submitted`` with the provider's ids.

A crash or a timeout anywhere leaves the batch ``submitting`` under its key;
the next attempt (``finsup submit-payout-batch``, a re-executed run, or the
sensor's resume request) starts again at step 1 and finds at step 2 whatever
the provider took. A definite refusal of the create (nothing accepted) makes
the batch ``submission_failed`` with the reason; its amount stays reserved
until an approver retries or cancels it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from finsup_dagster import logs
from finsup_dagster.gateways.payouts import (
    GatewayBatch,
    GatewayError,
    GatewayRefused,
    PayoutGateway,
    PayoutLine,
    PayoutRequest,
)
from finsup_dagster.ledger import db, payouts
from finsup_dagster.ledger import submission as books
from finsup_dagster.ledger.errors import LedgerError


class SubmissionInterrupted(LedgerError):
    """The gateway could not be reached (or answered nothing usable) and may hold the batch:
    it stays ``submitting``, and the next attempt asks the gateway before sending."""


@dataclass(frozen=True)
class SubmissionResult:
    """What one attempt ended in, for the run's metadata and the CLI."""

    batch_id: str
    status: str  # submitted | submission_failed
    method: str
    currency: str
    total_minor: int
    items: int
    idempotency_key: str
    gateway_batch_id: str | None
    attempts: int
    read_back: bool  # the gateway already held it (a resumed attempt, or a duplicate create)
    reason: str | None = None


# PayPal remembers a sender_batch_id for 30 days; a margin for clocks and slow resumes.
DEDUPE_SAFE_DAYS = 25

# A stage the crash test stops the process at (benchmarks/submission_crash.py); None in use.
Checkpoint = Callable[[str], None]


def request_for(
    batch_id: str, idempotency_key: str, lines: tuple[books.AttemptLine, ...]
) -> PayoutRequest:
    """The provider-neutral request for the batch's items (full destinations: never log it)."""
    return PayoutRequest(
        batch_id=batch_id,
        idempotency_key=idempotency_key,
        currency=lines[0].currency,
        lines=tuple(
            PayoutLine(
                item_id=line.item_id,
                receiver=line.destination,
                amount_minor=line.amount_minor,
                currency=line.currency,
                name=line.name,
            )
            for line in lines
        ),
    )


@logs.correlated("batch_id", "payout_submission")
def submit(
    engine: Engine,
    gateway_for: Callable[[str], PayoutGateway],
    batch_id: str,
    approval_version: int,
    actor: str,
    checkpoint: Checkpoint | None = None,
) -> SubmissionResult:
    """Runs one submission attempt of an approved (or still submitting) batch.

    ``gateway_for`` gives the gateway of a payout method; it is asked before the
    books change, so a gateway that is not configured refuses with the books as
    they were. ``checkpoint`` is called with each stage reached (the crash test
    stops the process there).
    """
    reached = checkpoint or (lambda stage: None)
    with db.read(engine) as conn:
        gateway = gateway_for(books.method_of(conn, batch_id))
    try:
        return _run_attempt(engine, gateway, batch_id, approval_version, actor, reached)
    finally:
        close = getattr(gateway, "close", None)
        if callable(close):
            close()  # the HTTP clients' connection pools


def _run_attempt(
    engine: Engine,
    gateway: PayoutGateway,
    batch_id: str,
    approval_version: int,
    actor: str,
    reached: Checkpoint,
) -> SubmissionResult:
    with db.write(engine) as conn:
        key = payouts.idempotency_key(batch_id, approval_version)
        lines = books.lines_for(conn, batch_id)
        request = request_for(batch_id, key, lines)
        attempt = books.prepare_attempt(
            conn, batch_id, approval_version, request.payload_hash(), actor, lines
        )
        since = books.submitting_since(conn, batch_id)
    reached("prepared")
    if attempt.status == "submitted":
        return _result(attempt, "submitted", attempt.gateway_batch_id, read_back=True)

    try:
        held = gateway.find_batch(request, attempt.gateway_batch_id)
        reached("asked")
        if held is None and attempt.gateway_batch_id is not None:
            # The books hold its id: the gateway took it. Not finding it is a fault to
            # look into, never a reason to create it again.
            raise SubmissionInterrupted(
                f"batch {batch_id}: the gateway does not find {attempt.gateway_batch_id}, "
                "which the books recorded; it stays submitting for a person to look at"
            )
        created = held is None
        if held is None:
            _ensure_within_dedupe_window(batch_id, since)
            held = gateway.submit_batch(request)
        reached("answered")
    except GatewayRefused as exc:
        _keep_answer(engine, gateway, batch_id, "submit.error", exc)
        if not exc.nothing_accepted or attempt.gateway_batch_id is not None:
            # A garbage success, a failed read-back, a later chunk, or a batch the
            # provider took before: it may hold the money, so the batch is not given up.
            raise SubmissionInterrupted(
                f"batch {batch_id}: {exc}; the gateway may hold it, so it stays submitting "
                "and the next attempt asks the gateway before sending"
            ) from None
        with db.write(engine) as conn:
            books.record_submission_failed(conn, batch_id, str(exc), actor)
        return _result(attempt, "submission_failed", None, read_back=False, reason=str(exc))
    except GatewayError as exc:  # transient past the retry budget: the provider may hold it
        _keep_answer(engine, gateway, batch_id, "submit.error", exc)
        raise SubmissionInterrupted(
            f"batch {batch_id}: {exc}; it stays submitting and the next attempt asks "
            "the gateway before sending"
        ) from None

    with db.write(engine) as conn:  # its own transaction: kept whatever follows
        books.record_gateway_answer(
            conn,
            gateway.name,
            batch_id,
            "submit.response" if created else "find.response",
            held.raw,
        )
    with db.write(engine) as conn:
        books.record_gateway_batch_id(conn, batch_id, held.gateway_batch_id)
    reached("recorded_id")
    held = _with_items(engine, gateway, batch_id, held, request)
    with db.write(engine) as conn:
        books.record_submitted(
            conn, batch_id, held.gateway_batch_id, _item_ids(held, request), actor
        )
    reached("submitted")
    return _result(
        attempt, "submitted", held.gateway_batch_id, read_back=held.read_back or not created
    )


def _ensure_within_dedupe_window(batch_id: str, since: str | None) -> None:
    """Refuses to create a batch submitting for longer than the gateways remember a key.

    PayPal refuses a reused ``sender_batch_id`` for 30 days: a create sent again
    after that could be taken a second time. A batch stuck that long is for a
    person to check at the gateway, not for another create.
    """
    if since is None:
        return
    age = datetime.now(UTC) - datetime.fromisoformat(since.replace("Z", "+00:00"))
    if age > timedelta(days=DEDUPE_SAFE_DAYS):
        raise SubmissionInterrupted(
            f"batch {batch_id} has been submitting since {since[:10]}, past the "
            f"{DEDUPE_SAFE_DAYS} days the gateways are trusted to recognise its key: it is "
            "not sent again; check the gateway by hand"
        )


def _with_items(
    engine: Engine,
    gateway: PayoutGateway,
    batch_id: str,
    held: GatewayBatch,
    request: PayoutRequest,
) -> GatewayBatch:
    """The batch with its items' ids: PayPal's create answer lists none, so ask for them.

    Failing that, the batch is still submitted (the provider holds it) with
    the item ids left for the status poll to fill in.
    """
    if {i.item_id for i in held.items} >= {line.item_id for line in request.lines}:
        return held
    try:
        full = gateway.get_batch(held.gateway_batch_id)
    except GatewayError as exc:
        _keep_answer(engine, gateway, batch_id, "get.error", exc)
        return held
    with db.write(engine) as conn:
        books.record_gateway_answer(conn, gateway.name, batch_id, "get.response", full.raw)
    return full


def _item_ids(held: GatewayBatch, request: PayoutRequest) -> dict[int, str | None]:
    by_item = {i.item_id: i.gateway_item_id for i in held.items if i.item_id is not None}
    return {line.item_id: by_item.get(line.item_id) for line in request.lines}


def _keep_answer(
    engine: Engine, gateway: PayoutGateway, batch_id: str, kind: str, exc: GatewayError
) -> None:
    """The provider's raw answer (or, when there was none, the error line) kept for a person."""
    with db.write(engine) as conn:
        books.record_gateway_answer(
            conn, gateway.name, batch_id, kind, exc.raw or str(exc), exc.status_code
        )


def _result(
    attempt: books.Attempt,
    status: str,
    gateway_batch_id: str | None,
    *,
    read_back: bool,
    reason: str | None = None,
) -> SubmissionResult:
    return SubmissionResult(
        batch_id=attempt.batch_id,
        status=status,
        method=attempt.method,
        currency=attempt.currency,
        total_minor=attempt.total_minor,
        items=len(attempt.lines),
        idempotency_key=attempt.idempotency_key,
        gateway_batch_id=gateway_batch_id,
        attempts=attempt.attempts,
        read_back=read_back,
        reason=reason,
    )

"""Approvers and the actions that need their second factor.

Rules:

- RFC 6238 TOTP (pyotp; 30 s steps, 6 digits), accepting one step of clock
  drift either way. A code's time step is consumed by an atomic
  ``UPDATE … WHERE last_totp_step < :step``, so no code works twice for the
  same approver, whatever happens to the action it was given for.
- Wrong codes are counted; ``lockout_attempts`` in a row lock the approver out
  for ``lockout_minutes``. The count and the lock-out survive the refusal.
- Approving needs: payouts not frozen, the batch pending approval, an approver
  who did not create it, a batch total within the approver's limit (in the
  limit's currency), every payee still eligible (screening may have changed
  since the batch was built), the batch still fitting the available balance, and, where
  the batch requires two approvals, a second approver distinct from the first.
- Every action, refused ones included, leaves a transaction-log row with the
  actor, reason and amount; codes and secrets never appear anywhere.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyotp
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import audit_log, clock, controls, db, holds, state_machine
from finsup_dagster.ledger.balance import available_minor
from finsup_dagster.ledger.beneficiaries import ensure_batch_payable
from finsup_dagster.ledger.errors import InvalidInput, LedgerError, NotFound
from finsup_dagster.ledger.money import exponent, format_minor
from finsup_dagster.ledger.schema import approvals, approvers, payout_batches
from finsup_dagster.ledger.secret_box import SecretBox

T = TypeVar("T")
STEP_SECONDS = 30


class ApprovalRefused(LedgerError):
    """An action an approver asked for was refused; ``bad_code`` counts towards lock-out."""

    def __init__(self, message: str, *, bad_code: bool = False) -> None:
        super().__init__(message)
        self.bad_code = bad_code


@dataclass(frozen=True)
class ApprovalPolicy:
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    drift_steps: int = 1


def add_approver(
    conn: Connection, name: str, limit_minor: int, currency: str, box: SecretBox, actor: str
) -> str:
    """Creates an approver with a fresh secret; returns the secret (show it once, store it never)."""
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9._@-]{2,64}", name):
        raise InvalidInput(f"approver name {name!r} must be 2-64 letters, digits or . _ @ -")
    exponent(currency)
    if limit_minor <= 0:
        raise InvalidInput("an approver's limit must be positive")
    if conn.execute(sa.select(approvers.c.id).where(approvers.c.name == name)).first():
        raise InvalidInput(f"approver {name!r} already exists")
    secret = pyotp.random_base32()
    conn.execute(
        sa.insert(approvers).values(
            name=name,
            totp_secret_encrypted=box.seal(secret),
            limit_minor=limit_minor,
            limit_currency=currency,
            active=True,
            failed_attempts=0,
            created_at=clock.now(),
        )
    )
    audit_log.log(
        conn,
        "approver_added",
        "approver",
        name,
        actor=actor,
        amount_minor=limit_minor,
        currency=currency,
        detail={"limit": format_minor(limit_minor, currency)},
    )
    return secret


def provisioning_uri(secret: str, name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="finsup")


def disable_approver(conn: Connection, name: str, actor: str) -> None:
    if (
        conn.execute(
            sa.update(approvers).where(approvers.c.name == name).values(active=False)
        ).rowcount
        != 1
    ):
        raise NotFound(f"no approver {name!r}")
    audit_log.log(conn, "approver_disabled", "approver", name, actor=actor)


def _iso(epoch: float) -> str:
    return clock.canonical(datetime.fromtimestamp(epoch, UTC))


def _consume_code(
    conn: Connection, approver: Any, code: str, box: SecretBox, policy: ApprovalPolicy, now: float
) -> int:
    if not approver.active:
        raise ApprovalRefused(f"approver {approver.name} is disabled")
    if approver.locked_until and approver.locked_until > _iso(now):
        raise ApprovalRefused(
            f"approver {approver.name} is locked out until {approver.locked_until}"
        )
    code = code.strip()
    totp = pyotp.TOTP(box.open(approver.totp_secret_encrypted))
    current = int(now // STEP_SECONDS)
    step = None
    if re.fullmatch(r"\d{6}", code):
        for candidate in range(current - policy.drift_steps, current + policy.drift_steps + 1):
            if hmac.compare_digest(totp.at(candidate * STEP_SECONDS), code):
                step = candidate
                break
    if step is None:
        raise ApprovalRefused("wrong or expired TOTP code", bad_code=True)
    used = conn.execute(
        sa.update(approvers)
        .where(approvers.c.id == approver.id)
        .where(sa.or_(approvers.c.last_totp_step.is_(None), approvers.c.last_totp_step < step))
        .values(last_totp_step=step, failed_attempts=0)
    ).rowcount
    if used != 1:
        raise ApprovalRefused(
            "this TOTP code was already used: wait for the next one", bad_code=True
        )
    return step


def authorised(
    engine: Engine,
    approver_name: str,
    code: str,
    box: SecretBox,
    policy: ApprovalPolicy,
    what: str,
    entity: tuple[str, str],
    action: Callable[[Connection, Any], T],
    now: float | None = None,
) -> T:
    """Runs ``action`` in one write transaction if the approver's code is good.

    A refusal is logged (and a bad code counted) in the same transaction, which
    commits; then the refusal is raised to the caller.
    """
    moment = time.time() if now is None else now
    refusal: LedgerError | None = None
    with db.write(engine) as conn:
        approver = conn.execute(
            sa.select(approvers).where(approvers.c.name == approver_name)
        ).first()
        try:
            if approver is None:
                raise ApprovalRefused(f"no approver {approver_name!r}")
            _consume_code(conn, approver, code, box, policy, moment)
            with conn.begin_nested():
                return action(conn, approver)
        except LedgerError as exc:
            refusal = exc
            _record_refusal(conn, approver, approver_name, exc, what, entity, policy, moment)
    raise refusal


def _record_refusal(
    conn: Connection,
    approver: Any,
    name: str,
    exc: LedgerError,
    what: str,
    entity: tuple[str, str],
    policy: ApprovalPolicy,
    now: float,
) -> None:
    audit_log.log(
        conn, f"{what}_refused", entity[0], entity[1], actor=name, detail={"reason": str(exc)}
    )
    if approver is None or not getattr(exc, "bad_code", False):
        return
    failures: int = conn.execute(
        sa.update(approvers)
        .where(approvers.c.id == approver.id)
        .values(failed_attempts=approvers.c.failed_attempts + 1)
        .returning(approvers.c.failed_attempts)
    ).scalar_one()
    if failures >= policy.lockout_attempts:
        until = _iso(now + policy.lockout_minutes * 60)
        conn.execute(
            sa.update(approvers)
            .where(approvers.c.id == approver.id)
            .values(locked_until=until, failed_attempts=0)
        )
        audit_log.log(
            conn,
            "approver_locked_out",
            "approver",
            name,
            actor="system",
            detail={"failed_attempts": failures, "locked_until": until},
        )


def _batch(conn: Connection, batch_id: str) -> Any:
    batch = conn.execute(sa.select(payout_batches).where(payout_batches.c.id == batch_id)).first()
    if batch is None:
        raise NotFound(f"no payout batch {batch_id!r}")
    return batch


def approve(conn: Connection, approver: Any, batch_id: str) -> dict[str, Any]:
    """The approval rules; the caller has checked the code. Returns the batch's new state."""
    controls.ensure_not_frozen(conn, f"approving batch {batch_id}")
    batch = _batch(conn, batch_id)
    money = f"{format_minor(batch.total_minor, batch.currency)} {batch.currency}"
    if batch.status != "pending_approval":
        raise ApprovalRefused(f"batch {batch_id} is {batch.status}, not pending approval")
    if batch.created_by == approver.name:
        raise ApprovalRefused(f"{approver.name} created batch {batch_id} and cannot approve it")
    if batch.currency != approver.limit_currency:
        raise ApprovalRefused(
            f"{approver.name}'s limit is in {approver.limit_currency}; batch {batch_id} is in {batch.currency}"
        )
    if batch.total_minor > approver.limit_minor:
        limit = format_minor(approver.limit_minor, approver.limit_currency)
        raise ApprovalRefused(
            f"batch {batch_id} of {money} is over {approver.name}'s limit of {limit} {batch.currency}"
        )
    if conn.execute(
        sa.select(approvals.c.id).where(
            approvals.c.batch_id == batch_id, approvals.c.approver_id == approver.id
        )
    ).first():
        raise ApprovalRefused(
            f"{approver.name} has already approved batch {batch_id}: a second approver is needed"
        )
    ensure_batch_payable(conn, batch_id)
    holds.ensure_batch_funded(conn, batch_id)
    available = available_minor(conn, batch.currency)
    if available < 0:
        short = format_minor(-available, batch.currency)
        raise ApprovalRefused(
            f"batch {batch_id} no longer fits the available balance ({short} {batch.currency} short)"
        )
    step: int | None = conn.execute(
        sa.select(approvers.c.last_totp_step).where(approvers.c.id == approver.id)
    ).scalar_one()
    conn.execute(
        sa.insert(approvals).values(
            batch_id=batch_id,
            approver_id=approver.id,
            decision="approve",
            totp_step=step,
            decided_at=clock.now(),
        )
    )
    count = conn.execute(
        sa.select(sa.func.count())
        .select_from(approvals)
        .where(approvals.c.batch_id == batch_id, approvals.c.decision == "approve")
    ).scalar_one()
    audit_log.log(
        conn,
        "batch_approval_recorded",
        "payout_batch",
        batch_id,
        actor=approver.name,
        amount_minor=batch.total_minor,
        currency=batch.currency,
        detail={"approvals": count, "required": batch.required_approvals},
    )
    if count < batch.required_approvals:
        return {
            "batch_id": batch_id,
            "status": batch.status,
            "approvals": count,
            "required_approvals": batch.required_approvals,
            "approval_version": batch.approval_version,
        }
    conn.execute(
        sa.update(payout_batches)
        .where(payout_batches.c.id == batch_id)
        .values(approval_version=payout_batches.c.approval_version + 1)
    )
    state_machine.move_batch(
        conn,
        batch_id,
        "approved",
        approver.name,
        detail={"approval_version": batch.approval_version + 1},
    )
    return {
        "batch_id": batch_id,
        "status": "approved",
        "approvals": count,
        "required_approvals": batch.required_approvals,
        "approval_version": batch.approval_version + 1,
    }


def deny(conn: Connection, approver: Any, batch_id: str, reason: str) -> dict[str, Any]:
    if not reason.strip():
        raise InvalidInput("a reason is required to deny a batch")
    batch = _batch(conn, batch_id)
    if batch.status != "pending_approval":
        raise ApprovalRefused(f"batch {batch_id} is {batch.status}, not pending approval")
    step: int | None = conn.execute(
        sa.select(approvers.c.last_totp_step).where(approvers.c.id == approver.id)
    ).scalar_one()
    conn.execute(
        sa.delete(approvals).where(
            approvals.c.batch_id == batch_id, approvals.c.approver_id == approver.id
        )
    )
    conn.execute(
        sa.insert(approvals).values(
            batch_id=batch_id,
            approver_id=approver.id,
            decision="deny",
            reason=reason,
            totp_step=step,
            decided_at=clock.now(),
        )
    )
    state_machine.move_batch(conn, batch_id, "denied", approver.name, reason=reason)
    return {"batch_id": batch_id, "status": "denied"}


CANCELLABLE_WITHOUT_CODE = frozenset({"pending_approval"})
# A batch the gateway refused (submission_failed) still holds its reservation until
# an approver retries or cancels it; nothing of it was accepted, so cancelling is safe.
CANCELLABLE = frozenset({"pending_approval", "approved", "submission_failed"})


def cancel(
    conn: Connection, actor: str, batch_id: str, reason: str, with_code: bool
) -> dict[str, Any]:
    """Cancels a batch, releasing its reservation; past approval it needs an approver's code."""
    if not reason.strip():
        raise InvalidInput("a reason is required to cancel a batch")
    batch = _batch(conn, batch_id)
    if batch.status not in CANCELLABLE:
        raise ApprovalRefused(
            f"batch {batch_id} is {batch.status}; only pending, approved or "
            "submission_failed batches can be cancelled"
        )
    if not with_code and batch.status not in CANCELLABLE_WITHOUT_CODE:
        raise ApprovalRefused(
            f"batch {batch_id} is {batch.status}: cancelling it needs --approver and --code"
        )
    state_machine.move_batch(conn, batch_id, "cancelled", actor, reason=reason)
    return {"batch_id": batch_id, "status": "cancelled"}

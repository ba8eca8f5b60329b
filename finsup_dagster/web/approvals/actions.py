"""The page's actions, each through the ledger function the CLI calls.

Every one that needs a code goes through ``approvals.authorised``: the same
code check, replay guard, lock-out and refusal log as ``finsup
approve-payout-batch``. A refusal comes back as the ledger's ``LedgerError``,
whose message the page shows as it is. Nothing here decides a rule.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import approvals, audit_log, controls, db
from finsup_dagster.web.approvals.config import ApprovalsSettings


def _authorised(
    engine: Engine,
    cfg: ApprovalsSettings,
    approver: str,
    code: str,
    what: str,
    entity: tuple[str, str],
    action: Any,
) -> Any:
    return approvals.authorised(
        engine, approver, code, cfg.box, cfg.policy, what, entity, action, now=cfg.clock()
    )


def sign_in(engine: Engine, cfg: ApprovalsSettings, approver: str, code: str) -> None:
    """Spends the code's time step like any action: a code used to sign in cannot approve."""

    def record(conn: Connection, who: Any) -> None:
        audit_log.log(
            conn, "approver_signed_in", "approver", who.name, actor=who.name, detail={"via": "web"}
        )

    _authorised(engine, cfg, approver, code, "sign_in", ("approver", approver), record)


def approve(
    engine: Engine, cfg: ApprovalsSettings, approver: str, code: str, batch_id: str
) -> dict[str, Any]:
    result: dict[str, Any] = _authorised(
        engine,
        cfg,
        approver,
        code,
        "batch_approval",
        ("payout_batch", batch_id),
        lambda conn, who: approvals.approve(conn, who, batch_id),
    )
    return result


def deny(
    engine: Engine, cfg: ApprovalsSettings, approver: str, code: str, batch_id: str, reason: str
) -> dict[str, Any]:
    result: dict[str, Any] = _authorised(
        engine,
        cfg,
        approver,
        code,
        "batch_denial",
        ("payout_batch", batch_id),
        lambda conn, who: approvals.deny(conn, who, batch_id, reason),
    )
    return result


def freeze(engine: Engine, approver: str, reason: str) -> None:
    """As ``finsup freeze-payouts``: a reason, no code. Stopping money must never wait on a
    second factor; lifting the stop needs one (``unfreeze``)."""
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, approver, reason)


def unfreeze(engine: Engine, cfg: ApprovalsSettings, approver: str, code: str, reason: str) -> None:
    _authorised(
        engine,
        cfg,
        approver,
        code,
        "unfreeze",
        ("control", controls.PAYOUTS_FROZEN),
        lambda conn, who: controls.set_payouts_frozen(conn, False, who.name, reason),
    )

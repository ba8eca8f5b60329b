"""Controls: the payouts kill switch and the per-currency reserve.

Each change records who, when and why, in the control row and in the
transaction log, inside the caller's write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import audit_log, clock
from finsup_dagster.ledger.errors import InvalidInput, PayoutsFrozen
from finsup_dagster.ledger.schema import balance_reserves, controls

PAYOUTS_FROZEN = "payouts_frozen"


@dataclass(frozen=True)
class Freeze:
    frozen: bool
    set_by: str | None = None
    set_at: str | None = None
    reason: str | None = None


def _upsert(
    conn: Connection, table: sa.Table, key: dict[str, object], values: dict[str, object]
) -> None:
    where = sa.and_(*(table.c[k] == v for k, v in key.items()))
    if conn.execute(sa.update(table).where(where).values(**values)).rowcount == 0:
        conn.execute(sa.insert(table).values(**key, **values))


def freeze_state(conn: Connection) -> Freeze:
    row = conn.execute(sa.select(controls).where(controls.c.name == PAYOUTS_FROZEN)).first()
    if row is None:
        return Freeze(False)
    return Freeze(row.value == "true", row.set_by, row.set_at, row.reason)


def set_payouts_frozen(conn: Connection, frozen: bool, actor: str, reason: str) -> None:
    if not reason.strip():
        raise InvalidInput("a reason is required to freeze or unfreeze payouts")
    _upsert(
        conn,
        controls,
        {"name": PAYOUTS_FROZEN},
        {
            "value": "true" if frozen else "false",
            "set_by": actor,
            "set_at": clock.now(),
            "reason": reason,
        },
    )
    audit_log.log(
        conn,
        "payouts_frozen" if frozen else "payouts_unfrozen",
        "control",
        PAYOUTS_FROZEN,
        actor=actor,
        detail={"reason": reason},
    )


def ensure_not_frozen(conn: Connection, attempted: str) -> None:
    state = freeze_state(conn)
    if state.frozen:
        raise PayoutsFrozen(
            f"payouts are frozen (by {state.set_by} at {state.set_at}: {state.reason}); "
            f"{attempted} refused"
        )


def set_reserve(
    conn: Connection, currency: str, amount_minor: int, actor: str, reason: str
) -> None:
    if amount_minor < 0:
        raise InvalidInput("a reserve cannot be negative")
    _upsert(
        conn,
        balance_reserves,
        {"currency": currency},
        {"amount_minor": amount_minor, "set_by": actor, "set_at": clock.now(), "reason": reason},
    )
    audit_log.log(
        conn,
        "reserve_set",
        "reserve",
        currency,
        actor=actor,
        amount_minor=amount_minor,
        currency=currency,
        detail={"reason": reason},
    )

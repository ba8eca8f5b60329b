"""Re-encrypting every approver's TOTP secret from one FINSUP_SECRET_KEY to another.

All or nothing: one ``db.write`` transaction opens each secret under the old
key, seals it under the new one and checks it opens again before it is
written; any approver whose secret the old key cannot open (or any other
failure) rolls the whole transaction back, so the books are never left with
some secrets under one key and some under the other. The approvers' rows are
sealed again at commit like any write (``seals.flush``), and the transaction
log records ``secret_key_rotated`` with how many were re-encrypted, never a
secret or a key.

The TOTP secrets themselves do not change: approvers keep their
authenticator apps. Rotating an approver's own secret is re-enrolment
(``finsup disable-approver``, then ``finsup add-approver``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import audit_log, db
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.schema import approvers
from finsup_dagster.ledger.secret_box import SecretBox


def rotate_secret_key(engine: Engine, old: SecretBox, new: SecretBox, actor: str) -> int:
    """Re-encrypts every approver's secret from ``old`` to ``new``; returns how many."""
    probe = new.seal("finsup-key-probe")
    try:
        old.open(probe)
    except LedgerError:
        pass
    else:
        raise LedgerError("the new secret key is the current one: nothing to rotate")
    a = approvers.c
    with db.write(engine) as conn:
        rows = conn.execute(sa.select(a.id, a.name, a.totp_secret_encrypted).order_by(a.id)).all()
        for row in rows:
            try:
                secret = old.open(row.totp_secret_encrypted)
            except LedgerError:
                raise LedgerError(
                    f"approver {row.name!r}: the current FINSUP_SECRET_KEY cannot open their TOTP "
                    "secret; nothing was re-encrypted"
                ) from None
            sealed = new.seal(secret)
            if new.open(sealed) != secret:  # never write what the new key cannot read back
                raise LedgerError(f"approver {row.name!r}: re-encryption did not read back")
            conn.execute(
                sa.update(approvers).where(a.id == row.id).values(totp_secret_encrypted=sealed)
            )
        audit_log.log(
            conn,
            "secret_key_rotated",
            "control",
            "approvers",
            actor=actor,
            detail={"approvers": len(rows)},
        )
    return len(rows)

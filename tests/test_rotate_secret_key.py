"""`finsup rotate-secret-key`: every approver's TOTP secret moves to the new key, or none does.

After a rotation each approver's codes are accepted under the new key and the
old key opens nothing; the row seals still verify (the rows were rewritten
through ``db.write``); nothing secret is printed. A failure on the way
(here: an approver whose secret the current key cannot open) leaves every
secret under the old key. On SQLite and PostgreSQL, through the real command.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import approvals, db, key_rotation
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.schema import approvers, transaction_log
from finsup_dagster.ledger.secret_box import SecretBox, generate_key
from finsup_dagster.ledger.verification import verify_books
from tests.helpers.cli import assert_one_line_error, run
from tests.helpers.payouts import BOX, BOX_KEY, Approver, approver


def sealed_secrets(engine: Engine) -> dict[str, str]:
    with db.read(engine) as conn:
        rows = conn.execute(sa.select(approvers.c.name, approvers.c.totp_secret_encrypted))
        return {name: sealed for name, sealed in rows}


def accepts(engine: Engine, who: Approver, box: SecretBox) -> bool:
    """Whether ``who``'s next fresh code passes the approvals check under ``box``."""
    code, now = who.next_code()
    try:
        approvals.authorised(
            engine,
            who.name,
            code,
            box,
            approvals.ApprovalPolicy(lockout_attempts=100),
            "key_check",
            ("approver", who.name),
            lambda conn, a: None,
            now=now,
        )
    except LedgerError:
        return False
    return True


def rotations(engine: Engine) -> int:
    with db.read(engine) as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(transaction_log.c.action == "secret_key_rotated")
        ).scalar_one()


def test_after_rotation_codes_verify_under_the_new_key_only(
    engine: Engine, finsup_env: Path
) -> None:
    team = [approver(engine, name) for name in ("carol", "dave", "erin")]
    new_key = generate_key()
    env = {**os.environ, "FINSUP_SECRET_KEY": BOX_KEY, "FINSUP_NEW_SECRET_KEY": new_key}
    proc = run("rotate-secret-key", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "3 approver secret(s) re-encrypted" in proc.stdout
    printed = proc.stdout + proc.stderr
    for secret in (new_key, BOX_KEY, *(who.secret for who in team)):
        assert secret not in printed
    new_box = SecretBox(new_key)
    for who in team:
        assert accepts(engine, who, new_box), f"{who.name}'s code under the new key"
        assert not accepts(engine, who, BOX), f"{who.name}'s code still opens under the old key"
        # The authenticator app keeps working: the TOTP secret itself is unchanged.
        assert new_box.open(sealed_secrets(engine)[who.name]) == who.secret
    assert rotations(engine) == 1
    report = verify_books(engine)
    assert report.ok, report.problems()


def test_a_failure_midway_leaves_every_secret_under_the_old_key(
    engine: Engine, finsup_env: Path
) -> None:
    team = [approver(engine, name) for name in ("carol", "dave")]
    # Enrolled under another key: the current key cannot open it, and it comes last.
    stray = SecretBox(generate_key())
    with db.write(engine) as conn:
        approvals.add_approver(conn, "zed", 10_000, "USD", stray, "admin")
    before = sealed_secrets(engine)
    env = {**os.environ, "FINSUP_SECRET_KEY": BOX_KEY, "FINSUP_NEW_SECRET_KEY": generate_key()}
    proc = run("rotate-secret-key", env=env)
    assert_one_line_error(proc, "approver 'zed'")
    assert sealed_secrets(engine) == before, "nothing re-encrypted"
    assert rotations(engine) == 0
    for who in team:
        assert accepts(engine, who, BOX)


def test_keys_are_required_from_the_environment_and_must_differ(
    engine: Engine, finsup_env: Path
) -> None:
    approver(engine, "carol")
    before = sealed_secrets(engine)
    env = {k: v for k, v in os.environ.items() if k not in ("FINSUP_NEW_SECRET_KEY",)}
    assert_one_line_error(
        run("rotate-secret-key", env={**env, "FINSUP_SECRET_KEY": BOX_KEY}),
        "FINSUP_NEW_SECRET_KEY is not set",
    )
    with pytest.raises(LedgerError, match="is the current one"):
        key_rotation.rotate_secret_key(engine, BOX, SecretBox(BOX_KEY), "ops")
    assert sealed_secrets(engine) == before

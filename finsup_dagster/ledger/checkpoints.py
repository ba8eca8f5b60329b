"""Signed checkpoints of the chain head, kept outside the ledger.

Someone with write access to the database could rewrite rows, seals and the
whole chain consistently. A checkpoint is the chain head (sequence number and
hash) as last verified, written to a file under ``FINSUP_HOME/audit/`` and
signed with HMAC-SHA256 under a key the database never holds
(derived from ``FINSUP_AUDIT_KEY``; outside production, when that is unset, from
a random key file ``FINSUP_HOME/audit/checkpoint.key`` made on first use). Any later
verification checks that the chain still has that row with that hash: a
history rewritten before the checkpoint is found, and a checkpoint edited by
hand fails its signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import clock
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.schema import transaction_log

VERSION = "finsup-checkpoint-v1"


class CheckpointInvalid(LedgerError):
    """A checkpoint file that cannot be trusted: unreadable, or its signature does not match."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    row_hash: str
    written_at: str
    ledger: str  # the ledger's URL without credentials


def derive_key(secret: str) -> bytes:
    """A checkpoint key of its own from a longer-lived secret (the TOTP encryption key)."""
    return hmac.new(secret.encode(), b"finsup audit checkpoint key v1", hashlib.sha256).digest()


def local_key(home: Path) -> bytes:
    """Outside production with no key set: a key file of its own under FINSUP_HOME (mode 0600)."""
    path = home / "audit" / "checkpoint.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(os.urandom(32).hex())
    return derive_key(path.read_text().strip())


def resolve_key(configured: str, home: Path, production: bool) -> bytes | None:
    """The checkpoint key: the configured secret, else (not in production) the local key file."""
    if configured:
        return derive_key(configured)
    return None if production else local_key(home)


def path_for(home: Path, ledger: str) -> Path:
    """One file per ledger, so two sets of books under one home never share a checkpoint."""
    tag = hashlib.sha256(ledger.encode()).hexdigest()[:16]
    return home / "audit" / f"checkpoint-{tag}.json"


def _sign(key: bytes, body: dict[str, object]) -> str:
    text = json.dumps([VERSION, body], sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def read(path: Path, key: bytes) -> Checkpoint | None:
    """The checkpoint in ``path``, None if there is none; refuses one whose signature is wrong."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        body, mac = data["checkpoint"], data["hmac"]
        point = Checkpoint(
            int(body["seq"]), str(body["row_hash"]), str(body["written_at"]), str(body["ledger"])
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointInvalid(
            f"checkpoint {path} is unreadable ({exc.__class__.__name__})"
        ) from None
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _sign(key, asdict(point))):
        raise CheckpointInvalid(
            f"checkpoint {path} does not carry a valid signature: it was edited, or signed "
            "with another FINSUP_AUDIT_KEY"
        )
    return point


def write(path: Path, key: bytes, seq: int, row_hash: str, ledger: str) -> Checkpoint:
    """Writes atomically (temporary file, then rename): a crash never leaves half a checkpoint."""
    point = Checkpoint(seq, row_hash, clock.now(), ledger)
    body = asdict(point)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"checkpoint": body, "hmac": _sign(key, body)}, out, sort_keys=True, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return point


def compare(conn: Connection, point: Checkpoint) -> str | None:
    """None if the chain still has the checkpoint's row with its hash; else what is wrong."""
    if point.seq == 0:
        return None
    stored = conn.execute(
        sa.select(transaction_log.c.row_hash).where(transaction_log.c.seq == point.seq)
    ).scalar_one_or_none()
    if stored is None:
        return (
            f"the checkpoint of {point.written_at} records log row {point.seq}, which the books "
            "no longer have: rows were removed, or these are other books"
        )
    if stored != point.row_hash:
        return (
            f"log row {point.seq} no longer has the hash the checkpoint of {point.written_at} "
            "recorded: the chain was rewritten up to there"
        )
    return None

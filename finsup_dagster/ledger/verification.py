"""Verifying the books as a whole: the chain, every seal, and the signed checkpoint.

``verify_books`` is what ``finsup verify-audit-chain`` and the blocking
``audit_chain_intact`` check run. ``verify_and_checkpoint`` also reads the
checkpoint kept outside the ledger before, and advances it after, a clean
verification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from finsup_dagster.ledger import audit_log, checkpoints, db, seals
from finsup_dagster.ledger.audit_log import ChainReport
from finsup_dagster.ledger.checkpoints import Checkpoint, CheckpointInvalid
from finsup_dagster.ledger.seals import SealReport, TamperDetected


@dataclass
class BooksReport:
    chain: ChainReport
    seals: SealReport
    checkpoint: Checkpoint | None = None
    checkpoint_problems: list[str] = field(default_factory=list)
    incremental_from: int | None = None

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.seals.ok and not self.checkpoint_problems

    def problems(self) -> list[str]:
        out = list(self.checkpoint_problems)
        if not self.chain.ok:
            out.append(
                f"audit chain BROKEN at row {self.chain.first_bad_seq}: {self.chain.problem}"
            )
        out += [f"books TAMPERED: {p.message}" for p in self.seals.problems]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.chain.rows,
            "head_hash": self.chain.head_hash,
            "first_bad_seq": self.chain.first_bad_seq,
            "problem": self.chain.problem,
            "sealed_rows": self.seals.rows,
            "seals": self.seals.seals,
            "tampered": [p.__dict__ for p in self.seals.problems],
            "checkpoint_seq": self.checkpoint.seq if self.checkpoint else None,
            "checkpoint_problems": self.checkpoint_problems,
            "incremental_from": self.incremental_from,
            "problems": self.problems(),
        }


def ledger_label(engine: Engine) -> str:
    """The ledger's URL with user and password removed (for checkpoints and exports)."""
    return engine.url.set(username=None, password=None).render_as_string(hide_password=True)


def verify_books(
    engine: Engine, checkpoint: Checkpoint | None = None, incremental: bool = False
) -> BooksReport:
    """Every sealed row and seal in full; the chain from the checkpoint on if ``incremental``.

    The rows are always compared in full: a direct edit can hit any row, however old.
    """
    problems: list[str] = []
    since = None
    with db.read(engine) as conn:
        if checkpoint is not None:
            wrong = checkpoints.compare(conn, checkpoint)
            if wrong:
                problems.append(f"CHECKPOINT MISMATCH: {wrong}")
            elif incremental:
                since = (checkpoint.seq, checkpoint.row_hash)
        chain = audit_log.verify(conn, since=since)
        sealed = seals.verify(conn)
    return BooksReport(chain, sealed, checkpoint, problems, since[0] if since else None)


def verify_and_checkpoint(
    engine: Engine, home: Path, key: bytes | None, incremental: bool = False
) -> BooksReport:
    """Verifies against the checkpoint (if there is a key), then moves the checkpoint forward."""
    path = checkpoints.path_for(home, ledger_label(engine)) if key else None
    point: Checkpoint | None = None
    invalid: str | None = None
    if path is not None and key is not None:
        try:
            point = checkpoints.read(path, key)
        except CheckpointInvalid as exc:
            invalid = f"CHECKPOINT INVALID: {exc}"
    report = verify_books(engine, point, incremental=incremental and invalid is None)
    if invalid:
        report.checkpoint_problems.insert(0, invalid)
    ahead = point is None or report.chain.rows >= point.seq
    if report.ok and ahead and path is not None and key is not None:
        checkpoints.write(
            path, key, report.chain.rows, report.chain.head_hash, ledger_label(engine)
        )
    return report


def ensure_intact(engine: Engine, home: Path, key: bytes | None, what: str) -> BooksReport:
    """Refuses ``what`` (building batches, submitting one) unless the books verify."""
    report = verify_and_checkpoint(engine, home, key, incremental=True)
    if not report.ok:
        problems = report.problems()
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TamperDetected(
            f"{what} refused: the books do not verify: {problems[0]}{more}; "
            "run `finsup verify-audit-chain`"
        )
    return report

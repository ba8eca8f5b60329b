"""Crash test: a submission killed with SIGKILL at random points never pays twice or loses a batch.

Each run approves one fresh batch (PayPal and Payoneer in turn) and starts a
child process that submits it (``finsup_dagster.submission.submit``, the code
the submit job runs) against the gateway sandbox over loopback. The child is
killed with SIGKILL either at one of the stages it reports (the books prepared,
the gateway asked, its answer in, its id recorded, the batch submitted) or
after a random delay, wherever it is then: inside an HTTP call, a database
write, an import. Then a new attempt runs to the end, as the next try of an
operator or of the job would. After each run the sandbox and the books are
compared:

- never two batches at the gateway under one idempotency key;
- never none for a batch the books call submitted;
- never a batch at the gateway the books do not hold as submitting or
  submitted (a batch the books lost);
- after the new attempt, exactly one, and the books submitted with its id.

    .venv/bin/python -m benchmarks.submission_crash --runs 200

Exit status 1 if any run broke a rule. The suite runs a short version
(tests/test_submission_crash.py, 20 runs); docs/performance.md records the
counts of a long one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

STAGES = ("start", "prepared", "asked", "answered", "recorded_id", "submitted")
CLIENT_ID, CLIENT_SECRET = "crash-client", "crash-secret"
PAYONEER_ID, PAYONEER_SECRET, PROGRAM = "crash-payoneer", "crash-payoneer-secret", "100000001"
ROOT = Path(__file__).resolve().parent.parent
# A whole submission takes ~0.1-0.3 s here once imported: killing within this after
# "ready" lands anywhere in it, and now and then after it finished.
KILL_WITHIN_SECONDS = 0.4


@dataclass
class Counts:
    runs: int = 0
    killed_at_stage: Counter[str] = field(default_factory=Counter)
    killed_after_delay: int = 0
    finished_before_kill: int = 0
    books_before_resume: Counter[str] = field(default_factory=Counter)  # batch status
    at_gateway_before_resume: Counter[int] = field(default_factory=Counter)
    at_gateway_after_resume: Counter[int] = field(default_factory=Counter)
    read_back_on_resume: int = 0
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "killed_at_stage": dict(sorted(self.killed_at_stage.items())),
            "killed_after_delay": self.killed_after_delay,
            "finished_before_kill": self.finished_before_kill,
            "books_before_resume": dict(sorted(self.books_before_resume.items())),
            "batches_at_gateway_before_resume": dict(sorted(self.at_gateway_before_resume.items())),
            "batches_at_gateway_after_resume": dict(sorted(self.at_gateway_after_resume.items())),
            "read_back_on_resume": self.read_back_on_resume,
            "violations": self.violations,
        }


# --------------------------------------------------------------------------- the child


def _gateway_for(base_url: str) -> Any:
    from finsup_dagster.gateways.http_client import RetryPolicy
    from finsup_dagster.gateways.payoneer import PayoneerPayouts
    from finsup_dagster.gateways.paypal_payouts import PayPalPayouts

    # Each client is made when first asked for, as the job does; the modules load now.
    retry = RetryPolicy(attempts=3, total_seconds=5.0, wait_initial=0.01, wait_max=0.05)

    def gateway_for(method: str) -> Any:
        if method == "paypal":
            return PayPalPayouts(base_url, CLIENT_ID, CLIENT_SECRET, timeout=5.0, retry=retry)
        return PayoneerPayouts(
            base_url, PAYONEER_ID, PAYONEER_SECRET, PROGRAM, timeout=5.0, retry=retry
        )

    return gateway_for


def child(ledger_url: str, base_url: str, batch_id: str, stop_at: str | None) -> None:
    """Submits one batch, killing itself with SIGKILL at ``stop_at`` if given."""

    def checkpoint(stage: str) -> None:
        if stage == stop_at:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint("start")
    from finsup_dagster import submission
    from finsup_dagster.ledger import db

    engine = db.make_engine(ledger_url)
    gateway_for = _gateway_for(base_url)
    print("ready", flush=True)  # everything imported: from here on it is the submission
    submission.submit(engine, gateway_for, batch_id, 1, "crash-child", checkpoint)


# --------------------------------------------------------------------------- the parent


@contextmanager
def _sandbox(folder: Path) -> Iterator[tuple[str, Any]]:
    from finsup_dagster.gateways.sandbox import create_app, serve_in_thread

    app = create_app(
        folder,
        CLIENT_ID,
        CLIENT_SECRET,
        outcome_delay=0.0,
        payoneer_client_id=PAYONEER_ID,
        payoneer_client_secret=PAYONEER_SECRET,
        payoneer_program_id=PROGRAM,
    )
    with serve_in_thread(app) as base_url:
        yield base_url, app.state.sandbox


def _held(state: Any, key: str, method: str) -> int:
    """How many batches the sandbox holds under ``key``."""
    with state.lock:
        if method == "paypal":
            return sum(
                1
                for b in state.paypal_batches.values()
                if b.sender_batch_header.get("sender_batch_id") == key
            )
        refs = [r for r in state.payoneer_payments if r.startswith(f"{key}-")]
        return len(refs)  # one item per batch here: one payment is one batch


@dataclass
class _Approver:
    name: str
    secret: str
    box: Any
    t: float = 1_800_000_000.0  # each approval a fresh time step from here

    def code(self) -> tuple[str, float]:
        import pyotp

        self.t += 30
        return pyotp.TOTP(self.secret).at(self.t), self.t


def _new_batch(engine: Any, n: int, method: str, approver: _Approver) -> str:
    """One approved USD 10.00 batch to ann (PayPal) or ben (Payoneer), funded by its own sale."""
    from finsup_dagster.ledger import approvals, batching, db, earnings, revenue

    ev = revenue.parse_event(
        {
            "source": "paypal",
            "external_id": f"S-{n}",
            "amount": "10.00",
            "currency": "USD",
            "occurred_at": "2026-11-20T10:00:00Z",
            "kind": "sale",
            "status": "confirmed",
        }
    )
    revenue.ingest(engine, [(1, ev)])
    who = "ann" if method == "paypal" else "ben"
    parsed = earnings.parse_earning(
        {
            "external_id": f"E-{n}",
            "beneficiary": who,
            "amount": "10.00",
            "currency": "USD",
            "event_hashes": [ev.event_hash],
        }
    )
    with db.write(engine) as conn:
        earnings.add_earning(conn, parsed, "swarm")
    policy = batching.BatchPolicy(min_item={"*": "1.00"})
    [batch] = batching.build_batches(engine, policy, created_by="maker").batches
    code, now = approver.code()
    approvals.authorised(
        engine,
        approver.name,
        code,
        approver.box,
        approvals.ApprovalPolicy(),
        "batch_approval",
        ("payout_batch", batch["batch_id"]),
        lambda conn, a: approvals.approve(conn, a, batch["batch_id"]),
        now=now,
    )
    return str(batch["batch_id"])


def _books(engine: Any) -> _Approver:
    """Fresh books with the two payees and an approver."""
    from finsup_dagster.ledger import beneficiaries, db, migrate
    from finsup_dagster.ledger.approvals import add_approver
    from finsup_dagster.ledger.secret_box import SecretBox

    migrate.upgrade(engine)
    box = SecretBox("crash-test-secret-key-material-32-chars!")
    with db.write(engine) as conn:
        for who, method, dest in (
            ("ann", "paypal", "ann@example.com"),
            ("ben", "payoneer", "BEN-1"),
        ):
            record = {
                "external_id": who,
                "name": who.title(),
                "payout_method": method,
                "destination": dest,
                "country": "US",
                "kyc_status": "verified",
                "sanctions_status": "clear",
            }
            beneficiaries.upsert(conn, beneficiaries.parse_beneficiary(record), "crash")
        secret = add_approver(conn, "carol", 10**9, "USD", box, "admin")
    return _Approver("carol", secret, box)


def crash_runs(runs: int, folder: Path, seed: int = 7) -> Counts:
    """``runs`` killed submissions and their resumed attempts; the counts and any violation."""
    from finsup_dagster import submission
    from finsup_dagster.ledger import db
    from finsup_dagster.ledger.schema import payout_batches

    rng = random.Random(seed)
    ledger_url = f"sqlite:///{folder / 'ledger.db'}"
    engine = db.make_engine(ledger_url)
    approver = _books(engine)
    counts = Counts()
    stage_runs = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with _sandbox(folder / "sandbox") as (base_url, state):
        gateway_for = _gateway_for(base_url)
        for n in range(runs):
            method = "paypal" if n % 2 == 0 else "payoneer"
            batch_id = _new_batch(engine, n, method, approver)
            key = f"{batch_id}-v1"
            # Half the runs stop at a stage (each in turn), half after a random delay.
            stop_at = None
            if (n // 2) % 2 == 0:
                stop_at = STAGES[stage_runs % len(STAGES)]
                stage_runs += 1
            cmd = [sys.executable, "-m", "benchmarks.submission_crash", "--child", batch_id]
            if stop_at:
                cmd += ["--stop-at", stop_at]
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**env, "CRASH_LEDGER_URL": ledger_url, "CRASH_BASE_URL": base_url},
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            if stop_at is None:
                assert proc.stdout is not None
                proc.stdout.readline()  # "ready": imports done, the submission starts now
                time.sleep(rng.uniform(0.0, KILL_WITHIN_SECONDS))
                proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=60)
            counts.runs += 1
            if code == 0:
                counts.finished_before_kill += 1
            elif stop_at:
                counts.killed_at_stage[stop_at] += 1
            else:
                counts.killed_after_delay += 1

            with db.read(engine) as conn:
                status: str = conn.execute(
                    sa.select(payout_batches.c.status).where(payout_batches.c.id == batch_id)
                ).scalar_one()
            held = _held(state, key, method)
            counts.books_before_resume[status] += 1
            counts.at_gateway_before_resume[held] += 1
            if held > 1:
                counts.violations.append(f"run {n}: {held} batches at the gateway for {key}")
            if status == "submitted" and held == 0:
                counts.violations.append(
                    f"run {n}: the books call {key} submitted, the gateway holds none"
                )
            if held and status not in ("submitting", "submitted"):
                counts.violations.append(
                    f"run {n}: the gateway holds {key}, the books say {status}"
                )

            result = submission.submit(engine, gateway_for, batch_id, 1, "crash-resume")
            held = _held(state, key, method)
            counts.at_gateway_after_resume[held] += 1
            counts.read_back_on_resume += int(result.read_back)
            with db.read(engine) as conn:
                row = conn.execute(
                    sa.select(payout_batches.c.status, payout_batches.c.gateway_batch_id).where(
                        payout_batches.c.id == batch_id
                    )
                ).one()
            if held != 1 or row.status != "submitted" or row.gateway_batch_id is None:
                counts.violations.append(
                    f"run {n}: after the new attempt {held} at the gateway, books {row.status}"
                )
    engine.dispose()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", metavar="BATCH_ID")
    parser.add_argument("--stop-at", choices=STAGES)
    args = parser.parse_args()
    if args.child:
        child(
            os.environ["CRASH_LEDGER_URL"], os.environ["CRASH_BASE_URL"], args.child, args.stop_at
        )
        return 0
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        counts = crash_runs(args.runs, Path(folder), args.seed)
        elapsed = time.perf_counter() - start
    print(json.dumps(counts.as_dict(), indent=2))
    print(f"{counts.runs} runs in {elapsed:.0f} s; violations: {len(counts.violations)}")
    return 1 if counts.violations else 0


if __name__ == "__main__":
    sys.exit(main())

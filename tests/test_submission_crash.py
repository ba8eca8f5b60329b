"""A submission killed with SIGKILL anywhere never pays twice and never loses a batch.

The short version of benchmarks/submission_crash.py (200 runs there): 20 child
processes submitting a fresh batch each, against the gateway sandbox over
loopback, killed at each stage in turn or after a random delay; after each, a
new attempt. SQLite only: the property is the submission's order of steps,
which is the same code on PostgreSQL (tests/test_submission.py runs both).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.submission_crash import STAGES, crash_runs


def test_twenty_killed_submissions_each_end_in_exactly_one_batch_at_the_gateway(
    tmp_path: Path,
) -> None:
    counts = crash_runs(20, tmp_path, seed=11)
    assert counts.violations == []
    assert counts.runs == 20
    assert set(counts.killed_at_stage) == set(STAGES), "every stage was killed at"
    assert counts.at_gateway_after_resume == {1: 20}
    # Some kills came after the gateway had the batch: those were read back, not resent.
    assert counts.at_gateway_before_resume[1] >= 1 and counts.read_back_on_resume >= 1

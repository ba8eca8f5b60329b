"""Gateway credentials from a secrets file named by FINSUP_SECRETS_FILE, never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.settings import load_secrets_file
from tests.helpers.cli import assert_one_line_error, run

SECRET = "s3cr3t-from-the-file-0xF11E"


def secrets_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "finsup.secrets"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_unset_variables_come_from_the_file_and_a_set_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = secrets_file(
        tmp_path,
        f'# gateway credentials\n\nFINSUP_PAYPAL_CLIENT_SECRET = {SECRET}\nFINSUP_PAYONEER_CLIENT_ID=from-file\nFINSUP_QUOTED="a b"\n',
    )
    monkeypatch.setenv("FINSUP_SECRETS_FILE", str(path))
    monkeypatch.delenv("FINSUP_PAYPAL_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("FINSUP_PAYONEER_CLIENT_ID", "from-env")
    monkeypatch.delenv("FINSUP_QUOTED", raising=False)
    assert load_secrets_file() == ["FINSUP_PAYPAL_CLIENT_SECRET", "FINSUP_QUOTED"]
    assert os.environ.pop("FINSUP_QUOTED") == "a b"  # quotes as env files write them
    assert os.environ["FINSUP_PAYPAL_CLIENT_SECRET"] == SECRET
    assert os.environ["FINSUP_PAYONEER_CLIENT_ID"] == "from-env"


def test_a_file_others_can_read_or_a_bad_line_is_refused_without_showing_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSUP_SECRETS_FILE", str(secrets_file(tmp_path, f"A={SECRET}\n", 0o644)))
    with pytest.raises(LedgerError, match="readable by others; chmod 600 it"):
        load_secrets_file()
    monkeypatch.setenv("FINSUP_SECRETS_FILE", str(secrets_file(tmp_path, f"ok=1\n{SECRET}\n")))
    with pytest.raises(LedgerError, match="line 2 is not NAME=value") as exc:
        load_secrets_file()
    assert SECRET not in str(exc.value)
    monkeypatch.setenv("FINSUP_SECRETS_FILE", str(tmp_path / "missing"))
    with pytest.raises(LedgerError, match="cannot read"):
        load_secrets_file()


def test_the_cli_refuses_a_bad_secrets_file_in_one_line(finsup_env: Path, tmp_path: Path) -> None:
    path = secrets_file(tmp_path, f"{SECRET}\n")
    proc = run("available-balance", env={**os.environ, "FINSUP_SECRETS_FILE": str(path)})
    assert_one_line_error(proc, "is not NAME=value")
    assert SECRET not in proc.stdout + proc.stderr


def test_the_jobs_executor_and_broker_come_from_the_file_too(tmp_path: Path) -> None:
    """The jobs are built when their modules are imported, before definitions.py reads
    the file: a deployment that keeps the executor choice and the broker URL (with its
    password) in the file must still get them, in a fresh process as a worker would."""
    path = secrets_file(
        tmp_path,
        "FINSUP_EXECUTOR=celery\nFINSUP_CELERY_BROKER_URL=pyamqp://finsup:"
        f"{SECRET}@broker.internal:5672/finsup\n",
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FINSUP_EXECUTOR", "FINSUP_CELERY"))
    }
    env.update(FINSUP_SECRETS_FILE=str(path), DAGSTER_HOME=str(tmp_path))
    probe = (
        "import json\n"
        "from finsup_dagster.definitions import defs\n"
        "job = defs.resolve_job_def('nightly_reconciliation')\n"
        "print(json.dumps(job.executor_def.config_schema.default_value))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    default = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(default) == ["celery"]
    # Named by its variable, so the password is never copied into a run's stored config.
    assert default["celery"]["broker"] == {"env": "FINSUP_CELERY_BROKER_URL"}
    assert SECRET not in done.stdout + done.stderr

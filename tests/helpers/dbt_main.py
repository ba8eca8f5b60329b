"""dbt's own command line, on a manifest parsed once (tests/helpers/dbt_runner.py).

Run as a script (the executable ``dbt_runner.fast_dbt()`` writes), never imported by the
tests: its arguments are a dbt command line, run by ``dbtRunner`` on a manifest parsed
before. dbt takes a pre-parsed manifest through its programmatic API; everything after
the parse (compile, run, tests, artifacts, the log lines on stdout that dagster-dbt reads)
is dbt's own code. A process per command, as the real CLI: dbt keeps global state (flags,
adapters) that a second command in one process would share.

A parse depends on the warehouse's catalog name (dbt-duckdb names it after the file, and
every relation in the manifest carries it), not on the other vars, which are read when a
node is compiled. So there is one parse per catalog name, made by the first command that
needs it (under a file lock: xdist workers share it) in a process of its own.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.credentials import DuckDBCredentials
from dbt.cli.main import dbtRunner
from dbt.config.utils import parse_cli_vars
from dbt.contracts.graph.manifest import Manifest


def exit_code(success: bool, exception: BaseException | None) -> int:
    """The codes the dbt CLI exits with: 0 success, 1 a failed node, 2 an error."""
    if success:
        return 0
    return 2 if exception is not None else 1


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def catalog(argv: list[str]) -> str:
    """The warehouse's catalog name, found as dbt_project/profiles.yml finds the path."""
    variables: dict[str, Any] = parse_cli_vars(option(argv, "--vars") or "{}")
    path = variables.get("warehouse_path", os.environ.get("FINSUP_WAREHOUSE_PATH", ""))
    return str(DuckDBCredentials.path_derived_database_name(path))


def parse(home: Path, name: str, project_dir: str, profiles_dir: str) -> Path:
    """The pickled manifest of the project on a warehouse named ``name``, parsed once."""
    manifest = home / f"{name}.pickle"
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if manifest.exists():
            return manifest
        work = home / name
        command = [
            *("parse", "--quiet", "--no-partial-parse"),
            *("--project-dir", project_dir, "--profiles-dir", profiles_dir),
            *("--target-path", str(work / "target"), "--log-path", str(work / "logs")),
        ]
        env = {**os.environ, "FINSUP_WAREHOUSE_PATH": str(work / f"{name}.duckdb")}
        done = subprocess.run(
            [sys.executable, "-P", __file__, "parse-to", str(manifest), *command],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            raise SystemExit(done.returncode)
    return manifest


def main(argv: list[str]) -> int:
    if argv[:1] == ["parse-to"]:
        parsed = dbtRunner().invoke(argv[2:])
        if not parsed.success:
            return exit_code(parsed.success, parsed.exception)
        assert isinstance(parsed.result, Manifest), parsed.result  # what ``parse`` returns
        tmp = f"{argv[1]}.{os.getpid()}"
        # The manifest's public fields only: its own pickling (``__reduce_ex__``) passes
        # its fields by position and misses one in dbt 1.11; the lookups it caches are
        # built again when first used.
        fields = {
            f.name: getattr(parsed.result, f.name)
            for f in dataclasses.fields(parsed.result)
            if not f.name.startswith("_")
        }
        with open(tmp, "wb") as out:
            pickle.dump(fields, out)
        os.replace(tmp, argv[1])  # atomic: a reader never sees half a file
        return 0
    home = Path(os.environ["FINSUP_TEST_DBT_HOME"])
    project_dir = option(argv, "--project-dir") or os.environ.get("DBT_PROJECT_DIR") or "."
    profiles_dir = option(argv, "--profiles-dir") or os.environ.get("DBT_PROFILES_DIR") or "."
    manifest_file = parse(home, catalog(argv), project_dir, profiles_dir)
    with open(manifest_file, "rb") as src:
        manifest = Manifest(**pickle.load(src))  # written by parse-to above
    done = dbtRunner(manifest=manifest).invoke(argv)
    return exit_code(done.success, done.exception)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

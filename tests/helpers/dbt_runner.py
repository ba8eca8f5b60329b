"""dbt for the tests, without parsing the project again for every command.

Every ``dbt build`` parses the project first: seconds each, and the tests run dbt many
times on fresh target folders (where partial parsing has nothing to start from) with
``--vars`` that change every time (which makes dbt throw any partial parse away). The
project's structure does not depend on those vars (they are read when a node is
compiled), so a parse is made once and every command runs dbt's own CLI code on it, in a
process of its own (``tests/helpers/dbt_main.py``). ``tests/test_dbt_runner.py`` checks
that this builds the same warehouse as the real ``dbt``; ``tests/test_reconcile_cli.py``
keeps the product's own dbt path (the ``finsup`` CLI, parsing included) under test.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import dbt.version
from dagster_dbt import DbtCliResource

from finsup_dagster.resources import dbt as product_dbt
from finsup_dagster.resources.dbt import DBT_PROJECT_DIR, dbt_project

DBT_MAIN = Path(__file__).with_name("dbt_main.py")
SKIPPED_DIRS = {"target", "logs", "dbt_packages"}


def project_digest() -> str:
    """What a parse depends on: the project's files, where it is, which dbt parses it."""
    digest = hashlib.sha256()
    for part in (str(DBT_PROJECT_DIR), dbt.version.__version__, sys.executable):
        digest.update(part.encode() + b"\0")
    digest.update(DBT_MAIN.read_bytes())
    for path in sorted(DBT_PROJECT_DIR.rglob("*")):
        relative = path.relative_to(DBT_PROJECT_DIR)
        if path.is_file() and relative.parts[0] not in SKIPPED_DIRS:
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@cache
def fast_dbt() -> Path:
    """An executable that takes any dbt command line and runs it on a prepared parse;
    its folder is named after the project's state, so an edited model is parsed again."""
    home = Path(tempfile.gettempdir()) / f"finsup-test-dbt-{project_digest()}"
    home.mkdir(exist_ok=True)
    executable = home / "dbt"
    if not executable.exists():
        script = (
            "#!/bin/sh\n"
            f"export FINSUP_TEST_DBT_HOME='{home}'\n"
            # -P: the script's folder stays off sys.path, or dbt's plugin search would
            # import every ``dbt_*`` module beside it (this one, and dagster with it).
            f"exec '{sys.executable}' -P '{DBT_MAIN}' \"$@\"\n"
        )
        tmp = home / f"dbt.{os.getpid()}"
        tmp.write_text(script, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, executable)  # atomic: xdist workers may write it at once
    return executable


def dbt_command(*args: str, target: Path, variables: Mapping[str, object]) -> list[str]:
    """The product's dbt command line (``finsup_dagster.resources.dbt.dbt_command``) with
    the prepared parse's executable in place of ``dbt``."""
    command = product_dbt.dbt_command(*args, target=target, variables=variables)
    return [str(fast_dbt()), *command[1:]]


def dbt_resource() -> DbtCliResource:
    """The product's dbt resource (``resources_from_env()["dbt"]``) on the prepared parse."""
    return DbtCliResource(project_dir=dbt_project, dbt_executable=str(fast_dbt()))

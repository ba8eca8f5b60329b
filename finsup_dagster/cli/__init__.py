"""The ``finsup`` command: the books from a terminal.

Every report takes ``--json``. Bad input prints one line, ``error: …``, and
exits non-zero; nothing here ever shows a traceback to the user.
"""

from __future__ import annotations

import sys

import typer
from sqlalchemy.exc import DBAPIError

from finsup_dagster import logs, settings
from finsup_dagster.cli import (  # noqa: F401 - registers the commands
    alerts,
    audit,
    books,
    payouts,
    reconcile,
    sandbox,
    secret_key,
    serve,
    statuses,
)
from finsup_dagster.cli.common import app
from finsup_dagster.ledger import db
from finsup_dagster.ledger.errors import LedgerError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns every expected failure into one line on stderr."""
    try:
        settings.load_secrets_file()
        settings.apply_local_defaults()
        logs.configure_from_env()
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = _one_line("aborted", 130)
    except typer.TyperException as exc:  # usage errors, bad parameters
        fmt = getattr(exc, "format_message", None)
        code = _one_line(fmt() if callable(fmt) else str(exc), 2)
    except LedgerError as exc:
        code = _one_line(str(exc), 2)
    except DBAPIError as exc:
        if db.is_missing_table(exc):
            code = _one_line("the books are not initialised: run `finsup init`", 3)
        else:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            code = _one_line(f"database error: {first}", 3)
    except OSError as exc:
        code = _one_line(str(exc), 2)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line(message: str, code: int) -> int:
    typer.echo(f"error: {message}", err=True)
    return code

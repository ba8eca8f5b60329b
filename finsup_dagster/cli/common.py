"""What every `finsup` command shares: the app, output, the actor, the engine."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db

app = typer.Typer(
    name="finsup",
    help="finsup: the books, payouts and audit trail of an autonomous agent business.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def check_files(paths: list[Path]) -> None:
    """Refuses before anything is read when a path is missing, a folder or not a file."""
    from finsup_dagster.ledger.errors import InvalidInput
    from finsup_dagster.ledger.files import check_input

    for path in paths:
        try:
            check_input(path)
        except InvalidInput as exc:
            fail(str(exc))


def each_file(
    paths: list[Path], ingest: Callable[[Path], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Ingests every file, even after one is refused: (each file's outcome, the refusals).

    A refused file (unreadable, missing columns) changes nothing; the others
    still go in, and the summary says which did.
    """
    from finsup_dagster.ledger.errors import LedgerError

    results: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in paths:
        try:
            results.append({"file": str(path), **ingest(path), "error": None})
        except (LedgerError, OSError) as exc:  # a file unreadable for its permissions, too
            errors.append(str(exc))
            results.append({"file": str(path), "error": str(exc)})
    return results, errors


def files_table(*columns: str) -> Any:
    """A per-file outcome table whose paths wrap instead of being cut to ``/tmp/…``."""
    from rich.table import Table

    table = Table()
    table.add_column("file", overflow="fold")
    for name in columns:
        table.add_column(name)
    return table


def report_files(
    results: list[dict[str, Any]], errors: list[str], counts: tuple[str, ...], as_json: bool
) -> None:
    """Each file's outcome (``counts`` are its summary's keys), then the refused files;
    exits 1 if any row was rejected, 2 if a file was refused whole."""
    if as_json:
        emit_json(results)
    else:
        table = files_table(*(c.replace("_", " ") for c in counts), "rejects file")
        for r in results:
            if r["error"]:
                table.add_row(r["file"], "refused (see the error below)", *[""] * len(counts))
                continue
            table.add_row(r["file"], *(str(r[c]) for c in counts), r["rejects_file"] or "")
        out.print(table)
    report_refusals(errors)
    if any(r.get("rejected") for r in results):
        raise typer.Exit(1)


def report_refusals(errors: list[str]) -> None:
    """After the summary: one ``error:`` line per refused file, and exit 2."""
    for message in errors:
        typer.echo(f"error: {message}", err=True)
    if errors:
        raise typer.Exit(2)


def actor() -> str:
    """Who the transaction log records: FINSUP_ACTOR, else the OS user."""
    return os.environ.get("FINSUP_ACTOR") or getpass.getuser()


def engine() -> Engine:
    return db.make_engine()


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))

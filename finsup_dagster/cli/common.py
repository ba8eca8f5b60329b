"""What every `finsup` command shares: the app, output, the actor, the engine."""

from __future__ import annotations

import getpass
import json
import os
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


def actor() -> str:
    """Who the transaction log records: FINSUP_ACTOR, else the OS user."""
    return os.environ.get("FINSUP_ACTOR") or getpass.getuser()


def engine() -> Engine:
    return db.make_engine()


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))

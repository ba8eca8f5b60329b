"""Parsers for landed settlement and revenue files, and writers for sample and test files.

Pure Python (no Dagster, no pandas): each parser takes a path and returns a
``Parsed`` with every row of the file and notes on rows worth a look (a repeated
transaction id or reference, charges shared over a batch, records skipped), or
raises ``MalformedFile`` (its subclass ``FooterMismatch`` when footers or
summaries disagree with the body) so the caller can quarantine the file. Only
what makes the file itself untrustworthy refuses it; docs/reconciliation.md
lists, per format, what refuses a file and what becomes an exception. Formats:

- ``paypal-stl``: PayPal Settlement Report CSV (``paypal_stl``).
- ``camt053``: ISO 20022 camt.053 bank statement XML (``camt053``).
- ``settlement-csv``: finsup's own settlement CSV (``settlement_csv``).
- ``paypal-transactions``: a saved PayPal Transaction Search page (``paypal_transactions``).

The first three give ``SETTLEMENT_COLUMNS`` rows, the last ``REVENUE_COLUMNS`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from finsup_dagster.formats.camt053 import parse_camt053, write_camt053
from finsup_dagster.formats.common import (
    REVENUE_COLUMNS,
    SETTLEMENT_COLUMNS,
    Parsed,
    malformed,
)
from finsup_dagster.formats.paypal_stl import parse_stl, write_stl
from finsup_dagster.formats.paypal_transactions import (
    parse_page,
    parse_transactions_file,
    write_transactions_page,
)
from finsup_dagster.formats.settlement_csv import parse_settlement_csv, write_settlement_csv
from finsup_dagster.ledger.errors import InvalidInput, MalformedFile
from finsup_dagster.text import one_line

PARSERS: dict[str, Callable[[Path], Parsed]] = {
    "paypal-stl": parse_stl,
    "camt053": parse_camt053,
    "settlement-csv": parse_settlement_csv,
    "paypal-transactions": parse_transactions_file,
}
SETTLEMENT_FORMATS = ("paypal-stl", "camt053", "settlement-csv")
REVENUE_FORMATS = ("paypal-transactions",)


def parse_file(fmt: str, path: Path) -> Parsed:
    """Parses ``path`` as ``fmt``; anything that stops a whole file being read is ``MalformedFile``."""
    parser = PARSERS.get(fmt)
    if parser is None:
        raise malformed(path.name, None, f"unknown format {fmt!r}; expected {', '.join(PARSERS)}")
    try:
        return parser(path)
    except MalformedFile:
        raise
    except InvalidInput as exc:  # a check a parser did not wrap: still this file's fault
        raise malformed(path.name, None, exc) from None
    except (UnicodeError, RecursionError, MemoryError) as exc:
        raise malformed(path.name, None, f"cannot be read as {fmt} ({one_line(exc)})") from None


__all__ = [
    "PARSERS",
    "REVENUE_COLUMNS",
    "REVENUE_FORMATS",
    "SETTLEMENT_COLUMNS",
    "SETTLEMENT_FORMATS",
    "Parsed",
    "parse_camt053",
    "parse_file",
    "parse_page",
    "parse_settlement_csv",
    "parse_stl",
    "parse_transactions_file",
    "write_camt053",
    "write_settlement_csv",
    "write_stl",
    "write_transactions_page",
]

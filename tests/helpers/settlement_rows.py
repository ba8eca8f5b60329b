"""Settlement rows as the format writers take them (``finsup_dagster.formats.write_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finsup_dagster.formats import write_camt053


def sale_line(txn: str, gross: int, currency: str, fee: int, **overrides: Any) -> dict[str, Any]:
    """A settled sale of ``gross`` minor units, ``fee`` deducted in the same currency, that
    names its transaction ``txn`` (as line id and as the gateway's id), settled on
    2026-11-21; ``overrides`` replace any column."""
    row: dict[str, Any] = {
        "row_number": 0,
        "record_ref": txn,
        "gateway_txn_id": txn,
        "batch_ref": None,
        "batch_net_minor": None,
        "event_code": None,
        "kind": "sale",
        "direction": "credit",
        "gross_minor": gross,
        "currency": currency,
        "fee_minor": fee,
        "fee_currency": currency,
        "settled_on": "2026-11-21",
        "occurred_at": "2026-11-21T09:00:00Z",
        "description": None,
        "raw": "",
    }
    return row | overrides


CAMT053_VERSIONS = ("001.02", "001.08")


def camt053_in_each_version(folder: Path, rows: list[dict[str, Any]], **options: Any) -> list[Path]:
    """The rows written as one bank statement in each camt.053 version finsup reads."""
    return [
        write_camt053(
            folder / f"{version}.xml",
            rows,
            statement_id="S-1",
            account_iban="DE89370400440532013000",
            version=version,
            **options,
        )
        for version in CAMT053_VERSIONS
    ]

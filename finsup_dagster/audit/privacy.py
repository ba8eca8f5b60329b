"""What a snapshot never holds in full: payment destinations and tax ids.

Destinations (emails, payee ids, IBANs) are masked as payout items already
show them; the transaction log never holds them (it records "(changed)"), so
nothing else in the file gives them away. Tax ids are stored masked by the
ledger; one that somehow is not is masked again rather than copied.
"""

from __future__ import annotations

from typing import Any

from finsup_dagster.ledger.masking import mask_destination, mask_tax_id


def safe_tax_id(value: str | None) -> str | None:
    if value is None or value.startswith("****"):
        return value
    return mask_tax_id(value)


def mask_columns(table: str, names: list[str], columns: list[list[Any]]) -> None:
    """Masks a chunk of ``table``'s columns in place (only beneficiaries has any)."""
    if table != "beneficiaries":
        return
    at = {n: i for i, n in enumerate(names)}
    dest, method = columns[at["destination"]], columns[at["payout_method"]]
    columns[at["destination"]] = [
        None if d is None else mask_destination(str(m), str(d))
        for m, d in zip(method, dest, strict=True)
    ]
    columns[at["tax_id_masked"]] = [safe_tax_id(v) for v in columns[at["tax_id_masked"]]]

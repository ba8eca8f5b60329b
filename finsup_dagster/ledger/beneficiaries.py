"""Beneficiaries: who the agents earn for, and whether they may be paid.

Import files (CSV/JSONL) have the columns ``external_id, name, payout_method,
destination, country`` and optionally ``email, kyc_status, sanctions_status,
screened_at, blocked, tax_id, tax_form_status``. Re-importing updates the row
in place and logs each changed field (tax ids only ever masked).

Destinations by method: ``paypal`` an email address; ``payoneer`` a payee id;
``bank`` ``IBAN/BIC``, checked by schwifty: the IBAN's length and BBAN format
for its country, its check digits and, where schwifty knows the algorithm, the
national check digits inside the BBAN; the BIC's structure and country code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pycountry
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import audit_log, clock
from finsup_dagster.ledger.errors import IneligiblePayee, InvalidInput
from finsup_dagster.ledger.files import MISALIGNED, RowsResult, apply_rows
from finsup_dagster.ledger.masking import mask_tax_id
from finsup_dagster.ledger.schema import beneficiaries, payout_items
from finsup_dagster.ledger.text import clean_text, optional_text

COLUMNS = (
    "external_id",
    "name",
    "email",
    "payout_method",
    "destination",
    "country",
    "kyc_status",
    "sanctions_status",
    "screened_at",
    "blocked",
    "tax_id",
    "tax_form_status",
)
REQUIRED = ("external_id", "name", "payout_method", "destination", "country")
KYC = ("unverified", "pending", "verified", "rejected")
SANCTIONS = ("not_screened", "clear", "potential_match", "sanctioned")
TAX_FORMS = ("missing", "requested", "received", "verified", "expired")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PAYEE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


def bank_account(destination: str) -> tuple[str, str]:
    """``"IBAN/BIC"`` (spaces and case as people write them) to the compact (IBAN, BIC).

    The one check of a bank destination, shared by the import and the bank
    file gateway. Messages never repeat the IBAN: it is a payment detail.
    """
    # Imported here: schwifty loads its country and bank tables, and most
    # callers of this module never see a bank destination.
    from schwifty import BIC, IBAN
    from schwifty.exceptions import SchwiftyException

    raw_iban, _, raw_bic = destination.replace(" ", "").upper().partition("/")
    try:
        iban = IBAN(raw_iban, validate_bban=True)
    except (SchwiftyException, ValueError):
        raise InvalidInput("bank destination has an invalid IBAN (write IBAN/BIC)") from None
    try:
        bic = BIC(raw_bic)
    except (SchwiftyException, ValueError):
        raise InvalidInput("bank destination has an invalid BIC (write IBAN/BIC)") from None
    return iban.compact, bic.compact


def check_destination(method: str, destination: str) -> str:
    dest = destination.strip()
    if method == "paypal":
        if not _EMAIL.match(dest):
            raise InvalidInput(f"paypal destination {dest!r} is not an email address")
        return dest.lower()
    if method == "payoneer":
        if not _PAYEE.match(dest):
            raise InvalidInput(f"payoneer destination {dest!r} is not a payee id")
        return dest
    if method == "bank":
        iban, bic = bank_account(dest)
        return f"{iban}/{bic}"
    raise InvalidInput(f"payout_method {method!r} is not one of paypal, payoneer, bank")


def _choice(raw: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = str(raw.get(name) or default).strip().lower()
    if value not in allowed:
        raise InvalidInput(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return value


def _flag(raw: Mapping[str, Any], name: str) -> bool:
    value = raw.get(name)
    if isinstance(value, bool):
        return value
    text = str(value or "false").strip().lower()
    if text not in ("true", "false", "yes", "no", "1", "0"):
        raise InvalidInput(f"{name} {value!r} is not true or false")
    return text in ("true", "yes", "1")


def parse_beneficiary(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validates one record into the columns stored (tax id masked here, before anything else)."""

    def text(name: str, max_len: int = 128) -> str:
        return clean_text(raw.get(name), name, max_len=max_len)

    method = text("payout_method").lower()
    country = text("country").upper()
    if not re.fullmatch(r"[A-Z]{2}", country) or pycountry.countries.get(alpha_2=country) is None:
        raise InvalidInput(f"country {country!r} is not an ISO 3166-1 two-letter country code")
    tax_id = optional_text(raw.get("tax_id"), "tax_id", max_len=64, secret=True)
    email = optional_text(raw.get("email"), "email", max_len=254)
    if email and not _EMAIL.match(email):
        raise InvalidInput(f"email {email!r} is not an email address")
    screened = raw.get("screened_at")
    return {
        "external_id": text("external_id"),
        "name": text("name", max_len=200),
        "email": email,
        "payout_method": method,
        "destination": check_destination(method, text("destination", max_len=254)),
        "country": country,
        "kyc_status": _choice(raw, "kyc_status", KYC, "unverified"),
        "sanctions_status": _choice(raw, "sanctions_status", SANCTIONS, "not_screened"),
        "screened_at": clock.parse_instant(screened, "screened_at") if screened else None,
        "blocked": _flag(raw, "blocked"),
        "tax_id_masked": mask_tax_id(tax_id) if tax_id else None,
        "tax_form_status": _choice(raw, "tax_form_status", TAX_FORMS, "missing"),
    }


def upsert(conn: Connection, record: dict[str, Any], actor: str) -> str:
    """Creates or updates one beneficiary; returns created, updated or unchanged."""
    t = beneficiaries.c
    current = (
        conn.execute(sa.select(beneficiaries).where(t.external_id == record["external_id"]))
        .mappings()
        .first()
    )
    now = clock.now()
    if current is None:
        conn.execute(sa.insert(beneficiaries).values(**record, created_at=now, updated_at=now))
        audit_log.log(
            conn,
            "beneficiary_created",
            "beneficiary",
            record["external_id"],
            actor=actor,
            detail={k: v for k, v in record.items() if k != "destination"},
        )
        return "created"
    changes = {k: v for k, v in record.items() if current[k] != v}
    if not changes:
        return "unchanged"
    conn.execute(
        sa.update(beneficiaries).where(t.id == current["id"]).values(**changes, updated_at=now)
    )
    audit_log.log(
        conn,
        "beneficiary_updated",
        "beneficiary",
        record["external_id"],
        actor=actor,
        detail={
            "changed": {
                k: {"from": _shown(k, current[k]), "to": _shown(k, v)} for k, v in changes.items()
            }
        },
    )
    return "updated"


def _shown(column: str, value: Any) -> Any:
    # Destinations are payment details: the log says that one changed, not to what.
    return "(changed)" if column == "destination" else value


def import_file(engine: Engine, path: Path, actor: str = "system") -> RowsResult:
    return apply_rows(
        engine,
        path,
        REQUIRED,
        COLUMNS,
        ("created", "updated", "unchanged"),
        lambda conn, raw: upsert(conn, parse_beneficiary(raw), actor),
        scrub=_without_tax_id,
    )


def _without_tax_id(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Rejects files are kept around: they hold the tax id masked, never in full."""
    out = dict(raw)
    if "raw" in out or out.get(MISALIGNED):
        # A line that could not be read as columns (not JSON, a key twice, more cells
        # than the header) may hold the tax id anywhere: only its id is kept. The
        # input file itself is never changed, so nothing is lost.
        return {
            "external_id": out.get("external_id") if out.get(MISALIGNED) else None,
            "raw": "(withheld: it may hold a tax id; see this row of the input file)",
        }
    value = out.get("tax_id")
    if value is not None and str(value).strip():  # a JSON number is a tax id too
        out["tax_id"] = mask_tax_id(str(value))
    return out


def ineligibility(row: Mapping[Any, Any]) -> str | None:
    """Why a beneficiary may not be paid now, or None."""
    if row["blocked"]:
        return "blocked"
    if row["sanctions_status"] != "clear":
        return f"sanctions screening {row['sanctions_status']}"
    if row["kyc_status"] != "verified":
        return f"KYC {row['kyc_status']}"
    return None


def ineligible_in_batch(conn: Connection, batch_id: str) -> list[tuple[str, str]]:
    """(beneficiary, reason) for every payee of a batch who may not be paid now.

    Screening can change after a batch is built: approval and submission ask again.
    """
    rows = (
        conn.execute(
            sa.select(beneficiaries)
            .join(payout_items, payout_items.c.beneficiary_id == beneficiaries.c.id)
            .where(payout_items.c.batch_id == batch_id)
            .order_by(beneficiaries.c.external_id)
        )
        .mappings()
        .all()
    )
    return [(r["external_id"], why) for r in rows if (why := ineligibility(r))]


def ensure_batch_payable(conn: Connection, batch_id: str) -> None:
    bad = ineligible_in_batch(conn, batch_id)
    if bad:
        who, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise IneligiblePayee(
            f"batch {batch_id} pays {who}, who may not be paid now: {why}{more}; cancel the batch"
        )

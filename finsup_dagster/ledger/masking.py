"""Masking what identifies a person: only enough is kept, or shown, to recognise it."""

from __future__ import annotations

# At least this many letters or digits of a tax id stay hidden, whatever its length.
TAX_ID_HIDDEN_AT_LEAST = 5


def mask_tax_id(raw: str) -> str:
    """Keeps at most the last four letters or digits, and never more than all but five.

    A nine-digit SSN or EIN keeps its last four; a four-character id keeps
    nothing (its "last four" would be all of it). The rest is never stored.
    """
    chars = [c for c in raw if c.isalnum()]
    shown = max(0, min(4, len(chars) - TAX_ID_HIDDEN_AT_LEAST))
    return "****" + "".join(chars[len(chars) - shown :])


def mask_destination(method: str, destination: str) -> str:
    if method == "paypal" and "@" in destination:
        user, _, domain = destination.partition("@")
        return f"{user[:1]}***@{domain}"
    if method == "bank":
        iban = destination.split("/")[0].replace(" ", "")
        return f"{iban[:4]} **** {iban[-4:]}"
    return "****" + destination[-4:]

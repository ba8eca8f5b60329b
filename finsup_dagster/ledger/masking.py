"""Masking what identifies a person: only enough is kept, or shown, to recognise it."""

from __future__ import annotations


def mask_tax_id(raw: str) -> str:
    """Keeps the last four letters or digits; the rest is never stored."""
    chars = [c for c in raw if c.isalnum()]
    if len(chars) < 4:
        return "****"
    return "****" + "".join(chars[-4:])


def mask_destination(method: str, destination: str) -> str:
    if method == "paypal" and "@" in destination:
        user, _, domain = destination.partition("@")
        return f"{user[:1]}***@{domain}"
    if method == "bank":
        iban = destination.split("/")[0].replace(" ", "")
        return f"{iban[:4]} **** {iban[-4:]}"
    return "****" + destination[-4:]

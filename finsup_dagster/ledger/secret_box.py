"""Encrypting TOTP secrets at rest (Fernet: AES-128-CBC with HMAC-SHA256).

The key comes from ``FINSUP_SECRET_KEY``: either a Fernet key (as printed by
``finsup generate-secret-key``) or any passphrase of 32 characters or more,
stretched with HKDF-SHA256. Losing the key means re-enrolling every approver;
changing it is ``finsup rotate-secret-key`` (key_rotation.py).
"""

from __future__ import annotations

import base64
import binascii

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from finsup_dagster.ledger.errors import LedgerError

MIN_PASSPHRASE = 32


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _fernet_key(material: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(material.encode())
        if len(raw) == 32:
            return material.encode()
    except (binascii.Error, ValueError):
        pass
    if len(material) < MIN_PASSPHRASE:
        raise LedgerError(
            f"FINSUP_SECRET_KEY is too short: use `finsup generate-secret-key` or {MIN_PASSPHRASE}+ characters"
        )
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"finsup-totp-secrets"
    ).derive(material.encode())
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    def __init__(self, key_material: str) -> None:
        self._fernet = Fernet(_fernet_key(key_material))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise LedgerError(
                "cannot decrypt an approver's TOTP secret: is FINSUP_SECRET_KEY the one used to enrol?"
            ) from None

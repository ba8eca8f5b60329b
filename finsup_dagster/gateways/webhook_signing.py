"""The sandbox's webhook signature: HMAC-SHA256 over ``timestamp + "." + raw body``.

Why the timestamp is inside the MAC: a captured event re-sent later carries
its old timestamp (changing it breaks the signature), so the receiver can
refuse anything older than its window as a replay. Both providers' sandbox
webhooks use it; production PayPal uses PayPal's own verification instead
(``webhooks_paypal.PayPalApiVerifier``). docs/webhooks.md documents it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

TIMESTAMP_HEADER = "X-Finsup-Timestamp"
SIGNATURE_HEADER = "X-Finsup-Signature"
SCHEME = "v1"  # the signature header reads "v1=<hex>": a later scheme can sit beside it


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The two headers a sender adds to ``body`` sent at unix time ``timestamp``."""
    stamp = str(int(timestamp))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(secret, stamp, body)}


@dataclass(frozen=True)
class Verdict:
    """Whether a webhook may be applied; ``reason`` names a refusal (None when accepted)."""

    ok: bool
    reason: str | None = None  # missing_signature | bad_signature | replay | verify_unavailable
    status: int = 200  # the HTTP answer a refusal gets

    @staticmethod
    def refuse(reason: str, status: int = 401) -> Verdict:
        return Verdict(False, reason, status)


ACCEPTED = Verdict(True)


def verify_hmac(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, max_age: float
) -> Verdict:
    """Checks the signature first, then the age: a forged old event is a bad signature."""
    # Starlette's headers are case-insensitive; a plain dict from a test may not be.
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "").strip()
    given = lowered.get(SIGNATURE_HEADER.lower(), "").strip()
    if not stamp or not given:
        return Verdict.refuse("missing_signature")
    if not secret:
        # No secret configured: nothing can be verified, so nothing is accepted.
        return Verdict.refuse("bad_signature")
    expected = signature(secret, stamp, body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return Verdict.refuse("bad_signature")
    try:
        sent = int(stamp)
    except ValueError:
        return Verdict.refuse("bad_signature")
    if abs(now - sent) > max_age:  # a clock far ahead is refused like one far behind
        return Verdict.refuse("replay")
    return ACCEPTED

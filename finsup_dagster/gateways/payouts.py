"""The one small interface finsup sends payouts through, whatever the provider.

PayPal Payouts, Payoneer mass payouts and the bank's pain.001 file all sit
behind :class:`PayoutGateway`. The submission job only ever talks to this
interface, so exactly-once submission is written once: store the key, ask the
provider what it already holds under that key, and only then send.

Why a request carries full destinations but no names of secrets: the gateway
needs the real email / payee id / IBAN to pay, and nothing else. Every error
raised here is one line with no credential, token or full destination in it,
and keeps the provider's raw answer (``raw``) so the caller can store it in
``gateway_events`` for someone to look at again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class PayoutLine:
    """One payout item as the provider needs it."""

    item_id: int  # finsup's payout_items.id: sender_item_id / client reference / EndToEndId
    receiver: str  # full destination (email, payee id, "IBAN/BIC"): never logged
    amount_minor: int
    currency: str
    name: str = ""  # the beneficiary's name (a bank transfer needs the creditor's name)


@dataclass(frozen=True)
class PayoutRequest:
    """One batch to send, under the idempotency key stored in the books before any call."""

    batch_id: str
    idempotency_key: str
    currency: str
    lines: tuple[PayoutLine, ...]

    def payload_hash(self) -> str:
        """SHA-256 over what is sent: the same key with another payload is a changed batch."""
        body = {
            "key": self.idempotency_key,
            "currency": self.currency,
            "lines": [
                [line.item_id, line.receiver, line.amount_minor, line.currency, line.name]
                for line in sorted(self.lines, key=lambda line: line.item_id)
            ],
        }
        canonical = json.dumps(body, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class GatewayItem:
    """One item as the provider reports it (``status`` is the provider's own word)."""

    item_id: int | None  # finsup's item id as the provider echoes it back, when it does
    gateway_item_id: str
    status: str
    raw: str = field(default="", repr=False)


@dataclass(frozen=True)
class GatewayBatch:
    """A batch as the provider holds it."""

    gateway_batch_id: str
    status: str
    items: tuple[GatewayItem, ...]
    raw: str = field(default="", repr=False)  # the provider's answer, kept in gateway_events
    # True when the provider refused a create as a duplicate and this is the original, read back.
    read_back: bool = False


class GatewayError(Exception):
    """Anything a provider call ended in that is not a batch: one line, no secrets."""

    def __init__(self, message: str, *, raw: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.status_code = status_code


class TransientGatewayError(GatewayError):
    """Connection error, timeout, 5xx, 429: safe to try again with the same key."""

    def __init__(
        self,
        message: str,
        *,
        raw: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, raw=raw, status_code=status_code)
        self.retry_after = retry_after


class GatewayRefused(GatewayError):
    """The provider refused the request for good (4xx other than 429, garbage answers).

    ``nothing_accepted`` is True only where the refusal proves the provider took
    nothing: the batch's first create request answered with a client error (not
    a duplicate). Anything else refused (a garbage 2xx, a failed read-back, a
    later chunk) may have been taken, and is no ground to give the batch up.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str = "",
        status_code: int | None = None,
        nothing_accepted: bool = False,
    ) -> None:
        super().__init__(message, raw=raw, status_code=status_code)
        self.nothing_accepted = nothing_accepted


# Client errors that say the request itself was refused (not: slow, conflicting, throttled).
REFUSING_STATUSES = frozenset(range(400, 500)) - {408, 409, 429}


def create_refused(exc: GatewayRefused) -> GatewayRefused:
    """``exc``, a refusal of a batch's first create request, marked as taking nothing when
    its status says the request was refused."""
    exc.nothing_accepted = exc.status_code in REFUSING_STATUSES
    return exc


class GatewayUnavailable(GatewayError):
    """Transient errors went on past the retry budget (count or total time)."""


class PayoutGateway(Protocol):
    """What the submission job needs of a provider."""

    name: str  # "paypal" | "payoneer" | "bank": the batch's payout method

    def find_batch(
        self, request: PayoutRequest, gateway_batch_id: str | None
    ) -> GatewayBatch | None:
        """What the provider already holds for this request, asked before ever sending again.

        ``gateway_batch_id`` is the provider's id when the books recorded one.
        None means the provider holds nothing under this key (or, for PayPal
        with no stored id, cannot be asked: its create is idempotent by key).
        """
        ...

    def submit_batch(self, request: PayoutRequest) -> GatewayBatch:
        """Creates the batch; a create refused as a duplicate is read back, not an error."""
        ...

    def get_batch(self, gateway_batch_id: str) -> GatewayBatch: ...

    def get_item(self, gateway_item_id: str) -> GatewayItem: ...

    def cancel_item(self, gateway_item_id: str) -> GatewayItem: ...

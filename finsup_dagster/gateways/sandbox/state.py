"""Everything the sandbox remembers between requests (in memory, none of it on disk).

One lock guards it all: requests are few and short, and one lock keeps a
create's "is this key new? then store it" atomic across uvicorn's threads.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finsup_dagster.gateways.sandbox.outcomes import Outcome

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Called as hook(provider, item id, old status, new status) when a read sees an item move:
# where a webhook sender would plug in.
StatusHook = Callable[[str, str, str, str], None]


def random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclass
class Fault:
    """The next ``remaining`` requests under ``path_prefix`` meet this fault.

    ``kind`` is ``status`` (answer ``status``, with ``Retry-After`` on a 429),
    ``slow`` (wait ``seconds`` before handling the request), ``drop``
    (handle the request, then cut the connection in the middle of the answer)
    or ``raw`` (answer ``status`` with ``body`` as is).
    """

    kind: str
    remaining: int
    path_prefix: str
    status: int = 0
    retry_after: int = 0
    seconds: float = 0.0
    body: str = ""

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind,
            "count": self.remaining,
            "path_prefix": self.path_prefix,
        }
        if self.kind == "status":
            body |= {"status": self.status, "retry_after": self.retry_after}
        if self.kind == "slow":
            body["seconds"] = self.seconds
        if self.kind == "raw":
            body |= {"status": self.status, "body": self.body}
        return body


@dataclass
class PayPalItem:
    payout_item_id: str
    transaction_id: str
    sender_item_id: str
    recipient_type: str
    receiver: str
    value: str
    currency: str
    note: str
    outcome: Outcome
    last_seen: str = "pending"


@dataclass
class PayPalBatch:
    payout_batch_id: str
    sender_batch_header: dict[str, Any]
    created_wall: float  # time.time(): the 30-day duplicate window
    created: float  # monotonic: the outcome clock
    items: list[PayPalItem]


@dataclass
class PayoneerPayment:
    client_reference_id: str
    payout_id: str
    payee_id: str
    amount: str
    currency: str
    description: str
    created_wall: float
    outcome: Outcome
    last_seen: str = "pending"


@dataclass
class SandboxState:
    data_dir: Path
    client_id: str
    client_secret: str = field(repr=False)
    payoneer_client_id: str = ""
    payoneer_client_secret: str = field(default="", repr=False)
    payoneer_program_id: str = ""
    token_ttl_seconds: int = 3600
    outcome_delay: float = 2.0
    on_status_change: StatusHook | None = None
    paypal_webhook_id: str = ""  # the id the verify-webhook-signature call must name
    webhooks: Any = None  # the webhook sender (sandbox.webhooks.WebhookSender) when configured
    # PayPal transmission id -> what was sent under it (answers verify-webhook-signature).
    webhook_transmissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, tuple[float, str]] = field(default_factory=dict)  # token -> (expiry, who)
    faults: list[Fault] = field(default_factory=list)
    tokens_issued: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    paypal_batches: dict[str, PayPalBatch] = field(default_factory=dict)  # by payout_batch_id
    paypal_by_sender_id: dict[str, str] = field(default_factory=dict)
    paypal_items: dict[str, tuple[str, int]] = field(default_factory=dict)  # -> (batch, index)
    payoneer_payments: dict[str, PayoneerPayment] = field(default_factory=dict)  # by client ref
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def issue_token(self, provider: str = "paypal") -> str:
        token = ("A21AA" if provider == "paypal" else "") + secrets.token_urlsafe(48)
        now = time.monotonic()
        with self.lock:
            self.tokens = {t: v for t, v in self.tokens.items() if v[0] > now}
            self.tokens[token] = (now + self.token_ttl_seconds, provider)
            self.tokens_issued += 1
        return token

    def token_valid(self, token: str, provider: str = "paypal") -> bool:
        with self.lock:
            entry = self.tokens.get(token)
        return entry is not None and entry[0] > time.monotonic() and entry[1] == provider

    def take_fault(self, path: str) -> Fault | None:
        """Consumes one use of the first fault matching ``path``."""
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    hit = Fault(
                        fault.kind,
                        1,
                        fault.path_prefix,
                        fault.status,
                        fault.retry_after,
                        fault.seconds,
                        fault.body,
                    )
                    self.faults = [f for f in self.faults if f.remaining > 0]
                    return hit
        return None

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def seen(self, provider: str, item_id: str, old: str, new: str) -> None:
        """A read saw an item move: the place a webhook would be sent from."""
        if old != new and self.on_status_change is not None:
            self.on_status_change(provider, item_id, old, new)

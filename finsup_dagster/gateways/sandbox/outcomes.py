"""Which outcome a payout item reaches, scripted by its recipient, and when.

Why scripted by recipient: a test or a demo picks the outcome it wants by the
address it pays, with nothing else to configure. A PayPal receiver's local
part carries a tag (``ann+unclaimed@example.com``); a Payoneer payee id ends
in one (``PAYEE-7-FAILED``). No tag means SUCCESS.

Why lazily from the submission time: statuses move while a client polls, with
no background thread. Each read works out where the item is now from how long
ago it was submitted and the sandbox's ``outcome_delay``.
"""

from __future__ import annotations

from dataclasses import dataclass

# tag -> the steps after PENDING: (status word key, how many delays after submission)
OUTCOME_TAGS: dict[str, tuple[tuple[str, int], ...]] = {
    "success": (("success", 1),),
    "unclaimed": (("unclaimed", 1),),
    "failed": (("failed", 1),),
    "returned": (("returned", 1),),
    "blocked": (("blocked", 1),),
    "refunded": (("refunded", 1),),
    "held": (("held", 1),),
    "held-then-success": (("held", 1), ("success", 2)),
    "denied": (("denied", 1),),
}

# The providers' own words for each outcome.
PAYPAL_STATUS = {
    "pending": "PENDING",
    "success": "SUCCESS",
    "unclaimed": "UNCLAIMED",
    "failed": "FAILED",
    "returned": "RETURNED",
    "blocked": "BLOCKED",
    "refunded": "REFUNDED",
    "held": "ONHOLD",
    "denied": "DENIED",
    "cancelled": "RETURNED",  # PayPal returns a cancelled unclaimed item to the sender
}
PAYONEER_STATUS = {
    "pending": "Pending",
    "success": "Transferred",
    "unclaimed": "Pending Payee Approval",
    "failed": "Failed",
    "returned": "Returned",
    "blocked": "Blocked",
    "refunded": "Refunded",
    "held": "On Hold",
    "denied": "Declined",
    "cancelled": "Cancelled",
}
# Outcomes after which nothing moves on its own.
NOT_FINAL = frozenset({"pending", "held"})


def paypal_tag(receiver: str) -> str:
    """``ann+failed@example.com`` -> ``failed``; no known tag -> ``success``."""
    local = receiver.partition("@")[0]
    _, plus, tag = local.partition("+")
    tag = tag.lower()
    return tag if plus and tag in OUTCOME_TAGS else "success"


def payoneer_tag(payee_id: str) -> str:
    """``PAYEE-7-HELD-THEN-SUCCESS`` -> ``held-then-success``; none -> ``success``."""
    upper = payee_id.upper()
    # Longest first: "-HELD-THEN-SUCCESS" must not be read as "-SUCCESS".
    for tag in sorted(OUTCOME_TAGS, key=len, reverse=True):
        if upper.endswith("-" + tag.upper()):
            return tag
    return "success"


@dataclass
class Outcome:
    """Where one item is: its scripted path, when it was sent, and any override."""

    tag: str
    submitted_at: float  # monotonic
    override: str | None = None  # set by a cancel: the item stops there

    def at(self, now: float, delay: float) -> str:
        if self.override is not None:
            return self.override
        current = "pending"
        for key, steps in OUTCOME_TAGS[self.tag]:
            if now - self.submitted_at >= steps * delay:
                current = key
        return current


def paypal_batch_status(item_outcomes: list[str], elapsed: float, delay: float) -> str:
    """PayPal's batch status: PENDING -> PROCESSING -> SUCCESS, or DENIED when all are denied."""
    if item_outcomes and all(o not in NOT_FINAL for o in item_outcomes):
        return "DENIED" if all(o == "denied" for o in item_outcomes) else "SUCCESS"
    if all(o == "pending" for o in item_outcomes) and elapsed < delay / 2:
        return "PENDING"
    return "PROCESSING"

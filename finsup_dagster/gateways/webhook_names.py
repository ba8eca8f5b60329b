"""The providers' webhook vocabulary: event names, PayPal's transmission headers, the verify path.

Apart from the parsers so the sandbox, which sends these events, shares the
names without importing the books' code.
"""

from __future__ import annotations

PAYPAL_BATCH_PREFIX = "PAYMENT.PAYOUTSBATCH."
PAYPAL_ITEM_PREFIX = "PAYMENT.PAYOUTS-ITEM."
PAYPAL_BATCH_EVENTS = frozenset(
    PAYPAL_BATCH_PREFIX + s for s in ("PROCESSING", "SUCCESS", "DENIED")
)
# Item event name -> the transaction_status it reports (when its resource carries none).
PAYPAL_ITEM_EVENTS = {
    PAYPAL_ITEM_PREFIX + "SUCCEEDED": "SUCCESS",
    PAYPAL_ITEM_PREFIX + "FAILED": "FAILED",
    PAYPAL_ITEM_PREFIX + "UNCLAIMED": "UNCLAIMED",
    PAYPAL_ITEM_PREFIX + "RETURNED": "RETURNED",
    PAYPAL_ITEM_PREFIX + "BLOCKED": "BLOCKED",
    PAYPAL_ITEM_PREFIX + "REFUNDED": "REFUNDED",
    PAYPAL_ITEM_PREFIX + "HELD": "ONHOLD",
    PAYPAL_ITEM_PREFIX + "CANCELED": "CANCELED",
    PAYPAL_ITEM_PREFIX + "DENIED": "DENIED",
}
PAYPAL_VERIFY_PATH = "/v1/notifications/verify-webhook-signature"
# The transmission headers PayPal sends (lower case), and the verify request's field for each.
PAYPAL_TRANSMISSION_HEADERS = {
    "paypal-auth-algo": "auth_algo",
    "paypal-cert-url": "cert_url",
    "paypal-transmission-id": "transmission_id",
    "paypal-transmission-sig": "transmission_sig",
    "paypal-transmission-time": "transmission_time",
}

# Payoneer's status words (the sandbox's PAYONEER_STATUS), one event type each.
PAYONEER_STATUS_WORDS = (
    "Pending",
    "Transferred",
    "Pending Payee Approval",
    "Failed",
    "Returned",
    "Blocked",
    "Refunded",
    "On Hold",
    "Declined",
    "Cancelled",
)


def payoneer_event_type(status: str) -> str:
    """``"Pending Payee Approval"`` -> ``"payout.pending_payee_approval"``."""
    return "payout." + "_".join(status.lower().split())


PAYONEER_ITEM_EVENTS = frozenset(payoneer_event_type(word) for word in PAYONEER_STATUS_WORDS)

"""PayPal transaction event codes (T-codes) → finsup kinds, shared by the STL and API parsers.

Only the codes that settle our own sales are kept; everything else (withdrawals
to the bank T04xx, currency conversions T02xx, holds and releases T15xx/T21xx,
authorisations T13xx, fee-only adjustments T01xx, ...) is skipped and counted.
Withdrawals in particular are skipped on purpose: the bank side of a payout
arrives through the bank statement (camt.053), and counting it here too would
settle the same money twice.

================  =========  ==========================  ===========================
code              direction  settlement kind (STL)       revenue kind (API)
================  =========  ==========================  ===========================
T00xx payment     credit     sale                        sale
T00xx payment     debit      other (a payment we sent)   skipped (not revenue)
T1107 refund      debit      refund                      refund
T1106 reversal    debit      chargeback                  chargeback
T1201 chargeback  debit      chargeback                  chargeback
T1202 cb reversal credit     other (money back to us)    skipped
anything else     either     skipped                     skipped
================  =========  ==========================  ===========================
"""

from __future__ import annotations

import re

_PAYMENT = re.compile(r"^T00\d\d$")
REFUND_CODES = frozenset({"T1107"})
CHARGEBACK_CODES = frozenset({"T1106", "T1201"})
CHARGEBACK_REVERSAL_CODES = frozenset({"T1202"})

# What a writer puts in the event code column when a row does not name one.
DEFAULT_CODE = {"sale": "T0006", "refund": "T1107", "chargeback": "T1106"}


def settlement_kind(code: str, credit: bool) -> str | None:
    """The settlement kind of an STL body row, or None when it is not settlement activity."""
    if _PAYMENT.match(code):
        return "sale" if credit else "other"
    if code in REFUND_CODES:
        return None if credit else "refund"
    if code in CHARGEBACK_CODES:
        return None if credit else "chargeback"
    if code in CHARGEBACK_REVERSAL_CODES:
        return "other" if credit else None
    return None


def revenue_kind(code: str, positive: bool) -> str | None:
    """The revenue kind of a reported transaction, or None when it is not revenue."""
    if _PAYMENT.match(code):
        return "sale" if positive else None
    if code in REFUND_CODES:
        return None if positive else "refund"
    if code in CHARGEBACK_CODES:
        return None if positive else "chargeback"
    return None

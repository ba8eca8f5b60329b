"""A local HTTP stand-in for the payment gateways finsup reads from and pays through.

Why it exists: the gateway clients (``paypal_reporting``, ``paypal_payouts``,
``payoneer``) must be tested over real HTTP - retries, token refresh,
pagination, duplicates, dropped connections - and the demo must run without
a network or gateway credentials. Mocking ``httpx`` would test our
assumptions against themselves; this server speaks the wire format of the
real APIs (as far as finsup uses them) so the client code runs unchanged
against it and against the gateway. It is never used in production: base
URLs and credentials are configuration.

Layout: one Starlette app (``app``). Each API is a module of routes:
``paypal_common`` (OAuth token, error body), ``paypal_reporting``
(transaction search), ``paypal_payouts`` (Payouts v1), ``payoneer`` (mass
payouts v4). ``outcomes`` scripts each item's outcome from its recipient and
moves it over time; ``faults`` holds the ``/_sandbox/*`` controls and the
middleware that records requests and injects faults; ``state`` is the
memory; ``serving`` runs it with uvicorn. docs/gateways.md says how to drive it.
"""

from finsup_dagster.gateways.sandbox.app import (
    DEFAULT_OUTCOME_DELAY,
    SANDBOX_PAYONEER_PROGRAM_ID,
    create_app,
)
from finsup_dagster.gateways.sandbox.faults import (
    CONTROL_PREFIX,
    FAULT_KINDS,
    FAULT_STATUSES,
    SANDBOX_PREFIX,
    parse_fault,
)
from finsup_dagster.gateways.sandbox.outcomes import OUTCOME_TAGS, PAYONEER_STATUS, PAYPAL_STATUS
from finsup_dagster.gateways.sandbox.paypal_common import PAYPAL_SCOPE
from finsup_dagster.gateways.sandbox.paypal_payouts import PAYPAL_MAX_PAYOUT_ITEMS
from finsup_dagster.gateways.sandbox.paypal_reporting import (
    PAYPAL_ACCOUNT_NUMBER,
    PAYPAL_DEFAULT_PAGE_SIZE,
    PAYPAL_MAX_PAGE_SIZE,
    PAYPAL_MAX_RANGE,
    PAYPAL_TRANSACTIONS_FILE,
    append_transactions,
    paypal_transaction_id,
    transaction_info,
)
from finsup_dagster.gateways.sandbox.serving import run, serve_in_thread
from finsup_dagster.gateways.sandbox.state import Fault, SandboxState

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_OUTCOME_DELAY",
    "FAULT_KINDS",
    "FAULT_STATUSES",
    "OUTCOME_TAGS",
    "PAYONEER_STATUS",
    "PAYPAL_ACCOUNT_NUMBER",
    "PAYPAL_DEFAULT_PAGE_SIZE",
    "PAYPAL_MAX_PAGE_SIZE",
    "PAYPAL_MAX_PAYOUT_ITEMS",
    "PAYPAL_MAX_RANGE",
    "PAYPAL_SCOPE",
    "PAYPAL_STATUS",
    "PAYPAL_TRANSACTIONS_FILE",
    "SANDBOX_PAYONEER_PROGRAM_ID",
    "SANDBOX_PREFIX",
    "Fault",
    "SandboxState",
    "append_transactions",
    "create_app",
    "parse_fault",
    "paypal_transaction_id",
    "run",
    "serve_in_thread",
    "transaction_info",
]

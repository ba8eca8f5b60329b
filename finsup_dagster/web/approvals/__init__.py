"""The approvals page: review payout batches and approve or deny them with a TOTP code.

``approvals_app(engine, settings)`` is a Starlette sub-application with its own
middleware; ``finsup serve`` mounts it at ``/``. Every decision goes through the
ledger (``ledger.approvals``, ``ledger.controls``) exactly as the CLI's does.
"""

from finsup_dagster.web.approvals.app import approvals_app
from finsup_dagster.web.approvals.config import ApprovalsSettings

__all__ = ["ApprovalsSettings", "approvals_app"]

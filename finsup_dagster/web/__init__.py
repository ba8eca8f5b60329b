"""finsup's web side: one ASGI app (``app.create_app``) served by ``finsup serve``.

Routes live in modules so the app stays a list of them: ``webhooks`` (the
providers' status webhooks), ``metrics`` (``/metrics``), ``health``
(``/healthz``). The approvals page joins as another module. docs/webhooks.md
says what each webhook route accepts and refuses.
"""

from finsup_dagster.web.app import create_app
from finsup_dagster.web.config import WebhookSettings

__all__ = ["WebhookSettings", "create_app"]

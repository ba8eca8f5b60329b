"""The approvals page as one Starlette sub-application, to be mounted at ``/``."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from finsup_dagster.web.approvals.config import ApprovalsSettings
from finsup_dagster.web.approvals.routes import Pages
from finsup_dagster.web.approvals.security import SecurityHeaders

# Forms are a few short fields; nothing larger is ever read.
MAX_BODY_BYTES = 64 * 1024


def approvals_app(engine: Engine, settings: ApprovalsSettings) -> Starlette:
    """The pages over ``engine``'s books; ``settings`` carries the keys, timeouts and clock."""
    pages = Pages(engine, settings)

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found\n", status_code=404)

    return Starlette(
        routes=pages.router.routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={404: not_found},
        max_body_size=MAX_BODY_BYTES,
    )

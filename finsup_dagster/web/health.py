"""``GET /healthz``: 200 when the ledger answers a read, else 503 (for a load balancer)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.ledger import db
from finsup_dagster.ledger.schema import audit_chain_head

log = logging.getLogger("finsup.web")


def ledger_reachable(engine: Engine) -> bool:
    try:
        with db.read(engine) as conn:
            # The chain head exists in initialised books only: "reachable" means usable.
            return conn.execute(sa.select(audit_chain_head.c.seq)).first() is not None
    except Exception as exc:  # any failure is "not healthy"; the reason goes to the log
        log.warning("healthz: ledger not reachable (%s)", type(exc).__name__)
        return False


def health_routes(engine: Engine) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        ok = await run_in_threadpool(ledger_reachable, engine)
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "ledger": ok}, status_code=200 if ok else 503
        )

    return [Route("/healthz", healthz, methods=["GET"])]

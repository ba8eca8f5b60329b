"""``POST /earnings``: the swarm's earnings into the books, over HTTP (docs/payouts.md).

The order of a request, and why:

1. The token: ``Authorization: Bearer <FINSUP_EARNINGS_TOKEN>``, compared in
   constant time (SHA-256 of both sides through ``hmac.compare_digest``, so not
   even the length leaks). Missing or wrong -> 401; no token configured on the
   server -> 503 for everyone. An unauthenticated body is not kept: anyone can
   send one, and it must not cost us disk.
2. The body, read up to ``max_bytes`` and no further -> 413 past it; a
   ``Content-Type`` other than JSON -> 415; not JSON -> 400.
3. ``earnings_intake.record_earnings``: the same ledger function a landed file
   goes through (``earnings.add_earning``), all records in one transaction.
   A refusal -> 422; a second delivery of the same ``external_id`` -> 200
   ``unchanged``, nothing written; anything new -> 201 ``created``.

Every refusal after the token answers ``{"error": "<one line>", "kept": "<file>"}``
and keeps the body under ``FINSUP_HOME/quarantine/earnings-api/<day>/`` with a
``.reason.txt`` beside it, so it can be looked at (and fixed and sent) again.
The token is never logged, kept or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.gateways.exact_json import loads_exact
from finsup_dagster.landing import REASON_SUFFIX, file_stamp, reason_fields
from finsup_dagster.ledger import clock, db
from finsup_dagster.ledger.earnings_intake import record_earnings
from finsup_dagster.ledger.errors import InvalidInput, LedgerError
from finsup_dagster.text import one_line
from finsup_dagster.web.webhooks import BodyTooLarge, read_bounded

log = logging.getLogger("finsup.web.earnings")

PATH = "/earnings"
TOKEN_ENV = "FINSUP_EARNINGS_TOKEN"
MIN_TOKEN = 32
DEFAULT_MAX_BYTES = 256 * 1024
ACTOR = "swarm:api"
KEPT_FOLDER = "earnings-api"


@dataclass(frozen=True)
class EarningsSettings:
    """``token`` empty: the route is off (503). ``home``: FINSUP_HOME, for the kept bodies."""

    home: Path
    token: str = field(repr=False, default="")
    max_bytes: int = DEFAULT_MAX_BYTES
    actor: str = ACTOR

    def __post_init__(self) -> None:
        if self.token and len(self.token) < MIN_TOKEN:
            raise LedgerError(
                f"{TOKEN_ENV} is too short: use {MIN_TOKEN}+ random characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        if self.max_bytes < 1:
            raise LedgerError("FINSUP_EARNINGS_MAX_BYTES must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EarningsSettings:
        env = os.environ if env is None else env
        try:
            max_bytes = int(env.get("FINSUP_EARNINGS_MAX_BYTES", DEFAULT_MAX_BYTES))
        except ValueError:
            raise LedgerError("FINSUP_EARNINGS_MAX_BYTES must be a number") from None
        return cls(
            home=Path(env.get("FINSUP_HOME", str(db.finsup_home()))),
            token=env.get(TOKEN_ENV, ""),
            max_bytes=max_bytes,
        )


def token_matches(expected: str, header: str | None) -> bool:
    """``Authorization: Bearer <token>`` against ``expected``, in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not expected:
        return False
    # Digests of equal length: compare_digest then leaks neither content nor length.
    want = hashlib.sha256(expected.encode()).digest()
    got = hashlib.sha256(given.strip().encode("utf-8", "replace")).digest()
    return hmac.compare_digest(want, got)


class EarningsIntake:
    def __init__(self, engine: Engine, settings: EarningsSettings) -> None:
        self.engine = engine
        self.settings = settings

    async def handle(self, request: Request) -> Response:
        if not self.settings.token:
            return JSONResponse(
                {"error": f"earnings intake is off: {TOKEN_ENV} is not set on the server"},
                status_code=503,
            )
        if not token_matches(self.settings.token, request.headers.get("authorization")):
            log.info("earnings refused: missing or wrong token")
            return JSONResponse(
                {"error": "missing or wrong API token (Authorization: Bearer <token>)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            body = await read_bounded(request, self.settings.max_bytes)
        except BodyTooLarge as exc:
            return await self._refuse(
                413, f"body over {self.settings.max_bytes} bytes (only the start is kept)", exc.kept
            )
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind.lower() != "application/json":
            return await self._refuse(415, f"Content-Type is {kind!r}, not application/json", body)
        try:
            parsed = loads_exact(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return await self._refuse(400, f"the body is not JSON: {exc}", body)
        try:
            done = await run_in_threadpool(
                record_earnings, self.engine, parsed, self.settings.actor
            )
        except InvalidInput as exc:
            return await self._refuse(422, str(exc), body)
        created = sum(1 for r in done if r.status == "created")
        log.info("earnings accepted: %d created, %d unchanged", created, len(done) - created)
        return JSONResponse(
            {
                "status": "created" if created else "unchanged",
                "earnings": [{"external_id": r.external_id, "status": r.status} for r in done],
            },
            status_code=201 if created else 200,
        )

    async def _refuse(self, status: int, reason: str, body: bytes) -> Response:
        reason = one_line(reason)
        answer: dict[str, str] = {"error": reason}
        try:
            answer["kept"] = await run_in_threadpool(self.keep, status, reason, body)
        except OSError as exc:
            # The refusal stands either way; the books were not touched.
            log.warning("earnings body refused (%s); not kept: %s", reason, exc)
        log.info("earnings refused %d: %s", status, reason)
        return JSONResponse(answer, status_code=status)

    def keep(self, status: int, reason: str, body: bytes) -> str:
        """Writes a refused body and its reason; returns the body's path under FINSUP_HOME."""
        day = clock.now()[:10]
        folder = self.settings.home / "quarantine" / KEPT_FOLDER / day
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{file_stamp()}-{uuid.uuid4().hex[:8]}.json"
        target = folder / name
        # The reason first: a body is never kept without one.
        target.with_name(name + REASON_SUFFIX).write_text(
            f"reason: {reason}\n"
            f"status: {status}\n"
            f"sha256: {hashlib.sha256(body).hexdigest()}\n"
            f"bytes: {len(body)}\n"
            f"received_at: {clock.now()}\n",
            encoding="utf-8",
        )
        target.write_bytes(body)
        return str(target.relative_to(self.settings.home))


def kept_reasons(home: Path) -> list[dict[str, str]]:
    """Every kept refusal's reason file, oldest first (for tests and operators)."""
    folder = home / "quarantine" / KEPT_FOLDER
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*" + REASON_SUFFIX)):
        fields = reason_fields(path)
        fields["body"] = str(path.with_name(path.name.removesuffix(REASON_SUFFIX)))
        found.append(fields)
    return found


def earnings_routes(engine: Engine, settings: EarningsSettings | None = None) -> list[BaseRoute]:
    intake = EarningsIntake(engine, settings or EarningsSettings.from_env())
    return [Route(PATH, intake.handle, methods=["POST"])]

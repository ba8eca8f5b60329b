"""``POST /webhooks/paypal`` and ``POST /webhooks/payoneer``: provider statuses into the books.

The order of a request, and why:

1. The body is read up to ``max_bytes`` and no further (a client cannot make
   us buffer an unbounded body); more is refused 413.
2. The signature: HMAC over timestamp and raw body (``webhook_signing``),
   or for PayPal in production its verify API (``webhooks_paypal``). Missing
   or wrong -> 401; genuine but older than ``max_age_seconds`` -> 401 replay.
3. The JSON and the event's shape -> 400 if broken.
4. One ``db.write`` transaction (shared with the events that arrived at the
   same time: ``writer.GroupWriter``, written by ``write_group`` in a few
   statements for the whole group): a provider event id already stored, or
   sent twice within the group -> 200 ``duplicate``, nothing applied;
   otherwise its status reports applied through ``payout_status.apply_report``
   and the raw event stored with what that came to, processed (one insert, no
   update: both commit together or not at all). An event for an item the
   books do not know yet (its submission not committed) is stored unprocessed
   for a later pass.
5. Only after that commit: the 2xx. If applying raises, the transaction rolls
   back and the event is stored alone (unprocessed) in a second one before
   answering; if even that fails the answer is 500 and the provider retries.

Every refusal keeps its body too (``event_id`` ``refused:<uuid>``, so a
forged copy never takes the real event's id), with nothing applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.gateways import webhooks_payoneer, webhooks_paypal
from finsup_dagster.gateways.exact_json import loads_exact
from finsup_dagster.gateways.webhook_events import MalformedEvent, ParsedEvent, best_effort_type
from finsup_dagster.gateways.webhook_signing import Verdict, verify_hmac
from finsup_dagster.ledger import db, payout_status
from finsup_dagster.web.config import WebhookSettings
from finsup_dagster.web.metrics import WebhookMetrics
from finsup_dagster.web.pending import evaluate
from finsup_dagster.web.writer import Coming, GroupWriter

log = logging.getLogger("finsup.web.webhooks")

APPLY_FAILED = "apply_failed"


class BodyTooLarge(Exception):
    def __init__(self, kept: bytes) -> None:
        super().__init__("body over the limit")
        self.kept = kept


async def read_bounded(request: Request, limit: int) -> bytes:
    """The body, read chunk by chunk; BodyTooLarge (holding the first ``limit`` bytes) past it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            raise BodyTooLarge(b"".join(chunks))
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Provider:
    name: str
    parse: Callable[[Any], ParsedEvent]
    type_key: str  # the body's event type field, for the row of a refused body


PROVIDERS = {
    "paypal": Provider("paypal", webhooks_paypal.parse, webhooks_paypal.EVENT_TYPE_KEY),
    "payoneer": Provider("payoneer", webhooks_payoneer.parse, webhooks_payoneer.EVENT_TYPE_KEY),
}


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


@dataclass(frozen=True)
class Accepted:
    """A verified, parsed event, to store and apply."""

    gateway: str
    parsed: ParsedEvent
    body: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Refused:
    """A refused body, kept under an id of its own, applying nothing."""

    gateway: str
    reason: str
    event_type: str
    body: str
    headers: Mapping[str, str]


Job = Accepted | Refused


class WebhookReceiver:
    """Verifies, stores and applies one provider webhook per request."""

    def __init__(
        self,
        engine: Engine,
        settings: WebhookSettings,
        metrics: WebhookMetrics,
        *,
        paypal_verifier: webhooks_paypal.PayPalApiVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.paypal_verifier = paypal_verifier
        self.writer: GroupWriter[Job] = GroupWriter(engine, self.write_group, self.write_alone)
        if settings.paypal_verify == "api" and paypal_verifier is None:
            self.paypal_verifier = webhooks_paypal.PayPalApiVerifier(
                settings.paypal_base_url,
                settings.paypal_client_id,
                settings.paypal_client_secret,
                settings.paypal_webhook_id,
            )

    def close(self) -> None:
        self.writer.close()
        if self.paypal_verifier is not None:
            self.paypal_verifier.close()

    # ------------------------------------------------------------------ the request

    async def handle(self, request: Request, provider: Provider) -> Response:
        # On its way to the writer from now on: a group being formed waits for it briefly.
        with self.writer.on_its_way() as coming:
            return await self._handle(request, provider, coming)

    async def _handle(self, request: Request, provider: Provider, coming: Coming) -> Response:
        headers = dict(request.headers)
        try:
            body = await read_bounded(request, self.settings.max_bytes)
        except BodyTooLarge as exc:
            return await self._refuse(
                coming, provider, Verdict.refuse("oversized", 413), exc.kept, headers
            )
        uses_api = provider.name == "paypal" and self.settings.paypal_verify == "api"
        event: Any = None
        if uses_api:
            # PayPal's API verifies the event itself: it must be JSON to be sent there.
            event = self._loads(body)
            if event is None:
                return await self._refuse(
                    coming, provider, Verdict.refuse("malformed", 400), body, headers
                )
        verdict = await self._verify(provider, headers, body, uses_api)
        if not verdict.ok:
            return await self._refuse(coming, provider, verdict, body, headers)
        if event is None:
            event = self._loads(body)
            if event is None:
                return await self._refuse(
                    coming, provider, Verdict.refuse("malformed", 400), body, headers
                )
        try:
            parsed = provider.parse(event)
        except MalformedEvent as exc:
            return await self._refuse(
                coming, provider, Verdict.refuse("malformed", 400), body, headers, event, str(exc)
            )
        job = Accepted(provider.name, parsed, _text(body), headers)
        outcome = await self.writer.submit(job, coming)
        self.metrics.accepted.labels(provider.name, outcome).inc()
        return JSONResponse({"status": outcome, "event_id": parsed.event_id})

    @staticmethod
    def _loads(body: bytes) -> Any:
        try:
            return loads_exact(body)
        except (ValueError, UnicodeDecodeError):
            return None

    async def _verify(
        self, provider: Provider, headers: Mapping[str, str], body: bytes, uses_api: bool
    ) -> Verdict:
        now, max_age = self.clock(), self.settings.max_age_seconds
        if not uses_api:
            secret = self.settings.secrets.get(provider.name, "")
            return verify_hmac(secret, headers, body, now=now, max_age=max_age)
        sent = webhooks_paypal.transmission_time(headers)
        if sent is None:
            return Verdict.refuse("missing_signature")
        if abs(now - sent) > max_age:
            # Checked before asking PayPal: an old transmission is refused without a call.
            return Verdict.refuse("replay")
        assert self.paypal_verifier is not None
        return await run_in_threadpool(self.paypal_verifier.verify, headers, body)

    async def _refuse(
        self,
        coming: Coming,
        provider: Provider,
        verdict: Verdict,
        kept: bytes,
        headers: Mapping[str, str],
        event: Any = None,
        detail: str | None = None,
    ) -> Response:
        reason = verdict.reason or "refused"
        self.metrics.refused.labels(provider.name, reason).inc()
        event_type = best_effort_type(event, provider.type_key)
        try:
            await self.writer.submit(
                Refused(provider.name, reason, event_type, _text(kept), headers), coming
            )
        except Exception as exc:
            # The refusal stands either way; the sender gets no 2xx and will retry.
            log.warning("webhook %s refused (%s); not kept: %s", provider.name, reason, exc)
        log.info("webhook %s refused: %s", provider.name, reason)
        body: dict[str, Any] = {"error": reason}
        if detail:
            body["detail"] = detail
        return JSONResponse(body, status_code=verdict.status)

    # ------------------------------------------------------------------ the books

    @staticmethod
    def write_group(conn: Connection, jobs: Sequence[Job]) -> list[str | None]:
        """Stores and applies a group of jobs in the caller's transaction: one outcome per
        job (None for a refusal kept).

        A few statements for the whole group, not a few per event: one query for the
        event ids already held, one for every item the group's reports name, then the
        reports applied in arrival order, then one multi-row insert of every row kept.
        Applied first, then stored with what it came to: one write of each event row
        instead of an insert and an update. The books' writer lock (BEGIN IMMEDIATE on
        SQLite, the chain-head row lock on PostgreSQL: db.py) is held by every writer in
        every process, so no copy is stored in between; the unique (gateway, event_id) is
        the backstop.
        """
        accepted = [j for j in jobs if isinstance(j, Accepted)]
        # Both reads in one round trip on PostgreSQL (a pipeline), one after the other elsewhere.
        seen, known = payout_status.stored_and_items(
            conn,
            ((j.gateway, j.parsed.event_id) for j in accepted),
            (r for j in accepted for r in j.parsed.reports),
        )
        rows: list[payout_status.EventRow] = []
        results: list[str | None] = []
        for job in jobs:
            if isinstance(job, Refused):
                rows.append(_refused_row(job))
                results.append(None)
                continue
            key = (job.gateway, job.parsed.event_id[:128])
            if key in seen:  # held already, or sent twice within this group
                results.append("duplicate")
                continue
            seen.add(key)
            outcome, closed = evaluate(conn, job.gateway, job.parsed, known=known)
            rows.append(_accepted_row(job, outcome, processed=closed))
            results.append(outcome)
        payout_status.store_events(conn, rows)
        return results

    def write_alone(self, job: Job) -> str | None:
        """One job in transactions of its own (its group failed); what came of it, committed."""
        if isinstance(job, Refused):
            with db.write(self.engine) as conn:
                payout_status.store_events(conn, [_refused_row(job)])
            return None
        return self.record(job)

    def record(self, job: Accepted) -> str:
        """Stores and applies one accepted event in a transaction of its own; if applying
        fails, stores it alone, unprocessed, in another."""
        try:
            with db.write(self.engine) as conn:
                outcome = self.write_group(conn, [job])[0]
            assert outcome is not None
            return outcome
        except Exception:
            log.exception(
                "webhook %s %s: applying failed; storing it alone", job.gateway, job.parsed.event_id
            )
        # Kept unprocessed for a later pass; an error here propagates: no 2xx.
        with db.write(self.engine) as conn:
            if payout_status.stored_among(conn, [(job.gateway, job.parsed.event_id)]):
                return "duplicate"
            payout_status.store_events(conn, [_accepted_row(job, APPLY_FAILED, processed=False)])
        return "stored"


def _accepted_row(job: Accepted, outcome: str, processed: bool) -> payout_status.EventRow:
    p = job.parsed
    return payout_status.EventRow(
        gateway=job.gateway,
        event_id=p.event_id,
        event_type=p.event_type,
        resource_id=p.resource_id,
        body=job.body,
        headers=job.headers,
        signature_valid=True,
        outcome=outcome,
        processed=processed,
    )


def _refused_row(job: Refused) -> payout_status.EventRow:
    return payout_status.EventRow(
        gateway=job.gateway,
        event_id=payout_status.refused_event_id(),
        event_type=job.event_type,
        resource_id=None,
        body=job.body,
        headers=job.headers,
        signature_valid=False,
        outcome=f"refused:{job.reason}",
    )


def webhook_routes(receiver: WebhookReceiver) -> list[BaseRoute]:
    def endpoint(provider: Provider) -> Callable[[Request], Any]:
        async def receive(request: Request) -> Response:
            return await receiver.handle(request, provider)

        return receive

    return [
        Route(f"/webhooks/{name}", endpoint(provider), methods=["POST"])
        for name, provider in PROVIDERS.items()
    ]

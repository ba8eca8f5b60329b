"""The pages and forms: read models in, ledger actions out, the ledger's words on refusal.

Every form post is checked in the same order: a live signed-in session (else
back to sign-in), the browser's Origin, the CSRF token, bounded fields; then
the ledger decides. A refusal re-renders the page with the ledger's message
as it is; a success redirects (303) so a reload never posts twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from finsup_dagster.ledger import approval_views, controls, db
from finsup_dagster.ledger.approvals import ApprovalRefused
from finsup_dagster.ledger.errors import InvalidInput, LedgerError, NotFound
from finsup_dagster.web.approvals import actions
from finsup_dagster.web.approvals.config import ApprovalsSettings
from finsup_dagster.web.approvals.rendering import STATIC, Renderer
from finsup_dagster.web.approvals.security import CSRF_REFUSED, csrf_ok, same_origin
from finsup_dagster.web.approvals.sessions import Session, Sessions

# Field bounds (transport, not policy): the ledger's columns hold no more than this.
MAX_FIELD = {"approver": 128, "code": 16, "reason": 512, "csrf": 128}
MAX_QUERY = 128
EXPIRED = "your session has expired: sign in again"
UNFREEZE_DEFAULT_REASON = "cleared by an approver"  # finsup unfreeze-payouts' default

# Handlers are plain functions run in a worker thread: the ledger calls block (a write
# waits for the books' write lock), and the event loop serves other requests meanwhile.
Handler = Callable[[Request, Session, FormData], Response]


class BadForm(Exception):
    """A form field missing, not text, or longer than its column: refused before the ledger."""


def _status_of(exc: LedgerError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, ApprovalRefused) and exc.bad_code:
        return 403
    return 409


def _field(form: FormData, name: str, required: bool = True) -> str:
    value = form.get(name)
    if value is None:
        if required:
            raise BadForm(f"the form has no {name} field")
        return ""
    if not isinstance(value, str):
        raise BadForm(f"the {name} field must be text")
    if len(value) > MAX_FIELD[name]:
        raise BadForm(f"the {name} field is longer than {MAX_FIELD[name]} characters")
    return value


class Pages:
    """Handlers over one ledger engine, one configuration and one session store."""

    def __init__(self, engine: Engine, cfg: ApprovalsSettings) -> None:
        self.engine = engine
        self.cfg = cfg
        self.sessions = Sessions(
            cfg.session_key, cfg.idle_minutes * 60.0, cfg.session_hours * 3600.0
        )
        static = Mount("/static", StaticFiles(directory=STATIC), name="static")
        self.router = Router(routes=[*self.routes(), static])
        self.render = Renderer(self.router)

    def routes(self) -> list[Route]:
        return [
            Route("/sign-in", self.sign_in_form, methods=["GET"], name="sign_in"),
            Route("/sign-in", self.sign_in, methods=["POST"], name="sign_in_post"),
            Route("/sign-out", self.signed_in(self.sign_out), methods=["POST"], name="sign_out"),
            Route("/", self.signed_in(self.pending), methods=["GET"], name="pending"),
            Route("/batches", self.signed_in(self.batches), methods=["GET"], name="batches"),
            Route("/batches/{batch_id}", self.signed_in(self.batch), methods=["GET"], name="batch"),
            Route(
                "/batches/{batch_id}/approve",
                self.signed_in(self.approve),
                methods=["POST"],
                name="approve",
            ),
            Route(
                "/batches/{batch_id}/deny",
                self.signed_in(self.deny),
                methods=["POST"],
                name="deny",
            ),
            Route("/stuck", self.signed_in(self.stuck), methods=["GET"], name="stuck"),
            Route("/controls", self.signed_in(self.controls), methods=["GET"], name="controls"),
            Route("/controls/freeze", self.signed_in(self.freeze), methods=["POST"], name="freeze"),
            Route(
                "/controls/unfreeze",
                self.signed_in(self.unfreeze),
                methods=["POST"],
                name="unfreeze",
            ),
            Route("/log", self.signed_in(self.log), methods=["GET"], name="log"),
        ]

    # --- sessions -------------------------------------------------------------------

    def _live(self, request: Request) -> tuple[Session | None, bool]:
        """A signed-in session still within its timeouts, of an approver still active."""
        session, presented = self.sessions.read(request)
        if session is None or session.approver is None:
            return None, presented and session is None
        now = self.cfg.clock()
        if self.sessions.expired(session, now):
            return None, True
        with db.read(self.engine) as conn:
            if not approval_views.approver_active(conn, session.approver):
                return None, True
        return session.seen(now), True

    def signed_in(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            # Read here, on the loop (bounded by the app's body limit); decided in a thread.
            form = await request.form() if request.method == "POST" else FormData()
            return await run_in_threadpool(self._guarded, request, handler, form)

        return guarded

    def _guarded(self, request: Request, handler: Handler, form: FormData) -> Response:
        session, presented = self._live(request)
        if session is None:
            target = self.render.path(request, "sign_in") + ("?expired=1" if presented else "")
            response: Response = RedirectResponse(target, status_code=303)
            if presented:  # an anonymous session keeps its sign-in form's token
                self.sessions.clear(response, request, None)
            return response
        if request.method == "POST":
            refused = self._check_form(request, session, form)
            if refused is not None:
                return refused
        response = handler(request, session, form)
        if not response.headers.get("set-cookie"):
            self.sessions.write(response, request, session)
        return response

    def _check_form(self, request: Request, session: Session, form: FormData) -> Response | None:
        if not same_origin(request):
            return self._error(request, session, 403, CSRF_REFUSED)
        if not csrf_ok(session.csrf, form.get("csrf")):
            return self._error(request, session, 403, CSRF_REFUSED)
        return None

    def _error(
        self, request: Request, session: Session | None, status: int, message: str
    ) -> Response:
        response = self.render.page(
            request,
            "error.html",
            {"message": message, **self._chrome(session)},
            status=status,
        )
        if session is not None:
            self.sessions.write(response, request, session)
        return response

    def _chrome(self, session: Session | None) -> dict[str, Any]:
        return {"session": session, "csrf": session.csrf if session else ""}

    def _done(self, request: Request, session: Session, target: str, notice: str) -> Response:
        response = RedirectResponse(target, status_code=303)
        self.sessions.write(response, request, _with_notice(session, notice))
        return response

    # --- sign-in --------------------------------------------------------------------

    def sign_in_form(self, request: Request) -> Response:
        live, _ = self._live(request)
        if live is not None:
            return RedirectResponse(self.render.path(request, "pending"), status_code=303)
        session, _ = self.sessions.read(request)
        session = session if session is not None and session.approver is None else None
        return self._sign_in_page(request, session or Session.anonymous(), None, 200)

    def _sign_in_page(
        self, request: Request, session: Session, error: str | None, status: int
    ) -> Response:
        notice = EXPIRED if request.query_params.get("expired") and error is None else None
        response = self.render.page(
            request,
            "sign_in.html",
            {"csrf": session.csrf, "error": error, "notice": notice},
            status=status,
        )
        self.sessions.write(response, request, session)
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(self._sign_in, request, form)

    def _sign_in(self, request: Request, form: FormData) -> Response:
        session, _ = self.sessions.read(request)
        if session is None:
            # No token was ever handed out to this browser: nothing to compare against.
            return self._sign_in_page(request, Session.anonymous(), CSRF_REFUSED, 403)
        if not same_origin(request) or not csrf_ok(session.csrf, form.get("csrf")):
            return self._sign_in_page(request, session, CSRF_REFUSED, 403)
        try:
            name, code = _field(form, "approver").strip(), _field(form, "code")
        except BadForm as exc:
            return self._sign_in_page(request, session, str(exc), 400)
        try:
            actions.sign_in(self.engine, self.cfg, name, code)
        except LedgerError as exc:
            return self._sign_in_page(request, session, str(exc), _status_of(exc))
        now = self.cfg.clock()
        response = RedirectResponse(self.render.path(request, "pending"), status_code=303)
        self.sessions.write(response, request, session.signed_in(name, now))
        return response

    def sign_out(self, request: Request, session: Session, form: FormData) -> Response:
        response = RedirectResponse(self.render.path(request, "sign_in"), status_code=303)
        self.sessions.clear(response, request, session, self.cfg.clock())
        return response

    # --- pages ----------------------------------------------------------------------

    def _page(
        self,
        request: Request,
        session: Session,
        template: str,
        context: dict[str, Any],
        status: int = 200,
        error: str | None = None,
    ) -> Response:
        notice, session = _pop_notice(session)
        response = self.render.page(
            request,
            template,
            {**context, **self._chrome(session), "notice": notice, "error": error},
            status=status,
        )
        self.sessions.write(response, request, session)
        return response

    def pending(self, request: Request, session: Session, form: FormData) -> Response:
        with db.read(self.engine) as conn:
            batches = approval_views.pending_batches(conn)
            freeze = controls.freeze_state(conn)
        return self._page(request, session, "pending.html", {"batches": batches, "freeze": freeze})

    def batches(self, request: Request, session: Session, form: FormData) -> Response:
        with db.read(self.engine) as conn:
            rows = approval_views.other_batches(conn)
        return self._page(request, session, "batches.html", {"batches": rows})

    def _batch_page(
        self,
        request: Request,
        session: Session,
        batch_id: str,
        status: int = 200,
        error: str | None = None,
    ) -> Response:
        with db.read(self.engine) as conn:
            batch = approval_views.batch_detail(conn, batch_id)
            freeze = controls.freeze_state(conn)
        if batch is None:
            return self._error(
                request, session, 404, error or f"no payout batch {batch_id[:MAX_QUERY]!r}"
            )
        return self._page(
            request,
            session,
            "batch.html",
            {"batch": batch, "freeze": freeze},
            status=status,
            error=error,
        )

    def batch(self, request: Request, session: Session, form: FormData) -> Response:
        return self._batch_page(request, session, request.path_params["batch_id"])

    def stuck(self, request: Request, session: Session, form: FormData) -> Response:
        hours = self.cfg.stuck_after_hours
        moment = datetime.fromtimestamp(self.cfg.clock(), UTC)
        with db.read(self.engine) as conn:
            items = approval_views.stuck_list(conn, timedelta(hours=hours), moment)
        return self._page(request, session, "stuck.html", {"items": items, "hours": hours})

    def _controls_page(
        self, request: Request, session: Session, status: int = 200, error: str | None = None
    ) -> Response:
        with db.read(self.engine) as conn:
            freeze = controls.freeze_state(conn)
            history = approval_views.recent_log(conn, "control", controls.PAYOUTS_FROZEN, 20)
        return self._page(
            request,
            session,
            "controls.html",
            {"freeze": freeze, "history": history},
            status=status,
            error=error,
        )

    def controls(self, request: Request, session: Session, form: FormData) -> Response:
        return self._controls_page(request, session)

    def log(self, request: Request, session: Session, form: FormData) -> Response:
        entity_type = request.query_params.get("entity_type", "").strip()[:MAX_QUERY]
        entity_id = request.query_params.get("entity_id", "").strip()[:MAX_QUERY]
        with db.read(self.engine) as conn:
            rows = approval_views.recent_log(conn, entity_type or None, entity_id or None)
            types = approval_views.entity_types(conn)
        return self._page(
            request,
            session,
            "log.html",
            {"rows": rows, "types": types, "entity_type": entity_type, "entity_id": entity_id},
        )

    # --- actions --------------------------------------------------------------------

    def approve(self, request: Request, session: Session, form: FormData) -> Response:
        batch_id = request.path_params["batch_id"]
        approver = _signed_in_name(session)
        try:
            code = _field(form, "code")
            result = actions.approve(self.engine, self.cfg, approver, code, batch_id)
        except BadForm as exc:
            return self._batch_page(request, session, batch_id, 400, str(exc))
        except LedgerError as exc:
            return self._batch_page(request, session, batch_id, _status_of(exc), str(exc))
        counted = f"{result['approvals']} of {result['required_approvals']}"
        notice = (
            f"batch {batch_id} approved ({counted})"
            if result["status"] == "approved"
            else f"approval recorded: {counted}; a second approver is needed"
        )
        target = self.render.path(request, "batch", batch_id=batch_id)
        return self._done(request, session, target, notice)

    def deny(self, request: Request, session: Session, form: FormData) -> Response:
        batch_id = request.path_params["batch_id"]
        approver = _signed_in_name(session)
        try:
            code, reason = _field(form, "code"), _field(form, "reason")
            actions.deny(self.engine, self.cfg, approver, code, batch_id, reason)
        except BadForm as exc:
            return self._batch_page(request, session, batch_id, 400, str(exc))
        except LedgerError as exc:
            return self._batch_page(request, session, batch_id, _status_of(exc), str(exc))
        target = self.render.path(request, "batch", batch_id=batch_id)
        return self._done(request, session, target, f"batch {batch_id} denied")

    def freeze(self, request: Request, session: Session, form: FormData) -> Response:
        try:
            reason = _field(form, "reason")
            actions.freeze(self.engine, _signed_in_name(session), reason)
        except BadForm as exc:
            return self._controls_page(request, session, 400, str(exc))
        except LedgerError as exc:
            return self._controls_page(request, session, _status_of(exc), str(exc))
        notice = f"payouts frozen by {session.approver}: {reason}"
        return self._done(request, session, self.render.path(request, "controls"), notice)

    def unfreeze(self, request: Request, session: Session, form: FormData) -> Response:
        try:
            code = _field(form, "code")
            reason = _field(form, "reason", required=False).strip() or UNFREEZE_DEFAULT_REASON
            actions.unfreeze(self.engine, self.cfg, _signed_in_name(session), code, reason)
        except BadForm as exc:
            return self._controls_page(request, session, 400, str(exc))
        except LedgerError as exc:
            return self._controls_page(request, session, _status_of(exc), str(exc))
        notice = f"payouts unfrozen by {session.approver}"
        return self._done(request, session, self.render.path(request, "controls"), notice)


def _signed_in_name(session: Session) -> str:
    # The actor is who signed in, never a form field: a tampered "approver" is ignored.
    assert session.approver is not None  # guarded by Pages.signed_in
    return session.approver


def _with_notice(session: Session, notice: str) -> Session:
    return replace(session, notice=notice)


def _pop_notice(session: Session) -> tuple[str | None, Session]:
    return session.notice, replace(session, notice=None)

"""The approvals page over HTTP (httpx against uvicorn), on SQLite and PostgreSQL: every
route's bad input, sessions, CSRF, headers and cookies. Browser flows: test_web_approvals_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from finsup_dagster.ledger import db, reports
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.schema import approvers
from finsup_dagster.web.approvals import ApprovalsSettings, approvals_app
from finsup_dagster.web.approvals.security import CSRF_REFUSED
from finsup_dagster.web.approvals.sessions import COOKIE
from tests.helpers.payouts import (
    BOX_KEY,
    Approver,
    approver,
    batch_row,
    beneficiary,
    earning,
    pending_batch,
    sale,
)
from tests.helpers.web import Clock, csrf_of, post_form, serve, serve_app, sign_in
from tests.helpers.web import settings as web_settings

POLICY = BatchPolicy(
    min_item={"*": "1.00"},
    max_batch_total={"*": "1000.00", "JPY": "150000"},
    dual_approval_over={"USD": "300.00"},
)
PAGES = ["/", "/batches", "/stuck", "/controls", "/log"]


@dataclass
class Site:
    engine: Engine
    clock: Clock
    client: httpx.Client
    batch_id: str
    carol: Approver
    dave: Approver

    def signed_in(self, who: Approver | None = None) -> httpx.Response:
        answer = sign_in(self.client, self.clock, who or self.carol)
        assert answer.status_code == 303, answer.text
        return answer

    def approve(self, code: str, **extra: str) -> httpx.Response:
        page = f"/batches/{self.batch_id}"
        return post_form(self.client, page, f"{page}/approve", {"code": code, **extra})


@pytest.fixture
def site(engine: Engine) -> Iterator[Site]:
    """A USD 60.00 batch pending approval (made by "maker"), approvers carol and dave."""
    batch_id = pending_batch(engine, POLICY, "60.00")
    carol, dave = approver(engine, "carol"), approver(engine, "dave")
    clock = Clock()
    with serve(engine, clock) as url, httpx.Client(base_url=url) as client:
        yield Site(engine, clock, client, batch_id, carol, dave)


def last_step(engine: Engine, name: str) -> int | None:
    with db.read(engine) as conn:
        step: int | None = conn.execute(
            sa.select(approvers.c.last_totp_step).where(approvers.c.name == name)
        ).scalar_one()
    return step


def test_every_page_needs_a_session_and_the_sign_in_page_says_why(site: Site) -> None:
    for page in [*PAGES, f"/batches/{site.batch_id}"]:
        answer = site.client.get(page)
        assert answer.status_code == 303 and answer.headers["location"] == "/sign-in", page
    answer = site.client.post(f"/batches/{site.batch_id}/approve", data={"code": "123456"})
    assert answer.status_code == 303 and answer.headers["location"] == "/sign-in"
    assert batch_row(site.engine, site.batch_id).status == "pending_approval"


def test_sign_in_approve_and_the_signed_in_code_cannot_approve(site: Site) -> None:
    site.signed_in()
    spent_at = site.clock.t
    home = site.client.get("/")
    assert home.status_code == 200 and site.batch_id in home.text
    assert "60.00 USD" in home.text and "40.00 USD" in home.text  # available after it: 100 - 60
    # The code that signed in is the same time step: refused, word for word the CLI's refusal.
    from pyotp import TOTP

    replay = site.approve(TOTP(site.carol.secret).at(spent_at))
    assert replay.status_code == 403
    assert "this TOTP code was already used: wait for the next one" in replay.text
    answer = site.approve(site.clock.at(site.carol))
    assert answer.status_code == 303
    page = site.client.get(answer.headers["location"])
    assert f"batch {site.batch_id} approved (1 of 1)" in page.text
    assert batch_row(site.engine, site.batch_id).status == "approved"
    # Approving it again: the ledger says it is no longer pending.
    again = site.approve(site.clock.at(site.carol))
    assert again.status_code == 409
    assert f"batch {site.batch_id} is approved, not pending approval" in again.text


def test_wrong_and_malformed_codes_are_refused_and_counted(site: Site) -> None:
    token = csrf_of(site.client.get("/sign-in").text)
    for code in ("000000", "abc", ""):
        answer = site.client.post(
            "/sign-in", data={"csrf": token, "approver": "carol", "code": code}
        )
        assert answer.status_code == 403
        assert "wrong or expired TOTP code" in answer.text
        assert COOKIE in answer.headers["set-cookie"]  # the anonymous session, not a sign-in
    assert site.client.get("/").status_code == 303
    unknown = site.client.post("/sign-in", data={"csrf": token, "approver": "zed", "code": "1"})
    assert "no approver &#39;zed&#39;" in unknown.text, re.findall(
        r"id=.error.>(.*?)<", unknown.text
    )


def test_missing_or_wrong_csrf_tokens_are_refused_before_any_code_is_spent(site: Site) -> None:
    bare = site.client.post("/sign-in", data={"approver": "carol", "code": "123456"})
    assert bare.status_code == 403 and CSRF_REFUSED in bare.text
    site.signed_in()
    before = last_step(site.engine, "carol")
    action = f"/batches/{site.batch_id}/approve"
    code = site.clock.at(site.carol)
    for data in ({"code": code}, {"code": code, "csrf": "forged"}, {"code": code, "csrf": ""}):
        answer = site.client.post(action, data=data)
        assert answer.status_code == 403 and CSRF_REFUSED in answer.text
    assert last_step(site.engine, "carol") == before, "a refused form spends no code"
    assert batch_row(site.engine, site.batch_id).status == "pending_approval"
    # Another site's form, even with the right token, is refused by its Origin.
    token = csrf_of(site.client.get("/").text)
    cross = site.client.post(
        action, data={"csrf": token, "code": code}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert site.approve(code).status_code == 303  # the same code still works: it was never spent


def test_unknown_batch_is_404_with_one_line(site: Site) -> None:
    site.signed_in()
    answer = site.client.get("/batches/pb_nope")
    assert answer.status_code == 404
    assert '<p class="error" role="alert" id="error">no payout batch &#39;pb_nope&#39;</p>' in (
        answer.text
    )
    posted = post_form(site.client, "/", "/batches/pb_nope/approve", {"code": "000000"})
    assert posted.status_code in (403, 404)  # a wrong code is refused before the batch is looked up
    code = site.clock.at(site.carol)
    posted = post_form(site.client, "/", "/batches/pb_nope/approve", {"code": code})
    assert posted.status_code == 404 and "no payout batch &#39;pb_nope&#39;" in posted.text
    assert site.client.get("/no/such/page").status_code == 404
    assert site.client.get(f"/batches/{site.batch_id}/approve").status_code == 405


def test_tampered_fields_are_refused_or_ignored(site: Site) -> None:
    site.signed_in()
    page = f"/batches/{site.batch_id}"
    # An "approver" field does not choose who approves: the session does.
    answer = site.approve(site.clock.at(site.carol), approver="dave")
    assert answer.status_code == 303
    with db.read(site.engine) as conn:
        logged = reports.transaction_logs(conn, entity_type="payout_batch")
    [recorded] = [r for r in logged if r["action"] == "batch_approval_recorded"]
    assert recorded["actor"] == "carol"
    token = csrf_of(site.client.get(page).text)
    too_long = site.client.post(
        f"{page}/deny", data={"csrf": token, "code": "123456", "reason": "x" * 600}
    )
    assert too_long.status_code == 400 and "longer than 512 characters" in too_long.text
    as_file = site.client.post(
        f"{page}/approve", data={"csrf": token}, files={"code": ("code.txt", b"123456")}
    )
    assert as_file.status_code == 400 and "the code field must be text" in as_file.text
    no_code = site.client.post(f"{page}/approve", data={"csrf": token})
    assert no_code.status_code == 400 and "the form has no code field" in no_code.text
    huge = site.client.post(f"{page}/approve", data={"csrf": token, "code": "1" * 100_000})
    assert huge.status_code == 413
    # A tampered session cookie is no session at all.
    cookie = site.client.cookies[COOKIE]
    site.client.cookies.clear()
    site.client.cookies.set(COOKIE, cookie[:-3] + ("AAA" if cookie[-3:] != "AAA" else "BBB"))
    answer = site.client.get("/")
    assert answer.status_code == 303 and answer.headers["location"] == "/sign-in?expired=1"


def test_deny_needs_a_reason_from_the_ledger_and_a_fresh_code(site: Site) -> None:
    site.signed_in()
    page = f"/batches/{site.batch_id}"
    blank = post_form(
        site.client, page, f"{page}/deny", {"code": site.clock.at(site.carol), "reason": " "}
    )
    assert blank.status_code == 400 and "a reason is required to deny a batch" in blank.text
    denied = post_form(
        site.client,
        page,
        f"{page}/deny",
        {"code": site.clock.at(site.carol), "reason": "wrong beneficiary"},
    )
    assert denied.status_code == 303
    assert batch_row(site.engine, site.batch_id).status == "denied"
    shown = site.client.get(page).text
    assert "wrong beneficiary" in shown and "denied" in shown


def test_sessions_expire_when_idle_and_absolutely_and_on_sign_out(site: Site) -> None:
    site.signed_in()
    assert site.client.get("/").status_code == 200
    site.clock.t += 14 * 60
    assert site.client.get("/").status_code == 200  # seen again: the idle clock restarts
    site.clock.t += 16 * 60
    expired = site.client.get("/")
    assert expired.status_code == 303 and expired.headers["location"] == "/sign-in?expired=1"
    assert "your session has expired: sign in again" in site.client.get("/sign-in?expired=1").text

    site.signed_in()
    signed_in_at = site.clock.t
    for _ in range(40):  # active all day, a request every 14 minutes: 8 hours is the end
        site.clock.t += 14 * 60
        answer = site.client.get("/")
        if answer.status_code != 200:
            break
    assert answer.headers["location"] == "/sign-in?expired=1"
    assert 8 * 3600 < site.clock.t - signed_in_at <= 8 * 3600 + 14 * 60

    site.signed_in()
    copied = site.client.cookies[COOKIE]
    token = csrf_of(site.client.get("/").text)
    out = site.client.post("/sign-out", data={"csrf": token})
    assert out.status_code == 303 and out.headers["location"] == "/sign-in"
    site.client.cookies.set(COOKIE, copied)  # a copy of the cookie is signed out too
    assert site.client.get("/").status_code == 303


def test_a_disabled_approver_is_signed_out(site: Site) -> None:
    site.signed_in()
    from finsup_dagster.ledger import approvals

    with db.write(site.engine) as conn:
        approvals.disable_approver(conn, "carol", "admin")
    assert site.client.get("/").status_code == 303


def test_headers_and_cookie_flags(site: Site) -> None:
    answer = site.client.get("/sign-in")
    headers = answer.headers
    assert "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    public = site.client.get("/sign-in", headers={"host": "approvals.example.com"})
    assert "secure" in public.headers["set-cookie"].lower()
    assert "<script" not in answer.text and " style=" not in answer.text


def test_codes_and_secrets_never_reach_pages_or_the_log(site: Site) -> None:
    site.signed_in()
    code = site.clock.at(site.carol)
    site.approve(code)
    pages = "".join(site.client.get(p).text for p in [*PAGES, f"/batches/{site.batch_id}"])
    with db.read(site.engine) as conn:
        log = str(reports.transaction_logs(conn, limit=10_000))
    for text in (pages, log):
        assert code not in text and site.carol.secret not in text


def test_amounts_use_each_currency_exponent_and_the_log_filters(engine: Engine) -> None:
    h = sale(engine, "SJ", "90000", currency="JPY")
    k = sale(engine, "SK", "10.500", currency="KWD")
    beneficiary(engine, "ann")
    earning(engine, "EJ", "ann", "5000", h, currency="JPY")
    earning(engine, "EK", "ann", "1.250", k, currency="KWD")
    build_batches(engine, POLICY, "maker")
    carol, clock = approver(engine, "carol"), Clock()
    with serve(engine, clock) as url, httpx.Client(base_url=url) as client:
        sign_in(client, clock, carol)
        home = client.get("/").text
        assert "5000 JPY" in home and "85000 JPY" in home
        assert "1.250 KWD" in home and "9.250 KWD" in home
        files = client.get("/log", params={"entity_type": "revenue_file"}).text
        approvers_only = client.get("/log", params={"entity_type": "approver"}).text
        one = client.get("/log", params={"entity_type": "approver", "entity_id": "nobody"}).text
    assert "revenue_events_ingested" in files and "approver_added" not in files
    assert "approver_added" in approvers_only and "revenue_events_ingested" not in approvers_only
    assert "No transaction-log rows." in one


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINSUP_DEMO", raising=False)
    monkeypatch.delenv("FINSUP_SECRET_KEY", raising=False)
    with pytest.raises(LedgerError, match="FINSUP_SECRET_KEY is not set"):
        ApprovalsSettings.from_env()
    monkeypatch.setenv("FINSUP_SECRET_KEY", BOX_KEY)
    monkeypatch.setenv("FINSUP_WEB_IDLE_MINUTES", "5")
    monkeypatch.delenv("FINSUP_WEB_SESSION_HOURS", raising=False)
    cfg = ApprovalsSettings.from_env()
    assert (cfg.idle_minutes, cfg.session_hours, cfg.stuck_after_hours) == (5, 8, 48)
    monkeypatch.setenv("FINSUP_WEB_SESSION_HOURS", "all day")
    with pytest.raises(LedgerError, match="FINSUP_WEB_SESSION_HOURS must be a whole number"):
        ApprovalsSettings.from_env()


def test_mounted_inside_another_app_its_paths_follow_the_mount(engine: Engine) -> None:
    """As ``finsup serve`` will: other routes beside it, the page mounted at / or a prefix."""
    carol, clock = approver(engine, "carol"), Clock()

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    for prefix in ("/", "/approvals"):
        outer = Starlette(
            routes=[
                Route("/healthz", healthz),
                Mount(prefix, app=approvals_app(engine, web_settings(clock))),
            ]
        )
        base = prefix.rstrip("/")
        with serve_app(outer) as url, httpx.Client(base_url=url) as client:
            assert client.get("/healthz").text == "ok"
            assert client.get(f"{base}/").headers["location"] == f"{base}/sign-in"
            page = client.get(f"{base}/sign-in")
            assert f'action="{base}/sign-in"' in page.text
            assert f'href="{base}/static/approvals.css"' in page.text
            signed = client.post(
                f"{base}/sign-in",
                data={"csrf": csrf_of(page.text), "approver": "carol", "code": clock.at(carol)},
            )
            assert signed.headers["location"] == f"{base}/"
            assert f'href="{base}/batches"' in client.get(f"{base}/").text


def test_finsup_serves_app_holds_the_page_beside_the_webhooks(engine: Engine) -> None:
    """``finsup serve``'s own app: webhooks, metrics and health first, the page on the rest."""
    from finsup_dagster.web import WebhookSettings, create_app

    carol, clock = approver(engine, "carol"), Clock()
    hooks = WebhookSettings(secrets={"paypal": "s1", "payoneer": "s2"}, max_bytes=4096)
    served = create_app(engine, hooks, approvals=web_settings(clock))
    with serve_app(served) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200
        assert client.post("/webhooks/paypal", content=b"{}").status_code == 401  # unsigned
        assert "finsup_webhooks_refused_total" in client.get("/metrics").text
        assert client.get("/").headers["location"] == "/sign-in"
        page = client.get("/sign-in")
        assert page.headers["x-frame-options"] == "DENY"
        signed = client.post(
            "/sign-in",
            data={"csrf": csrf_of(page.text), "approver": "carol", "code": clock.at(carol)},
        )
        assert signed.headers["location"] == "/"

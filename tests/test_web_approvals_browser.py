"""The approvals page in a real browser: Debian's chromium, headless, driven by Playwright,
against the sub-app served by uvicorn on a free port over a real SQLite ledger.

One browser for the module, a fresh context (cookie jar) per approver. With
FINSUP_SCREENSHOTS=1 the tests write each page to docs/images/approvals-*.png
(docs/payouts.md shows them); otherwise nothing is written outside tmp_path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import approvals, controls, db, migrate, revenue, state_machine
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from tests.helpers.payouts import (
    Approver,
    approver,
    batch_row,
    beneficiary,
    earning,
    item_rows,
    pending_batch,
    sale,
    submitted_batch,
)
from tests.helpers.web import Clock, serve

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "images"
POLICY = BatchPolicy(
    min_item={"*": "1.00"},
    max_batch_total={"*": "1000.00", "JPY": "150000"},
    dual_approval_over={"USD": "300.00"},
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Engine]:
    """A real SQLite ledger (the HTTP-level tests run PostgreSQL too)."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    migrate.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def shoot(page: Page, name: str) -> None:
    if os.environ.get("FINSUP_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"approvals-{name}.png"), full_page=True)


@dataclass
class Site:
    browser: Browser
    url: str
    clock: Clock
    contexts: list[BrowserContext] = field(default_factory=list)

    def new_page(self) -> Page:
        """A page in a new browser context: its own cookie jar, as another person's browser."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        self.contexts.append(context)
        return context.new_page()

    def open_as(self, who: Approver) -> Page:
        """A new browser context signed in as ``who`` (one fresh code spent)."""
        page = self.new_page()
        page.goto(self.url + "/")
        expect(page).to_have_url(self.url + "/sign-in")
        page.fill("input[name=approver]", who.name)
        page.fill("input[name=code]", self.clock.at(who))
        page.click("button:text('Sign in')")
        expect(page.locator("#who")).to_have_text(who.name)
        return page

    def batch(self, page: Page, batch_id: str) -> None:
        page.goto(f"{self.url}/batches/{batch_id}")

    def approve(self, page: Page, code: str) -> None:
        page.fill("#approve input[name=code]", code)
        page.click("#approve button")

    def deny(self, page: Page, reason: str, code: str) -> None:
        page.fill("#deny input[name=reason]", reason)
        page.fill("#deny input[name=code]", code)
        page.click("#deny button")


@pytest.fixture
def site(browser: Browser, books: Engine) -> Iterator[Site]:
    clock = Clock()
    with serve(books, clock) as url:
        site = Site(browser, url, clock)
        try:
            yield site
        finally:
            for context in site.contexts:
                context.close()


def dual_batch(engine: Engine) -> str:
    """USD 400.00 to ann and bob in one paypal batch: over 300.00, so two approvals."""
    h = sale(engine, "S1", "500.00")
    beneficiary(engine, "ann")
    beneficiary(engine, "bob", payout_method="paypal", destination="bob.smith@example.org")
    earning(engine, "E1", "ann", "250.00", h)
    earning(engine, "E2", "bob", "150.00", h)
    y = sale(engine, "SY", "90000", currency="JPY")
    earning(engine, "EY", "ann", "5000", y, currency="JPY")
    batches = build_batches(engine, POLICY, "maker").batches
    [usd] = [b["batch_id"] for b in batches if b["currency"] == "USD"]
    return usd


def test_sign_in_review_and_dual_approval(site: Site, books: Engine) -> None:
    batch_id = dual_batch(books)
    carol, dave = approver(books, "carol"), approver(books, "dave")
    page = site.new_page()
    page.goto(site.url + "/sign-in")
    shoot(page, "sign-in")

    page = site.open_as(carol)
    row = page.locator("tr", has_text=batch_id)
    expect(row).to_contain_text("400.00 USD")
    expect(row).to_contain_text("0 of 2")
    expect(row).to_contain_text("2 still needed")
    expect(row).to_contain_text("500.00 USD")  # available without it
    expect(row).to_contain_text("100.00 USD")  # available after it
    expect(page.locator("tr", has_text="JPY")).to_contain_text("5000 JPY")
    shoot(page, "pending")

    page.click(f"a:text('{batch_id}')")
    expect(page.locator("text=b***@example.org")).to_be_visible()  # masked destination
    expect(page.locator("td", has_text="S1").first).to_be_visible()  # funding revenue event
    shoot(page, "batch")
    site.approve(page, site.clock.at(carol))
    expect(page.locator(".notice")).to_have_text(
        "approval recorded: 1 of 2; a second approver is needed"
    )
    expect(page.locator("#approvals")).to_contain_text("1 of 2, 1 still needed")
    site.approve(page, site.clock.at(carol))
    expect(page.locator("#error")).to_have_text(
        f"carol has already approved batch {batch_id}: a second approver is needed"
    )
    shoot(page, "refused")

    second = site.open_as(dave)
    site.batch(second, batch_id)
    site.approve(second, site.clock.at(dave))
    expect(second.locator(".notice")).to_have_text(f"batch {batch_id} approved (2 of 2)")
    expect(second.locator("#status")).to_have_text("approved")
    expect(second.locator("#history")).to_contain_text("carol")
    expect(second.locator("#history")).to_contain_text("dave")
    assert batch_row(books, batch_id).status == "approved"

    second.click("button:text('Sign out')")
    expect(second).to_have_url(site.url + "/sign-in")
    second.goto(site.url + "/")
    expect(second).to_have_url(site.url + "/sign-in")


def test_deny_with_a_reason(site: Site, books: Engine) -> None:
    batch_id = pending_batch(books, POLICY, "60.00")
    carol = approver(books, "carol")
    page = site.open_as(carol)
    site.batch(page, batch_id)
    site.deny(page, "not this week", site.clock.at(carol))
    expect(page.locator(".notice")).to_have_text(f"batch {batch_id} denied")
    expect(page.locator("#status")).to_have_text("denied")
    expect(page.locator("#history")).to_contain_text("not this week")
    assert batch_row(books, batch_id).status == "denied"


# Each refusal of the ledger: who approves, what changes in the books while the page is
# open, and the ledger's message, which the page must show as it is.
Change = Callable[[Engine, str], None]


def _cancelled(engine: Engine, batch_id: str) -> None:
    with db.write(engine) as conn:
        approvals.cancel(conn, "ops", batch_id, "wrong run", with_code=False)


def _frozen(engine: Engine, batch_id: str) -> None:
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, "ops", "incident 7")


def _blocked(engine: Engine, batch_id: str) -> None:
    beneficiary(engine, "ann", blocked="true")


def _chargeback(engine: Engine, batch_id: str) -> None:
    event = revenue.parse_event(
        {
            "source": "paypal",
            "external_id": "CB1",
            "amount": "70.00",
            "currency": "USD",
            "occurred_at": "2026-11-21T10:00:00Z",
            "kind": "chargeback",
            "status": "confirmed",
        }
    )
    revenue.ingest(engine, [(1, event)])


def _refunded(engine: Engine, batch_id: str) -> None:
    """A refund naming the sale that funds the batch (same source and external id)."""
    event = revenue.parse_event(
        {
            "source": "paypal",
            "external_id": "S1",
            "amount": "10.00",
            "currency": "USD",
            "occurred_at": "2026-11-21T10:00:00Z",
            "kind": "refund",
            "status": "confirmed",
        }
    )
    revenue.ingest(engine, [(1, event)])


REFUSALS: dict[str, tuple[str, Change | None, str]] = {
    "over limit": ("small", None, r"batch \S+ of 60\.00 USD is over small's limit of 50\.00 USD"),
    "maker is checker": ("maker", None, r"maker created batch \S+ and cannot approve it"),
    "not pending": ("carol", _cancelled, r"batch \S+ is cancelled, not pending approval"),
    "frozen": (
        "carol",
        _frozen,
        r"payouts are frozen \(by ops at \S+: incident 7\); approving batch \S+ refused",
    ),
    "payee not eligible": (
        "carol",
        _blocked,
        r"batch \S+ pays ann, who may not be paid now: blocked",
    ),
    "funding reversed": ("carol", _refunded, r"batch \S+ pays earning E1 whose .*"),
    "balance no longer covers": (
        "carol",
        _chargeback,
        r"batch \S+ no longer fits the available balance \(30\.00 USD short\)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_ledger_refusal_is_shown_word_for_word(site: Site, books: Engine, case: str) -> None:
    batch_id = pending_batch(books, POLICY, "60.00")
    name, change, message = REFUSALS[case]
    who = approver(books, name, limit_minor=5000 if name == "small" else 1_000_000)
    page = site.open_as(who)
    site.batch(page, batch_id)
    if change is not None:
        change(books, batch_id)  # the books change while the page is open
    site.approve(page, site.clock.at(who))
    expect(page.locator("#error")).to_have_text(re.compile(message))
    assert batch_row(books, batch_id).status != "approved"


def test_wrong_replayed_codes_and_lock_out(site: Site, books: Engine) -> None:
    batch_id = pending_batch(books, POLICY, "60.00")
    carol = approver(books, "carol")
    page = site.open_as(carol)
    site.batch(page, batch_id)
    site.approve(page, pyotp.TOTP(carol.secret).at(site.clock.t))  # the code that signed in
    expect(page.locator("#error")).to_have_text(
        "this TOTP code was already used: wait for the next one"
    )
    for _ in range(4):  # with the replay, five bad codes in a row
        site.approve(page, "000000")
        expect(page.locator("#error")).to_have_text("wrong or expired TOTP code")
    site.approve(page, site.clock.at(carol))
    expect(page.locator("#error")).to_have_text(
        re.compile(r"approver carol is locked out until \S+")
    )
    assert batch_row(books, batch_id).status == "pending_approval"


def test_a_missing_or_wrong_csrf_token_is_refused(site: Site, books: Engine) -> None:
    batch_id = pending_batch(books, POLICY, "60.00")
    carol = approver(books, "carol")
    page = site.open_as(carol)
    for tamper in ("e => e.value = 'forged'", "e => e.remove()"):
        site.batch(page, batch_id)
        page.locator("#approve input[name=csrf]").evaluate(tamper)
        site.approve(page, site.clock.at(carol))
        expect(page.locator("#error")).to_contain_text("CSRF token missing or wrong")
    assert batch_row(books, batch_id).status == "pending_approval"


def test_an_expired_session_goes_back_to_sign_in(site: Site, books: Engine) -> None:
    batch_id = pending_batch(books, POLICY, "60.00")
    carol = approver(books, "carol")
    page = site.open_as(carol)
    site.batch(page, batch_id)
    site.clock.t += 16 * 60  # idle longer than FINSUP_WEB_IDLE_MINUTES' 15
    site.approve(page, site.clock.at(carol))
    expect(page).to_have_url(site.url + "/sign-in?expired=1")
    expect(page.locator(".notice")).to_have_text("your session has expired: sign in again")
    assert batch_row(books, batch_id).status == "pending_approval"


def test_the_freeze_switch(site: Site, books: Engine) -> None:
    batch_id = pending_batch(books, POLICY, "60.00")
    carol = approver(books, "carol")
    page = site.open_as(carol)
    page.click("a:text('Controls')")
    expect(page.locator("#switch")).to_contain_text("running")
    page.fill("#freeze input[name=reason]", "gateway incident 42")
    page.click("#freeze button")
    expect(page.locator(".notice")).to_have_text("payouts frozen by carol: gateway incident 42")
    expect(page.locator("#switch")).to_contain_text("frozen")
    expect(page.locator("#switch")).to_contain_text("gateway incident 42")
    shoot(page, "controls")
    site.batch(page, batch_id)
    expect(page.locator(".frozen")).to_contain_text("Payouts are frozen by carol")
    site.approve(page, site.clock.at(carol))
    expect(page.locator("#error")).to_contain_text("payouts are frozen (by carol")
    page.click("a:text('Controls')")
    page.fill("#unfreeze input[name=code]", "000000")
    page.click("#unfreeze button")
    expect(page.locator("#error")).to_have_text("wrong or expired TOTP code")
    page.fill("#unfreeze input[name=reason]", "incident closed")
    page.fill("#unfreeze input[name=code]", site.clock.at(carol))
    page.click("#unfreeze button")
    expect(page.locator(".notice")).to_have_text("payouts unfrozen by carol")
    expect(page.locator("#switch")).to_contain_text("running")
    with db.read(books) as conn:
        assert not controls.freeze_state(conn).frozen


def test_submitted_and_finished_batches_the_stuck_list_and_the_log(
    site: Site, books: Engine
) -> None:
    h = sale(books, "S1", "500.00")
    for name in ("ann", "bob", "cy"):
        beneficiary(books, name)
        earning(books, f"E-{name}", name, "40.00", h)
    [first] = build_batches(books, POLICY, "maker").batches
    carol = approver(books, "carol")
    items = submitted_batch(books, first["batch_id"], carol)
    with db.write(books) as conn:
        state_machine.move_item(conn, items[0].id, "paid", "gateway")
        state_machine.move_item(conn, items[1].id, "processing", "gateway")
        state_machine.move_item(conn, items[2].id, "failed", "gateway", reason="closed account")
    assert [i.status for i in item_rows(books, first["batch_id"])] == [
        "paid",
        "processing",
        "failed",
    ]
    page = site.open_as(carol)
    page.click("a:text('Batches')")
    row = page.locator("tr", has_text=first["batch_id"])
    expect(row).to_contain_text("submitted")
    for status in ("paid 1", "processing 1", "failed 1"):
        expect(row).to_contain_text(status)
    shoot(page, "batches")
    page.click(f"a:text('{first['batch_id']}')")
    expect(page.locator(".item-status", has_text="failed")).to_be_visible()
    page.click("a:text('Stuck')")
    expect(page.locator("h1")).to_have_text("Stuck payouts")
    # The page's clock (T0) is weeks after the ledger's real-time submission: stuck.
    expect(page.locator("tr", has_text="processing")).to_contain_text(first["batch_id"])
    shoot(page, "stuck")
    page.click("a:text('Log')")
    page.select_option("select[name=entity_type]", "payout_item")
    page.click("button:text('Filter')")
    expect(page.locator("table.log")).to_contain_text("item_failed")
    expect(page.locator("table.log")).not_to_contain_text("batch_approved")
    shoot(page, "log")

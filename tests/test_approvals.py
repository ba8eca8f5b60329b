"""Earnings, batches and approvals: every rule and every refusal, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import approvals, balance, controls, db, reports, revenue
from finsup_dagster.ledger.batching import BatchPolicy, build_batches, pending_batches
from finsup_dagster.ledger.errors import (
    IneligiblePayee,
    InvalidInput,
    LedgerError,
    NotFound,
    PayoutsFrozen,
)
from finsup_dagster.ledger.payouts import start_submission
from finsup_dagster.ledger.schema import approvers, beneficiaries, earnings, payout_batches
from tests.helpers.payouts import (
    BOX,
    approve,
    approver,
    authorise,
    beneficiary,
    cancel_with_code,
    earning,
    funded_ann_and_bob,
    sale,
)

POLICY = BatchPolicy(
    min_item={"*": "1.00"},
    max_batch_total={"*": "1000.00", "JPY": "150000"},
    dual_approval_over={"USD": "300.00"},
)


def usd(engine: Engine) -> balance.Balance:
    with db.read(engine) as conn:
        return balance.available_balances(conn, "USD")[0]


def logged(engine: Engine, action: str) -> list[dict]:
    with db.read(engine) as conn:
        return [r for r in reports.transaction_logs(conn, limit=10_000) if r["action"] == action]


@pytest.fixture
def funded(engine: Engine) -> tuple[Engine, str]:
    """USD 500 of confirmed sales, two eligible beneficiaries with accrued earnings of 150 and 50."""
    return engine, funded_ann_and_bob(engine)


# --- beneficiaries -------------------------------------------------------------------


def test_beneficiary_reimport_updates_in_place_and_logs_changes(engine: Engine) -> None:
    beneficiary(engine, "ann")
    beneficiary(engine, "ann", kyc_status="pending", tax_id="987-65-4321")
    with db.read(engine) as conn:
        rows = conn.execute(sa.select(beneficiaries)).mappings().all()
    assert len(rows) == 1
    assert rows[0]["kyc_status"] == "pending"
    assert rows[0]["tax_id_masked"] == "****4321"
    [update] = logged(engine, "beneficiary_updated")
    assert update["detail"]["changed"] == {
        "kyc_status": {"from": "verified", "to": "pending"},
        "tax_id_masked": {"from": "****6789", "to": "****4321"},
    }
    everything = json.dumps([*logged(engine, "beneficiary_created"), update])
    assert "6789" in everything and "123-45-6789" not in everything and "987-65" not in everything


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("destination", "not-an-email", "is not an email address"),
        ("payout_method", "cheque", "payout_method 'cheque'"),
        ("country", "USA", "not an ISO 3166"),
        ("kyc_status", "maybe", "kyc_status 'maybe'"),
    ],
)
def test_bad_beneficiary_fields_are_refused(
    engine: Engine, field: str, value: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        beneficiary(engine, "ann", **{field: value})


def test_bank_destinations_need_a_valid_iban_and_bic(engine: Engine) -> None:
    beneficiary(
        engine, "ann", payout_method="bank", destination="DE89 3704 0044 0532 0130 00/COBADEFFXXX"
    )
    with pytest.raises(InvalidInput, match="invalid IBAN"):
        beneficiary(
            engine, "bob", payout_method="bank", destination="DE89370400440532013001/COBADEFFXXX"
        )


# --- earnings ------------------------------------------------------------------------


def test_earnings_are_refused_with_a_reason(engine: Engine) -> None:
    h = sale(engine, "S1", "100.00")
    projected = sale(engine, "S2", "100.00", status="projected")
    yen = sale(engine, "S3", "5000", currency="JPY")
    beneficiary(engine, "ann")
    earning(engine, "E1", "ann", "60.00", h)
    cases = [
        (("E2", "nobody", "1.00", h), "unknown beneficiary 'nobody'"),
        (("E2", "ann", "1.00", "f" * 64), "unknown revenue event"),
        (
            ("E2", "ann", "40.01", h),
            "exceeds the 40.00 USD of confirmed revenue its events have left",
        ),
        (("E2", "ann", "1.00", projected), "is a projected sale, not a confirmed sale"),
        (("E2", "ann", "1.00", yen), "is in JPY, the earning in USD"),
        (("E1", "ann", "61.00", h), "already exists with another beneficiary or amount"),
    ]
    for args, message in cases:
        with pytest.raises(InvalidInput, match=message):
            earning(engine, *args)
    earning(engine, "E1", "ann", "60.00", h)  # the same earning again changes nothing
    earning(engine, "E2", "ann", "40.00", h)
    with db.read(engine) as conn:
        assert conn.execute(sa.select(sa.func.sum(earnings.c.amount_minor))).scalar_one() == 10000


# --- building batches ----------------------------------------------------------------


def test_batches_group_by_method_and_currency_and_skip_ineligible(engine: Engine) -> None:
    h = sale(engine, "S1", "500.00")
    y = sale(engine, "S2", "90000", currency="JPY")
    beneficiary(engine, "ann")
    beneficiary(engine, "bob", payout_method="payoneer", destination="PAYEE-123456")
    beneficiary(engine, "kyc", kyc_status="pending")
    beneficiary(engine, "ofac", sanctions_status="sanctioned")
    beneficiary(engine, "blk", blocked="true")
    earning(engine, "E1", "ann", "100.00", h)
    earning(engine, "E2", "ann", "20.00", h)
    earning(engine, "E3", "bob", "30.00", h)
    earning(engine, "E4", "ann", "5000", y, currency="JPY")
    for who in ("kyc", "ofac", "blk"):
        earning(engine, f"X-{who}", who, "10.00", h)
    report = build_batches(engine, POLICY, created_by="maker")
    got = sorted(
        (b["method"], b["currency"], b["total_minor"], b["item_count"]) for b in report.batches
    )
    assert got == [
        ("payoneer", "USD", 3000, 1),
        ("paypal", "JPY", 5000, 1),
        ("paypal", "USD", 12000, 1),
    ]
    assert sorted((i["beneficiary"], i["reason"]) for i in report.ineligible) == [
        ("blk", "blocked"),
        ("kyc", "KYC pending"),
        ("ofac", "sanctions screening sanctioned"),
    ]
    assert usd(engine).committed_minor == 15000
    again = build_batches(engine, POLICY, created_by="maker")
    assert again.batches == [], "rebuilding never duplicates a batch or an item"
    assert len(again.ineligible) == 3


def test_batches_respect_minimum_maximum_and_available(engine: Engine) -> None:
    h = sale(engine, "S1", "1000.00")
    for name in ("a1", "a2", "a3", "a4", "tiny", "huge"):
        beneficiary(engine, name)
    earning(engine, "E1", "a1", "400.00", h)
    earning(engine, "E2", "a2", "400.00", h)
    earning(engine, "E3", "a3", "150.00", h)
    earning(engine, "E4", "tiny", "0.50", h)
    policy = BatchPolicy(
        min_item={"*": "1.00"}, max_batch_total={"USD": "500.00"}, dual_approval_over={}
    )
    with db.write(engine) as conn:
        controls.set_reserve(conn, "USD", 2000, "cfo", "buffer")  # available 980.00
    report = build_batches(engine, policy, created_by="maker")
    assert [b["total_minor"] for b in report.batches] == [
        40000,
        40000,
        15000,
    ]  # oldest first, in order
    assert {(w["beneficiary"], w["reason"]) for w in report.waiting} == {
        ("tiny", "below the minimum item amount")
    }
    assert usd(engine).available_minor == 98000 - 95000

    h2 = sale(engine, "S2", "800.00")
    earning(engine, "E5", "huge", "600.00", h2)
    earning(engine, "E6", "a4", "200.00", h2)
    report = build_batches(engine, policy, created_by="maker")
    assert {(w["beneficiary"], w["reason"]) for w in report.waiting} == {
        ("tiny", "below the minimum item amount"),
        ("huge", "larger than the maximum batch total"),
    }
    assert [b["total_minor"] for b in report.batches] == [20000]
    assert usd(engine).available_minor >= 0


def test_pending_report_shows_items_and_funding(funded: tuple[Engine, str]) -> None:
    engine, h = funded
    build_batches(engine, POLICY, created_by="maker")
    [batch] = pending_batches(engine)
    assert (batch["total_minor"], batch["item_count"], batch["required_approvals"]) == (20000, 2, 1)
    by_ben = {i["beneficiary"]: i for i in batch["items"]}
    assert by_ben["ann"]["amount_minor"] == 15000
    assert by_ben["ann"]["destination"] == "a***@example.com"
    assert {f["event_hash"] for f in by_ben["ann"]["funded_by"]} == {h}
    assert sum(f["amount_minor"] for f in by_ben["ann"]["funded_by"]) == 15000


# --- approving -----------------------------------------------------------------------


def one_batch(engine: Engine) -> str:
    [batch] = build_batches(engine, POLICY, created_by="maker").batches
    return str(batch["batch_id"])


def test_approval_with_a_valid_code(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    result = approve(engine, carol, batch)
    assert result == {
        "batch_id": batch,
        "status": "approved",
        "approvals": 1,
        "required_approvals": 1,
        "approval_version": 1,
    }
    with db.read(engine) as conn:
        assert conn.execute(sa.select(payout_batches.c.status)).scalar_one() == "approved"


def test_codes_allow_one_step_of_drift_and_never_work_twice(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    now = carol.t + 300
    totp = pyotp.TOTP(carol.secret)
    with pytest.raises(approvals.ApprovalRefused, match="wrong or expired TOTP code"):
        approve(engine, carol, batch, code=totp.at(now - 60), now=now)  # two steps old
    dave = approver(engine, "dave")
    with db.write(engine) as conn:
        conn.execute(sa.update(payout_batches).values(required_approvals=2))
    ahead = totp.at(now + 30)  # the authenticator's clock runs one step ahead: accepted
    assert approve(engine, carol, batch, code=ahead, now=now)["approvals"] == 1
    with pytest.raises(approvals.ApprovalRefused, match="already used"):
        approve(engine, carol, batch, code=ahead, now=now)
    with pytest.raises(approvals.ApprovalRefused, match="already used"):
        approve(
            engine, carol, batch, code=totp.at(now), now=now
        )  # in the window, but older than one used
    assert approve(engine, dave, batch)["status"] == "approved"


def test_five_wrong_codes_lock_the_approver_out(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    for _ in range(5):
        with pytest.raises(approvals.ApprovalRefused, match="wrong or expired"):
            approve(engine, carol, batch, code="000000", now=carol.t)
    code, now = carol.next_code()
    with pytest.raises(approvals.ApprovalRefused, match="locked out until"):
        approve(engine, carol, batch, code=code, now=now)
    [lockout] = logged(engine, "approver_locked_out")
    assert lockout["detail"]["failed_attempts"] == 5
    assert len(logged(engine, "batch_approval_refused")) == 6
    carol.t += 15 * 60
    assert approve(engine, carol, batch)["status"] == "approved"


def test_creator_cannot_approve_and_limits_apply(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    maker = approver(engine, "maker")
    small = approver(engine, "small", limit_minor=19999)
    euro = approver(engine, "euro", currency="EUR")
    with pytest.raises(
        approvals.ApprovalRefused, match=r"maker created batch .* and cannot approve it"
    ):
        approve(engine, maker, batch)
    with pytest.raises(
        approvals.ApprovalRefused, match=r"of 200\.00 USD is over small's limit of 199\.99 USD"
    ):
        approve(engine, small, batch)
    with pytest.raises(approvals.ApprovalRefused, match="euro's limit is in EUR"):
        approve(engine, euro, batch)
    refused = logged(engine, "batch_approval_refused")
    assert [r["actor"] for r in refused] == ["maker", "small", "euro"]
    with db.read(engine) as conn:
        assert conn.execute(sa.select(payout_batches.c.status)).scalar_one() == "pending_approval"


def test_above_the_threshold_two_distinct_approvers_are_needed(engine: Engine) -> None:
    h = sale(engine, "S1", "500.00")
    beneficiary(engine, "ann")
    earning(engine, "E1", "ann", "400.00", h)
    batch = one_batch(engine)
    carol, dave = approver(engine, "carol"), approver(engine, "dave")
    first = approve(engine, carol, batch)
    assert (first["status"], first["approvals"], first["required_approvals"]) == (
        "pending_approval",
        1,
        2,
    )
    with pytest.raises(approvals.ApprovalRefused, match="carol has already approved"):
        approve(engine, carol, batch)
    assert approve(engine, dave, batch)["status"] == "approved"


def test_not_pending_unknown_and_no_longer_fitting_batches_are_refused(
    funded: tuple[Engine, str],
) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    with pytest.raises(NotFound, match="no payout batch 'pb_nope'"):
        approve(engine, carol, "pb_nope")
    # A chargeback arrives after the batch was created: the batch no longer fits.
    cb = revenue.parse_event(
        {
            "source": "paypal",
            "external_id": "CB1",
            "amount": "350.00",
            "currency": "USD",
            "occurred_at": "2026-11-21T10:00:00Z",
            "kind": "chargeback",
            "status": "confirmed",
        }
    )
    revenue.ingest(engine, [(1, cb)])
    with pytest.raises(
        approvals.ApprovalRefused,
        match=r"no longer fits the available balance \(50\.00 USD short\)",
    ):
        approve(engine, carol, batch)
    with db.write(engine) as conn:
        approvals.cancel(conn, "ops", batch, "does not fit", with_code=False)
    with pytest.raises(approvals.ApprovalRefused, match="is cancelled, not pending approval"):
        approve(engine, carol, batch)


def test_deny_releases_and_earnings_accrue_again(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    authorise(
        engine,
        carol,
        "batch_denial",
        batch,
        lambda conn, a, b: approvals.deny(conn, a, b, "wrong payee"),
    )
    assert usd(engine).committed_minor == 0
    with db.read(engine) as conn:
        assert set(conn.execute(sa.select(earnings.c.status)).scalars()) == {"accrued"}
    rebuilt = build_batches(engine, POLICY, created_by="maker").batches
    assert [b["total_minor"] for b in rebuilt] == [20000]


def test_cancelling_an_approved_batch_needs_a_code(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    approve(engine, carol, batch)
    with (
        pytest.raises(
            approvals.ApprovalRefused, match="approved: cancelling it needs --approver and --code"
        ),
        db.write(engine) as conn,
    ):
        approvals.cancel(conn, "ops", batch, "changed my mind", with_code=False)
    cancel_with_code(engine, carol, batch, "changed my mind")
    assert usd(engine).committed_minor == 0


def test_freeze_stops_creation_approval_and_submission(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, "cfo", "incident 42")
    with pytest.raises(PayoutsFrozen, match="incident 42"):
        approve(engine, carol, batch)
    with pytest.raises(PayoutsFrozen, match="creating payout batches refused"):
        build_batches(engine, POLICY, created_by="maker")
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, False, "cfo", "resolved")
    approve(engine, carol, batch)
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, "cfo", "incident 43")
    with pytest.raises(PayoutsFrozen, match="submitting batch"), db.write(engine) as conn:
        start_submission(conn, batch, 1, "dagster")
    assert any(
        "incident 42" in r["detail"]["reason"] for r in logged(engine, "batch_approval_refused")
    )


def test_submission_is_idempotent_per_approval_version(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    approve(engine, approver(engine, "carol"), batch)
    with db.write(engine) as conn:
        key = start_submission(conn, batch, 1, "run-1")
    with db.write(engine) as conn:
        assert start_submission(conn, batch, 1, "run-1-retry") == key
    with db.read(engine) as conn:
        row = conn.execute(
            sa.select(payout_batches.c.status, payout_batches.c.idempotency_key)
        ).one()
    assert tuple(row) == ("submitting", f"{batch}-v1")
    assert len(logged(engine, "batch_submitting")) == 1


def test_disabled_approver_and_secrets_never_logged(funded: tuple[Engine, str]) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol = approver(engine, "carol")
    with db.write(engine) as conn:
        approvals.disable_approver(conn, "carol", "admin")
    code, now = carol.next_code()
    with pytest.raises(approvals.ApprovalRefused, match="approver carol is disabled"):
        approve(engine, carol, batch, code=code, now=now)
    with db.read(engine) as conn:
        stored = conn.execute(sa.select(approvers.c.totp_secret_encrypted)).scalar_one()
        everything = json.dumps(reports.transaction_logs(conn, limit=10_000))
    assert carol.secret not in stored and BOX.open(stored) == carol.secret
    assert carol.secret not in everything and code not in everything


def test_secret_box_refuses_a_short_or_wrong_key() -> None:
    from finsup_dagster.ledger.secret_box import SecretBox, generate_key

    with pytest.raises(LedgerError, match="too short"):
        SecretBox("short")
    sealed = SecretBox(generate_key()).seal("JBSWY3DPEHPK3PXP")
    with pytest.raises(LedgerError, match="cannot decrypt"):
        SecretBox(generate_key()).open(sealed)


def test_a_payee_screened_out_after_batching_stops_approval_and_submission(
    funded: tuple[Engine, str],
) -> None:
    engine, _ = funded
    batch = one_batch(engine)
    carol, dave = approver(engine, "carol"), approver(engine, "dave")
    approve(engine, carol, batch)  # approved while everyone was clear
    beneficiary(engine, "bob", sanctions_status="potential_match")  # screening changes afterwards
    with (
        pytest.raises(
            IneligiblePayee,
            match="pays bob, who may not be paid now: sanctions screening potential_match",
        ),
        db.write(engine) as conn,
    ):
        start_submission(conn, batch, 1, "dagster")

    h = sale(engine, "S2", "100.00")
    earning(engine, "E9", "ann", "10.00", h)
    second = one_batch(engine)
    beneficiary(engine, "ann", blocked="true")
    with pytest.raises(IneligiblePayee, match="pays ann, who may not be paid now: blocked"):
        approve(engine, dave, second)
    assert logged(engine, "batch_approval_refused")[-1]["detail"]["reason"].startswith(
        f"batch {second} pays ann"
    )
    with db.read(engine) as conn:
        statuses = dict(conn.execute(sa.select(payout_batches.c.id, payout_batches.c.status)).all())
    assert statuses == {batch: "approved", second: "pending_approval"}

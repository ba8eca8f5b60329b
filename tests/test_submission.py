"""Approved batches leave the building: earnings → batch → TOTP approval → sensor tick →
submit_payout_batch → the gateway sandbox, over real sockets, on SQLite and PostgreSQL.

What a finance team relies on: each approved batch reaches its gateway exactly
once, with the items, amounts and currencies the books hold (JPY with no
decimals, KWD with three), whatever the gateway does on the way (5xx, 429,
a timeout, a connection dropped after the batch was taken); a refusal leaves
the batch visible as submission_failed with its amount still reserved; bad
input is one line and changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster import submission
from finsup_dagster.jobs import submit_payout_batch
from finsup_dagster.ledger import balance, controls, db
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.errors import LedgerError, NotFound, PayoutsFrozen
from finsup_dagster.ledger.schema import gateway_events, payout_batches
from finsup_dagster.resources import LedgerResource
from finsup_dagster.resources.gateways import (
    BankOutboxResource,
    PayPalPayoutsResource,
    payout_gateway,
)
from finsup_dagster.sensors.approved_batches import approved_batches_sensor
from tests.helpers.payout_sandbox import (
    CLIENT_SECRET,
    PayoutSandbox,
    payout_sandbox,
    submission_resources,
)
from tests.helpers.payouts import (
    approve,
    approver,
    batch_row,
    beneficiary,
    earning,
    item_rows,
    sale,
)

POLICY = BatchPolicy(min_item={"*": "1"}, dual_approval_over={"*": "1000000"})


def approved_batches(
    engine: Engine, method: str, currency: str, amounts: list[str], destinations: list[str]
) -> list[str]:
    """One approved batch of ``method`` paying each destination its amount."""
    funding = sale(
        engine, f"S-{method}-{currency}", "100000" if currency == "JPY" else "1000", currency
    )
    for n, (amount, dest) in enumerate(zip(amounts, destinations, strict=True)):
        who = f"{method}-{currency}-{n}".lower()
        beneficiary(engine, who, payout_method=method, destination=dest, country="DE")
        earning(engine, f"E-{who}", who, amount, funding, currency=currency)
    batches = build_batches(engine, POLICY, "maker").batches
    checker = approver(engine, f"checker-{currency.lower()}", 10**9, currency)
    for batch in batches:
        approve(engine, checker, batch["batch_id"])
    return [b["batch_id"] for b in batches]


def run_sensor_and_jobs(
    ledger: LedgerResource, resources: dict[str, Any]
) -> list[dg.ExecuteInProcessResult]:
    context = dg.build_sensor_context(cursor=None, resources={"ledger": ledger})
    tick = approved_batches_sensor.evaluate_tick(context)
    return [
        submit_payout_batch.execute_in_process(
            run_config=request.run_config, resources=resources, raise_on_error=False
        )
        for request in tick.run_requests or []
    ]


def books_state(engine: Engine) -> tuple[Any, ...]:
    """Everything a refused attempt must leave as it was."""
    with db.read(engine) as conn:
        rows = conn.execute(sa.select(payout_batches.c.id, payout_batches.c.status)).all()
        logs = conn.execute(sa.text("SELECT count(*) FROM transaction_log")).scalar_one()
        entries = conn.execute(sa.text("SELECT count(*) FROM journal_entries")).scalar_one()
    return tuple(sorted(rows)), logs, entries


def paypal_batches_for(sandbox: PayoutSandbox, key: str) -> list[Any]:
    with sandbox.state.lock:
        return [
            b
            for b in sandbox.state.paypal_batches.values()
            if b.sender_batch_header.get("sender_batch_id") == key
        ]


@pytest.fixture
def ledger(ledger_url: str, tmp_path: Path) -> LedgerResource:
    return LedgerResource(url=ledger_url, home=str(tmp_path))


def test_approved_batches_reach_each_gateway_once_with_exact_amounts(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    jpy = approved_batches(
        engine, "paypal", "JPY", ["1500", "99"], ["ann@example.com", "bo@example.com"]
    )
    kwd = approved_batches(engine, "paypal", "KWD", ["1.250"], ["cy@example.com"])
    payoneer = approved_batches(engine, "payoneer", "USD", ["12.34"], ["PAYEE-77"])
    bank = approved_batches(
        engine, "bank", "EUR", ["20.05"], ["DE89370400440532013000/COBADEFFXXX"]
    )

    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(sandbox, ledger, tmp_path / "outbox")
        results = run_sensor_and_jobs(ledger, resources)
        assert len(results) == 4 and all(r.success for r in results)
        assert run_sensor_and_jobs(ledger, resources) == []  # a later tick asks for nothing

        for batch_id, sent in ((jpy[0], {"1500", "99"}), (kwd[0], {"1.250"})):
            row = batch_row(engine, batch_id)
            [held] = paypal_batches_for(sandbox, row.idempotency_key)
            assert row.status == "submitted" and row.gateway_batch_id == held.payout_batch_id
            assert {i.value for i in held.items} == sent
            assert {i.currency for i in held.items} == {row.currency}
            items = item_rows(engine, batch_id)
            assert {str(i.id) for i in items} == {i.sender_item_id for i in held.items}
            by_sender = {i.sender_item_id: i.payout_item_id for i in held.items}
            assert all(i.status == "submitted" for i in items)
            assert {i.gateway_item_id for i in items} == {by_sender[str(i.id)] for i in items}
        assert len(sandbox.state.paypal_batches) == 2

        row = batch_row(engine, payoneer[0])
        with sandbox.state.lock:
            payments = list(sandbox.state.payoneer_payments.values())
        assert [(p.payee_id, p.amount, p.currency) for p in payments] == [
            ("PAYEE-77", "12.34", "USD")
        ]
        assert row.status == "submitted" and row.gateway_batch_id == row.idempotency_key

    row = batch_row(engine, bank[0])
    [file] = sorted((tmp_path / "outbox").glob("*.xml"))
    text = file.read_text(encoding="utf-8")
    assert row.status == "submitted" and f"<MsgId>{row.idempotency_key}</MsgId>" in text
    assert 'Ccy="EUR">20.05<' in text and "DE89370400440532013000" in text


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 503, "count": 2},
        {"kind": "status", "status": 429, "retry_after": 1},
        {"kind": "slow", "seconds": 3.0},
        {"kind": "drop"},
    ],
    ids=["5xx-then-success", "429-retry-after", "timeout", "accepted-then-dropped"],
)
def test_each_gateway_fault_ends_in_exactly_one_batch_at_the_gateway(
    engine: Engine, ledger: LedgerResource, tmp_path: Path, fault: dict[str, Any]
) -> None:
    [batch_id] = approved_batches(engine, "paypal", "USD", ["10.00"], ["ann@example.com"])
    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(
            sandbox, ledger, tmp_path / "outbox", timeout=1.0, retry_seconds=10.0
        )
        sandbox.fault(path_prefix="/v1/payments/payouts", **fault)
        [result] = run_sensor_and_jobs(ledger, resources)
        assert result.success
        row = batch_row(engine, batch_id)
        assert row.status == "submitted"
        [held] = paypal_batches_for(sandbox, row.idempotency_key)
        assert row.gateway_batch_id == held.payout_batch_id
        creates = sandbox.requests("POST", "/v1/payments/payouts")
        assert len(creates) >= 2, "the fault was met and the call made again"
        assert (
            len({json.loads(c["body"])["sender_batch_header"]["sender_batch_id"] for c in creates})
            == 1
        )


def test_a_refused_batch_is_submission_failed_reserved_and_its_answer_kept(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    [batch_id] = approved_batches(engine, "paypal", "USD", ["10.00"], ["ann@example.com"])
    with db.read(engine) as conn:
        available = balance.available_minor(conn, "USD")
    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(sandbox, ledger, tmp_path / "outbox")
        page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        sandbox.fault(kind="raw", status=400, body=page, path_prefix="/v1/payments/payouts")
        [result] = run_sensor_and_jobs(ledger, resources)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert f"batch {batch_id} is submission_failed" in (failure.message or "") + str(
            failure.event_specific_data
        )
        assert sandbox.state.paypal_batches == {}
    row = batch_row(engine, batch_id)
    assert row.status == "submission_failed" and row.status_reason
    assert "\n" not in row.status_reason
    with db.read(engine) as conn:
        assert balance.available_minor(conn, "USD") == available  # still reserved
        kept = (
            conn.execute(
                sa.select(gateway_events.c.payload).where(gateway_events.c.resource_id == batch_id)
            )
            .scalars()
            .all()
        )
    assert any("502 Bad Gateway" in k for k in kept), "the raw answer is kept to look at again"
    assert all(i.status == "pending" for i in item_rows(engine, batch_id))


def test_an_unreachable_gateway_leaves_the_batch_submitting_and_the_next_attempt_asks_first(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    [batch_id] = approved_batches(engine, "paypal", "USD", ["10.00"], ["ann@example.com"])
    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(
            sandbox, ledger, tmp_path / "outbox", retry_attempts=2, retry_seconds=2.0
        )
        gateways = {"paypal": resources["paypal_payouts"]}
        # Taken, then the answer lost twice over: the retry budget runs out.
        sandbox.fault(kind="drop", count=5, path_prefix="/v1/payments/payouts")
        with pytest.raises(submission.SubmissionInterrupted, match="stays submitting"):
            submission.submit(
                ledger.engine,
                lambda m: payout_gateway(m, paypal=gateways["paypal"]),
                batch_id,
                1,
                "test",
            )
        assert batch_row(engine, batch_id).status == "submitting"
        assert len(sandbox.state.paypal_batches) == 1  # the gateway holds it already
        with sandbox.state.lock:
            sandbox.state.faults.clear()
        result = submission.submit(
            ledger.engine,
            lambda m: payout_gateway(m, paypal=gateways["paypal"]),
            batch_id,
            1,
            "test",
        )
        assert result.status == "submitted" and result.read_back
        assert len(sandbox.state.paypal_batches) == 1
    assert batch_row(engine, batch_id).gateway_batch_id == result.gateway_batch_id


def test_bad_input_is_one_line_and_leaves_the_books_and_the_gateway_alone(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    [batch_id] = approved_batches(engine, "paypal", "USD", ["10.00"], ["ann@example.com"])
    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(sandbox, ledger, tmp_path / "outbox")
        paypal = resources["paypal_payouts"]

        def gateway_for(method: str) -> Any:
            return payout_gateway(method, paypal=paypal)

        before = books_state(engine)
        with pytest.raises(NotFound, match="no payout batch 'pb_nope'"):
            submission.submit(ledger.engine, gateway_for, "pb_nope", 1, "test")
        with pytest.raises(LedgerError, match="approval version"):
            submission.submit(ledger.engine, gateway_for, batch_id, 7, "test")
        funding = sale(engine, "S-pending", "50.00")
        earning(engine, "E-pending", "paypal-usd-0", "5.00", funding)
        [pending] = build_batches(engine, POLICY, "maker").batches
        with pytest.raises(LedgerError, match="is pending_approval; only an approved"):
            submission.submit(ledger.engine, gateway_for, pending["batch_id"], 0, "test")
        before = books_state(engine)
        with db.write(engine) as conn:
            controls.set_payouts_frozen(conn, True, "ops", "incident 42")
        frozen = books_state(engine)
        with pytest.raises(PayoutsFrozen):
            submission.submit(ledger.engine, gateway_for, batch_id, 1, "test")
        assert books_state(engine) == frozen
        with db.write(engine) as conn:
            controls.set_payouts_frozen(conn, False, "ops", "incident over")
        no_secret = PayPalPayoutsResource(
            base_url=sandbox.base_url, client_id="x", client_secret=""
        )
        with pytest.raises(LedgerError, match="FINSUP_PAYPAL_CLIENT_SECRET not set") as exc:
            submission.submit(
                ledger.engine, lambda m: payout_gateway(m, paypal=no_secret), batch_id, 1, "test"
            )
        assert "\n" not in str(exc.value) and CLIENT_SECRET not in str(exc.value)
        assert batch_row(engine, batch_id).status == "approved"
        assert sandbox.requests(prefix="/v1/payments") == []
    assert books_state(engine)[0] == before[0]


def test_an_unconfigured_bank_gateway_refuses_a_bank_batch_before_the_books_change(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    [batch_id] = approved_batches(
        engine, "bank", "EUR", ["20.05"], ["DE89370400440532013000/COBADEFFXXX"]
    )
    before = books_state(engine)
    off = BankOutboxResource(outbox_dir="", debtor_name="", debtor_iban="", debtor_bic="")
    with pytest.raises(LedgerError, match="FINSUP_BANK_OUTBOX is empty: bank payouts are off"):
        submission.submit(ledger.engine, lambda m: payout_gateway(m, bank=off), batch_id, 1, "test")
    assert books_state(engine) == before
    assert batch_row(engine, batch_id).status == "approved"


def test_a_refusal_after_the_gateway_may_hold_the_batch_keeps_it_submitting(
    engine: Engine, ledger: LedgerResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [batch_id] = approved_batches(engine, "paypal", "USD", ["10.00"], ["ann@example.com"])
    with payout_sandbox(tmp_path) as sandbox:
        paypal = submission_resources(sandbox, ledger, tmp_path / "outbox")["paypal_payouts"]

        def gateway_for(method: str) -> Any:
            return payout_gateway(method, paypal=paypal)

        # A create that answers 201 with a body that is not a batch: maybe taken.
        sandbox.fault(kind="raw", status=201, body="{}", path_prefix="/v1/payments/payouts")
        with pytest.raises(submission.SubmissionInterrupted, match="may hold it"):
            submission.submit(ledger.engine, gateway_for, batch_id, 1, "test")
        assert batch_row(engine, batch_id).status == "submitting"

        # Past the days the gateways remember a key, no create is sent again.
        monkeypatch.setattr(submission, "DEDUPE_SAFE_DAYS", -1)
        with pytest.raises(submission.SubmissionInterrupted, match="not sent again"):
            submission.submit(ledger.engine, gateway_for, batch_id, 1, "test")
        monkeypatch.undo()
        creates = len(sandbox.requests("POST", "/v1/payments/payouts"))
        result = submission.submit(ledger.engine, gateway_for, batch_id, 1, "test")
        assert result.status == "submitted"
        assert len(sandbox.requests("POST", "/v1/payments/payouts")) == creates + 1

        # A batch whose recorded id the gateway no longer finds is not created again.
        with sandbox.state.lock:
            sandbox.state.paypal_batches.clear()
        with db.write(engine) as conn:
            conn.execute(
                sa.update(payout_batches)
                .where(payout_batches.c.id == batch_id)
                .values(status="submitting")
            )
        with pytest.raises(submission.SubmissionInterrupted, match="does not find"):
            submission.submit(ledger.engine, gateway_for, batch_id, 1, "test")
        assert len(sandbox.requests("POST", "/v1/payments/payouts")) == creates + 1


def test_a_payee_changed_after_approval_is_not_paid_at_the_new_destination(
    engine: Engine, ledger: LedgerResource, tmp_path: Path
) -> None:
    [batch_id] = approved_batches(engine, "paypal", "USD", ["10.00"], ["ann@example.com"])
    beneficiary(
        engine, "paypal-usd-0", payout_method="paypal", destination="eve@example.com", country="DE"
    )
    before = books_state(engine)
    with payout_sandbox(tmp_path) as sandbox:
        paypal = submission_resources(sandbox, ledger, tmp_path / "outbox")["paypal_payouts"]
        with pytest.raises(LedgerError, match="payee paypal-usd-0's destination changed after"):
            submission.submit(
                ledger.engine, lambda m: payout_gateway(m, paypal=paypal), batch_id, 1, "test"
            )
        assert sandbox.requests(prefix="/v1/payments") == []
    assert books_state(engine) == before

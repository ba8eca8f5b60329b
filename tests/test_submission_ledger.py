"""The books' side of submitting a batch to a gateway (ledger/submission.py), on SQLite and PostgreSQL.

No gateway here: the answers a provider would give are plain values, as the
submission op hands them over.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import (
    approvals,
    balance,
    controls,
    db,
    migrate,
    reports,
    seals,
    state_machine,
    submission,
)
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.errors import (
    IllegalTransition,
    IneligiblePayee,
    InvalidInput,
    NotFound,
    PayoutsFrozen,
)
from finsup_dagster.ledger.payouts import idempotency_key
from finsup_dagster.ledger.schema import earnings, gateway_events, payout_batches
from tests.helpers.books import books_state
from tests.helpers.migrations import ledger_at
from tests.helpers.payouts import (
    Approver,
    approve,
    approver,
    batch_row,
    beneficiary,
    cancel_with_code,
    funded_ann_and_bob,
    item_rows,
    pending_batch,
    retry,
)

POLICY = BatchPolicy(min_item={"*": "1.00"}, dual_approval_over={"USD": "1000.00"})
H1, H2 = hashlib.sha256(b"first").hexdigest(), hashlib.sha256(b"second").hexdigest()


def usd(engine: Engine) -> balance.Balance:
    with db.read(engine) as conn:
        return balance.available_balances(conn, "USD")[0]


def logged(engine: Engine, action: str) -> list[dict[str, Any]]:
    with db.read(engine) as conn:
        return [r for r in reports.transaction_logs(conn, limit=10_000) if r["action"] == action]


def state(engine: Engine) -> dict[str, Any]:
    with db.read(engine) as conn:
        return {**books_state(conn), "batch_rows": conn.execute(sa.select(payout_batches)).all()}


@pytest.fixture
def approved(engine: Engine) -> tuple[Engine, str, Approver]:
    """USD 500 confirmed; one approved paypal batch paying ann 150 and bob 50 (version 1)."""
    funded_ann_and_bob(engine)
    [batch] = build_batches(engine, POLICY, "maker").batches
    carol = approver(engine, "carol")
    approve(engine, carol, batch["batch_id"])
    return engine, batch["batch_id"], carol


def prepare(engine: Engine, batch_id: str, payload_hash: str = H1) -> submission.Attempt:
    with db.write(engine) as conn:
        return submission.prepare_attempt(conn, batch_id, 1, payload_hash, "run-1")


def submitting(approved: tuple[Engine, str, Approver]) -> tuple[Engine, str, list[int]]:
    engine, batch_id, _ = approved
    attempt = prepare(engine, batch_id)
    return engine, batch_id, [line.item_id for line in attempt.lines]


def failed(approved: tuple[Engine, str, Approver]) -> tuple[Engine, str]:
    engine, batch_id, _ = submitting(approved)
    with db.write(engine) as conn:
        submission.record_submission_failed(
            conn, batch_id, "INSUFFICIENT_FUNDS\n at PayPal", "run-1"
        )
    return engine, batch_id


def retry_with(engine: Engine, who: Approver, batch_id: str, code: str | None = None) -> Any:
    """``retry`` under ``code`` at ``who``'s current time step, or under a fresh code."""
    return retry(engine, who, batch_id, code, now=who.t)


# --- prepare_attempt -----------------------------------------------------------------


def test_first_attempt_stores_key_and_hash_and_gives_full_destinations(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, _ = approved
    attempt = prepare(engine, batch_id)
    assert attempt.status == "submitting" and not attempt.resumed
    assert attempt.idempotency_key == idempotency_key(batch_id, 1) == f"{batch_id}-v1"
    assert (attempt.attempts, attempt.gateway_batch_id, attempt.method) == (1, None, "paypal")
    assert attempt.total_minor == 20_000
    assert sorted((ln.destination, ln.name, ln.amount_minor) for ln in attempt.lines) == [
        ("ann@example.com", "Ann", 15_000),
        ("bob@example.com", "Bob", 5_000),
    ]
    assert {(ln.currency, ln.method) for ln in attempt.lines} == {("USD", "paypal")}
    row = batch_row(engine, batch_id)
    assert (row.status, row.submission_hash, row.submission_attempts) == ("submitting", H1, 1)
    assert len(logged(engine, "batch_submitting")) == 1
    with db.read(engine) as conn:
        assert submission.lines_for(conn, batch_id) == attempt.lines


def test_resumed_attempt_returns_state_as_is_and_counts_it(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, _ = submitting(approved)
    with db.write(engine) as conn:
        submission.record_gateway_batch_id(conn, batch_id, "PB-123")
    again = prepare(engine, batch_id)
    assert again.resumed and again.status == "submitting"
    assert (again.attempts, again.gateway_batch_id) == (2, "PB-123")
    assert again.idempotency_key == f"{batch_id}-v1"
    assert len(logged(engine, "batch_submitting")) == 1, "a resumed attempt moves nothing"


def test_another_payload_under_the_same_key_is_refused_and_changes_nothing(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, _ = submitting(approved)
    before = state(engine)
    with pytest.raises(submission.PayloadChanged) as exc, db.write(engine) as conn:
        submission.prepare_attempt(conn, batch_id, 1, H2, "run-2")
    assert str(exc.value) == (
        f"batch {batch_id}: same idempotency key with a different payload; "
        "cancel it and create a new batch"
    )
    assert state(engine) == before


def test_freeze_and_screening_are_asked_again_on_a_resumed_attempt(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, _ = submitting(approved)
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, "cfo", "incident 7")
    before = state(engine)
    with pytest.raises(PayoutsFrozen, match=r"incident 7.*submitting batch"):
        prepare(engine, batch_id)
    assert state(engine) == before
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, False, "cfo", "resolved")
    beneficiary(engine, "bob", sanctions_status="sanctioned")
    before = state(engine)
    with pytest.raises(IneligiblePayee, match=r"pays (Bob|bob)"):
        prepare(engine, batch_id)
    assert state(engine) == before
    assert batch_row(engine, batch_id).submission_attempts == 1


@pytest.mark.parametrize("where", ["unknown", "pending", "stale version"])
def test_only_an_approved_or_submitting_batch_of_this_version_is_prepared(
    engine: Engine, where: str
) -> None:
    batch_id = pending_batch(engine, POLICY, "10.00")
    before = state(engine)
    with pytest.raises((NotFound, IllegalTransition)) as exc, db.write(engine) as conn:
        if where == "unknown":
            submission.prepare_attempt(conn, "pb_nope", 1, H1, "run")
        elif where == "pending":
            submission.prepare_attempt(conn, batch_id, 0, H1, "run")
        else:
            submission.prepare_attempt(conn, batch_id, 7, H1, "run")
    message = str(exc.value)
    assert "\n" not in message
    if where == "unknown":
        assert exc.type is NotFound and "pb_nope" in message
    else:
        assert exc.type is IllegalTransition
        assert f"batch {batch_id} is pending_approval" in message
    assert state(engine) == before


# --- gateway answers and ids ------------------------------------------------------------


def test_gateway_answers_are_kept_even_when_the_rest_rolls_back(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, _ = submitting(approved)
    answers = [
        ("submit.response", '{"batch_header": {"payout_batch_id": "PB-1"}}', 201),
        ("submit.error", "<html><body>502 Bad Gateway</body></html>", 502),
        ("submit.error", '{"name": "INTERNAL', 500),
        ("submit.error", b"\xff\xfe not utf-8", None),
    ]
    ids = []
    for kind, raw, code in answers:
        with db.write(engine) as conn:
            ids.append(submission.record_gateway_answer(conn, "paypal", batch_id, kind, raw, code))
        with pytest.raises(RuntimeError), db.write(engine) as conn:  # what follows fails
            submission.record_gateway_batch_id(conn, batch_id, "PB-1")
            raise RuntimeError("crash while recording the outcome")
    assert batch_row(engine, batch_id).gateway_batch_id is None
    with db.read(engine) as conn:
        rows = conn.execute(sa.select(gateway_events).order_by(gateway_events.c.id)).all()
        assert seals.verify(conn).ok
    assert [r.id for r in rows] == ids
    assert [(r.event_type, r.status_code) for r in rows] == [
        ("api.submit.response", 201),
        ("api.submit.error", 502),
        ("api.submit.error", 500),
        ("api.submit.error", None),
    ]
    assert all(r.event_id.startswith("call:") and r.resource_id == batch_id for r in rows)
    assert all(r.signature_valid and r.processed_at for r in rows)
    assert rows[1].payload == answers[1][1]
    assert rows[3].payload.endswith(" not utf-8")


def test_gateway_batch_id_is_stored_once(approved: tuple[Engine, str, Approver]) -> None:
    engine, batch_id, _ = submitting(approved)
    for _ in range(2):
        with db.write(engine) as conn:
            submission.record_gateway_batch_id(conn, batch_id, "PB-1")
    assert batch_row(engine, batch_id).gateway_batch_id == "PB-1"
    assert len(logged(engine, "batch_gateway_id_recorded")) == 1
    before = state(engine)
    with (
        pytest.raises(submission.GatewayIdMismatch, match="is PB-1 at the gateway, not PB-2"),
        db.write(engine) as conn,
    ):
        submission.record_gateway_batch_id(conn, batch_id, "PB-2")
    assert state(engine) == before


# --- record_submitted ---------------------------------------------------------------------


def test_record_submitted_moves_batch_and_items_once(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, item_ids = submitting(approved)
    gateway_ids: dict[int, str | None] = {item_ids[0]: "IT-1", item_ids[1]: None}
    committed = usd(engine).committed_minor
    with db.write(engine) as conn:
        submission.record_submitted(conn, batch_id, "PB-1", gateway_ids, "run-1")
    row = batch_row(engine, batch_id)
    assert (row.status, row.gateway_batch_id) == ("submitted", "PB-1")
    assert row.submitted_at is not None
    assert [(i.status, i.gateway_item_id) for i in item_rows(engine, batch_id)] == [
        ("submitted", "IT-1"),
        ("submitted", None),
    ]
    assert usd(engine).committed_minor == committed, "submitted money stays committed"
    assert len(logged(engine, "batch_submitted")) == 1
    assert len(logged(engine, "item_submitted")) == 2

    # A crash after that commit: the attempt runs again and finds the batch submitted.
    before = state(engine)
    again = prepare(engine, batch_id)
    assert (again.status, again.gateway_batch_id, again.attempts) == ("submitted", "PB-1", 1)
    with db.write(engine) as conn:
        submission.record_submitted(conn, batch_id, "PB-1", gateway_ids, "run-1-retry")
    assert state(engine) == before, "the same answer again changes and logs nothing"

    # A gateway item id learnt later fills in; another one for a known item is refused.
    with db.write(engine) as conn:
        submission.record_submitted(
            conn, batch_id, "PB-1", {item_ids[0]: "IT-1", item_ids[1]: "IT-2"}, "run-2"
        )
    assert [i.gateway_item_id for i in item_rows(engine, batch_id)] == ["IT-1", "IT-2"]
    before = state(engine)
    with pytest.raises(submission.GatewayIdMismatch), db.write(engine) as conn:
        submission.record_submitted(
            conn, batch_id, "PB-1", {item_ids[0]: "IT-9", item_ids[1]: "IT-2"}, "run-3"
        )
    with pytest.raises(submission.GatewayIdMismatch, match="PB-1"), db.write(engine) as conn:
        submission.record_submitted(conn, batch_id, "PB-9", gateway_ids, "run-3")
    with pytest.raises(InvalidInput, match="missing"), db.write(engine) as conn:
        submission.record_submitted(conn, batch_id, "PB-1", {item_ids[0]: "IT-1"}, "run-3")
    assert state(engine) == before


def test_items_become_submitted_only_with_their_batch(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, _ = approved
    items = [i.id for i in item_rows(engine, batch_id)]
    before = state(engine)
    with (
        pytest.raises(IllegalTransition, match=f"while its batch {batch_id} is approved"),
        db.write(engine) as conn,
    ):
        state_machine.move_item(conn, items[0], "submitted", "gateway")
    assert state(engine) == before
    with pytest.raises(IllegalTransition), db.write(engine) as conn:
        submission.record_submitted(conn, batch_id, "PB-1", dict.fromkeys(items), "run")
    assert state(engine) == before


# --- failure, retry, cancel ------------------------------------------------------------


def earning_statuses(engine: Engine) -> list[str]:
    with db.read(engine) as conn:
        return sorted(conn.execute(sa.select(earnings.c.status)).scalars())


def test_submission_failed_keeps_the_amount_reserved(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, _ = approved
    before = usd(engine)
    engine, batch_id = failed(approved)
    row = batch_row(engine, batch_id)
    assert (row.status, row.status_reason) == ("submission_failed", "INSUFFICIENT_FUNDS at PayPal")
    assert usd(engine) == before, "balance unchanged: the amount stays reserved"
    assert {i.status for i in item_rows(engine, batch_id)} == {"pending"}
    assert earning_statuses(engine) == ["batched"] * 3
    [log] = logged(engine, "batch_submission_failed")
    assert log["detail"]["reason"] == "INSUFFICIENT_FUNDS at PayPal"
    state_before = state(engine)
    with db.write(engine) as conn:  # recorded again by a resumed attempt: nothing new
        submission.record_submission_failed(conn, batch_id, "INSUFFICIENT_FUNDS at PayPal", "run-1")
    assert state(engine) == state_before
    with pytest.raises(IllegalTransition, match="submission_failed"), db.write(engine) as conn:
        submission.prepare_attempt(conn, batch_id, 1, H1, "run-2")
    assert state(engine) == state_before


def test_retry_approves_again_with_the_same_key_and_the_next_attempt_submits(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, carol = approved
    engine, batch_id = failed(approved)
    result = retry_with(engine, carol, batch_id)
    assert result == {
        "batch_id": batch_id,
        "status": "approved",
        "approval_version": 1,
        "idempotency_key": f"{batch_id}-v1",
    }
    row = batch_row(engine, batch_id)
    assert (row.status, row.status_reason, row.approval_version) == ("approved", None, 1)
    [log] = logged(engine, "batch_retry_approved")
    assert log["actor"] == "carol" and log["detail"]["from"] == "submission_failed"
    assert len(logged(engine, "batch_approved")) == 1, "a retry is not logged as an approval"

    attempt = prepare(engine, batch_id)
    assert (attempt.status, attempt.idempotency_key, attempt.attempts) == (
        "submitting",
        f"{batch_id}-v1",
        2,
    )
    with pytest.raises(submission.PayloadChanged), db.write(engine) as conn:
        submission.prepare_attempt(conn, batch_id, 1, H2, "run-3")
    with db.write(engine) as conn:
        submission.record_submitted(
            conn, batch_id, "PB-1", dict.fromkeys(i.id for i in item_rows(engine, batch_id)), "r"
        )
    assert batch_row(engine, batch_id).status == "submitted"


def test_retry_refusals_are_logged_and_change_nothing(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, carol = approved
    maker = approver(engine, "maker")  # also the batch's creator
    prepare(engine, batch_id)
    with pytest.raises(approvals.ApprovalRefused, match="is submitting; only a submission_failed"):
        retry_with(engine, carol, batch_id)
    with db.write(engine) as conn:
        submission.record_submission_failed(conn, batch_id, "refused", "run-1")
    before = state(engine)
    with pytest.raises(approvals.ApprovalRefused, match="maker created batch"):
        retry_with(engine, maker, batch_id)
    code, _ = carol.next_code()
    with pytest.raises(approvals.ApprovalRefused, match="wrong or expired"):
        retry_with(engine, carol, batch_id, code="000000" if code != "000000" else "000001")
    after = state(engine)
    assert (after["batch_rows"], after["balances"]) == (before["batch_rows"], before["balances"])
    retry_with(engine, carol, batch_id, code=code)
    assert batch_row(engine, batch_id).status == "approved"
    with pytest.raises(approvals.ApprovalRefused, match="already used"):
        retry_with(engine, carol, batch_id, code=code)
    assert len(logged(engine, "batch_retry_refused")) == 4
    assert len(logged(engine, "batch_retry_approved")) == 1


def test_cancelling_a_submission_failed_batch_needs_a_code_and_releases_it(
    approved: tuple[Engine, str, Approver],
) -> None:
    engine, batch_id, carol = approved
    engine, batch_id = failed(approved)
    reserved = usd(engine)
    with (
        pytest.raises(approvals.ApprovalRefused, match="submission_failed: cancelling it needs"),
        db.write(engine) as conn,
    ):
        approvals.cancel(conn, "ops", batch_id, "gateway says no", with_code=False)
    cancel_with_code(engine, carol, batch_id, "gateway says no")
    after = usd(engine)
    assert after.committed_minor == reserved.committed_minor - 20_000 == 0
    assert after.available_minor == reserved.available_minor + 20_000
    assert {i.status for i in item_rows(engine, batch_id)} == {"cancelled"}
    assert earning_statuses(engine) == ["accrued"] * 3, "the earnings accrue for a later batch"


# --- the migration ------------------------------------------------------------------------


def test_migration_0004_seals_existing_batches_with_the_new_columns(ledger_url: str) -> None:
    eng = ledger_at(ledger_url, "0002_revenue_changed_index")
    with eng.begin() as conn:  # a batch the old code wrote
        conn.execute(
            sa.text(
                "INSERT INTO payout_batches (id, method, currency, total_minor, item_count, "
                "status, required_approvals, approval_version, created_by, created_at, "
                "updated_at) VALUES ('pb_old', 'paypal', 'USD', 100, 1, 'approved', 1, 1, "
                "'maker', '2026-11-20T10:00:00.000000Z', '2026-11-20T10:00:00.000000Z')"
            )
        )
    migrate.upgrade(eng)
    with db.read(eng) as conn:
        assert seals.verify(conn).ok
        row = conn.execute(sa.select(payout_batches)).one()
    assert (row.submission_attempts, row.submission_hash, row.status_reason) == (0, None, None)
    eng.dispose()

"""The webhook receiver over real sockets, on SQLite and PostgreSQL.

What a finance team relies on: a provider's status reaches the books once,
whatever the network does to it (duplicates, replays, forgeries, garbage),
and every body that came in, accepted or refused, is kept to look at again.
A refusal changes nothing; an accepted event is stored before it is answered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from finsup_dagster.gateways.webhook_signing import signed_headers
from finsup_dagster.ledger import balance, db, payout_status
from finsup_dagster.web.pending import apply_stored
from tests.helpers.payout_sandbox import payout_sandbox
from tests.helpers.webhooks import (
    PAYONEER_WEBHOOK_SECRET,
    PAYPAL_SECRET,
    approved,
    events,
    items,
    log_actions,
    paypal_item_event,
    post_signed,
    receiver,
    settings,
    submit,
)


def books(engine: Engine) -> tuple[list[tuple[int, str]], int, list[str]]:
    """Items, the available balance and the log's money actions (a kept webhook row is
    sealed like every row, which logs ``rows_sealed``: that is not the books moving)."""
    with db.read(engine) as conn:
        available = balance.available_minor(conn, "USD")
    actions = [a for a in log_actions(engine) if a != "rows_sealed"]
    return [(i.id, i.status) for i in items(engine)], available, actions


@pytest.fixture
def submitted(engine: Engine, ledger_url: str, tmp_path: Path) -> tuple[int, str]:
    """A PayPal batch of one item, submitted to the sandbox: (item id, PayPal's item id)."""
    batch = approved(engine, "paypal", "ann@example.com")
    with payout_sandbox(tmp_path) as sandbox:
        submit(engine, sandbox, ledger_url, tmp_path, batch)
    [item] = items(engine)
    assert item.status == "submitted"
    return item.id, item.gateway_item_id


def test_an_event_is_applied_once_and_a_duplicate_changes_nothing(
    engine: Engine, submitted: tuple[int, str]
) -> None:
    item_id, gateway_item_id = submitted
    event = paypal_item_event(item_id, gateway_item_id=gateway_item_id)
    with receiver(engine) as url:
        first = post_signed(f"{url}/webhooks/paypal", event)
        after_first = books(engine)
        again = post_signed(f"{url}/webhooks/paypal", event)
    assert first.status_code == 200 and first.json()["status"] == "applied"
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert books(engine) == after_first
    assert [i.status for i in items(engine)] == ["paid"]
    [row] = events(engine)
    assert row.event_id == event["id"] and row.signature_valid and row.processed_at
    assert row.outcome == "applied" and json.loads(row.payload) == event


def test_a_late_earlier_status_is_ignored_and_a_return_after_success_moves_forward(
    engine: Engine, submitted: tuple[int, str]
) -> None:
    item_id, gid = submitted
    held = paypal_item_event(item_id, "ONHOLD", "PAYMENT.PAYOUTS-ITEM.HELD", gateway_item_id=gid)
    paid = paypal_item_event(item_id, gateway_item_id=gid)
    returned = paypal_item_event(
        item_id, "RETURNED", "PAYMENT.PAYOUTS-ITEM.RETURNED", gateway_item_id=gid
    )
    with receiver(engine) as url:
        assert post_signed(f"{url}/webhooks/paypal", paid).json()["status"] == "applied"
        with db.read(engine) as conn:
            after_paid = balance.available_minor(conn, "USD")
        assert post_signed(f"{url}/webhooks/paypal", held).json()["status"] == "ignored"
        assert [i.status for i in items(engine)] == ["paid"]
        assert post_signed(f"{url}/webhooks/paypal", returned).json()["status"] == "applied"
    assert [i.status for i in items(engine)] == ["returned"]
    with db.read(engine) as conn:
        assert balance.available_minor(conn, "USD") == after_paid + 1000  # released
    assert "item_status_ignored" in log_actions(engine)
    assert len(events(engine)) == 3


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("wrong_secret", "bad_signature"),
        ("no_signature", "missing_signature"),
        ("body_changed", "bad_signature"),
    ],
)
def test_a_forged_event_is_refused_401_kept_and_applies_nothing(
    engine: Engine, submitted: tuple[int, str], tamper: str, reason: str
) -> None:
    item_id, gid = submitted
    event = paypal_item_event(item_id, gateway_item_id=gid)
    before = books(engine)
    with receiver(engine) as url:
        target = f"{url}/webhooks/paypal"
        if tamper == "wrong_secret":
            resp = post_signed(target, event, "not-the-secret")
        elif tamper == "no_signature":
            resp = httpx.post(target, json=event)
        else:  # signed over one body, sent with another
            body = json.dumps(event).encode()
            headers = signed_headers(PAYPAL_SECRET, int(time.time()), body)
            resp = httpx.post(target, content=body.replace(b"SUCCESS", b"FAILED"), headers=headers)
        # The real event still gets in afterwards: the forgery did not take its id.
        real = post_signed(target, event)
    assert resp.status_code == 401 and resp.json() == {"error": reason}
    assert real.json()["status"] == "applied"
    refused, accepted = events(engine)
    assert refused.event_id.startswith("refused:") and not refused.signature_valid
    assert refused.outcome == f"refused:{reason}" and refused.processed_at is None
    assert refused.event_type == event["event_type"] or refused.event_type == "refused"
    assert accepted.event_id == event["id"]
    assert before[0] == [(item_id, "submitted")]


def test_a_replayed_old_event_is_refused_401_and_kept(
    engine: Engine, submitted: tuple[int, str]
) -> None:
    item_id, gid = submitted
    event = paypal_item_event(item_id, gateway_item_id=gid)
    before = books(engine)
    with receiver(engine, settings(max_age_seconds=60)) as url:
        resp = post_signed(f"{url}/webhooks/paypal", event, at=time.time() - 61)
    assert resp.status_code == 401 and resp.json() == {"error": "replay"}
    assert books(engine) == before
    [row] = events(engine)
    assert row.outcome == "refused:replay" and json.loads(row.payload) == event


def test_malformed_json_and_a_broken_event_are_refused_400_and_kept(engine: Engine) -> None:
    with receiver(engine) as url:
        garbage = post_signed(f"{url}/webhooks/paypal", b'{"id": "WH-1", "event_type": ')
        no_id = post_signed(f"{url}/webhooks/paypal", {"event_type": "PAYMENT.PAYOUTS-ITEM.FAILED"})
    assert garbage.status_code == 400 and garbage.json()["error"] == "malformed"
    assert no_id.status_code == 400 and "id" in no_id.json()["detail"]
    rows = events(engine)
    assert [r.outcome for r in rows] == ["refused:malformed"] * 2
    assert rows[0].payload == '{"id": "WH-1", "event_type": '
    assert rows[1].event_type == "PAYMENT.PAYOUTS-ITEM.FAILED"


def test_an_oversized_body_is_refused_413_and_kept_truncated(engine: Engine) -> None:
    big = {"id": "WH-big", "event_type": "PAYMENT.PAYOUTS-ITEM.FAILED", "pad": "x" * 10_000}
    with receiver(engine, settings(max_bytes=4096)) as url:
        resp = post_signed(f"{url}/webhooks/paypal", big)
    assert resp.status_code == 413 and resp.json() == {"error": "oversized"}
    [row] = events(engine)
    assert row.outcome == "refused:oversized" and len(row.payload) == 4096
    assert json.dumps(big).startswith(row.payload)


def test_an_unknown_event_type_is_accepted_kept_counted_and_changes_nothing(
    engine: Engine, submitted: tuple[int, str]
) -> None:
    before = books(engine)
    event = {"id": "WH-x", "event_type": "CUSTOMER.DISPUTE.CREATED", "resource": {}}
    batch_event = {
        "id": "WH-b",
        "event_type": "PAYMENT.PAYOUTSBATCH.SUCCESS",
        "resource": {"batch_header": {"payout_batch_id": "B123", "batch_status": "SUCCESS"}},
    }
    with receiver(engine) as url:
        resp = post_signed(f"{url}/webhooks/paypal", event)
        batch = post_signed(f"{url}/webhooks/paypal", batch_event)
        metrics = httpx.get(f"{url}/metrics").text
    assert resp.status_code == 200 and resp.json()["status"] == "unknown_event_type"
    assert batch.status_code == 200 and batch.json()["status"] == "batch_event"
    assert books(engine) == before
    unknown, batch_row = events(engine)
    assert unknown.outcome == "unknown_event_type" and unknown.processed_at
    assert batch_row.outcome == "batch_event" and batch_row.resource_id == "B123"
    assert (
        'finsup_webhooks_accepted_total{gateway="paypal",outcome="unknown_event_type"} 1.0'
        in metrics
    )


def test_an_event_for_an_item_not_yet_submitted_waits_and_is_applied_later(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    batch = approved(engine, "paypal", "ann@example.com")
    [item] = items(engine)
    event = paypal_item_event(item.id)  # overtook our own record of the submission
    nobody = paypal_item_event(987654)
    with receiver(engine) as url:
        early = post_signed(f"{url}/webhooks/paypal", event)
        stranger = post_signed(f"{url}/webhooks/paypal", nobody)
    assert early.status_code == 200 and early.json()["status"] == "unknown_item"
    assert stranger.json()["status"] == "unknown_item"
    with db.read(engine) as conn:
        waiting = [r.event_id for r in payout_status.unprocessed_events(conn)]
    assert waiting == [event["id"], nobody["id"]]
    assert [i.status for i in items(engine)] == ["pending"]

    with payout_sandbox(tmp_path) as sandbox:
        submit(engine, sandbox, ledger_url, tmp_path, batch)
    assert apply_stored(engine) == {"applied": 1, "unknown_item": 1}
    assert [i.status for i in items(engine)] == ["paid"]
    with db.read(engine) as conn:
        assert [r.event_id for r in payout_status.unprocessed_events(conn)] == [nobody["id"]]


def test_payoneer_events_are_verified_with_their_own_secret(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    batch = approved(engine, "payoneer", "PAYEE-7")
    with payout_sandbox(tmp_path) as sandbox:
        submit(engine, sandbox, ledger_url, tmp_path, batch)
    [item] = items(engine)
    event = {
        "event_id": "EVT-1",
        "event_type": "payout.transferred",
        "payout": {
            "client_reference_id": item.gateway_item_id,
            "payout_id": "123456789",
            "status": "Transferred",
        },
    }
    with receiver(engine) as url:
        wrong = post_signed(f"{url}/webhooks/payoneer", event, PAYPAL_SECRET)
        right = post_signed(f"{url}/webhooks/payoneer", event, PAYONEER_WEBHOOK_SECRET)
    assert wrong.status_code == 401
    assert right.status_code == 200 and right.json()["status"] == "applied"
    assert [i.status for i in items(engine)] == ["paid"]


def test_when_applying_fails_the_event_is_still_stored_before_the_2xx(
    engine: Engine, submitted: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    item_id, gid = submitted

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("state machine bug")

    monkeypatch.setattr(payout_status, "apply_report", broken)
    event = paypal_item_event(item_id, gateway_item_id=gid)
    with receiver(engine) as url:
        resp = post_signed(f"{url}/webhooks/paypal", event)
    assert resp.status_code == 200 and resp.json()["status"] == "stored"
    [row] = events(engine)
    assert row.event_id == event["id"] and row.processed_at is None
    assert [i.status for i in items(engine)] == ["submitted"]
    monkeypatch.undo()
    assert apply_stored(engine) == {"applied": 1}
    assert [i.status for i in items(engine)] == ["paid"]


def test_secrets_never_reach_the_stored_headers(engine: Engine, submitted: tuple[int, str]) -> None:
    event = paypal_item_event(*submitted)
    with receiver(engine) as url:
        post_signed(
            f"{url}/webhooks/paypal",
            event,
            headers={"Authorization": "Bearer tok-0x5EC", "Cookie": "session=0x5EC"},
        )
    [row] = events(engine)
    stored = json.loads(row.headers)
    assert "x-finsup-signature" in stored
    assert "0x5EC" not in row.headers and PAYPAL_SECRET not in row.headers


def test_healthz_and_metrics(engine: Engine, submitted: tuple[int, str]) -> None:
    with receiver(engine) as url:
        post_signed(f"{url}/webhooks/paypal", b"not json")
        health = httpx.get(f"{url}/healthz")
        metrics = httpx.get(f"{url}/metrics").text
    assert health.status_code == 200 and health.json()["ledger"] is True
    assert 'finsup_webhooks_refused_total{gateway="paypal",reason="malformed"} 1.0' in metrics
    assert 'finsup_payout_items{status="submitted"} 1.0' in metrics
    assert "finsup_available_balance_minor" in metrics

"""Settled revenue becomes confirmed revenue, and gateway fees are posted.

The reconciliation (dbt, in the warehouse) pairs revenue events with the
settlement lines that paid them. Here each pair is applied to the books:

- a projected event becomes confirmed through ``revenue.ingest``, so it takes
  the same forward-only path, journal entry and audit log as any status change;
  an event already confirmed is left alone, and nothing ever moves back;
- a fee the gateway kept becomes a ``fee`` revenue event, confirmed, one per
  settled event (natural key ``<external_id>:<kind>:fee``), which posts
  gateway fees against gateway clearing. Applying the same matches again
  finds every fee event already there and changes nothing;
- a fee the gateway gave back (a negative fee, e.g. on a refund) is a journal
  entry crediting gateway fees, referenced by the same key so it is posted once.

Events never matched are not touched: they stay projected.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import audit_log, db
from finsup_dagster.ledger.audit_log import LogRecord
from finsup_dagster.ledger.bulk import select_where_in
from finsup_dagster.ledger.journal import Account, debit_credit, post_entry
from finsup_dagster.ledger.revenue import EVENT_COLUMNS, RevenueEvent, event_hash, ingest
from finsup_dagster.ledger.schema import journal_entries, postings, revenue_events

FEE_CREDIT_REFERENCE = "settlement_fee_credit"


@dataclass(frozen=True)
class SettledMatch:
    event_hash: str
    fee_minor: int  # positive: the gateway kept it; negative: it gave it back
    fee_currency: str
    settled_on: str  # YYYY-MM-DD


@dataclass
class ConfirmationResult:
    confirmed: int = 0
    already_confirmed: int = 0
    missing: int = 0  # matched in the warehouse but not (or no longer) in the books
    fees_posted: int = 0
    fee_credits_posted: int = 0
    fees_already_posted: int = 0
    # Fees the books hold differently from tonight's match (a day re-run after a
    # later file changed the pairing): never overwritten, always reported.
    fee_conflicts: list[str] = field(default_factory=list)
    confirmed_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fees_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def fee_external_id(event: RevenueEvent) -> str:
    return f"{event.external_id}:{event.kind}:fee"


def confirm_matches(
    engine: Engine, matches: Sequence[SettledMatch], *, actor: str, run_label: str
) -> ConfirmationResult:
    result = ConfirmationResult()
    events = _events(engine, [m.event_hash for m in matches])
    result.missing = sum(1 for m in matches if m.event_hash not in events)
    to_confirm = []
    for m in matches:
        ev = events.get(m.event_hash)
        if ev is None:
            continue
        if ev.status == "projected":
            to_confirm.append(dataclasses.replace(ev, status="confirmed"))
        else:
            result.already_confirmed += 1
    if to_confirm:
        done = ingest(engine, enumerate(to_confirm, 1), source_file=run_label, actor=actor)
        result.confirmed = done.advanced
        for cur, amount in done.confirmed_minor.items():
            result.confirmed_minor[cur] += amount

    fees = [(m, events[m.event_hash]) for m in matches if m.event_hash in events and m.fee_minor]
    charged = [_fee_event(ev, m) for m, ev in fees if m.fee_minor > 0]
    if charged:
        done = ingest(engine, enumerate(charged, 1), source_file=run_label, actor=actor)
        result.fees_posted = done.inserted
        result.fees_already_posted += done.unchanged
        refused = {r.row for r in done.rejected}
        for n, fee in enumerate(charged, 1):
            if n in refused:
                result.fee_conflicts.append(
                    f"{fee.source}:{fee.external_id} is already posted with another amount, "
                    f"currency or date than {fee.amount_minor} {fee.currency} on {fee.occurred_at[:10]}"
                )
            else:
                result.fees_minor[fee.currency] += fee.amount_minor
    credits = [(m, ev) for m, ev in fees if m.fee_minor < 0]
    if credits:
        posted, seen = _post_fee_credits(engine, credits, actor, result.fee_conflicts)
        result.fee_credits_posted = posted
        result.fees_already_posted += seen
        for m, _ in credits:
            result.fees_minor[m.fee_currency] += m.fee_minor
    return result


def _events(engine: Engine, hashes: Iterable[str]) -> dict[str, RevenueEvent]:
    with db.read(engine) as conn:
        rows = select_where_in(
            conn, revenue_events, EVENT_COLUMNS, "event_hash", sorted(set(hashes))
        )
    return {r[0]: RevenueEvent(r[1], r[2], r[3], int(r[4]), r[5], r[6], r[7], r[0]) for r in rows}


def _fee_event(ev: RevenueEvent, m: SettledMatch) -> RevenueEvent:
    external_id = fee_external_id(ev)
    occurred_at = f"{m.settled_on}T00:00:00.000000Z"
    digest = event_hash(ev.source, external_id, m.fee_minor, m.fee_currency, occurred_at, "fee")
    return RevenueEvent(
        ev.source, external_id, "fee", m.fee_minor, m.fee_currency, occurred_at, "confirmed", digest
    )


def _post_fee_credits(
    engine: Engine,
    credits: Sequence[tuple[SettledMatch, RevenueEvent]],
    actor: str,
    conflicts: list[str],
) -> tuple[int, int]:
    posted = seen = 0
    with db.write(engine) as conn:
        keys = [f"{ev.source}:{fee_external_id(ev)}" for _, ev in credits]
        done = {
            r[0]: int(r[1])
            for r in conn.execute(
                sa.select(journal_entries.c.reference_id, sa.func.sum(postings.c.amount_minor))
                .join(postings, postings.c.entry_id == journal_entries.c.id)
                .where(
                    journal_entries.c.reference_type == FEE_CREDIT_REFERENCE,
                    journal_entries.c.reference_id.in_(keys),
                    postings.c.account == Account.GATEWAY_CLEARING,
                )
                .group_by(journal_entries.c.reference_id)
            )
        }
        log = []
        for (m, ev), key in zip(credits, keys, strict=True):
            if key in done:
                if done[key] != -m.fee_minor:
                    conflicts.append(
                        f"{key}: fee credit already posted as {done[key]}, "
                        f"tonight's match says {-m.fee_minor} {m.fee_currency}"
                    )
                else:
                    seen += 1
                continue
            entry = post_entry(
                conn,
                "settlement_fee_credit",
                f"gateway fee returned on {m.settled_on}",
                debit_credit(
                    Account.GATEWAY_CLEARING, Account.GATEWAY_FEES, m.fee_currency, -m.fee_minor
                ),
                reference=(FEE_CREDIT_REFERENCE, key),
            )
            log.append(
                LogRecord(
                    "settlement_fee_credit_posted",
                    "revenue_event",
                    ev.event_hash,
                    actor=actor,
                    amount_minor=-m.fee_minor,
                    currency=m.fee_currency,
                    detail={"entry_id": entry, "settled_on": m.settled_on},
                )
            )
            done[key] = -m.fee_minor
            posted += 1
        audit_log.append(conn, log)
    return posted, seen

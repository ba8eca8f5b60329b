"""Earnings whose funding revenue went away: held, released, cancelled or clawed back.

A confirmed sale stops funding its earnings when it is ``reversed``, or when a
confirmed refund or chargeback *names* it: the same ``source`` and
``external_id`` as the sale (the natural key lets one source id carry a sale
and its refund or chargeback, and that is how the sources we ingest link them).

What happens to an earning funded by such a sale depends on where it is:

- accrued: it becomes ``on_hold`` with the reason and the sale; batching skips it;
- in a batch not yet paid: it stays in its item, flagged with the reason; approval
  and submission refuse the batch (``ensure_batch_funded``); cancelling or
  denying the batch puts it ``on_hold``;
- paid: a clawback receivable from the beneficiary is posted
  (Dr assets:clawback_receivable, Cr expenses:beneficiary_payouts), at most the
  part of the earning the sale funded; batching nets it from the beneficiary's
  next payout items (see clawbacks.py).

An approver can release a held earning (it may then be paid despite its
funding) or cancel it. A release covers the causes known when it was given: a
later refund or reversal of the same funding holds the earning again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import audit_log, clock
from finsup_dagster.ledger.errors import FundingReversed, InvalidInput, NotFound
from finsup_dagster.ledger.journal import Account, debit_credit, post_entry
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.schema import (
    beneficiaries,
    clawbacks,
    earning_sources,
    earnings,
    payout_items,
    revenue_events,
)

_CHUNK = 500


@dataclass(frozen=True)
class Problem:
    """Why one sale no longer funds what it funds."""

    sale_hash: str
    cause: str  # "reversed", "refund" or "chargeback"
    since: str  # when the latest cause arrived (canonical UTC)
    exposure_minor: int  # how much of the sale is gone

    def reason(self, currency: str) -> str:
        gone = f"{format_minor(self.exposure_minor, currency)} {currency}"
        what = {
            "reversed": "was reversed",
            "refund": "was refunded",
            "chargeback": "was charged back",
        }[self.cause]
        return f"funding revenue event {self.sale_hash[:12]}… {what} ({gone} gone)"


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    it = iter(values)
    while part := list(islice(it, _CHUNK)):
        yield part


def sale_problems(
    conn: Connection, external_ids: Sequence[str] | None = None
) -> dict[str, Problem]:
    """Every sale that funds an earning and was reversed, refunded or charged back."""
    sale, cause = revenue_events.alias("sale"), revenue_events.alias("cause")
    funds = sa.exists().where(earning_sources.c.event_hash == sale.c.event_hash)
    reversed_q = sa.select(sale.c.event_hash, sale.c.status_changed_at, sale.c.amount_minor).where(
        sale.c.kind == "sale", sale.c.status == "reversed", funds
    )
    named_q = (
        sa.select(
            sale.c.event_hash,
            cause.c.kind,
            cause.c.status_changed_at,
            cause.c.amount_minor,
            sale.c.amount_minor,
        )
        .join(
            cause,
            sa.and_(cause.c.source == sale.c.source, cause.c.external_id == sale.c.external_id),
        )
        .where(
            sale.c.kind == "sale",
            sale.c.status == "confirmed",
            funds,
            cause.c.kind.in_(("refund", "chargeback")),
            cause.c.status == "confirmed",
        )
    )
    queries: list[tuple[Any, Any]] = []
    if external_ids is None:
        queries.append((reversed_q, named_q))
    else:
        for part in _chunks(sorted(set(external_ids))):
            queries.append(
                (
                    reversed_q.where(sale.c.external_id.in_(part)),
                    named_q.where(sale.c.external_id.in_(part)),
                )
            )
    out: dict[str, Problem] = {}
    for rq, nq in queries:
        found: Iterable[Any] = conn.execute(rq)
        for h, since, amount in found:
            out[h] = Problem(h, "reversed", since, int(amount))
        gone: dict[str, list[Any]] = defaultdict(list)
        named: Iterable[Any] = conn.execute(nq)
        for h, kind, since, amount, sale_amount in named:
            gone[h].append((kind, since, int(amount), int(sale_amount)))
        for h, causes in gone.items():
            latest = max(causes, key=lambda c: c[1])
            total = min(sum(c[2] for c in causes), causes[0][3])
            out[h] = Problem(h, latest[0], latest[1], total)
    return out


@dataclass(frozen=True)
class Affected:
    earning_id: int
    external_id: str
    status: str
    currency: str
    beneficiary_id: int
    payout_item_id: int | None
    funded_minor: int  # how much of the earning this sale funds
    problem: Problem


def affected_earnings(
    conn: Connection,
    external_ids: Sequence[str] | None = None,
    earning_ids: Sequence[int] | None = None,
) -> list[Affected]:
    """Earnings (not cancelled) with an unreleased funding problem, oldest first.

    An earning funded by several troubled sales is listed once per sale. Given
    earnings, only the sales they cite are looked at (an index lookup, not a scan).
    """
    if earning_ids is not None and external_ids is None:
        external_ids = _cited_external_ids(conn, earning_ids)
        if not external_ids:
            return []
    problems = sale_problems(conn, external_ids)
    if not problems:
        return []
    e, es = earnings.c, earning_sources.c
    base = (
        sa.select(
            e.id,
            e.external_id,
            e.status,
            e.currency,
            e.beneficiary_id,
            e.payout_item_id,
            e.funding_released_at,
            es.event_hash,
            es.amount_minor,
        )
        .join(earning_sources, es.earning_id == e.id)
        .where(e.status != "cancelled")
    )
    rows: list[Any] = []
    if earning_ids is not None:
        for part in _chunks(sorted(set(earning_ids))):
            rows += conn.execute(base.where(e.id.in_(part))).all()
    else:
        for part in _chunks(sorted(problems)):
            rows += conn.execute(base.where(es.event_hash.in_(part))).all()
    out = []
    for r in sorted(rows, key=lambda r: (r.id, r.event_hash)):
        p = problems.get(r.event_hash)
        if p is None or (r.funding_released_at is not None and r.funding_released_at >= p.since):
            continue
        out.append(
            Affected(
                r.id,
                r.external_id,
                r.status,
                r.currency,
                r.beneficiary_id,
                r.payout_item_id,
                int(r.amount_minor),
                p,
            )
        )
    return out


def _cited_external_ids(conn: Connection, earning_ids: Sequence[int]) -> list[str]:
    found: set[str] = set()
    for part in _chunks(sorted(set(earning_ids))):
        found.update(
            conn.execute(
                sa.select(revenue_events.c.external_id)
                .join(earning_sources, earning_sources.c.event_hash == revenue_events.c.event_hash)
                .where(earning_sources.c.earning_id.in_(part))
            ).scalars()
        )
    return sorted(found)


@dataclass
class HoldSummary:
    held: int = 0  # accrued earnings put on hold
    flagged: int = 0  # earnings in unpaid batches flagged
    clawed_back_minor: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "earnings_held": self.held,
            "batched_earnings_flagged": self.flagged,
            "clawed_back_minor": dict(sorted((self.clawed_back_minor or {}).items())),
        }


def apply_holds(
    conn: Connection,
    actor: str,
    external_ids: Sequence[str] | None = None,
    earning_ids: Sequence[int] | None = None,
) -> HoldSummary:
    """Holds, flags or claws back every earning whose funding went away (see the module doc).

    Idempotent: an earning already held for the same sale is left alone, and a
    clawback only ever tops up to what the sale funded.
    """
    summary = HoldSummary(clawed_back_minor={})
    paid: list[Affected] = []
    seen: set[int] = set()
    for a in affected_earnings(conn, external_ids, earning_ids):
        if a.status == "paid":
            paid.append(a)
            continue
        if a.earning_id in seen:
            continue  # one hold per earning: the first troubled sale names it
        seen.add(a.earning_id)
        current = conn.execute(
            sa.select(
                earnings.c.hold_reason, earnings.c.held_event_hash, earnings.c.funding_released_by
            ).where(earnings.c.id == a.earning_id)
        ).one()
        reason = a.problem.reason(a.currency)
        if a.status == "accrued" or (
            (current.hold_reason, current.held_event_hash) != (reason, a.problem.sale_hash)
            or current.funding_released_by is not None
        ):
            target = "on_hold" if a.status in ("accrued", "on_hold") else a.status
            conn.execute(
                sa.update(earnings)
                .where(earnings.c.id == a.earning_id)
                .values(
                    status=target,
                    hold_reason=reason,
                    held_event_hash=a.problem.sale_hash,
                    funding_released_by=None,
                    funding_released_at=None,
                )
            )
            if a.status == "accrued":
                summary.held += 1
            elif a.status == "batched":
                summary.flagged += 1
            audit_log.log(
                conn,
                "earning_held",
                "earning",
                a.external_id,
                actor=actor,
                detail={
                    "reason": reason,
                    "event_hash": a.problem.sale_hash,
                    "status": target,
                    "payout_item_id": a.payout_item_id,
                },
            )
    if paid and earning_ids is not None:
        # A sale's loss is shared over every paid earning it funds, not only those asked
        # about: look at all of them, or a second earning paid later would take it again.
        sales = {a.problem.sale_hash for a in paid}
        exts: Iterable[str] = conn.execute(
            sa.select(revenue_events.c.external_id).where(revenue_events.c.event_hash.in_(sales))
        ).scalars()
        paid = [
            a
            for a in affected_earnings(conn, external_ids=sorted(set(exts)))
            if a.status == "paid" and a.problem.sale_hash in sales
        ]
    for a, amount in _clawbacks_due(conn, paid):
        _post_clawback(conn, a, amount, actor)
        assert summary.clawed_back_minor is not None
        summary.clawed_back_minor[a.currency] = (
            summary.clawed_back_minor.get(a.currency, 0) + amount
        )
    return summary


def _clawbacks_due(conn: Connection, paid: list[Affected]) -> list[tuple[Affected, int]]:
    """Per paid earning and sale: what the sale's lost part takes back, less what is already owed.

    The exposure of a sale is shared over the paid earnings it funds, oldest first,
    each taking at most what the sale funded of it: a clawback is never more than
    what was paid.
    """
    if not paid:
        return []
    owed: dict[tuple[int, str], int] = defaultdict(int)
    for part in _chunks(sorted({a.earning_id for a in paid})):
        rows: Iterable[Any] = conn.execute(
            sa.select(
                clawbacks.c.earning_id, clawbacks.c.event_hash, clawbacks.c.amount_minor
            ).where(clawbacks.c.earning_id.in_(part), clawbacks.c.cleared_entry_id.is_(None))
        )
        for earning_id, h, amount in rows:
            owed[(earning_id, h)] += int(amount)
    left: dict[str, int] = {}
    due = []
    for a in paid:  # oldest earning first
        h = a.problem.sale_hash
        left.setdefault(h, a.problem.exposure_minor)
        share = min(left[h], a.funded_minor)
        left[h] -= share
        top_up = share - owed[(a.earning_id, h)]
        if top_up > 0:
            due.append((a, top_up))
    return due


def _post_clawback(conn: Connection, a: Affected, amount: int, actor: str) -> None:
    entry = post_entry(
        conn,
        "clawback_recorded",
        f"clawback of earning {a.external_id}: {a.problem.reason(a.currency)}",
        debit_credit(Account.CLAWBACK_RECEIVABLE, Account.BENEFICIARY_PAYOUTS, a.currency, amount),
        reference=("earning", a.external_id),
    )
    conn.execute(
        sa.insert(clawbacks).values(
            beneficiary_id=a.beneficiary_id,
            earning_id=a.earning_id,
            event_hash=a.problem.sale_hash,
            amount_minor=amount,
            currency=a.currency,
            entry_id=entry,
            created_at=clock.now(),
        )
    )
    audit_log.log(
        conn,
        "clawback_recorded",
        "earning",
        a.external_id,
        actor=actor,
        amount_minor=amount,
        currency=a.currency,
        detail={"event_hash": a.problem.sale_hash, "cause": a.problem.cause, "entry_id": entry},
    )


def clear_clawbacks(conn: Connection, earning_ids: Iterable[int], actor: str, why: str) -> None:
    """The payment a clawback took back came back itself: the beneficiary owes nothing for it."""
    ids = sorted(set(earning_ids))
    if not ids:
        return
    rows: Sequence[Any] = conn.execute(
        sa.select(
            clawbacks.c.id, clawbacks.c.amount_minor, clawbacks.c.currency, earnings.c.external_id
        )
        .join(earnings, earnings.c.id == clawbacks.c.earning_id)
        .where(clawbacks.c.earning_id.in_(ids), clawbacks.c.cleared_entry_id.is_(None))
        .order_by(clawbacks.c.id)
    ).all()
    for claw_id, amount, currency, ext in rows:
        entry = post_entry(
            conn,
            "clawback_cleared",
            f"clawback {claw_id} of earning {ext} cleared: {why}",
            debit_credit(
                Account.BENEFICIARY_PAYOUTS, Account.CLAWBACK_RECEIVABLE, currency, int(amount)
            ),
            reference=("earning", ext),
        )
        conn.execute(
            sa.update(clawbacks)
            .where(clawbacks.c.id == claw_id)
            .values(cleared_entry_id=entry, cleared_at=clock.now())
        )
        audit_log.log(
            conn,
            "clawback_cleared",
            "earning",
            ext,
            actor=actor,
            amount_minor=int(amount),
            currency=currency,
            detail={"clawback_id": claw_id, "reason": why, "entry_id": entry},
        )


def return_to_pool(conn: Connection, item_id: int, actor: str) -> list[int]:
    """An item's money was released: its earnings accrue again, or go on hold if unfunded.

    Returns the earnings it released (ascending): the link is gone from the rows, so
    the item's log row keeps it for whoever rebuilds the books as of an earlier instant.
    """
    ids: list[int] = sorted(
        conn.execute(sa.select(earnings.c.id).where(earnings.c.payout_item_id == item_id)).scalars()
    )
    if not ids:
        return ids
    conn.execute(
        sa.update(earnings)
        .where(earnings.c.id.in_(ids))
        .values(status="accrued", payout_item_id=None)
    )
    apply_holds(conn, actor, earning_ids=ids)
    return ids


def ensure_batch_funded(conn: Connection, batch_id: str) -> None:
    """Refuses a batch that pays an earning whose funding went away and was not released."""
    ids: list[int] = list(
        conn.execute(
            sa.select(earnings.c.id)
            .join(payout_items, payout_items.c.id == earnings.c.payout_item_id)
            .where(payout_items.c.batch_id == batch_id, earnings.c.status == "batched")
        ).scalars()
    )
    troubled = affected_earnings(conn, earning_ids=ids) if ids else []
    if troubled:
        a = troubled[0]
        more = f" (and {len(troubled) - 1} more)" if len(troubled) > 1 else ""
        raise FundingReversed(
            f"batch {batch_id} pays earning {a.external_id}{more} whose "
            f"{a.problem.reason(a.currency)}: release it (finsup release-earning) "
            "or cancel the batch"
        )


def _earning(conn: Connection, external_id: str) -> Any:
    row = conn.execute(sa.select(earnings).where(earnings.c.external_id == external_id)).first()
    if row is None:
        raise NotFound(f"no earning {external_id!r}")
    return row


def release(conn: Connection, approver: Any, external_id: str, reason: str) -> dict[str, Any]:
    """An approver lets a held earning be paid despite its funding; the caller checked the code."""
    if not reason.strip():
        raise InvalidInput("a reason is required to release an earning")
    row = _earning(conn, external_id)
    # An earning on hold is released whatever its funding is now: a refund reversed
    # since the hold leaves nothing troubled, and refusing then would leave the earning
    # held for good. A batched one is "held" only while its funding is troubled.
    held = row.status == "on_hold" or (
        row.status == "batched" and affected_earnings(conn, earning_ids=[row.id])
    )
    if not held:
        raise InvalidInput(
            f"earning {external_id} is {row.status} and not held: nothing to release"
        )
    if row.currency != approver.limit_currency or row.amount_minor > approver.limit_minor:
        limit = format_minor(approver.limit_minor, approver.limit_currency)
        raise InvalidInput(
            f"earning {external_id} of {format_minor(row.amount_minor, row.currency)} "
            f"{row.currency} is over {approver.name}'s limit of {limit} {approver.limit_currency}"
        )
    status = "accrued" if row.status == "on_hold" else row.status
    conn.execute(
        sa.update(earnings)
        .where(earnings.c.id == row.id)
        .values(status=status, funding_released_by=approver.name, funding_released_at=clock.now())
    )
    _log_decision(conn, "earning_released", row, approver, reason, status=status)
    return {"earning": external_id, "status": status, "released_by": approver.name}


def cancel(conn: Connection, approver: Any, external_id: str, reason: str) -> dict[str, Any]:
    """An approver cancels a held earning: it is never paid, and its funding is let go."""
    if not reason.strip():
        raise InvalidInput("a reason is required to cancel an earning")
    row = _earning(conn, external_id)
    if row.status != "on_hold":
        hint = " (cancel its batch first)" if row.status == "batched" else ""
        raise InvalidInput(
            f"earning {external_id} is {row.status}; only held earnings can be cancelled{hint}"
        )
    conn.execute(sa.update(earnings).where(earnings.c.id == row.id).values(status="cancelled"))
    _log_decision(conn, "earning_cancelled", row, approver, reason)
    return {"earning": external_id, "status": "cancelled"}


def _log_decision(
    conn: Connection, action: str, row: Any, approver: Any, reason: str, **detail: Any
) -> None:
    """The transaction-log row of an approver's decision on a held earning."""
    audit_log.log(
        conn,
        action,
        "earning",
        row.external_id,
        actor=approver.name,
        amount_minor=row.amount_minor,
        currency=row.currency,
        detail={"reason": reason, "hold_reason": row.hold_reason, **detail},
    )


def held_earnings(conn: Connection) -> list[dict[str, Any]]:
    """Earnings on hold, and those flagged inside a batch not yet released, oldest first."""
    e, b = earnings.c, beneficiaries.c
    rows = (
        conn.execute(
            sa.select(
                e.id,
                e.external_id,
                e.status,
                e.amount_minor,
                e.currency,
                e.hold_reason,
                e.held_event_hash,
                e.payout_item_id,
                e.earned_at,
                b.external_id.label("ben"),
                payout_items.c.batch_id,
            )
            .join(beneficiaries, b.id == e.beneficiary_id)
            .join(payout_items, payout_items.c.id == e.payout_item_id, isouter=True)
            .where(
                sa.or_(
                    e.status == "on_hold",
                    sa.and_(
                        e.status == "batched",
                        e.hold_reason.is_not(None),
                        e.funding_released_by.is_(None),
                    ),
                )
            )
            .order_by(e.earned_at, e.id)
        )
        .mappings()
        .all()
    )
    return [
        {
            "earning": r["external_id"],
            "beneficiary": r["ben"],
            "status": r["status"],
            "amount_minor": int(r["amount_minor"]),
            "currency": r["currency"],
            "reason": r["hold_reason"],
            "event_hash": r["held_event_hash"],
            "batch_id": r["batch_id"],
            "earned_at": r["earned_at"],
        }
        for r in rows
    ]

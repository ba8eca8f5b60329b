"""The later pass over stored webhooks: events accepted but not applied yet, applied now.

Why they wait: an event can overtake our own record of the submission (the
item is still ``pending`` in the books, or not there at all): ``apply_report``
answers ``unknown_item`` and the receiver keeps the row unprocessed. Also an
event whose applying failed is stored alone. This pass reads each such row
again (its raw body, exactly as received and verified), parses it with its
provider's parser and applies it, one transaction per event.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.gateways import webhooks_payoneer, webhooks_paypal
from finsup_dagster.gateways.exact_json import loads_exact
from finsup_dagster.gateways.webhook_events import MalformedEvent, ParsedEvent
from finsup_dagster.ledger import db, payout_status
from finsup_dagster.ledger.schema import gateway_events

PARSERS = {"paypal": webhooks_paypal.parse, "payoneer": webhooks_payoneer.parse}
NO_REPORT_OUTCOME = {"batch": "batch_event", "unknown": "unknown_event_type"}


def apply_stored(engine: Engine, gateway: str | None = None) -> Counter[str]:
    """Applies every accepted, unprocessed webhook it can; returns outcome -> count."""
    with db.read(engine) as conn:
        ids = [
            row.id
            for row in payout_status.unprocessed_events(conn, gateway)
            if row.gateway in PARSERS and not str(row.event_id).startswith("refused:")
        ]
    counts: Counter[str] = Counter()
    for row_id in ids:
        counts[apply_one(engine, row_id)] += 1
    return counts


def evaluate(
    conn: Connection,
    gateway: str,
    parsed: ParsedEvent,
    row_id: int | None = None,
    known: payout_status.KnownItems | None = None,
) -> tuple[str, bool]:
    """Applies an event's reports in the caller's transaction: (outcome, whether its row is
    closed). Not closed when an item was not known yet: a later pass tries again.
    ``known``: the items of the caller's group, read at once (``payout_status.find_items``)."""
    if not parsed.reports:
        return NO_REPORT_OUTCOME[parsed.kind], True
    results = {
        payout_status.apply_report(
            conn,
            replace(r, event_row_id=row_id, event_id=parsed.event_id),
            f"webhook:{gateway}",
            known=known,
        )
        for r in parsed.reports
    }
    return "+".join(sorted(results)), not results & payout_status.RETRY_LATER


def apply_event(conn: Connection, gateway: str, row_id: int, parsed: ParsedEvent) -> str:
    """Applies a stored event's reports (in the caller's transaction) and closes its row,
    unless an item was not known yet: then the row stays open for a later pass."""
    outcome, closed = evaluate(conn, gateway, parsed, row_id)
    if closed:
        payout_status.mark_processed(conn, row_id, outcome)
    else:
        payout_status.note_outcome(conn, row_id, outcome)  # why it waits, still open
    return outcome


def apply_one(engine: Engine, row_id: int) -> str:
    with db.write(engine) as conn:
        row = conn.execute(sa.select(gateway_events).where(gateway_events.c.id == row_id)).one()
        if row.processed_at is not None:  # another pass took it meanwhile
            return "already_processed"
        try:
            parsed = PARSERS[row.gateway](loads_exact(row.payload))
        except (MalformedEvent, ValueError):
            payout_status.mark_processed(conn, row_id, "malformed")
            return "malformed"
        return apply_event(conn, row.gateway, row_id, parsed)

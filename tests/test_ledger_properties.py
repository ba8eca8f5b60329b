"""Property tests for the ledger's invariants a finance team relies on, on SQLite and PostgreSQL.

1. Money is exact: a minor-unit amount formatted and parsed back is the same
   integer, however many trailing zeros it is written with; floats never get in.
2. An event has one identity: the same sale written with other whitespace,
   letter case, trailing zeros or UTC offset hashes the same; any change to
   what it is (source, id, amount, currency, instant, kind) hashes differently.
3. Ingestion is idempotent: any order, duplication, re-spelling and chunking
   of the same messages gives the same books as ingesting each event once
   with its furthest status; ingesting again changes nothing.
4. The journal always balances, and confirmed revenue in the balance report is
   exactly the confirmed events in ``revenue_events``.

What moves payouts (statuses only forward, nothing over-committed) is in
tests/test_payout_status_properties.py and tests/test_payout_workflow_properties.py;
the events, their spellings, the books and the model are in tests/helpers/.

Every example runs on empty books of its own (tests/helpers/books.py: FreshBooks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from finsup_dagster.ledger import audit_log, clock, db, journal, revenue
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.money import (
    CURRENCY_EXPONENTS,
    MAX_MINOR,
    exponent,
    format_minor,
    to_minor,
)
from finsup_dagster.ledger.schema import journal_entries, revenue_events
from tests.helpers import books
from tests.helpers.books import (
    FreshBooks,
    assert_balances_match_events,
    assert_journal_balanced,
    count,
    event_rows,
    ingest,
    nonzero_balances,
)
from tests.helpers.money_model import furthest
from tests.helpers.revenue_events import (
    KINDS,
    LEDGER_CURRENCIES,
    Ident,
    amount_spellings,
    external_ids,
    ident_lists,
    idents,
    plain,
    sources,
    statuses,
    written,
)

BIGINT_MAX = 2**63 - 1
DB_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PURE_SETTINGS = settings(max_examples=200, deadline=None)


@pytest.fixture
def fresh_books(ledger_url: str) -> Iterator[FreshBooks]:
    with books.fresh_books(ledger_url) as fresh:
        yield fresh


# --------------------------------------------------------------------------- 1. money


@PURE_SETTINGS
@given(currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)), minor=st.integers(0, MAX_MINOR))
def test_format_then_parse_is_the_same_minor_amount(currency: str, minor: int) -> None:
    text = format_minor(minor, currency)
    if minor == 0:
        with pytest.raises(InvalidInput, match="is zero"):
            to_minor(text, currency)
        return
    assert to_minor(text, currency) == minor
    assert to_minor(f" {text} ", currency) == minor


@PURE_SETTINGS
@given(
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    minor=st.integers(1, MAX_MINOR),
    data=st.data(),
)
def test_every_spelling_of_an_amount_parses_to_the_same_minor(
    currency: str, minor: int, data: st.DataObject
) -> None:
    spelling = data.draw(amount_spellings(minor, currency))
    assert to_minor(spelling, currency) == minor
    # One more significant digit than the currency has is refused, never rounded.
    finer = format_minor(minor, currency) + ("" if exponent(currency) else ".") + "1"
    with pytest.raises(InvalidInput):
        to_minor(finer, currency)


@PURE_SETTINGS
@given(
    amount=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.decimals(allow_nan=False, allow_infinity=False),
        st.integers(),
    ),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
def test_numbers_are_refused_only_decimal_strings_are_money(amount: object, currency: str) -> None:
    with pytest.raises(InvalidInput, match="must be a decimal string"):
        to_minor(amount, currency)


@PURE_SETTINGS
@example(text="92233720368547758.08", currency="USD")  # 2**63 cents
@given(
    text=st.integers(1, 10**21).map(str),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
def test_every_accepted_amount_fits_the_books(text: str, currency: str) -> None:
    try:
        minor = to_minor(text, currency)
    except InvalidInput:
        return
    assert minor <= BIGINT_MAX


# --------------------------------------------------------------------------- 2. event hash


@PURE_SETTINGS
@given(ident=idents(), status=statuses, other_status=statuses, data=st.data())
def test_event_hash_ignores_spelling_and_status(
    ident: Ident, status: str, other_status: str, data: st.DataObject
) -> None:
    one = revenue.parse_event(data.draw(written(ident, status)))
    two = revenue.parse_event(data.draw(written(ident, other_status)))
    assert one.event_hash == two.event_hash == ident.documented_hash
    assert (one.source, one.external_id, one.kind, one.currency, one.amount_minor) == (
        ident.source,
        ident.external_id,
        ident.kind,
        ident.currency,
        ident.amount_minor,
    )
    assert one.occurred_at == clock.canonical(ident.occurred_at)
    assert (one.status, two.status) == (status, other_status)


@st.composite
def changed_idents(draw: st.DrawFn, ident: Ident) -> Ident:
    """``ident`` with exactly one identity field changed."""
    field = draw(
        st.sampled_from(
            ("source", "external_id", "kind", "currency", "amount_minor", "occurred_at")
        )
    )
    if field == "source":
        return replace(ident, source=ident.source + draw(sources))
    if field == "external_id":
        return replace(ident, external_id=ident.external_id + draw(external_ids))
    if field == "kind":
        return replace(ident, kind=draw(st.sampled_from(KINDS).filter(lambda k: k != ident.kind)))
    if field == "currency":
        others = [c for c in LEDGER_CURRENCIES if c != ident.currency]
        return replace(ident, currency=draw(st.sampled_from(others)))
    if field == "amount_minor":
        amount = draw(st.integers(1, 10**7).filter(lambda a: a != ident.amount_minor))
        return replace(ident, amount_minor=amount)
    step = draw(st.integers(1, 10**12)) * draw(st.sampled_from((-1, 1)))
    return replace(ident, occurred_at=ident.occurred_at + timedelta(microseconds=step))


@PURE_SETTINGS
@given(ident=idents(), data=st.data())
def test_event_hash_changes_with_any_identity_field(ident: Ident, data: st.DataObject) -> None:
    changed = data.draw(changed_idents(ident))
    one = revenue.parse_event(data.draw(written(ident, "projected")))
    two = revenue.parse_event(data.draw(written(changed, "projected")))
    assert one.event_hash != two.event_hash
    assert two.event_hash == changed.documented_hash


@PURE_SETTINGS
@example(ident=Ident("a" * 65, "x", "sale", "USD", 100, datetime(2024, 1, 1, tzinfo=UTC)))
@given(ident=idents())
def test_every_accepted_event_fits_the_columns(ident: Ident) -> None:
    try:
        ev = revenue.parse_event(plain(ident, "projected"))
    except InvalidInput:
        return  # refusing is fine; what is accepted must fit
    t = revenue_events.c
    for column, value in (
        (t.source, ev.source),
        (t.external_id, ev.external_id),
        (t.kind, ev.kind),
        (t.currency, ev.currency),
    ):
        assert isinstance(column.type, sa.String)
        assert column.type.length is not None
        assert len(value) <= column.type.length, column.name
    assert ev.amount_minor <= BIGINT_MAX


@PURE_SETTINGS
@example(field="external_id", value="\ud800")
@example(field="occurred_at", value="0001-01-01T00:00:00+01:00")
@given(field=st.sampled_from(revenue.FIELDS), value=st.text(max_size=40))
def test_parse_event_refuses_bad_input_with_invalid_input_only(field: str, value: str) -> None:
    ident = Ident("gw", "e-1", "sale", "USD", 100, datetime(2024, 1, 1, tzinfo=UTC))
    raw = plain(ident, "projected") | {field: value}
    with suppress(InvalidInput):
        revenue.parse_event(raw)


@PURE_SETTINGS
@example(earlier=datetime(999, 5, 1, tzinfo=UTC), later=datetime(2024, 1, 1, tzinfo=UTC))
@given(
    earlier=st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC)),
    later=st.datetimes(max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
)
def test_canonical_instants_sort_in_time_order(earlier: datetime, later: datetime) -> None:
    """Stored instants compare as text (String(27)), so text order must be time order."""
    if earlier > later:
        earlier, later = later, earlier
    first, second = clock.canonical(earlier), clock.canonical(later)
    assert first <= second
    assert len(first) == len(second) == 27
    assert clock.parse_instant(first) == first


# --------------------------------------------------------------------------- 3. idempotence


@st.composite
def replays(draw: st.DrawFn) -> tuple[list[tuple[Ident, str]], list[tuple[Ident, str]]]:
    """(offers, replay): every (event, status) offered, and a shuffled, duplicated superset."""
    pool = draw(ident_lists())
    offers = [
        (ident, status)
        for ident in pool
        for status in draw(st.lists(statuses, min_size=1, max_size=3))
    ]
    extra = draw(st.lists(st.sampled_from(offers), max_size=len(offers)))
    replay = draw(st.permutations(offers + extra))
    return offers, replay


@DB_SETTINGS
@given(case=replays(), chunk_size=st.integers(1, 6), data=st.data())
def test_ingestion_is_idempotent_under_order_duplication_spelling_and_chunking(
    fresh_books: FreshBooks,
    case: tuple[list[tuple[Ident, str]], list[tuple[Ident, str]]],
    chunk_size: int,
    data: st.DataObject,
) -> None:
    offers, replay = case
    best = furthest(offers)

    with fresh_books() as engine:
        ingest(engine, [plain(i, s) for i, s in best.items()], chunk_size=10_000)
        with db.read(engine) as conn:
            canonical_events = event_rows(conn)
            canonical_balances = nonzero_balances(conn)
    assert {(row[0], row[-1]) for row in canonical_events} == {
        (i.documented_hash, s) for i, s in best.items()
    }

    raws = [data.draw(written(i, s)) for i, s in replay]
    with fresh_books() as engine:
        ingest(engine, raws, chunk_size=chunk_size)
        with db.read(engine) as conn:
            assert event_rows(conn) == canonical_events
            assert nonzero_balances(conn) == canonical_balances
            assert_journal_balanced(conn)
            before = (journal.account_balances(conn), count(conn, journal_entries))

        again = ingest(engine, raws, chunk_size=chunk_size)
        assert (again.inserted, again.advanced) == (0, 0)
        assert dict(again.confirmed_minor) == {}
        with db.read(engine) as conn:
            assert event_rows(conn) == canonical_events
            after = (journal.account_balances(conn), count(conn, journal_entries))
            assert after == before
            assert audit_log.verify(conn).ok


# --------------------------------------------------------------------------- 4. balanced journal


@DB_SETTINGS
@given(
    pool=ident_lists(max_size=10),
    rounds=st.lists(
        st.tuples(st.lists(st.tuples(st.integers(0, 9), statuses), max_size=8), st.integers(1, 5)),
        min_size=1,
        max_size=4,
    ),
    data=st.data(),
)
def test_journal_balances_and_matches_confirmed_events_after_any_ingestion(
    fresh_books: FreshBooks,
    pool: list[Ident],
    rounds: list[tuple[list[tuple[int, str]], int]],
    data: st.DataObject,
) -> None:
    offered: list[tuple[Ident, str]] = []
    with fresh_books() as engine:
        for picks, chunk_size in rounds:
            offers = [(pool[i % len(pool)], status) for i, status in picks]
            offered += offers
            ingest(engine, [data.draw(written(i, s)) for i, s in offers], chunk_size)
            with db.read(engine) as conn:
                assert_journal_balanced(conn)
                assert_balances_match_events(conn)
                stored = {row[0]: row[-1] for row in event_rows(conn)}
            assert stored == {i.documented_hash: s for i, s in furthest(offered).items()}

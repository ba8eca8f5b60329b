"""Revenue events for property tests: identities, the ways they can be written, strategies.

An ``Ident`` is what an event is in canonical form (the fields its hash
covers); ``written`` draws one of the many spellings a gateway or a file may
use for it, ``plain`` is the canonical one.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from finsup_dagster.ledger.money import format_minor
from finsup_dagster.sample_data.expected import revenue_record
from tests.helpers.money_model import STATUS_RANK

KINDS = ("sale", "refund", "fee", "chargeback")
DEDUCTION_KINDS = ("refund", "fee", "chargeback")
LEDGER_CURRENCIES = ("USD", "EUR", "JPY", "KWD")  # exponents 2, 2, 0 and 3


@dataclass(frozen=True)
class Ident:
    """What an event is, in canonical form (the fields its hash covers)."""

    source: str
    external_id: str
    kind: str
    currency: str
    amount_minor: int
    occurred_at: datetime  # aware, UTC

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return (self.external_id, self.source, self.kind)

    @property
    def documented_hash(self) -> str:
        """The hash as the revenue module docstring specifies it, computed independently."""
        instant = f"{self.occurred_at.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z"
        fields = (
            "finsup-revenue-v1",
            self.source,
            self.external_id,
            str(self.amount_minor),
            self.currency,
            instant,
            self.kind,
        )
        return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


sources = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=20)
# Anything printable: no control characters, no surrogates, no whitespace (stripped on input).
external_ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=24,
)
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
statuses = st.sampled_from(tuple(STATUS_RANK))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
AMOUNTS = st.integers(1, 10**6)
pads = st.sampled_from(("", " ", "  ", "\t", " \t "))


@st.composite
def idents(
    draw: st.DrawFn,
    currencies: tuple[str, ...] = LEDGER_CURRENCIES,
    kinds: tuple[str, ...] = KINDS,
    sales: st.SearchStrategy[int] = AMOUNTS,
    deductions: st.SearchStrategy[int] = AMOUNTS,
) -> Ident:
    kind = draw(st.sampled_from(kinds))
    return Ident(
        source=draw(sources),
        external_id=draw(external_ids),
        kind=kind,
        currency=draw(st.sampled_from(currencies)),
        amount_minor=draw(sales if kind == "sale" else deductions),
        occurred_at=draw(instants),
    )


def ident_lists(min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[list[Ident]]:
    return st.lists(
        idents(), min_size=min_size, max_size=max_size, unique_by=lambda i: i.natural_key
    )


@st.composite
def amount_spellings(draw: st.DrawFn, minor: int, currency: str) -> str:
    """Ways to write the same amount: trailing zeros added or dropped, leading zeros."""
    text = format_minor(minor, currency)
    whole, _, frac = text.partition(".")
    frac = draw(st.sampled_from((frac, frac.rstrip("0"), frac + "0" * draw(st.integers(1, 4)))))
    whole = "0" * draw(st.integers(0, 2)) + whole
    return f"{whole}.{frac}" if frac else whole


@st.composite
def case_spellings(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(ch.swapcase() if flip else ch for ch, flip in zip(text, flips, strict=True))


@st.composite
def instant_spellings(draw: st.DrawFn, instant: datetime) -> str:
    """The same instant at another UTC offset, with or without microseconds, Z or +00:00."""
    local = instant.astimezone(draw(offsets))
    text = local.isoformat(
        sep=draw(st.sampled_from(("T", " "))),
        timespec=draw(st.sampled_from(("auto", "microseconds"))),
    )
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[: -len("+00:00")] + "Z"
    return text


@st.composite
def written(draw: st.DrawFn, ident: Ident, status: str) -> dict[str, str]:
    """One way a gateway or a file could write ``ident`` with ``status``."""

    def pad(text: str) -> str:
        return draw(pads) + text + draw(pads)

    return {
        "source": pad(draw(case_spellings(ident.source))),
        "external_id": pad(ident.external_id),
        "amount": pad(draw(amount_spellings(ident.amount_minor, ident.currency))),
        "currency": pad(draw(case_spellings(ident.currency))),
        "occurred_at": pad(draw(instant_spellings(ident.occurred_at))),
        "kind": pad(draw(case_spellings(ident.kind))),
        "status": pad(draw(case_spellings(status))),
    }


def plain(ident: Ident, status: str) -> dict[str, str]:
    """The canonical spelling (the one the sample generator writes)."""
    return revenue_record(**asdict(ident), status=status)

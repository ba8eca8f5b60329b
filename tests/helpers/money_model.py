"""The books as the documented rules have them, in plain Python: what the property tests expect.

Every payout machine keeps a ``BooksModel`` beside the real books and checks
them against it after each step. The rules are pinned here (from the docstrings
of ``revenue``, ``state_machine``, ``balance`` and ``batching``), never read from
the modules under test:

- a revenue event's status only advances (projected < confirmed < reversed) and
  the books hold each event at the furthest status offered for it;
- confirmed revenue is the confirmed sales; confirmed deductions are the
  confirmed refunds, fees and chargebacks;
- an item's money is committed (reserved for the beneficiary), paid (gone out)
  or released (given back), by its status; a batch that ends without paying
  cancels its open items; a batch the gateway refused (submission_failed)
  moves no item, so its money stays committed until it is cancelled;
- an item becomes submitted only while its batch is submitting or submitted;
- available = confirmed sales - confirmed deductions - reserve - what committed
  and paid items pay out;
- what a beneficiary owes back (clawbacks) is netted from their next item,
  leaving at least the minimum item paid.

A new money path goes here once, and every machine's invariants see it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.helpers.revenue_events import Ident

STATUS_RANK = {"projected": 0, "confirmed": 1, "reversed": 2}
# Where an item's money is (state_machine docstring), pinned here rather than read from
# the module under test: reserved for the beneficiary, gone out, or given back.
ITEM_MONEY_CLASS = {
    **dict.fromkeys(("pending", "submitted", "processing", "unclaimed", "held"), "committed"),
    "paid": "paid",
    **dict.fromkeys(
        ("failed", "returned", "blocked", "refunded", "denied", "cancelled"), "released"
    ),
}
# A batch that ends without paying cancels its open items (state_machine docstring).
BATCH_ITEM_CASCADE = {"denied": "cancelled", "cancelled": "cancelled"}
# An item is submitted only with its batch: while the batch is submitting or submitted.
ITEM_NEEDS_BATCH = {"submitted": frozenset({"submitting", "submitted"})}


def advances(status: str, than: str | None) -> bool:
    """Whether ``status`` is further than ``than`` (no status yet: anything is)."""
    return than is None or STATUS_RANK[status] > STATUS_RANK[than]


def furthest(offers: Iterable[tuple[Ident, str]]) -> dict[Ident, str]:
    """Each event at the furthest status it was offered with."""
    best: dict[Ident, str] = {}
    for ident, status in offers:
        if advances(status, best.get(ident)):
            best[ident] = status
    return best


def netted(gross_minor: int, owed_minor: int, min_item_minor: int) -> int:
    """What is netted from an item of ``gross_minor`` for a beneficiary who owes
    ``owed_minor``: as much as they owe, leaving at least the minimum item paid."""
    return max(0, min(owed_minor, gross_minor - min_item_minor))


@dataclass
class ItemModel:
    batch_id: str
    currency: str
    amount_minor: int
    status: str
    beneficiary: str = ""
    earnings: list[str] = field(default_factory=list)  # the earnings it pays
    netted_minor: int = 0  # clawbacks netted from it

    @property
    def money_class(self) -> str:
        return ITEM_MONEY_CLASS[self.status]


@dataclass
class BatchModel:
    status: str
    total_minor: int
    items: list[int]  # item ids
    required: int = 1  # approvals
    approved_by: set[str] = field(default_factory=set)
    version: int = 0  # approval version
    idempotency_key: str | None = None


@dataclass
class BooksModel:
    """Revenue offered, reserves, the kill switch and payout items, as the books should have them."""

    pool: list[Ident] = field(default_factory=list)  # every event a run talks about
    offered: dict[str, str] = field(default_factory=dict)  # event hash -> furthest status
    reserve: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: dict[str, BatchModel] = field(default_factory=dict)
    items: dict[int, ItemModel] = field(default_factory=dict)
    frozen: bool = False

    def offer(self, offers: Iterable[tuple[Ident, str]]) -> None:
        for ident, status in offers:
            h = ident.documented_hash
            if advances(status, self.offered.get(h)):
                self.offered[h] = status

    def status(self, ident: Ident) -> str | None:
        return self.offered.get(ident.documented_hash)

    def confirmed(self, currency: str) -> tuple[int, int]:
        """(confirmed sales, confirmed deductions) in ``currency``."""
        sales = deductions = 0
        for ident in self.pool:
            if ident.currency == currency and self.status(ident) == "confirmed":
                if ident.kind == "sale":
                    sales += ident.amount_minor
                else:
                    deductions += ident.amount_minor
        return sales, deductions

    def items_in(self, currency: str, *money_classes: str) -> int:
        """What the items in ``currency`` whose money is in ``money_classes`` pay out."""
        return sum(
            i.amount_minor
            for i in self.items.values()
            if i.currency == currency and i.money_class in money_classes
        )

    def committed(self, currency: str) -> int:
        """Money committed: what committed or paid items pay out (netted clawbacks are not)."""
        return self.items_in(currency, "committed", "paid")

    def available(self, currency: str) -> int:
        sales, deductions = self.confirmed(currency)
        return sales - deductions - self.reserve[currency] - self.committed(currency)

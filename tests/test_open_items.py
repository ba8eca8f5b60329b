"""A night started from the previous night's open items reconciles exactly as one started
from the whole history (docs/reconciliation.md, "Open items").

Real `dbt build`s on a DuckDB warehouse filled the way landing and the replica fill it
(a landing number per settlement file, a copy number per warehouse copy of the books),
over a week of nights with everything that can arrive late, early or change: lines landed
days after they settled or the day before, events copied into the warehouse days after
they occurred or the day before, events reversed or confirmed after they were first
copied, duplicates, lines without an id,
lines naming no event, events never settled. Every night is built twice from the same
state: the normal way (from the previous night when it can) and with
``open_items_from_previous_night: false`` (the whole history); every mart's slice for the
night must be the same, row for row. A night rebuilt out of order sends the nights after
it back to the full way until the chain is whole again.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from finsup_dagster.sample_data.expected import MatchEvent
from finsup_dagster.warehouse import raw, replica
from tests.helpers.dbt_runner import dbt_command
from tests.helpers.warehouse_rows import insert_raw_line, insert_replica_event

START = date(2025, 3, 1)
MARTS = (
    "reconciliation_matches",
    "reconciliation_open_lines",
    "reconciliation_open_events",
    "reconciliation_exceptions",
    "reconciliation_summary",
)


def day(n: int) -> str:
    return (START + timedelta(days=n)).isoformat()


def event(
    event_hash: str,
    source: str,
    external_id: str,
    kind: str,
    amount_minor: int,
    currency: str,
    occurred: int,
    status: str = "projected",
) -> MatchEvent:
    """An event of day number ``occurred``, at 10:00 UTC (the matching rules' own event)."""
    at = f"{day(occurred)}T10:00:00.000000Z"
    return MatchEvent(
        event_hash, source, external_id, kind, amount_minor, currency, occurred, at, status
    )


@dataclass
class Line:
    table: str  # settlement_csv (names its gateway) or camt053 (names none)
    gateway: str | None
    gateway_txn_id: str | None
    kind: str
    gross_minor: int
    currency: str
    settled: int  # day number
    landed: int  # day number its file landed for


@dataclass
class Scenario:
    events: list[MatchEvent]
    copied_on: dict[str, int]  # event hash -> day first copied into the warehouse
    reversed_on: dict[str, int]  # event hash -> day its reversal was copied
    confirmed_on: dict[str, int]  # event hash -> day the gateway confirmed it, unsettled
    lines: list[Line] = field(default_factory=list)


def scenario(seed: int, days: int) -> Scenario:
    rng = random.Random(seed)
    events: list[MatchEvent] = []
    copied_on: dict[str, int] = {}
    reversed_on: dict[str, int] = {}
    confirmed_on: dict[str, int] = {}
    lines: list[Line] = []
    for d in range(days):
        for n in range(14):
            ev = event(
                event_hash=f"{seed:04d}{d:03d}{n:03d}".ljust(64, "0"),
                source=rng.choice(["stripe", "paddle"]),
                # A small pool of ids: some are named by two events (two sources, two days).
                external_id=f"T{rng.randrange(60)}",
                kind=rng.choice(["sale", "sale", "sale", "refund"]),
                amount_minor=rng.choice([500, 500, 1200, 990, 2500]),
                currency=rng.choice(["USD", "USD", "EUR"]),
                occurred=d,
            )
            events.append(ev)
            # Most events are in the warehouse the day they occur; some days later, and
            # some the day before (stamped just after midnight, copied before the night ran).
            copied_on[ev.event_hash] = max(0, d + rng.choices([0, 1, 2, -1], [80, 6, 6, 8])[0])
            if rng.random() < 0.06:
                reversed_on[ev.event_hash] = d + rng.choice([1, 2, 3])
            fate = rng.random()
            if fate < 0.06:  # never settled; some reversed or confirmed while open
                if rng.random() < 0.4:
                    reversed_on[ev.event_hash] = copied_on[ev.event_hash] + rng.choice([1, 4])
                elif rng.random() < 0.5:
                    confirmed_on[ev.event_hash] = copied_on[ev.event_hash] + rng.choice([1, 4])
                continue
            settled = d + rng.choice([0, 0, 1, 2])
            # Most lines land the day they settle; some days later, and some the day before
            # (a report dated ahead).
            landed = max(0, settled + rng.choices([0, 1, 2, -1], [80, 6, 6, 8])[0])
            camt = rng.random() < 0.2
            line = Line(
                table="camt053" if camt else "settlement_csv",
                gateway=None if camt else ev.source,
                gateway_txn_id=None if rng.random() < 0.15 else ev.external_id,
                kind=ev.kind,
                gross_minor=ev.amount_minor + (7 if fate < 0.09 else 0),
                currency=("GBP" if fate < 0.11 and fate >= 0.09 else ev.currency),
                settled=settled,
                landed=landed,
            )
            lines.append(line)
            if rng.random() < 0.05:  # the same line again a day later: a duplicate
                lines.append(replace(line, settled=settled + 1, landed=landed + 1))
        for n in range(2):  # lines that name no event
            lines.append(
                Line("settlement_csv", "stripe", f"G{seed}-{d}-{n}", "sale", 700, "USD", d, d)
            )
    return Scenario(events, copied_on, reversed_on, confirmed_on, lines)


class Warehouse:
    """A warehouse file filled as landing and the replica fill it, and dbt builds on it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "warehouse.duckdb"
        folder.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(self.path)) as conn:
            raw.ensure_schema(conn)
            replica.ensure_schema(conn)

    def land(self, lines: list[Line], d: int) -> None:
        """Day ``d``'s files: one per table, each with the next landing number."""
        with duckdb.connect(str(self.path)) as conn:
            for table in ("settlement_csv", "camt053"):
                rows = [ln for ln in lines if ln.landed == d and ln.table == table]
                if not rows:
                    continue
                seq = conn.execute("SELECT nextval('raw.landing_seq')").fetchall()[0][0]
                for n, ln in enumerate(rows, 1):
                    name = f"{table}/{day(d)}/{seq}.csv"
                    sha = f"{table}-{seq}-".ljust(64, "0")
                    insert_raw_line(
                        conn,
                        table,
                        {**asdict(ln), "partition_date": day(d), "file_name": name}
                        | {"content_sha256": sha, "row_number": n, "settled_on": day(ln.settled)}
                        | {"fee_minor": 3, "landing_seq": seq},
                    )

    def arrive(self, plan: Scenario, d: int) -> None:
        """Day ``d`` as it comes: its files land and the events first copied that day are
        copied (no status changes)."""
        self.land(plan.lines, d)
        self.copy([ev for ev in plan.events if plan.copied_on[ev.event_hash] == d])

    def copy(self, rows: list[MatchEvent]) -> None:
        """One warehouse copy of the books: these events, new or changed."""
        if not rows:
            return
        with duckdb.connect(str(self.path)) as conn:
            seq = conn.execute(
                "SELECT coalesce(max(replicated_seq), 0) + 1 FROM ledger.revenue_events"
            ).fetchall()[0][0]
            for ev in rows:
                first = conn.execute(
                    "SELECT first_replicated_seq, event_key FROM ledger.revenue_events"
                    " WHERE event_hash = ?",
                    [ev.event_hash],
                ).fetchall()
                conn.execute(
                    "DELETE FROM ledger.revenue_events WHERE event_hash = ?", [ev.event_hash]
                ).fetchall()
                insert_replica_event(
                    conn,
                    asdict(ev)
                    | {"replicated_seq": seq, "first_replicated_seq": first[0][0] if first else seq}
                    | {"event_key": first[0][1] if first else None},
                )

    def build(self, d: int | None, *, from_history: bool = False, select: str | None = None) -> str:
        """``dbt build`` for night ``d`` (None: no run_date, today); returns the way the
        matches model found open items."""
        target = self.folder / "target"
        variables: dict[str, Any] = {} if d is None else {"run_date": day(d)}
        if from_history:
            variables["open_items_from_previous_night"] = False
        done = subprocess.run(
            dbt_command(
                "build",
                "--quiet",
                *(["--select", select] if select else []),
                target=target,
                variables=variables,
            ),
            env={
                **os.environ,
                "FINSUP_WAREHOUSE_PATH": str(self.path),
                "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            },
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        compiled = target / "compiled" / "finsup" / "models" / "state"
        sql = (compiled / "reconciliation_match_keys.sql").read_text(encoding="utf-8")
        return "previous night" if "landing_seq >" in sql else "full"

    def slices(self, d: int, *, keys: bool = True) -> dict[str, list[tuple[Any, ...]]]:
        """Night ``d``'s rows of every mart, columns in name order; ``keys`` False: without
        the integer keys (a warehouse that numbered its rows again)."""
        out = {}
        with duckdb.connect(str(self.path), read_only=True) as conn:
            for mart in MARTS:
                columns = sorted(
                    str(r[0])
                    for r in conn.execute(f"DESCRIBE main.{mart}").fetchall()
                    if keys or str(r[0]) not in ("line_key", "event_key")
                )
                out[mart] = conn.execute(
                    f"SELECT {', '.join(columns)} FROM main.{mart} WHERE run_date = ? ORDER BY ALL",
                    [day(d)],
                ).fetchall()
        return out

    def nights(self) -> list[str]:
        with duckdb.connect(str(self.path), read_only=True) as conn:
            rows = conn.execute(
                "SELECT run_date FROM main.reconciliation_nights ORDER BY run_date"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def matched_events(self, d: int) -> list[str]:
        with duckdb.connect(str(self.path), read_only=True) as conn:
            rows = conn.execute(
                "SELECT event_hash FROM main.reconciliation_matches WHERE run_date = ?", [day(d)]
            ).fetchall()
        return [str(r[0]) for r in rows]

    def copy_to(self, folder: Path) -> Warehouse:
        folder.mkdir(parents=True)
        shutil.copyfile(self.path, folder / "warehouse.duckdb")
        other = Warehouse.__new__(Warehouse)
        other.folder, other.path = folder, folder / "warehouse.duckdb"
        return other


# One seed: the other tests below build nights both ways on their own seeds (3, 11), and
# each dbt-built night costs seconds (the suite's time budget).
@pytest.mark.parametrize("seed", [7])
def test_a_night_from_the_previous_night_equals_a_night_from_history(
    tmp_path: Path, seed: int
) -> None:
    plan = scenario(seed, days=7)
    wh = Warehouse(tmp_path / "warehouse")
    status: dict[str, str] = {}
    confirmed_next: list[str] = []
    ways: dict[int, str] = {}

    def night(d: int, *, copy_in: bool = True) -> None:
        if copy_in:
            wh.land(plan.lines, d)
            changed = [ev for ev in plan.events if plan.copied_on[ev.event_hash] == d]
            for ev in plan.events:
                h = ev.event_hash
                if plan.reversed_on.get(h) == d and plan.copied_on[h] <= d:
                    status[h] = "reversed"
                    changed.append(ev)
                elif (h in confirmed_next or plan.confirmed_on.get(h) == d) and status.get(
                    h
                ) != "reversed":
                    # revenue_confirmations after a night, or the gateway's word
                    status[h] = "confirmed"
                    changed.append(ev)
            confirmed_next.clear()
            wh.copy([replace(ev, status=status.get(ev.event_hash, ev.status)) for ev in changed])
        reference = wh.copy_to(tmp_path / f"history_{d}_{len(ways)}")
        assert reference.build(d, from_history=True) == "full"
        ways[d] = wh.build(d)
        assert wh.slices(d) == reference.slices(d), f"night {day(d)} ({ways[d]})"
        shutil.rmtree(reference.folder)
        confirmed_next.extend(wh.matched_events(d))

    for d in range(6):
        night(d)
    # The first night has nothing to start from; every later one starts from the one before.
    assert ways == {0: "full", **{d: "previous night" for d in range(1, 6)}}
    slices = wh.slices(4)

    # Night 3 again, after 4 and 5: it cannot start from 2 (4 and 5 already matched things),
    # and the nights after it cannot start from their predecessors until 3's chain is redone.
    night(3, copy_in=False)
    assert ways[3] == "full"
    night(6)
    assert ways[6] == "full"  # 5 is void: 3 was rebuilt after it
    assert wh.slices(4) == slices  # an earlier night's results stay as they were
    night(7)
    assert ways[7] == "previous night"


def test_a_night_run_again_with_nothing_left_to_match_keeps_no_old_matches(
    tmp_path: Path,
) -> None:
    # Night 0 pairs a sale with its line; the sale is then reversed in the books, so
    # night 0 run again pairs nothing. Its old match must go, not stay beside nothing.
    sale = event("a".ljust(64, "0"), "stripe", "T1", "sale", 500, "USD", 0)
    wh = Warehouse(tmp_path / "warehouse")
    wh.land([Line("settlement_csv", "stripe", "T1", "sale", 500, "USD", 0, 0)], 0)
    wh.copy([sale])
    wh.build(0)
    assert wh.matched_events(0) == [sale.event_hash]
    wh.copy([replace(sale, status="reversed")])
    wh.build(0)
    assert wh.matched_events(0) == []
    with duckdb.connect(str(wh.path), read_only=True) as conn:
        kinds = conn.execute(
            "SELECT exception_kind FROM main.reconciliation_exceptions WHERE run_date = ?",
            [day(0)],
        ).fetchall()
    assert kinds == [("unmatched_settlement",)]


def test_a_night_whose_previous_night_cannot_be_trusted_takes_the_full_way(
    tmp_path: Path,
) -> None:
    plan = scenario(3, days=12)
    wh = Warehouse(tmp_path / "warehouse")

    runs = iter(range(100))

    def night(d: int) -> str:
        reference = wh.copy_to(tmp_path / f"history_{d}_{next(runs)}")
        reference.build(d, from_history=True)
        way = wh.build(d)
        assert wh.slices(d) == reference.slices(d), f"night {day(d)} ({way})"
        shutil.rmtree(reference.folder)
        return way

    for d in range(3):
        wh.arrive(plan, d)
    assert [night(0), night(1)] == ["full", "previous night"]
    # The nights model alone (a partial re-run): it cannot vouch for slices another
    # invocation wrote, so night 1 leaves no row and night 2 cannot start from it.
    wh.build(1, select="reconciliation_nights")
    assert wh.nights() == [day(0)]
    assert night(2) == "full"
    # One slice alone rebuilt (another partial re-run): night 2's row goes with it.
    wh.build(2, select="reconciliation_open_events")
    assert wh.nights() == [day(0)]
    wh.arrive(plan, 3)
    assert night(3) == "full"
    # Eight nights later: night 3's slices may be gone (seven are kept before tonight).
    for d in range(4, 12):
        wh.arrive(plan, d)
    assert night(11) == "full"
    wh.arrive(plan, 12)
    assert night(12) == "previous night"
    # No run_date: today (UTC), on top of kept slices of other nights, twice over.
    assert wh.build(None) == "full"  # night 12 is more than seven nights back
    wh.build(None)
    today = wh.nights()[-1]
    assert today > day(12) and wh.nights().count(today) == 1

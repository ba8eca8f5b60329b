"""Bad input, as a new user gives it: one line that says what to fix, and nothing lost.

Every case runs the `finsup` command in this process (``cli.main``, as the
console script does, minus the interpreter start-up) against real books on
SQLite and PostgreSQL, and checks what a user relies on:

- the exit code, and either exactly one ``error:`` line or the documented
  rejects file beside the input (with the reason in its own column);
- no traceback: ``main`` ends in ``SystemExit`` and nothing else;
- the books unchanged: every table's row count, the transaction log's last
  sequence number and the audit chain head;
- the input file byte-identical afterwards.

A few cases run the real console script in a subprocess as well, to show the
in-process runner tells the truth about what a terminal sees.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster import settings
from finsup_dagster.cli import main
from finsup_dagster.ledger import db, schema
from finsup_dagster.ledger.secret_box import generate_key
from tests.conftest import create_pg_database, drop_pg_database
from tests.helpers.cli import FINSUP

REVENUE_HEADER = "source,external_id,amount,currency,occurred_at,kind,status"
SALE = "paypal,PP-1,10.00,USD,2026-11-21T09:00:00Z,sale,confirmed"
PEOPLE_HEADER = "external_id,name,payout_method,destination,country"
PERSON = "ben-1,Ada Lovelace,paypal,ada@example.com,GB"
EARNING_HEADER = "external_id,beneficiary,amount,currency,event_hashes"
HASH = "{hash}"  # replaced by the baseline sale's event hash


@dataclass(frozen=True)
class Books:
    url: str
    home: Path
    event_hash: str


@dataclass(frozen=True)
class Case:
    """One kind of bad input: the command, the files it reads, and what must happen."""

    id: str
    argv: tuple[str, ...]  # "{dir}" is the case's folder, "{f}" its first file
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2
    error: str | None = None  # text of the one error line
    rejected: str | None = None  # text of the reject_reason in the rejects file
    env: dict[str, str] = field(default_factory=dict)
    books: bool = True  # False: the case never reaches a database (runs once)
    logs: str | None = None  # the one thing it may write: this transaction-log action
    secret: str | None = None  # text of the input that must not reach the rejects file


def rev(*rows: str, header: str = REVENUE_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def people(*rows: str, header: str = PEOPLE_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def earn(*rows: str, header: str = EARNING_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def jl(*objects: dict[str, Any] | str) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)


SALE_OBJ = {
    "source": "paypal",
    "external_id": "PP-9",
    "amount": "10.00",
    "currency": "USD",
    "occurred_at": "2026-11-21T09:00:00Z",
    "kind": "sale",
    "status": "confirmed",
}
PERSON_OBJ = {
    "external_id": "ben-9",
    "name": "Grace",
    "payout_method": "paypal",
    "destination": "grace@example.com",
    "country": "US",
}
EARNING_OBJ = {
    "external_id": "e-9",
    "beneficiary": "ben-1",
    "amount": "1.00",
    "currency": "USD",
    "event_hashes": [HASH],
}
KEY = {"FINSUP_SECRET_KEY": generate_key()}
LONG_ID = "x" * 200_000  # over Python's 128 KiB csv field limit

IR = ("ingest-revenue", "{f}")
IB = ("import-beneficiaries", "{f}")
IE = ("ingest-earnings", "{f}")


def repeated_key(obj: dict[str, Any], key: str, second: str) -> str:
    text = json.dumps(obj)
    return text[:-1] + f', "{key}": "{second}"}}'


CASES = [
    # -- files that are not files -------------------------------------------------
    Case("missing-file", ("ingest-revenue", "{dir}/nope.csv"), error="nope.csv: no such file"),
    Case("directory", ("ingest-revenue", "{dir}"), error="is a directory, not a file"),
    Case("dev-null", ("ingest-revenue", "/dev/null"), error="/dev/null: not a regular file"),
    Case("beneficiaries-directory", ("import-beneficiaries", "{dir}"), error="is a directory"),
    Case("earnings-missing", ("ingest-earnings", "{dir}/gone.jsonl"), error="no such file"),
    Case("unsupported-suffix", IR, {"a.txt": rev(SALE)}, error="unsupported file type .txt"),
    Case("no-suffix", IR, {"revenue": rev(SALE)}, error="unsupported file type (none)"),
    # -- files refused whole ------------------------------------------------------------
    Case("not-utf8", IR, {"a.csv": rev(SALE).encode() + b"\xff\xfe\n"}, error="not UTF-8 text"),
    Case(
        "missing-column",
        IR,
        {"a.csv": "source,external_id,amount\npaypal,x,1.00\n"},
        error="missing columns currency",
    ),
    Case("empty-file", IR, {"a.csv": ""}, error="missing columns source"),
    Case(
        "repeated-header",
        IR,
        {"a.csv": rev(SALE, header=REVENUE_HEADER + ",amount")},
        error="column amount appears twice in the header",
    ),
    Case(
        "beneficiaries-repeated-header",
        IB,
        {"p.csv": people(PERSON, header=PEOPLE_HEADER + ",country")},
        error="column country appears twice",
    ),
    Case("earnings-not-utf8", IE, {"e.csv": b"external_id\xc3\x28\n"}, error="not UTF-8"),
    Case(
        "earnings-missing-column",
        IE,
        {"e.csv": "external_id,amount\nx,1\n"},
        error="missing columns beneficiary",
    ),
    # -- rows refused: revenue ---------------------------------------------------------
    Case(
        "long-csv-field",
        IR,
        {"a.csv": rev(f"paypal,{LONG_ID},1.00,USD,2026-11-21T09:00:00Z,sale,confirmed")},
        code=1,
        rejected="external_id is longer than",
    ),
    Case(
        "too-many-cells",
        IR,
        {"a.csv": rev(SALE + ",extra")},
        code=1,
        rejected="more cells than header columns",
    ),
    Case(
        "amount-decimals",
        IR,
        {"a.csv": rev(SALE.replace("10.00", "10.001"))},
        code=1,
        rejected="USD allows 2",
    ),
    Case(
        "amount-words", IR, {"a.csv": rev(SALE.replace("10.00", "ten"))}, code=1, rejected="amount"
    ),
    Case(
        "unknown-currency",
        IR,
        {"a.csv": rev(SALE.replace("USD", "ZZZ"))},
        code=1,
        rejected="unknown currency 'ZZZ'",
    ),
    Case(
        "bad-time",
        IR,
        {"a.csv": rev(SALE.replace("2026-11-21T09:00:00Z", "yesterday"))},
        code=1,
        rejected="occurred_at",
    ),
    Case(
        "naive-time",
        IR,
        {"a.csv": rev(SALE.replace("09:00:00Z", "09:00:00"))},
        code=1,
        rejected="occurred_at",
    ),
    Case(
        "unknown-kind",
        IR,
        {"a.csv": rev(SALE.replace(",sale,", ",gift,"))},
        code=1,
        rejected="kind",
    ),
    Case(
        "unknown-status",
        IR,
        {"a.csv": rev(SALE.replace("confirmed", "maybe"))},
        code=1,
        rejected="status",
    ),
    Case(
        "blank-external-id",
        IR,
        {"a.csv": rev(SALE.replace("PP-1", ""))},
        code=1,
        rejected="external_id",
    ),
    Case(
        "escape-in-id",
        IR,
        {"a.csv": rev(SALE.replace("PP-1", "PP-\x1b[31m1"))},
        code=1,
        rejected="control characters",
    ),
    Case(
        "c1-control-in-id",
        IR,
        {"a.csv": rev(SALE.replace("PP-1", "PP-\x9b1"))},
        code=1,
        rejected="control characters",
    ),
    Case(
        "conflicts-with-the-books",
        IR,
        {"a.csv": rev(SALE.replace("10.00", "99.00"))},
        code=1,
        rejected="conflicts with event",
    ),
    Case(
        "jsonl-repeated-key",
        IR,
        {"a.jsonl": jl(repeated_key(SALE_OBJ, "amount", "99.00"))},
        code=1,
        rejected="key 'amount' appears twice",
    ),
    Case("jsonl-not-json", IR, {"a.jsonl": jl("{not json")}, code=1, rejected="not valid JSON"),
    Case("jsonl-not-object", IR, {"a.jsonl": jl("[1, 2]")}, code=1, rejected="not a JSON object"),
    Case(
        "jsonl-deep-nesting",
        IR,
        {"a.jsonl": jl("[" * 50_000 + "]" * 50_000)},
        code=1,
        rejected="nested too deeply",
    ),
    Case(
        "tax-id-in-unreadable-line",
        IB,
        {"p.jsonl": jl(repeated_key({**PERSON_OBJ, "tax_id": "123-45-6789"}, "name", "Eve"))},
        code=1,
        rejected="key 'name' appears twice",
        secret="6789",
    ),
    Case(
        "tax-id-in-misaligned-row",
        IB,
        {
            "p.csv": people(
                "ben-5,Doe, John,paypal,doe@example.com,GB,123-45-6789,missing",
                header=PEOPLE_HEADER + ",tax_id,tax_form_status",
            )
        },
        code=1,
        rejected="more cells than header columns",
        secret="6789",
    ),
    Case(
        "jsonl-surrogate",
        IR,
        {"a.jsonl": jl(json.dumps(SALE_OBJ).replace("PP-9", "PP-\\ud800"))},
        code=1,
        rejected="lone surrogate",
    ),
    Case(
        "jsonl-number-amount",
        IR,
        {"a.jsonl": jl({**SALE_OBJ, "amount": 10.0})},
        code=1,
        rejected="amount",
    ),
    Case(
        "jsonl-null-currency",
        IR,
        {"a.jsonl": jl({**SALE_OBJ, "currency": None})},
        code=1,
        rejected="currency",
    ),
    Case(
        "jsonl-list-id",
        IR,
        {"a.jsonl": jl({**SALE_OBJ, "external_id": ["a"]})},
        code=1,
        rejected="external_id",
    ),
    # -- rows refused: beneficiaries ---------------------------------------------------
    Case(
        "country-not-iso",
        IB,
        {"p.csv": people(PERSON.replace(",GB", ",ZZ"))},
        code=1,
        rejected="ZZ",
    ),
    Case(
        "country-lowercase-word",
        IB,
        {"p.csv": people(PERSON.replace(",GB", ",England"))},
        code=1,
        rejected="country",
    ),
    Case(
        "escape-in-name",
        IB,
        {"p.csv": people(PERSON.replace("Ada", "\x1b]0;pwned\x07Ada"))},
        code=1,
        rejected="name contains control characters",
    ),
    Case(
        "newline-in-name",
        IB,
        {"p.csv": people(PERSON.replace("Ada Lovelace", '"Ada\nLovelace"'))},
        code=1,
        rejected="name contains control characters",
    ),
    Case(
        "conflicting-beneficiary",
        IB,
        {
            "p.csv": people(
                "ben-2,Bob,paypal,bob@example.com,GB", "ben-2,Bob,paypal,eve@example.com,GB"
            )
        },
        code=1,
        rejected="external_id 'ben-2' is in rows 1, 2 with different values",
    ),
    Case(
        "bad-paypal-destination",
        IB,
        {"p.csv": people(PERSON.replace("ada@example.com", "ada"))},
        code=1,
        rejected="not an email address",
    ),
    Case(
        "bad-iban",
        IB,
        {"p.csv": people("ben-3,Carl,bank,DE89370400440532013001/COBADEFFXXX,DE")},
        code=1,
        rejected="IBAN",
    ),
    Case(
        "unknown-method",
        IB,
        {"p.csv": people(PERSON.replace("paypal", "carrier-pigeon"))},
        code=1,
        rejected="payout_method",
    ),
    Case(
        "beneficiary-surrogate",
        IB,
        {"p.jsonl": jl(json.dumps(PERSON_OBJ).replace("Grace", "Gr\\udc00ce"))},
        code=1,
        rejected="lone surrogate",
    ),
    Case(
        "beneficiary-repeated-key",
        IB,
        {"p.jsonl": jl(repeated_key(PERSON_OBJ, "destination", "eve@example.com"))},
        code=1,
        rejected="key 'destination' appears twice",
    ),
    Case(
        "beneficiary-number-tax-id",
        IB,
        {"p.jsonl": jl({**PERSON_OBJ, "tax_id": 123456789})},
        code=1,
        rejected="tax_id must be text",
    ),
    Case(
        "beneficiary-long-name",
        IB,
        {"p.csv": people(PERSON.replace("Ada Lovelace", "A" * 201))},
        code=1,
        rejected="name is longer than 200",
    ),
    # -- rows refused: earnings --------------------------------------------------------
    Case(
        "event-hashes-string",
        IE,
        {"e.jsonl": jl({**EARNING_OBJ, "event_hashes": HASH})},
        code=1,
        rejected="event_hashes must be a JSON list",
    ),
    Case(
        "event-hashes-numbers",
        IE,
        {"e.jsonl": jl({**EARNING_OBJ, "event_hashes": [1]})},
        code=1,
        rejected="event_hashes must list event hashes as strings",
    ),
    Case(
        "earning-unknown-beneficiary",
        IE,
        {"e.csv": earn(f"e-1,nobody,1.00,USD,{HASH}")},
        code=1,
        rejected="nobody",
    ),
    Case(
        "earning-unknown-event",
        IE,
        {"e.csv": earn("e-1,ben-1,1.00,USD," + "a" * 64)},
        code=1,
        rejected="unknown",
    ),
    Case(
        "earning-bad-hash",
        IE,
        {"e.csv": earn("e-1,ben-1,1.00,USD,not-a-hash")},
        code=1,
        rejected="not-a-hash",
    ),
    Case(
        "earning-over-funding",
        IE,
        {"e.csv": earn(f"e-1,ben-1,10.01,USD,{HASH}")},
        code=1,
        rejected="exceeds the 10.00 USD",
    ),
    Case(
        "earning-currency-mismatch",
        IE,
        {"e.csv": earn(f"e-1,ben-1,1.00,EUR,{HASH}")},
        code=1,
        rejected="EUR",
    ),
    Case(
        "earning-surrogate",
        IE,
        {
            "e.jsonl": jl(
                json.dumps({**EARNING_OBJ, "description": "x"}).replace('"x"', '"\\ud83d"')
            )
        },
        code=1,
        rejected="lone surrogate",
    ),
    Case(
        "earning-repeated-key",
        IE,
        {"e.jsonl": jl(repeated_key(EARNING_OBJ, "amount", "9.00"))},
        code=1,
        rejected="key 'amount' appears twice",
    ),
    Case(
        "earning-escape-description",
        IE,
        {"e.jsonl": jl({**EARNING_OBJ, "description": "paid\x1b[2J"})},
        code=1,
        rejected="description contains control characters",
    ),
    Case(
        "earning-float-amount",
        IE,
        {"e.jsonl": jl({**EARNING_OBJ, "amount": 1.0})},
        code=1,
        rejected="amount",
    ),
    Case(
        "conflicting-earnings",
        IE,
        {"e.csv": earn(f"e-2,ben-1,1.00,USD,{HASH}", f"e-2,ben-1,2.00,USD,{HASH}")},
        code=1,
        rejected="external_id 'e-2' is in rows 1, 2",
    ),
    # -- arguments ------------------------------------------------------------------------
    Case(
        "huge-limit",
        ("report-transaction-logs", "--limit", "99999999999999999999999"),
        error="--limit",
    ),
    Case("zero-limit", ("report-transaction-logs", "--limit", "0"), error="--limit"),
    Case(
        "bad-since",
        ("report-transaction-logs", "--since", "yesterday"),
        error="time 'yesterday' is not ISO 8601",
    ),
    Case(
        "unknown-balance-currency",
        ("available-balance", "--currency", "ZZZ"),
        error="unknown currency 'ZZZ'",
    ),
    Case(
        "reserve-decimals",
        ("set-reserve", "1.001", "--currency", "USD", "--reason", "x"),
        error="USD allows 2",
    ),
    Case(
        "reserve-negative",
        ("set-reserve", "--currency", "USD", "--reason", "x", "--", "-1.00"),
        error="amount '-1.00' is negative",
    ),
    Case("unknown-command", ("no-such-command",), error="No such command"),
    Case("unknown-option", ("available-balance", "--colour"), error="No such option"),
    Case(
        "approve-as-unknown-approver",
        ("approve-payout-batch", "pb_nope", "--approver", "ann", "--code", "123456"),
        env=KEY,
        error="ann",
        logs="batch_approval_refused",
    ),
    Case(
        "release-as-unknown-approver",
        ("release-earning", "nope", "--approver", "ann", "--code", "123456", "--reason", "x"),
        env=KEY,
        error="ann",
        logs="earning_release_refused",
    ),
    Case(
        "approve-without-secret-key",
        ("approve-payout-batch", "pb_nope", "--approver", "ann", "--code", "123456"),
        error="FINSUP_SECRET_KEY is not set",
    ),
    Case(
        "reconciliation-bad-date",
        ("report-reconciliation", "--date", "2026-13-01"),
        error="not a calendar date",
        books=False,
    ),
    Case(
        "reconcile-bad-date",
        ("reconcile", "--date", "21/11/2026"),
        error="'21/11/2026' is not YYYY-MM-DD",
        books=False,
    ),
    # -- settings -------------------------------------------------------------------------
    Case(
        "ledger-url-psycopg2",
        ("available-balance",),
        env={"FINSUP_LEDGER_URL": "postgresql+psycopg2://postgres@127.0.0.1/x"},
        error="the psycopg2 driver",
        books=False,
    ),
    Case(
        "ledger-url-bad-port",
        ("available-balance",),
        env={"FINSUP_LEDGER_URL": "postgresql://postgres@127.0.0.1:abc/x"},
        error="FINSUP_LEDGER_URL is not a database URL",
        books=False,
    ),
    Case(
        "ledger-url-mysql",
        ("available-balance",),
        env={"FINSUP_LEDGER_URL": "mysql://u@h/db"},
        error="mysql",
        books=False,
    ),
    Case(
        "ledger-url-not-a-url",
        ("available-balance",),
        env={"FINSUP_LEDGER_URL": "my ledger please"},
        error="FINSUP_LEDGER_URL",
        books=False,
    ),
    Case(
        "ledger-in-missing-folder",
        ("available-balance",),
        env={"FINSUP_LEDGER_URL": "sqlite:///{dir}/no/such/folder/ledger.db"},
        error="the books are not initialised: run `finsup init`",
        books=False,
    ),
    Case(
        "bad-min-item",
        ("create-payout-batches",),
        env={"FINSUP_MIN_ITEM": "lots"},
        error="FINSUP_MIN_ITEM",
    ),
]


def _prepare_books(url: str, home: Path, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> str:
    """Books with one confirmed sale and one beneficiary, as the cases expect."""
    _use(monkeypatch, url, home)
    assert _run("init")[0] == 0
    sale = tmp / "sale.csv"
    sale.write_text(rev(SALE))
    assert _run("ingest-revenue", str(sale))[0] == 0
    person = tmp / "people.csv"
    person.write_text(people(PERSON))
    assert _run("import-beneficiaries", str(person))[0] == 0
    eng = db.make_engine(url)
    try:
        with db.read(eng) as conn:
            return str(conn.execute(sa.select(schema.revenue_events.c.event_hash)).scalar_one())
    finally:
        eng.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def books(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Books]:
    """Books shared by the module's cases: each case proves it changed nothing."""
    tmp = tmp_path_factory.mktemp(f"books-{request.param}")
    home = tmp / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'ledger.db'}" if request.param == "sqlite" else create_pg_database()
    try:
        with pytest.MonkeyPatch.context() as mp:
            event_hash = _prepare_books(url, home, mp, tmp)
        yield Books(url, home, event_hash)
    finally:
        if request.param == "postgresql":
            drop_pg_database(url)


def _use(monkeypatch: pytest.MonkeyPatch, url: str, home: Path) -> None:
    # Every embedded default set here, so the in-process runs leave os.environ as found.
    for key, value in settings.local_defaults(home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FINSUP_LEDGER_URL", url)
    monkeypatch.setenv("FINSUP_ACTOR", "test-operator")
    monkeypatch.delenv("FINSUP_DEPLOYMENT", raising=False)


_engines: list[Engine] = []


@pytest.fixture(autouse=True)
def _dispose_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Each command makes its own engine; in one process their pools would pile up
    # PostgreSQL connections, so every engine made during a case is closed after it.
    real = db.make_engine

    def tracked(*args: Any, **kwargs: Any) -> Engine:
        engine = real(*args, **kwargs)
        _engines.append(engine)
        return engine

    monkeypatch.setattr(db, "make_engine", tracked)
    yield
    while _engines:
        _engines.pop().dispose()


def _run(*argv: str) -> tuple[int, str, str]:
    """``finsup ARGV`` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code
        else:
            raise AssertionError("finsup returned without an exit code")
    assert isinstance(code, int)
    return code, stdout.getvalue(), stderr.getvalue()


def fingerprint(url: str) -> dict[str, Any]:
    """What must not move: each table's row count, the log's last seq, the chain head."""
    eng = db.make_engine(url)
    try:
        with eng.connect() as conn:
            counts = {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in schema.metadata.sorted_tables
            }
            last = conn.execute(sa.select(sa.func.max(schema.transaction_log.c.seq))).scalar()
            head = conn.execute(sa.select(schema.audit_chain_head)).all()
        return {"counts": counts, "last_seq": last, "head": [tuple(r) for r in head]}
    finally:
        eng.dispose()


_LOG_TABLES = ("transaction_log", "row_seals", "audit_chain_head")


def _money_only(fp: dict[str, Any]) -> dict[str, int]:
    return {name: n for name, n in fp["counts"].items() if name not in _LOG_TABLES}


def _actions_after(url: str, seq: int) -> list[str]:
    eng = db.make_engine(url)
    try:
        with eng.connect() as conn:
            t = schema.transaction_log.c
            query = sa.select(t.action).where(t.seq > seq).order_by(t.seq)
            return list(conn.execute(query).scalars())
    finally:
        eng.dispose()


def _write_files(case: Case, folder: Path, event_hash: str) -> dict[Path, bytes]:
    written = {}
    for name, content in case.files.items():
        data = content.encode() if isinstance(content, str) else content
        data = data.replace(HASH.encode(), event_hash.encode())
        path = folder / name
        path.write_bytes(data)
        written[path] = data
    return written


def _expand(value: str, folder: Path, first: Path | None) -> str:
    return value.replace("{dir}", str(folder)).replace("{f}", str(first))


def check_case(case: Case, folder: Path, books: Books | None) -> None:
    written = _write_files(case, folder, books.event_hash if books else "")
    first = next(iter(written), None)
    argv = [_expand(a, folder, first) for a in case.argv]
    before = fingerprint(books.url) if books else None

    code, out, err = _run(*argv)

    assert code == case.code, (out, err)
    assert "Traceback" not in out + err
    if case.error is not None:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ") and case.error in lines[0], lines[0]
    if case.rejected is not None:
        assert first is not None
        rejects = sorted(folder.glob(f"{first.name}.rejects.*"))
        assert len(rejects) == 1, "no rejects file beside the input"
        reasons = _reasons(rejects[0])
        assert reasons and all(case.rejected in r for r in reasons), reasons
        if case.secret is not None:
            assert case.secret not in rejects[0].read_text(), "a tax id reached the rejects file"
        assert err == "", err  # a rejected row is an outcome, not an error
    if books is not None:
        after = fingerprint(books.url)
        if case.logs is not None:
            # A refused approval is itself audited (it counts towards the lockout).
            assert before is not None
            assert _actions_after(books.url, before["last_seq"]) == [case.logs]
            after, before = _money_only(after), _money_only(before)
        assert after == before, "the books changed"
    for path, data in written.items():
        assert path.read_bytes() == data, f"{path.name} was changed"


def _reasons(rejects: Path) -> list[str]:
    if rejects.suffix == ".csv":
        with rejects.open(newline="", encoding="utf-8") as fh:
            return [row["reject_reason"] for row in csv.DictReader(fh)]
    return [json.loads(line)["reject_reason"] for line in rejects.read_text().splitlines()]


@pytest.mark.parametrize("case", [c for c in CASES if c.books], ids=lambda c: c.id)
def test_bad_input_changes_nothing(
    case: Case, books: Books, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, books.url, books.home)
    for key, value in case.env.items():
        monkeypatch.setenv(key, _expand(value, tmp_path, None))
    check_case(case, tmp_path, books)


@pytest.mark.parametrize("case", [c for c in CASES if not c.books], ids=lambda c: c.id)
def test_bad_settings_and_arguments_before_any_database(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    _use(monkeypatch, f"sqlite:///{home / 'ledger.db'}", home)
    for key, value in case.env.items():
        monkeypatch.setenv(key, _expand(value, tmp_path, None))
    check_case(case, tmp_path, None)
    assert not home.exists() and not (tmp_path / "no").exists(), "a read created a folder"


def test_every_file_gets_an_outcome_before_the_error(
    books: Books, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ingest-revenue a.csv b.csv` with b unreadable: a goes in and the summary says so."""
    _use(monkeypatch, books.url, books.home)
    good = tmp_path / "a.csv"
    good.write_text(rev("paypal,PP-multi,3.00,USD,2026-11-21T09:00:00Z,sale,confirmed"))
    bad = tmp_path / "b.csv"
    bad.write_bytes(b"\xff\xfe not text")
    code, out, err = _run("ingest-revenue", str(good), str(bad), "--json")
    assert code == 2
    results = {Path(r["file"]).name: r for r in json.loads(out)}
    assert results["a.csv"]["inserted"] == 1 and results["a.csv"]["error"] is None
    assert "not UTF-8" in results["b.csv"]["error"]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "b.csv" in lines[0]

    code, out, err = _run("ingest-revenue", str(bad), str(good))  # the table, a already in
    assert code == 2
    assert "refused" in out and "a.csv" in out
    assert err.count("error: ") == 1


def test_a_rejects_file_goes_back_in_once_fixed(
    books: Books, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rejects file keeps each row's own fields; its added columns are ignored."""
    _use(monkeypatch, books.url, books.home)
    source = tmp_path / "sales.csv"
    conflict = SALE.replace("10.00", "99.00").replace("09:00:00Z", "11:30:00Z")
    typo = "paypal,PP-fix,5.00,US$,2026-11-21T10:00:00Z,sale,confirmed"
    source.write_text(rev(conflict, typo))
    assert _run("ingest-revenue", str(source))[0] == 1
    rejects = tmp_path / "sales.csv.rejects.csv"
    with rejects.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["row_number"], r["amount"], r["currency"], r["occurred_at"]) for r in rows] == [
        ("1", "99.00", "USD", "2026-11-21T11:30:00Z"),
        ("2", "5.00", "US$", "2026-11-21T10:00:00Z"),
    ]
    assert "conflicts with event" in rows[0]["reject_reason"]
    # The operator drops the row that is wrong, mends the other, and ingests the file as it is.
    mended = {**rows[1], "currency": "USD"}
    with rejects.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow(mended)
    code, out, err = _run("ingest-revenue", str(rejects), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["inserted"] == 1


def test_a_fault_after_committed_chunks_says_what_is_in(
    books: Books, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revenue commits 20,000 rows at a time: a bad byte further on says how many went in."""
    _use(monkeypatch, books.url, books.home)
    rows = [
        f"paypal,PP-chunk-{i},1.00,USD,2026-11-21T09:00:00Z,sale,projected" for i in range(20_500)
    ]
    path = tmp_path / "big.csv"
    path.write_bytes(
        rev(*rows).encode() + b"paypal,PP-bad,1.00,USD,2026-11-21T09:00:00Z,sale,\xff\n"
    )
    code, _out, err = _run("ingest-revenue", str(path))
    assert code == 2
    assert "not UTF-8" in err and "the 20000 rows before it are in the books" in err
    assert err.count("error: ") == 1
    path.write_text(rev(*rows))  # mended: the same rows again, without the bad line
    code, out, err = _run("ingest-revenue", str(path), "--json")
    assert code == 0, err
    [result] = json.loads(out)
    assert (result["inserted"], result["unchanged"]) == (500, 20_000)


def test_blank_header_cells_are_no_columns(
    books: Books, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spreadsheet's trailing commas: two blank header cells are not a repeated column."""
    _use(monkeypatch, books.url, books.home)
    path = tmp_path / "sheet.csv"
    path.write_text(rev(SALE.replace("PP-1", "PP-sheet") + ",,", header=REVENUE_HEADER + ",,"))
    code, out, err = _run("ingest-revenue", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["inserted"] == 1


def test_a_bom_csv_reads_as_a_spreadsheet_saved_it(
    books: Books, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, books.url, books.home)
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + rev(SALE.replace("PP-1", "PP-bom")).encode())
    code, out, err = _run("ingest-revenue", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["inserted"] == 1


def test_short_tax_ids_are_never_shown_whole(
    books: Books, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4-character tax id is stored and reported with no character of it showing."""
    _use(monkeypatch, books.url, books.home)
    path = tmp_path / "taxed.jsonl"
    path.write_text(
        jl(
            {**PERSON_OBJ, "external_id": "ben-tax", "tax_id": "9876"},
            {**PERSON_OBJ, "external_id": "ben-tax2", "tax_id": "123-45-6789"},
        )
    )
    assert _run("import-beneficiaries", str(path))[0] == 0
    eng = db.make_engine(books.url)
    try:
        with db.read(eng) as conn:
            b = schema.beneficiaries.c
            stored: dict[str, str | None] = dict(
                conn.execute(
                    sa.select(b.external_id, b.tax_id_masked).where(b.external_id.like("ben-tax%"))
                ).all()
            )
            log = " ".join(str(r) for r in conn.execute(sa.select(schema.transaction_log)).all())
    finally:
        eng.dispose()
    assert stored["ben-tax"] is not None and not any(ch in stored["ben-tax"] for ch in "9876")
    assert (stored["ben-tax2"] or "").endswith("6789") and "123" not in (stored["ben-tax2"] or "")
    assert "9876" not in log and "123-45" not in log


def test_the_console_script_shows_what_the_runner_shows(tmp_path: Path) -> None:
    """The same cases through the real `finsup` executable: the runner above is honest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINSUP_", "DAGSTER_"))}
    env["FINSUP_HOME"] = str(tmp_path / "home")
    assert (
        subprocess.run([FINSUP, "init"], env=env, capture_output=True, timeout=120).returncode == 0
    )
    by_id = {c.id: c for c in CASES}
    for case_id in ("directory", "repeated-header", "huge-limit", "ledger-url-mysql"):
        case = by_id[case_id]
        folder = tmp_path / case_id
        folder.mkdir()
        written = _write_files(case, folder, "")
        first = next(iter(written), None)
        argv = [_expand(a, folder, first) for a in case.argv]
        case_env = {**env, **{k: _expand(v, folder, None) for k, v in case.env.items()}}
        proc = subprocess.run(
            [FINSUP, *argv], env=case_env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == case.code, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and case.error is not None and case.error in lines[0], proc.stderr

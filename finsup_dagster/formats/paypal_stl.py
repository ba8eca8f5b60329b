"""The PayPal Settlement Report (STL, ``STL-yyyymmdd.seq.version.CSV``), read whole or refused.

Layout: CSV, UTF-8 (often with a BOM), one record per line, the first field naming
the record type::

    RH  report header   generated-at, reporting window, account id, report version
    FH  file header     file sequence number
    SH  section header  period start, period end, account id, partner account id
    CH  column header   the names of the SB columns (columns are found by name,
                        so their order and extra columns do not matter)
    SB  section body    one transaction that moved money on the account
    SF  section footer  one per currency: currency, total gross credits, total gross
                        debits, total fee credits, total fee debits, then balances
    SC  section count   number of SB records in the section
    RF  report footer   one per currency, same totals as SF for the whole report
    RC  report count    number of SB records in the report
    FF  file footer     number of SB records in this file

Amounts are unsigned integers with two implied decimals for every currency (the
spec: "100,00 yen and $100.00 USD are both represented as 10000"); the CR/DR
column gives the direction. They are turned into finsup minor units per
currency (JPY 10000 → 100 yen; a JPY amount with a fraction of a yen is refused).
Times are ``YYYY/MM/DD HH:MM:SS ±HHMM``.

Every footer is checked against the body: each SF/RF currency's four totals
(every SB row counts, kept or skipped, because PayPal's totals cover them all) and
the SC/RC/FF counts. A disagreement raises ``FooterMismatch`` naming the footer,
the total and both numbers; a missing footer, a record out of order or a bad
field raises ``MalformedFile``. A report split over several files is not
supported: each file must carry the whole report, RF/RC included.

Row mapping: ``settler_ref`` and ``gateway_txn_id`` are the Transaction ID (a
refund's own id, as the PayPal API reports it; the refunded sale's id stays in
``raw`` as the PayPal Reference ID); ``record_ref`` is the Transaction ID too, or
``<id>#<line>`` for a row repeating an earlier row's id: such a row is read like
any other, with a note naming both lines, and the reconciliation decides which
of the two settles (the other is a ``duplicate_settlement``); ``occurred_at`` is the Transaction Initiation
Date, ``settled_on`` the date part of the Transaction Completion Date as the
report writes it (the report's own time zone, the day PayPal settled it);
``description`` is the Custom Field; fees are positive when PayPal charged us (DR)
and negative when it gave a fee back (CR). Event codes map to kinds as
``paypal_codes`` describes; rows that are not settlement activity are skipped and
counted, with a note listing their codes.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from finsup_dagster.formats.common import (
    Parsed,
    as_int,
    as_opt_str,
    count_note,
    malformed,
    mismatch,
    raw_json,
    read_text,
    settlement_row,
)
from finsup_dagster.formats.paypal_codes import DEFAULT_CODE, settlement_kind
from finsup_dagster.ledger import clock, money
from finsup_dagster.ledger.errors import InvalidInput, MalformedFile

# The SB columns as the spec names them (version 9 order), used by the writer.
COLUMNS: tuple[str, ...] = (
    "Transaction ID",
    "Invoice ID",
    "PayPal Reference ID",
    "PayPal Reference ID Type",
    "Transaction Event Code",
    "Transaction Initiation Date",
    "Transaction Completion Date",
    "Transaction Debit or Credit",
    "Gross Transaction Amount",
    "Gross Transaction Currency",
    "Fee Debit or Credit",
    "Fee Amount",
    "Fee Currency",
    "Custom Field",
    "Consumer ID",
    "Payment Tracking ID",
    "Store ID",
    "Bank Reference ID",
    "Credit Transactional Fee",
    "Credit Promotional Fee",
    "Credit Term",
)
# The columns a row cannot do without: the id, then the event code to the fee currency.
REQUIRED = (COLUMNS[0], *COLUMNS[4:13])
TOTAL_NAMES = ("gross credit total", "gross debit total", "fee credit total", "fee debit total")
FOOTERS = ("SF", "SC", "RF", "RC", "FF")

_STL_TIME = re.compile(r"^(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2}) ([+-]\d{2})(\d{2})$")
_UNITS = re.compile(r"^\d+$")


def _key(header: str) -> str:
    # Real reports spell one header "Transaction  Debit or Credit" (two spaces).
    return " ".join(header.split()).casefold()


Totals = list[int]  # gross credit, gross debit, fee credit, fee debit in STL units
_Getter = Callable[[str], str]  # a body row's field by column name
_T = TypeVar("_T")


@dataclass
class _Scope:
    """Body records seen by a section, the report or the file, and their totals per currency."""

    count: int = 0
    totals: dict[str, Totals] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))

    def add(
        self, gross_ccy: str, gross: int, credit: bool, fee_ccy: str, fee: int, fee_cr: bool
    ) -> None:
        self.count += 1
        self.totals[gross_ccy][0 if credit else 1] += gross
        if fee:
            self.totals[fee_ccy][2 if fee_cr else 3] += fee


class _Reader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[dict[str, object]] = []
        self.skipped: Counter[str] = Counter()
        self.stage = "start"  # start, report, section, columns, section-footer, report-footer, end
        self.columns: dict[str, int] = {}
        self.headers: list[str] = []
        self.section = _Scope()
        self.section_no = 0
        self.section_line = 0
        self.section_sf: set[str] = set()
        self.report = _Scope()
        self.report_rf: set[str] = set()
        self.refs: dict[str, int] = {}
        self.notes: list[str] = []
        self.line = 0

    def fail(self, reason: str) -> MalformedFile:
        return malformed(self.name, f"line {self.line}", reason)

    def expect(self, record: str, *stages: str) -> None:
        if self.stage not in stages:
            raise self.fail(f"{record} record out of place ({_STAGE_HINT[self.stage]})")

    def feed(self, fields: list[str]) -> None:
        kind = fields[0].strip()
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise self.fail(f"unknown record type {kind[:10]!r}; expected RH, FH, SH, CH, SB, ...")
        handler(self, fields)

    # -- headers ---------------------------------------------------------------------------------
    def rh(self, fields: list[str]) -> None:
        self.expect("RH", "start")
        self.stage = "file"

    def fh(self, fields: list[str]) -> None:
        self.expect("FH", "file")
        self.stage = "report"

    def sh(self, fields: list[str]) -> None:
        self.expect("SH", "report")
        self.stage = "section"
        self.section = _Scope()
        self.section_no += 1
        self.section_line = self.line
        self.section_sf = set()
        self.columns = {}

    def ch(self, fields: list[str]) -> None:
        self.expect("CH", "section")
        self.headers = [h.strip() for h in fields[1:]]
        self.columns = {_key(h): i for i, h in enumerate(self.headers, 1) if h}
        missing = [c for c in REQUIRED if _key(c) not in self.columns]
        if missing:
            raise self.fail(f"column header CH lacks {', '.join(missing)}")
        self.stage = "columns"

    # -- body ------------------------------------------------------------------------------------
    def sb(self, fields: list[str]) -> None:
        self.expect("SB", "columns")
        width = len(self.headers) + 1
        if len(fields) < width:
            raise self.fail(f"SB has {len(fields)} fields, the column header CH has {width}")
        if any(f.strip() for f in fields[width:]):
            raise self.fail(f"SB has {len(fields)} fields, the column header CH has {width}")
        rec = {h: fields[i].strip() for i, h in enumerate(self.headers, 1) if h}

        def get(column: str) -> str:
            return fields[self.columns[_key(column)]].strip()

        try:
            self._body(get, rec)
        except InvalidInput as exc:
            if isinstance(exc, MalformedFile):
                raise
            raise self.fail(str(exc)) from None

    def _body(self, get: _Getter, rec: Mapping[str, str]) -> None:
        txn = get("Transaction ID")
        code = get("Transaction Event Code")
        if not txn:
            raise InvalidInput("Transaction ID is blank")
        if not code:
            raise InvalidInput("Transaction Event Code is blank")
        credit = _drcr(get("Transaction Debit or Credit"), "Transaction Debit or Credit")
        currency = money.normalise_currency(get("Gross Transaction Currency"))
        gross = _units(get("Gross Transaction Amount"), "Gross Transaction Amount")
        fee_currency = money.normalise_currency(get("Fee Currency") or currency)
        fee = _units(get("Fee Amount") or "0", "Fee Amount")
        fee_flag = get("Fee Debit or Credit")
        fee_credit = _drcr(fee_flag, "Fee Debit or Credit") if fee or fee_flag else False
        self.section.add(currency, gross, credit, fee_currency, fee, fee_credit)
        self.report.add(currency, gross, credit, fee_currency, fee, fee_credit)

        kind = settlement_kind(code, credit)
        if kind is None:
            self.skipped[code] += 1
            return
        # A repeated Transaction ID is about this row, not the file: it lands, and the
        # reconciler's tie-breaks decide which row settles and which is the duplicate.
        record_ref = txn
        if txn in self.refs:
            record_ref = f"{txn}#{self.line}"  # the row's reference stays unique in the file
            self.notes.append(
                f"{self.name}: line {self.line}: Transaction ID {txn} repeats line "
                f"{self.refs[txn]} (both land; the reconciliation settles one)"
            )
        else:
            self.refs[txn] = self.line
        completed = _time(get("Transaction Completion Date"), "Transaction Completion Date")
        initiated = get("Transaction Initiation Date")
        fee_minor = to_minor_units(fee, fee_currency)
        self.rows.append(
            settlement_row(
                row_number=self.line,
                record_ref=record_ref,
                settler_ref=txn,
                gateway="paypal",
                gateway_txn_id=txn,
                batch_ref=None,
                batch_net_minor=None,
                event_code=code,
                kind=kind,
                direction="credit" if credit else "debit",
                gross_minor=to_minor_units(gross, currency),
                currency=currency,
                fee_minor=-fee_minor if fee_credit else fee_minor,
                fee_currency=fee_currency,
                settled_on=completed[:10],
                occurred_at=(
                    _time(initiated, "Transaction Initiation Date") if initiated else None
                ),
                description=_custom(get, self.columns),
                raw=raw_json(rec),
            )
        )

    # -- footers ---------------------------------------------------------------------------------
    def sf(self, fields: list[str]) -> None:
        self.expect("SF", "columns", "section-footer")
        self.stage = "section-footer"
        self._totals("SF", f"section {self.section_no} footer SF", fields, self.section)
        self.section_sf.add(fields[1].strip().upper())

    def sc(self, fields: list[str]) -> None:
        self.expect("SC", "columns", "section-footer")  # a section without activity has no SF
        self._undeclared(self.section, self.section_sf, f"section {self.section_no}", "SF")
        self._count(fields, f"section {self.section_no} record count SC", self.section.count)
        self.stage = "report"

    def rf(self, fields: list[str]) -> None:
        self.expect("RF", "report", "report-footer")
        if self.section_no == 0:
            raise self.fail("report footer RF before any section SH")
        self.stage = "report-footer"
        self._totals("RF", "report footer RF", fields, self.report)
        self.report_rf.add(fields[1].strip().upper())

    def rc(self, fields: list[str]) -> None:
        self.expect("RC", "report", "report-footer")  # a report without activity has no RF
        self._undeclared(self.report, self.report_rf, "the report", "RF")
        self._count(fields, "report record count RC", self.report.count)
        self.stage = "file-footer"

    def ff(self, fields: list[str]) -> None:
        self.expect("FF", "file-footer")
        self._count(fields, "file footer FF", self.report.count)
        self.stage = "end"

    def _totals(self, record: str, label: str, fields: list[str], scope: _Scope) -> None:
        if len(fields) < 6:
            raise self.fail(f"{record} has {len(fields)} fields; expected currency and 4 totals")
        try:
            currency = money.normalise_currency(fields[1])
            declared = [_units(f, f"{record} total") for f in fields[2:6]]
        except InvalidInput as exc:
            raise self.fail(str(exc)) from None
        actual = scope.totals.get(currency, [0, 0, 0, 0])
        for total, said, has in zip(TOTAL_NAMES, declared, actual, strict=True):
            if said != has:
                raise mismatch(
                    self.name,
                    f"line {self.line}",
                    f"{label} {currency} {total} says {said}, body rows add up to {has}",
                )

    def _undeclared(self, scope: _Scope, declared: set[str], where: str, record: str) -> None:
        for currency in sorted(set(scope.totals) - declared):
            raise mismatch(
                self.name,
                f"line {self.line}",
                f"{where} has {currency} activity but no {record} footer line for {currency}",
            )

    def _count(self, fields: list[str], label: str, actual: int) -> None:
        said_text = fields[1].strip() if len(fields) > 1 else ""
        if not _UNITS.match(said_text):
            raise self.fail(f"{label} count {said_text!r} is not a whole number")
        if int(said_text) != actual:
            raise mismatch(
                self.name,
                f"line {self.line}",
                f"{label} says {int(said_text)} transactions, body has {actual}",
            )

    def finish(self) -> Parsed:
        if self.stage != "end":
            raise malformed(
                self.name, None, f"{_MISSING[self.stage]}: the file is truncated or malformed"
            )
        notes = list(self.notes)
        if self.skipped:
            notes.append(count_note("non-settlement rows by event code", self.skipped))
        return Parsed(self.rows, sum(self.skipped.values()), notes)


_STAGE_HINT = {
    "start": "the file must start with the report header RH",
    "file": "the file header FH must follow RH",
    "report": "expected a section header SH or the report footer RF",
    "section": "expected the column header CH after SH",
    "columns": "expected SB body rows or the section footer SF",
    "section-footer": "expected more SF lines or the section count SC",
    "report-footer": "expected more RF lines or the report count RC",
    "file-footer": "expected the file footer FF",
    "end": "nothing may follow the file footer FF",
}
_MISSING = {
    "start": "no report header RH",
    "file": "no file header FH",
    "report": "no report footer RF",
    "section": "section has no column header CH",
    "columns": "section has no section footer SF",
    "section-footer": "section has no record count SC",
    "report-footer": "no report record count RC",
    "file-footer": "no file footer FF",
}
_HANDLERS = {
    "RH": _Reader.rh,
    "FH": _Reader.fh,
    "SH": _Reader.sh,
    "CH": _Reader.ch,
    "SB": _Reader.sb,
    "SF": _Reader.sf,
    "SC": _Reader.sc,
    "RF": _Reader.rf,
    "RC": _Reader.rc,
    "FF": _Reader.ff,
}


def _drcr(text: str, what: str) -> bool:
    flag = text.strip().upper()
    if flag not in ("CR", "DR"):
        raise InvalidInput(f"{what} is {text!r}, expected CR or DR")
    return flag == "CR"


def _units(text: str, what: str) -> int:
    value = text.strip()
    if not _UNITS.match(value):
        raise InvalidInput(f"{what} {text!r} is not an unsigned whole number of cents")
    return int(value)


def to_minor_units(units: int, currency: str) -> int:
    """STL amounts carry two implied decimals whatever the currency; finsup's carry the ISO ones."""
    exp = money.exponent(currency)
    if exp >= 2:
        return units * 10 ** (exp - 2)
    whole, rest = divmod(units, 10 ** (2 - exp))
    if rest:
        raise InvalidInput(
            f"amount {units} (= {units / 100:.2f}) {currency} has a fraction {currency} does not have"
        )
    return whole


def to_stl_units(minor: int, currency: str) -> int:
    exp = money.exponent(currency)
    if exp <= 2:
        return minor * 10 ** (2 - exp)
    units, rest = divmod(minor, 10 ** (exp - 2))
    if rest:
        raise ValueError(f"{minor} minor units of {currency} cannot be written with 2 decimals")
    return units


def _time(text: str, what: str) -> str:
    match = _STL_TIME.match(text.strip())
    if match is None:
        raise InvalidInput(f"{what} {text!r} is not YYYY/MM/DD HH:MM:SS +HHMM")
    y, mo, d, h, mi, s, oh, om = match.groups()
    iso = f"{y}-{mo}-{d}T{h}:{mi}:{s}{oh}:{om}"
    clock.parse_instant(iso)  # checks it is a real time
    return iso


def _custom(get: _Getter, columns: Mapping[str, int]) -> str | None:
    return (get("Custom Field") or None) if _key("Custom Field") in columns else None


def parse_stl(path: Path) -> Parsed:
    return parse_stl_text(read_text(path), path.name)


def parse_stl_text(text: str, name: str) -> Parsed:
    reader = _Reader(name)
    lines = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for fields in lines:
            reader.line = lines.line_num
            if not any(f.strip() for f in fields):
                continue
            reader.feed(fields)
    except csv.Error as exc:
        raise malformed(name, f"line {lines.line_num}", f"is not valid CSV ({exc})") from None
    return reader.finish()


# -- writer --------------------------------------------------------------------------------------


def _q(value: object) -> str:
    return '"' + str(value).replace('"', '""') + '"'


def _stl_time(instant: str) -> str:
    parsed = datetime.fromisoformat(clock.parse_instant(instant).replace("Z", "+00:00"))
    if parsed.microsecond:
        raise ValueError(f"STL times have whole seconds; {instant} has a fraction")
    return parsed.astimezone(UTC).strftime("%Y/%m/%d %H:%M:%S +0000")


def _sb_line(row: Mapping[str, object]) -> tuple[list[str], tuple[str, int, bool, str, int, bool]]:
    kind = str(row["kind"])
    credit = row["direction"] == "credit"
    code = as_opt_str(row.get("event_code")) or DEFAULT_CODE.get(kind, "")
    if settlement_kind(code, credit) != kind:
        raise ValueError(f"event code {code!r} {row['direction']} does not read back as {kind}")
    if row.get("batch_ref") is not None:
        raise ValueError("an STL has no batch reference")
    txn = as_opt_str(row.get("gateway_txn_id"))
    if txn is None:
        raise ValueError("an STL row needs a gateway_txn_id (its Transaction ID)")
    currency = str(row["currency"])
    fee_currency = str(row.get("fee_currency") or currency)
    gross = to_stl_units(as_int(row["gross_minor"], "gross_minor"), currency)
    fee_minor = as_int(row.get("fee_minor") or 0, "fee_minor")
    fee = to_stl_units(abs(fee_minor), fee_currency)
    occurred = as_opt_str(row.get("occurred_at"))
    settled_on = str(row["settled_on"])
    completed = f"{settled_on.replace('-', '/')} 00:00:00 +0000"
    if occurred and clock.parse_instant(occurred)[:10] == settled_on:
        completed = _stl_time(occurred)
    values = {
        "Transaction ID": _q(txn),
        "Transaction Event Code": _q(code),
        "Transaction Initiation Date": _stl_time(occurred) if occurred else "",
        "Transaction Completion Date": completed,
        "Transaction Debit or Credit": _q("CR" if credit else "DR"),
        "Gross Transaction Amount": str(gross),
        "Gross Transaction Currency": _q(currency),
        "Fee Debit or Credit": _q("CR" if fee_minor < 0 else "DR"),
        "Fee Amount": str(fee),
        "Fee Currency": _q(fee_currency),
        "Custom Field": _q(row.get("description") or ""),
    }
    line = ['"SB"', *(values.get(c, '""') for c in COLUMNS)]
    return line, (currency, gross, credit, fee_currency, fee, fee_minor < 0)


def write_stl(
    path: Path,
    rows: Iterable[Mapping[str, object]],
    *,
    report_date: str,
    account_id: str,
    sections: int = 1,
    corrupt: str | None = None,
) -> Path:
    """Writes settlement rows as a one-file STL report whose footers agree with its body.

    Rows are split into ``sections`` consecutive sections. ``corrupt`` ("SF", "SC",
    "RF", "RC" or "FF") makes that footer overstate by one, for testing refusals.
    Rows need a ``gateway_txn_id`` and whole-second times; ``event_code`` defaults
    from the kind (sale T0006, refund T1107, chargeback T1106).
    """
    if corrupt is not None and corrupt not in FOOTERS:
        raise ValueError(f"corrupt must be one of {', '.join(FOOTERS)}")
    body = [_sb_line(row) for row in rows]
    day = report_date.replace("-", "/")
    out = [
        f'"RH",{day} 23:59:59 +0000,"A",{_q(account_id)},009,',
        '"FH",01',
    ]
    report = _Scope()
    bump = {name: 1 if corrupt == name else 0 for name in FOOTERS}
    chunks = _chunks(body, max(1, sections))
    for chunk in chunks:
        section = _Scope()
        out.append(f'"SH",{day} 00:00:00 +0000,{day} 23:59:59 +0000,{_q(account_id)},""')
        out.append(",".join(['"CH"', *(_q(c) for c in COLUMNS)]))
        for line, totals in chunk:
            out.append(",".join(line))
            section.add(*totals)
            report.add(*totals)
        out.extend(_footer_lines("SF", section, bump))
        out.append(f'"SC",{section.count + bump["SC"]}')
        bump["SF"] = bump["SC"] = 0  # only the first section is corrupted
    out.extend(_footer_lines("RF", report, bump))
    out.append(f'"RC",{report.count + bump["RC"]}')
    out.append(f'"FF",{report.count + bump["FF"]}')
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def _chunks(items: Sequence[_T], parts: int) -> list[Sequence[_T]]:
    size = -(-len(items) // parts) if items else 0
    if size == 0:
        return [items]
    return [items[i : i + size] for i in range(0, len(items), size)]


def _footer_lines(record: str, scope: _Scope, bump: dict[str, int]) -> list[str]:
    lines = []
    for i, (currency, totals) in enumerate(sorted(scope.totals.items())):
        said = [totals[0] + (bump[record] if i == 0 else 0), *totals[1:]]
        balances = ',"CR",0' * 4  # balances are not checked by the parser; zero keeps them valid
        lines.append(f'"{record}",{_q(currency)},{",".join(map(str, said))}{balances}')
    return lines

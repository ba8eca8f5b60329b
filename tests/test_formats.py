"""Landed-file parsers: exact rows from realistic fixtures, whole-file refusals, writer round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finsup_dagster.formats import (
    PARSERS,
    REVENUE_COLUMNS,
    SETTLEMENT_COLUMNS,
    parse_file,
    parse_page,
    write_settlement_csv,
    write_stl,
    write_transactions_page,
)
from finsup_dagster.formats.paypal_codes import DEFAULT_CODE
from finsup_dagster.ledger.errors import FooterMismatch, MalformedFile
from tests.helpers.settlement_rows import camt053_in_each_version

DATA = Path(__file__).parent / "data" / "formats"
STL = DATA / "STL-20261120.01.009.CSV"
CAMT = DATA / "camt053-statement.xml"
CSV = DATA / "settlement.csv"
PAGE = DATA / "transactions-page.json"


def _settlement(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "gateway": None,
        "gateway_txn_id": None,
        "batch_ref": None,
        "batch_net_minor": None,
        "event_code": None,
        "fee_minor": 0,
        "occurred_at": None,
        "description": None,
    }
    base.update(fields)
    base.setdefault("fee_currency", base["currency"])
    base.setdefault("settler_ref", base["record_ref"])
    return base


# gateway_txn_id -> (kind, direction, gross_minor, currency, fee_minor): what every settlement
# fixture says alike about the same PayPal transaction.
_PAYPAL_TXNS = {
    "5TY05013RG002845M": ("sale", "credit", 12000, "USD", 378),
    "8MC585209K746392H": ("sale", "credit", 4550, "USD", 162),
    "2BX64321AB123456C": ("refund", "debit", 12000, "USD", -330),
    "4JP11122EF333444G": ("sale", "credit", 1500, "JPY", 54),
    "7EU55566GH777888J": ("chargeback", "debit", 2999, "EUR", 1500),
}
_TXN_FIELDS = ("kind", "direction", "gross_minor", "currency", "fee_minor")


def _paypal(
    txn: str,
    row: int,
    ref: str,
    settled_on: str,
    at: str | None,
    description: str | None = None,
    **fields: object,
) -> dict[str, object]:
    """The settlement row for PayPal fixture transaction `txn`; `at` is a time on 2026-11-20."""
    known = dict(zip(_TXN_FIELDS, _PAYPAL_TXNS[txn], strict=True))
    place = {"row_number": row, "record_ref": ref, "settled_on": settled_on}
    occurred_at = None if at is None else f"2026-11-20T{at}.000000Z"
    said = {"gateway_txn_id": txn, "occurred_at": occurred_at, "description": description}
    return _settlement(gateway="paypal", **known, **place, **said, **fields)


def _strip(rows: list[dict[str, object]], *drop: str) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k not in ("raw", *drop)} for row in rows]


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- fixtures parse to exact rows -----------------------------------------------------------------


def test_stl_fixture_rows_skips_and_notes() -> None:
    parsed = parse_file("paypal-stl", STL)
    assert parsed.skipped == 2
    assert parsed.notes == ["skipped 2 non-settlement rows by event code: 1 T0400, 1 T2101"]
    assert all(tuple(row) == SETTLEMENT_COLUMNS for row in parsed.rows)

    def stl(row: int, txn: str, code: str, at: str, description: str | None = None) -> dict:
        return _paypal(txn, row, txn, "2026-11-20", at, description, event_code=code)

    assert _strip(parsed.rows) == [
        stl(5, "5TY05013RG002845M", "T0006", "09:15:00", "order 1001"),
        stl(6, "8MC585209K746392H", "T0006", "15:40:10"),
        stl(7, "2BX64321AB123456C", "T1107", "18:02:00", "refund order 1001"),
        # STL amounts carry two implied decimals even for JPY: 150000 is 1500 yen.
        stl(13, "4JP11122EF333444G", "T0006", "11:00:00", "order 1003"),
        stl(14, "7EU55566GH777888J", "T1201", "20:30:00", "chargeback order 998"),
    ]
    raw = json.loads(str(parsed.rows[2]["raw"]))
    assert raw["PayPal Reference ID"] == "5TY05013RG002845M"  # the refunded sale, for auditors


def test_camt053_fixture_batch_credit_single_entry_and_pending() -> None:
    parsed = parse_file("camt053", CAMT)
    assert parsed.skipped == 1
    assert parsed.notes == ["skipped 1 entries not booked: 1 status PDNG"]
    batch = {
        "batch_ref": "2026112000042",
        "batch_net_minor": 10709,
        "event_code": "PMNT/RCDT/ESCT",
        "kind": "sale",
        "direction": "credit",
        "currency": "EUR",
        "settled_on": "2026-11-20",
    }
    assert _strip(parsed.rows) == [
        _settlement(
            row_number=1,
            record_ref="2026112000042/1",
            settler_ref="2026112000042-1",
            gateway_txn_id="5TY05013RG002845M",
            gross_minor=8000,
            fee_minor=250,
            description="PAYPAL PAYOUT 77 order 1001",
            **batch,
        ),
        _settlement(
            row_number=2,
            record_ref="2026112000042/2",
            settler_ref="2026112000042-2",
            gateway_txn_id="8MC585209K746392H",
            gross_minor=3099,
            fee_minor=140,
            description="SEPA CREDIT TRANSFER PAYPAL EUROPE",
            **batch,
        ),
        _settlement(
            row_number=3,
            record_ref="2026112000051",
            event_code="NTRF",
            kind="other",
            direction="debit",
            gross_minor=5716,
            currency="EUR",
            fee_minor=35,
            settled_on="2026-11-20",
            description="TRANSFER TO CARD ACQUIRER",
        ),
    ]
    raw = json.loads(str(parsed.rows[0]["raw"]))
    assert raw["tx"]["Refs"]["EndToEndId"] == "5TY05013RG002845M"
    assert raw["entry"]["Amt"] == {"@Ccy": "EUR", "#text": "107.09"}


def test_settlement_csv_fixture_rows() -> None:
    parsed = parse_file("settlement-csv", CSV)
    assert (parsed.skipped, parsed.notes) == (0, [])
    batch = {"batch_ref": "PAYOUT-77", "batch_net_minor": 16010}
    assert _strip(parsed.rows) == [
        _paypal(
            "5TY05013RG002845M", 2, "STL-0001", "2026-11-20", "09:15:00", "order 1001", **batch
        ),
        _paypal("8MC585209K746392H", 3, "STL-0002", "2026-11-20", None, **batch),
        _paypal("2BX64321AB123456C", 4, "STL-0003", "2026-11-21", "18:02:00", "refund, order 1001"),
        _settlement(
            gateway="stripe",
            row_number=5,
            record_ref="STL-0004",
            kind="other",
            direction="debit",
            gross_minor=1500,
            currency="EUR",
            settled_on="2026-11-21",
            description="monthly account fee",
        ),
        _paypal("4JP11122EF333444G", 6, "STL-0005", "2026-11-21", "11:00:00"),
    ]
    assert json.loads(str(parsed.rows[3]["raw"]))["gateway"] == "stripe"


def test_transactions_page_fixture_rows() -> None:
    parsed = parse_file("paypal-transactions", PAGE)
    assert parsed.skipped == 2
    assert parsed.notes == ["skipped 2 transactions: 1 event T0400, 1 status D (denied)"]
    assert all(tuple(row) == REVENUE_COLUMNS for row in parsed.rows)

    def rev(n: int, tid: str, amount: str, ccy: str, at: str, kind: str, status: str) -> dict:
        return {
            "row_number": n,
            "record_ref": tid,
            "source": "paypal",
            "external_id": tid,
            "amount": amount,
            "currency": ccy,
            "occurred_at": f"2026-11-20T{at}.000000Z",
            "kind": kind,
            "status": status,
        }

    expected = [
        ("5TY05013RG002845M", "120.00", "USD", "09:15:00", "sale", "confirmed"),
        ("8MC585209K746392H", "45.50", "USD", "15:40:10", "sale", "projected"),
        ("2BX64321AB123456C", "120.00", "USD", "18:02:00", "refund", "confirmed"),
        ("4JP11122EF333444G", "1500", "JPY", "02:00:00", "sale", "reversed"),
        ("7EU55566GH777888J", "29.99", "EUR", "20:30:00", "chargeback", "confirmed"),
    ]
    assert _strip(parsed.rows) == [rev(n, *row) for n, row in enumerate(expected, 1)]
    assert parse_page(PAGE.read_bytes(), PAGE.name).rows == parsed.rows


def test_parsers_are_registered_by_format_name() -> None:
    assert set(PARSERS) == {"paypal-stl", "camt053", "settlement-csv", "paypal-transactions"}


# -- footers and summaries ------------------------------------------------------------------------


def _edit(tmp_path: Path, source: Path, old: str, new: str, name: str | None = None) -> Path:
    text = source.read_text(encoding="utf-8")
    assert old in text
    out = tmp_path / (name or source.name)
    out.write_text(text.replace(old, new, 1), encoding="utf-8")
    return out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"SC",4', '"SC",5', "line 10: section 1 record count SC says 5 transactions, body has 4"),
        ('"RC",7', '"RC",6', "report record count RC says 6 transactions, body has 7"),
        ('"FF",7', '"FF",12', "file footer FF says 12 transactions, body has 7"),
        (
            '"SF","USD",16550',
            '"SF","USD",16551',
            "section 1 footer SF USD gross credit total says 16551, body rows add up to 16550",
        ),
        (
            '"RF","JPY",150000,0,0,5400',
            '"RF","JPY",150000,0,0,5300',
            "report footer RF JPY fee debit total says 5300, body rows add up to 5400",
        ),
        (
            '"SF","JPY",150000,0,0,5400,"CR",0,"CR",144600,"CR",0,"CR",0\n',
            "",
            "section 2 has JPY activity but no SF footer line for JPY",
        ),
    ],
)
def test_stl_footer_disagreement_is_refused(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = _edit(tmp_path, STL, old, new)
    with pytest.raises(FooterMismatch) as exc:
        parse_file("paypal-stl", path)
    assert expected in _one_line(exc)
    assert str(exc.value).startswith("STL-20261120.01.009.CSV: ")


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ('"FF",7\n', "no file footer FF: the file is truncated or malformed"),
        ('"RC",7\n"FF",7\n', "no report record count RC"),
        ('"SC",3\n', "RF record out of place"),
    ],
)
def test_stl_missing_footer_is_malformed(tmp_path: Path, cut: str, expected: str) -> None:
    path = _edit(tmp_path, STL, cut, "")
    with pytest.raises(MalformedFile) as exc:
        parse_file("paypal-stl", path)
    assert not isinstance(exc.value, FooterMismatch)
    assert expected in _one_line(exc)


def test_stl_bad_body_field_names_the_line(tmp_path: Path) -> None:
    path = _edit(tmp_path, STL, '"CR",4550,"USD"', '"XX",4550,"USD"')
    with pytest.raises(MalformedFile, match=r"line 6: Transaction Debit or Credit is 'XX'"):
        parse_file("paypal-stl", path)
    path = _edit(tmp_path, STL, '"CR",150000,"JPY"', '"CR",150050,"JPY"')
    with pytest.raises(MalformedFile, match=r"line 13: .*JPY has a fraction"):
        parse_file("paypal-stl", path)


def test_stl_writer_corrupt_footer_option(tmp_path: Path) -> None:
    rows = [
        _settlement(
            record_ref="A",
            gateway_txn_id="A",
            kind="sale",
            direction="credit",
            gross_minor=100,
            currency="USD",
            settled_on="2026-11-20",
        )
    ]
    for footer in ("SF", "SC", "RF", "RC", "FF"):
        path = write_stl(
            tmp_path / f"{footer}.csv",
            rows,
            report_date="2026-11-20",
            account_id="ACC",
            corrupt=footer,
        )
        with pytest.raises(FooterMismatch, match=footer):
            parse_file("paypal-stl", path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "<NbOfNtries>3</NbOfNtries>",
            "<NbOfNtries>4</NbOfNtries>",
            "TtlNtries NbOfNtries says 4 entries, statement has 3",
        ),
        (
            "<Sum>134.25</Sum>",
            "<Sum>134.26</Sum>",
            "TtlCdtNtries Sum says 134.26, entries add up to 134.25",
        ),
        (
            "<TtlNetNtryAmt>77.09</TtlNetNtryAmt>",
            "<TtlNetNtryAmt>77.90</TtlNetNtryAmt>",
            "net total says 77.90, entries net to 77.09",
        ),
    ],
)
def test_camt053_summary_disagreement_is_refused(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = _edit(tmp_path, CAMT, old, new)
    with pytest.raises(FooterMismatch) as exc:
        parse_file("camt053", path)
    assert (
        _one_line(exc)
        == f"camt053-statement.xml: statement STMT-20261121-EUR TxsSummry: {expected}"
    )


def test_transactions_single_page_total_items_must_match(tmp_path: Path) -> None:
    path = _edit(tmp_path, PAGE, '"total_items": 7', '"total_items": 8')
    with pytest.raises(
        FooterMismatch, match="total_items says 8 transactions, the only page has 7"
    ):
        parse_file("paypal-transactions", path)


# -- unreadable files -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(PARSERS))
@pytest.mark.parametrize(
    "content",
    [b"", b"   \n", b"\xff\xfe\x00garbage\x00", b"\x89PNG\r\n\x1a\n\x00\x00", b"hello, world\n"],
)
def test_empty_binary_or_garbage_files_are_malformed(
    tmp_path: Path, fmt: str, content: bytes
) -> None:
    path = tmp_path / "landed.bin"
    path.write_bytes(content)
    with pytest.raises(MalformedFile) as exc:
        parse_file(fmt, path)
    assert _one_line(exc).startswith("landed.bin: ")


@pytest.mark.parametrize(
    ("fmt", "source"),
    [
        ("paypal-stl", STL),
        ("camt053", CAMT),
        ("settlement-csv", CSV),
        ("paypal-transactions", PAGE),
    ],
)
def test_truncated_files_are_malformed(tmp_path: Path, fmt: str, source: Path) -> None:
    data = source.read_bytes()
    path = tmp_path / source.name
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MalformedFile) as exc:
        parse_file(fmt, path)
    _one_line(exc)


def test_unknown_format_and_missing_file_are_malformed(tmp_path: Path) -> None:
    with pytest.raises(MalformedFile, match="unknown format 'mt940'"):
        parse_file("mt940", CSV)
    with pytest.raises(MalformedFile, match=r"nope\.csv: no such file"):
        parse_file("settlement-csv", tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "prolog",
    [
        '<!DOCTYPE Document [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>',
        '<!DOCTYPE Document SYSTEM "file:///etc/passwd">',
        "<!doctype Document>",
    ],
)
def test_camt053_with_doctype_is_refused(tmp_path: Path, prolog: str) -> None:
    text = CAMT.read_text(encoding="utf-8").replace("?>\n", "?>\n" + prolog + "\n", 1)
    path = tmp_path / "evil.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MalformedFile, match="DOCTYPE/ENTITY declaration; refused"):
        parse_file("camt053", path)


def test_camt053_other_message_type_is_refused(tmp_path: Path) -> None:
    path = _edit(tmp_path, CAMT, "camt.053.001.02", "pain.001.001.03")
    with pytest.raises(MalformedFile, match=r"is not a camt\.053 statement"):
        parse_file("camt053", path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (",sale,45.50,", ",sale,45.505,", "line 3: amount '45.505' has 3 decimals; USD allows 2"),
        (",sale,45.50,", ",sale,-45.50,", "line 3: amount '-45.50' is negative"),
        (",other,15.00,EUR,", ",fee,15.00,EUR,", "line 5: kind 'fee' is not one of"),
        (
            ",2026-11-21,,,,monthly",
            ",2026-11-31,,,,monthly",
            "line 5: date '2026-11-31' is not a calendar date",
        ),
        (
            "2026-11-20T18:02:00Z",
            "2026-11-20T18:02:00",
            "line 4: time '2026-11-20T18:02:00' has no UTC offset",
        ),
        (
            ",,,,monthly account fee",
            ",,,9.00,monthly account fee",
            "line 5: batch_net_amount is set but batch_ref is blank",
        ),
        (",JPY,54,JPY,", ",XYZ,54,JPY,", "line 6: unknown currency 'XYZ'"),
    ],
)
def test_settlement_csv_bad_row_refuses_the_file(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = _edit(tmp_path, CSV, old, new)
    with pytest.raises(MalformedFile) as exc:
        parse_file("settlement-csv", path)
    assert _one_line(exc).startswith(f"settlement.csv: {expected}")


def test_settlement_csv_header_must_be_exact(tmp_path: Path) -> None:
    path = _edit(tmp_path, CSV, "settlement_id,gateway,", "id,gateway,")
    with pytest.raises(MalformedFile, match=r"settlement\.csv: line 1: header must be exactly"):
        parse_file("settlement-csv", path)


def test_settlement_csv_header_only_is_an_empty_settlement(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(CSV.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    assert parse_file("settlement-csv", path).rows == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '"value": "45.50"',
            '"value": 45.50',
            "transaction 2 (8MC585209K746392H): transaction_amount value 45.50 is a JSON number",
        ),
        (
            '"transaction_status": "P"',
            '"transaction_status": "X"',
            "transaction 2 (8MC585209K746392H): transaction_status 'X' is not one of",
        ),
        (
            '"2026-11-20T15:40:10+0000"',
            '"2026-11-20T15:40:10"',
            "transaction 2 (8MC585209K746392H): time '2026-11-20T15:40:10' has no UTC offset",
        ),
        ('"value": "45.50"', '"value": "45.505"', "has 3 decimals; USD allows 2"),
        ('"transaction_details"', '"details"', "is not a transaction search page"),
    ],
)
def test_transactions_page_bad_transaction_refuses_the_page(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = _edit(tmp_path, PAGE, old, new)
    with pytest.raises(MalformedFile) as exc:
        parse_file("paypal-transactions", path)
    assert expected in _one_line(exc)


# -- writers round-trip ---------------------------------------------------------------------------


def test_fixture_rows_round_trip_through_every_settlement_writer(tmp_path: Path) -> None:
    rows = parse_file("settlement-csv", CSV).rows
    again = parse_file("settlement-csv", write_settlement_csv(tmp_path / "s.csv", rows))
    assert _strip(again.rows, "row_number") == _strip(rows, "row_number")

    stl_rows = [
        dict(r, record_ref=r["gateway_txn_id"], batch_ref=None, batch_net_minor=None)
        for r in parse_file("paypal-stl", STL).rows
    ]
    path = write_stl(
        tmp_path / "stl.csv", stl_rows, report_date="2026-11-20", account_id="X", sections=2
    )
    assert _strip(parse_file("paypal-stl", path).rows, "row_number") == _strip(
        stl_rows, "row_number"
    )

    camt_rows = parse_file("camt053", CAMT).rows
    for path in camt053_in_each_version(tmp_path, camt_rows):
        assert _strip(parse_file("camt053", path).rows) == _strip(camt_rows)


def test_transactions_page_round_trip(tmp_path: Path) -> None:
    rows = parse_file("paypal-transactions", PAGE).rows
    path = write_transactions_page(
        tmp_path / "page.json", rows, page=2, total_pages=3, total_items=250
    )
    again = parse_file("paypal-transactions", path)
    assert _strip(again.rows) == _strip(rows)
    assert json.loads(path.read_text())["page"] == 2


_CURRENCIES = st.sampled_from(["USD", "EUR", "JPY", "GBP"])
_KINDS = st.sampled_from([("sale", "credit"), ("refund", "debit"), ("chargeback", "debit")])
_INSTANTS = st.integers(min_value=1_700_000_000, max_value=1_900_000_000)


@st.composite
def _rows(draw: st.DrawFn) -> list[dict[str, object]]:
    from datetime import UTC, datetime

    count = draw(st.integers(min_value=0, max_value=8))
    rows = []
    for i in range(count):
        currency = draw(_CURRENCIES)
        kind, direction = draw(_KINDS)
        at = datetime.fromtimestamp(draw(_INSTANTS), UTC)
        rows.append(
            _settlement(
                record_ref=f"TX{i:04d}",
                gateway="paypal",
                gateway_txn_id=f"TX{i:04d}",
                kind=kind,
                direction=direction,
                gross_minor=draw(st.integers(min_value=1, max_value=10**12)),
                currency=currency,
                fee_minor=draw(st.integers(min_value=-(10**6), max_value=10**6)),
                settled_on=at.date().isoformat(),
                occurred_at=draw(st.none() | st.just(at.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))),
                description=draw(st.none() | st.text("abc ,\"'xyz", min_size=1).map(str.strip))
                or None,
            )
        )
    return rows


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows(), sections=st.integers(min_value=1, max_value=3))
def test_property_stl_and_settlement_csv_round_trip(
    tmp_path: Path, rows: list[dict[str, object]], sections: int
) -> None:
    stl = write_stl(
        tmp_path / "p.stl", rows, report_date="2026-11-20", account_id="ACC", sections=sections
    )
    parsed = parse_file("paypal-stl", stl).rows
    assert _strip(parsed, "row_number", "event_code") == _strip(rows, "event_code")
    assert [r["event_code"] for r in parsed] == [DEFAULT_CODE[str(r["kind"])] for r in rows]
    csv_rows = [dict(r, batch_ref="B1", batch_net_minor=r["gross_minor"]) for r in rows[:2]] + rows[
        2:
    ]
    path = write_settlement_csv(tmp_path / "p.csv", csv_rows)
    assert _strip(parse_file("settlement-csv", path).rows, "row_number") == [
        dict(r, event_code=None) for r in csv_rows
    ]

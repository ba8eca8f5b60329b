"""An anomaly in one row is about that row: the file is read, the row lands, a note names it.

Real-shaped files (an STL written by the writer PayPal's spec describes, a
camt.053.001.02 batch booking as banks write them, a camt.053.001.08 with charge
records, the finsup settlement CSV) with a repeated transaction id or
reference, and with charges stated once for a batch entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finsup_dagster.formats import parse_file, write_stl
from finsup_dagster.formats.camt053 import allocate
from finsup_dagster.ledger.errors import MalformedFile
from tests.helpers.settlement_rows import camt053_in_each_version, sale_line

DATA = Path(__file__).parent / "data" / "formats"


def _stl_row(txn: str, gross: int, fee: int, currency: str = "USD") -> dict[str, Any]:
    return sale_line(
        txn, gross, currency, fee, event_code="T0006", occurred_at="2026-11-21T10:00:00Z"
    )


def test_a_repeated_stl_transaction_lands_with_a_note_naming_both_lines(tmp_path: Path) -> None:
    rows = [_stl_row("8AB1", 1000, 30), _stl_row("8AB2", 2000, 60), _stl_row("8AB1", 1000, 30)]
    path = write_stl(
        tmp_path / "STL-20261121.01.009.CSV",
        rows,
        report_date="2026-11-21",
        account_id="FINSUPMERCH01",
    )
    parsed = parse_file("paypal-stl", path)
    assert [(r["record_ref"], r["settler_ref"], r["gateway_txn_id"]) for r in parsed.rows] == [
        ("8AB1", "8AB1", "8AB1"),
        ("8AB2", "8AB2", "8AB2"),
        ("8AB1#7", "8AB1", "8AB1"),
    ]
    assert parsed.notes == [
        "STL-20261121.01.009.CSV: line 7: Transaction ID 8AB1 repeats line 5 "
        "(both land; the reconciliation settles one)"
    ]


def test_a_repeated_settlement_id_lands_with_a_note(tmp_path: Path) -> None:
    text = (DATA / "settlement.csv").read_text(encoding="utf-8").replace("STL-0005,", "STL-0001,")
    path = tmp_path / "settlement.csv"
    path.write_text(text, encoding="utf-8")
    parsed = parse_file("settlement-csv", path)
    assert len(parsed.rows) == 5
    assert [r["record_ref"] for r in parsed.rows][-1] == "STL-0001#6"
    assert parsed.rows[-1]["settler_ref"] == "STL-0001"
    assert parsed.notes == [
        "settlement.csv: line 6: settlement_id STL-0001 repeats line 2 "
        "(both land; the reconciliation settles one)"
    ]


def _detail(ref: str, e2e: str, amount: str, charges: str = "") -> str:
    return f"""
          <TxDtls>
            <Refs><AcctSvcrRef>{ref}</AcctSvcrRef><EndToEndId>{e2e}</EndToEndId></Refs>
            <AmtDtls><TxAmt><Amt Ccy="EUR">{amount}</Amt></TxAmt></AmtDtls>{charges}
          </TxDtls>"""


def _statement(entries: str, count: int, total: str, version: str = "001.02") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.{version}">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>STMT-1</MsgId><CreDtTm>2026-11-22T06:00:00+01:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>STMT-20261121-EUR</Id>
      <CreDtTm>2026-11-22T06:00:00+01:00</CreDtTm>
      <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct>
      <TxsSummry>
        <TtlNtries><NbOfNtries>{count}</NbOfNtries><Sum>{total}</Sum></TtlNtries>
      </TxsSummry>{entries}
    </Stmt>
  </BkToCstmrStmt>
</Document>
"""


def _entry(ref: str, amount: str, details: str, charges: str = "", sts: str = "BOOK") -> str:
    return f"""
      <Ntry>
        <Amt Ccy="EUR">{amount}</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts>{sts}</Sts>
        <BookgDt><Dt>2026-11-21</Dt></BookgDt>
        <AcctSvcrRef>{ref}</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>{charges}
        <NtryDtls>{details}
        </NtryDtls>
      </Ntry>"""


ENTRY_CHARGE_002 = """
        <Chrgs><TtlChrgsAndTaxAmt Ccy="EUR">1.00</TtlChrgsAndTaxAmt><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>DBIT</CdtDbtInd></Chrgs>"""


def _write(tmp_path: Path, text: str, name: str = "statement.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_batch_booking_repeating_the_entry_reference_lands_with_line_ids(
    tmp_path: Path,
) -> None:
    # 30.00 + 20.00 + 10.00 gross, one 1.00 EUR charge for the whole entry: credited 59.00.
    details = (
        _detail("B-1", "AS-1", "30.00")
        + _detail("B-1", "AS-2", "20.00")
        + _detail("B-1", "AS-3", "10.00")
    )
    path = _write(
        tmp_path, _statement(_entry("B-1", "59.00", details, ENTRY_CHARGE_002), 1, "59.00")
    )
    parsed = parse_file("camt053", path)
    assert [
        (r["record_ref"], r["settler_ref"], r["batch_ref"], r["gateway_txn_id"])
        for r in parsed.rows
    ] == [
        ("B-1/1", "B-1", "B-1", "AS-1"),
        ("B-1/2", "B-1", "B-1", "AS-2"),
        ("B-1/3", "B-1", "B-1", "AS-3"),
    ]
    # 100 cents over gross 3000:2000:1000 is 50, 33.3, 16.7: 50, 33, 17 (largest remainder).
    assert [(r["fee_minor"], r["fee_currency"]) for r in parsed.rows] == [
        (50, "EUR"),
        (33, "EUR"),
        (17, "EUR"),
    ]
    assert sum(int(str(r["gross_minor"])) - int(str(r["fee_minor"])) for r in parsed.rows) == 5900
    assert parsed.notes == [
        "statement.xml: statement STMT-20261121-EUR entry 1: batch B-1: entry charges 1.00 EUR "
        "shared over its 3 lines in proportion to their gross"
    ]


def test_an_entry_reference_used_twice_lands_both_entries(tmp_path: Path) -> None:
    one = _entry("R-9", "12.00", _detail("NOTPROVIDED", "AS-7", "12.00"))
    two = _entry("R-9", "12.00", _detail("NOTPROVIDED", "AS-8", "12.00"))
    path = _write(tmp_path, _statement(one + two, 2, "24.00"))
    parsed = parse_file("camt053", path)
    assert [(r["record_ref"], r["gateway_txn_id"]) for r in parsed.rows] == [
        ("R-9", "AS-7"),
        ("R-9#2", "AS-8"),
    ]
    assert parsed.notes == [
        "statement.xml: statement STMT-20261121-EUR entry 2: reference R-9 repeats entry 1 "
        "(both land)"
    ]


def test_entry_charges_equal_to_the_details_are_their_total_not_added_again(
    tmp_path: Path,
) -> None:
    fee = '<Chrgs><Amt Ccy="EUR">0.50</Amt><CdtDbtInd>DBIT</CdtDbtInd></Chrgs>'
    details = _detail("D-1", "AS-1", "30.00", fee) + _detail("D-2", "AS-2", "20.00", fee)
    path = _write(
        tmp_path, _statement(_entry("B-2", "49.00", details, ENTRY_CHARGE_002), 1, "49.00")
    )
    parsed = parse_file("camt053", path)
    assert [r["fee_minor"] for r in parsed.rows] == [50, 50]
    assert parsed.notes == []


def test_entry_charges_disagreeing_with_the_details_are_not_allocated(tmp_path: Path) -> None:
    fee = '<Chrgs><Amt Ccy="EUR">0.20</Amt><CdtDbtInd>DBIT</CdtDbtInd></Chrgs>'
    details = _detail("D-1", "AS-1", "30.00", fee) + _detail("D-2", "AS-2", "20.00")
    path = _write(
        tmp_path, _statement(_entry("B-3", "49.00", details, ENTRY_CHARGE_002), 1, "49.00")
    )
    parsed = parse_file("camt053", path)
    assert [r["fee_minor"] for r in parsed.rows] == [20, 0]
    assert parsed.notes == [
        "statement.xml: statement STMT-20261121-EUR entry 1: batch B-3: entry charges 1.00 EUR "
        "are not the total of its details' charges; not allocated",
        "statement.xml: statement STMT-20261121-EUR entry 1: batch B-3: details net to 49.80 "
        "EUR, the entry amount is 49.00",
    ]


def test_charge_records_of_001_08_and_a_charge_booked_separately(tmp_path: Path) -> None:
    # 001.08: Chrgs/TtlChrgsAndTaxAmt and Rcrd; the second record is pre-advice
    # (ChrgInclInd false): not taken from this entry, so no fee of its lines.
    charges = """
        <Chrgs>
          <TtlChrgsAndTaxAmt Ccy="EUR">1.50</TtlChrgsAndTaxAmt>
          <Rcrd><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><ChrgInclInd>true</ChrgInclInd><Br>CRED</Br></Rcrd>
          <Rcrd><Amt Ccy="EUR">0.50</Amt><CdtDbtInd>DBIT</CdtDbtInd><ChrgInclInd>false</ChrgInclInd></Rcrd>
        </Chrgs>"""
    details = _detail("X", "AS-1", "25.00") + _detail("X", "AS-2", "25.00")
    text = _statement(_entry("B-4", "49.00", details, charges), 1, "49.00", version="001.08")
    parsed = parse_file(
        "camt053", _write(tmp_path, text.replace("<Sts>BOOK</Sts>", "<Sts><Cd>BOOK</Cd></Sts>"))
    )
    assert [r["fee_minor"] for r in parsed.rows] == [50, 50]
    assert parsed.notes == [
        "statement.xml: statement STMT-20261121-EUR entry 1: entry B-4: charges 0.50 EUR are not "
        "included in the amount (ChrgInclInd false): the bank books them as an entry of their "
        "own, not as this fee",
        "statement.xml: statement STMT-20261121-EUR entry 1: batch B-4: entry charges 1.00 EUR "
        "shared over its 2 lines in proportion to their gross",
    ]


def test_what_makes_the_file_untrustworthy_still_refuses_it(tmp_path: Path) -> None:
    details = _detail("B-1", "AS-1", "30.00") + _detail("B-1", "AS-2", "20.00")
    wrong_sum = _statement(_entry("B-1", "49.00", details, ENTRY_CHARGE_002), 1, "50.00")
    with pytest.raises(MalformedFile, match=r"TtlNtries Sum says 50\.00, entries add up to 49\.00"):
        parse_file("camt053", _write(tmp_path, wrong_sum))
    no_amount = _statement(
        _entry("B-1", "49.00", details).replace(
            '<AmtDtls><TxAmt><Amt Ccy="EUR">20.00</Amt></TxAmt></AmtDtls>', ""
        ),
        1,
        "49.00",
    )
    with pytest.raises(MalformedFile, match="transaction detail 2 of 2 has no amount"):
        parse_file("camt053", _write(tmp_path, no_amount))


def test_a_batch_written_with_its_charges_on_the_entry_reads_back(tmp_path: Path) -> None:
    rows = [
        {
            "row_number": 0,
            "record_ref": f"APPLE-1/{n}",
            "settler_ref": "APPLE-1",
            "gateway_txn_id": f"AS-{n}",
            "batch_ref": "APPLE-1",
            "batch_net_minor": 5900,
            "event_code": "PMNT/RCDT/ESCT",
            "kind": "sale",
            "direction": "credit",
            "gross_minor": gross,
            "currency": "EUR",
            "fee_minor": fee,
            "fee_currency": "EUR",
            "settled_on": "2026-11-21",
            "occurred_at": None,
            "description": None,
            "raw": "",
        }
        for n, (gross, fee) in enumerate([(3000, 50), (2000, 33), (1000, 17)], 1)
    ]
    for path in camt053_in_each_version(tmp_path, rows, charges_on_entry={"APPLE-1"}):
        text = path.read_text(encoding="utf-8")
        assert text.count("<Chrgs>") == 1  # once, on the entry
        got = parse_file("camt053", path).rows
        assert [(r["record_ref"], r["settler_ref"], r["fee_minor"]) for r in got] == [
            (r["record_ref"], r["settler_ref"], r["fee_minor"]) for r in rows
        ]


@given(
    total=st.integers(-(10**9), 10**9),
    weights=st.lists(st.integers(1, 10**7), min_size=1, max_size=30),
)
def test_allocation_is_exact_and_proportional(total: int, weights: list[int]) -> None:
    shares = allocate(total, weights)
    assert sum(shares) == total
    assert shares == allocate(total, weights)  # deterministic
    whole = sum(weights)
    for share, weight in zip(shares, weights, strict=True):
        # never a whole minor unit off its exact share |total| * weight / whole
        assert abs(abs(share) * whole - abs(total) * weight) < whole
        assert share == 0 or (share > 0) == (total > 0)


def test_a_transactions_page_repeating_a_transaction_lands_both_rows(tmp_path: Path) -> None:
    page = json.loads((DATA / "transactions-page.json").read_text(encoding="utf-8"))
    first = page["transaction_details"][0]
    page["transaction_details"].append(first)
    page["total_items"] = len(page["transaction_details"])
    path = tmp_path / "page.json"
    path.write_text(json.dumps(page), encoding="utf-8")
    parsed = parse_file("paypal-transactions", path)
    tid = first["transaction_info"]["transaction_id"]
    assert [r["external_id"] for r in parsed.rows].count(tid) == 2
    n = len(page["transaction_details"])
    assert f"page.json: transaction {n}: transaction_id {tid} repeats transaction 1" in parsed.notes

"""Bank payouts as pain.001.001.09 files: the XSD accepts every file, amounts are exact.

Real parts throughout: files in ``tmp_path``, the XSD that sepaxml ships,
checked here with a schema object of the test's own (not the writer's), and
the file parsed back with ElementTree. The one stand-in is a failing
``os.link`` (a crash between the temporary file and its final name cannot be
produced for real), said where it is used.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sepaxml
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from finsup_dagster.gateways import bank_pain001
from finsup_dagster.gateways.bank_pain001 import BankFileGateway, write_atomically
from finsup_dagster.gateways.payouts import GatewayError, GatewayRefused, PayoutLine, PayoutRequest
from finsup_dagster.ledger.beneficiaries import check_destination
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.money import MAX_MINOR

NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"}
XSD = Path(os.path.dirname(sepaxml.__file__)) / "schemas" / "pain.001.001.09.xsd"
KEY = "pb_20261207113259_abcdef0123-v1"
NOW = datetime(2026, 12, 7, 11, 30, 5, tzinfo=UTC)
DEBTOR = ("Finsup Agents Ltd", "DE02 1001 0010 9307 1186 03", "PBNKDEFFXXX")
# Real-valid IBANs (country format, ISO check digits, national check digits) with BICs.
ACCOUNTS = (
    ("DE89370400440532013000", "COBADEFFXXX"),
    ("GB82WEST12345698765432", "NWBKGB2L"),
    ("FR1420041010050500013M02606", "PSSTFRPP"),
    ("KW81CBKU0000000000001234560101", "CBKUKWKW"),
)


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def gateway(outbox: Path, now: datetime = NOW) -> BankFileGateway:
    return BankFileGateway(outbox, *DEBTOR, clock=lambda: now)


def request(
    currency: str, amounts: list[int], key: str = KEY, names: list[str] | None = None
) -> PayoutRequest:
    lines = tuple(
        PayoutLine(
            item_id=100 + n,
            receiver="/".join(ACCOUNTS[n % len(ACCOUNTS)]),
            amount_minor=amount,
            currency=currency,
            name=(names or [])[n] if names else f"Payee {n}",
        )
        for n, amount in enumerate(amounts)
    )
    return PayoutRequest(batch_id="pb_1", idempotency_key=key, currency=currency, lines=lines)


def files(outbox: Path) -> list[str]:
    """Everything in the outbox, hidden temporary files included."""
    return sorted(os.listdir(outbox)) if outbox.exists() else []


def parse(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def texts(root: ET.Element, path: str) -> list[str]:
    return [e.text or "" for e in root.iterfind(path, NS)]


def test_the_file_validates_and_carries_every_field(
    tmp_path: Path, schema: xmlschema.XMLSchema
) -> None:
    outbox = tmp_path / "outbox" / "bank"
    batch = gateway(outbox).submit_batch(request("EUR", [1050, 1, 100000]))

    path = outbox / f"{KEY}.xml"
    assert files(outbox) == [path.name]
    schema.validate(str(path))
    root = parse(path)
    tx = "p:CstmrCdtTrfInitn/p:PmtInf/p:CdtTrfTxInf"
    assert texts(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId") == [KEY]
    assert texts(root, "p:CstmrCdtTrfInitn/p:PmtInf/p:PmtInfId") == [KEY]
    assert texts(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:CreDtTm") == ["2026-12-07T11:30:05+00:00"]
    assert texts(root, "p:CstmrCdtTrfInitn/p:PmtInf/p:ReqdExctnDt/p:Dt") == ["2026-12-07"]
    assert texts(root, f"{tx}/p:PmtId/p:EndToEndId") == ["100", "101", "102"]
    assert texts(root, f"{tx}/p:Amt/p:InstdAmt") == ["10.50", "0.01", "1000.00"]
    assert [e.get("Ccy") for e in root.iterfind(f"{tx}/p:Amt/p:InstdAmt", NS)] == ["EUR"] * 3
    assert texts(root, f"{tx}/p:Cdtr/p:Nm") == ["Payee 0", "Payee 1", "Payee 2"]
    assert texts(root, f"{tx}/p:CdtrAcct/p:Id/p:IBAN") == [a[0] for a in ACCOUNTS[:3]]
    assert texts(root, f"{tx}/p:CdtrAgt/p:FinInstnId/p:BICFI") == [a[1] for a in ACCOUNTS[:3]]
    for block in ("p:CstmrCdtTrfInitn/p:GrpHdr", "p:CstmrCdtTrfInitn/p:PmtInf"):
        assert texts(root, f"{block}/p:NbOfTxs") == ["3"]
        assert texts(root, f"{block}/p:CtrlSum") == ["1010.51"]
    pmt = "p:CstmrCdtTrfInitn/p:PmtInf"
    assert texts(root, f"{pmt}/p:Dbtr/p:Nm") == ["Finsup Agents Ltd"]
    assert texts(root, f"{pmt}/p:DbtrAcct/p:Id/p:IBAN") == ["DE02100100109307118603"]
    assert texts(root, f"{pmt}/p:DbtrAgt/p:FinInstnId/p:BICFI") == ["PBNKDEFFXXX"]
    assert texts(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:InitgPty/p:Nm") == ["Finsup Agents Ltd"]

    assert (batch.gateway_batch_id, batch.status, batch.read_back) == (KEY, "WRITTEN", False)
    assert [(i.item_id, i.gateway_item_id, i.status) for i in batch.items] == [
        (100, f"{KEY}:100", "WRITTEN"),
        (101, f"{KEY}:101", "WRITTEN"),
        (102, f"{KEY}:102", "WRITTEN"),
    ]
    # What goes to gateway_events names the file but holds no full IBAN.
    assert path.name in batch.raw and "1010.51" in batch.raw
    for iban, _ in ACCOUNTS[:3]:
        assert iban not in batch.raw and all(iban not in i.raw for i in batch.items)


@pytest.mark.parametrize(
    ("currency", "amounts", "shown", "ctrl_sum"),
    [
        ("EUR", [1050, 1, 100000], ["10.50", "0.01", "1000.00"], "1010.51"),
        ("KWD", [1234, 5, 1000], ["1.234", "0.005", "1.000"], "2.239"),
        ("JPY", [1500, 1], ["1500", "1"], "1501"),
        ("USD", [MAX_MINOR], ["1000000000000.00"], "1000000000000.00"),
    ],
)
def test_amounts_are_exact_decimal_strings_of_the_minor_units(
    tmp_path: Path,
    schema: xmlschema.XMLSchema,
    currency: str,
    amounts: list[int],
    shown: list[str],
    ctrl_sum: str,
) -> None:
    gateway(tmp_path).submit_batch(request(currency, amounts))

    path = tmp_path / f"{KEY}.xml"
    schema.validate(str(path))
    root = parse(path)
    instd = list(root.iterfind("p:CstmrCdtTrfInitn/p:PmtInf/p:CdtTrfTxInf/p:Amt/p:InstdAmt", NS))
    assert [(e.text, e.get("Ccy")) for e in instd] == [(s, currency) for s in shown]
    assert texts(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum") == [ctrl_sum]
    assert texts(root, "p:CstmrCdtTrfInitn/p:PmtInf/p:CtrlSum") == [ctrl_sum]


def test_submitting_again_reads_the_one_file_back(tmp_path: Path) -> None:
    req = request("EUR", [1050, 2000])
    gw = gateway(tmp_path)
    assert gw.find_batch(req, None) is None
    first = gw.submit_batch(req)
    body = (tmp_path / f"{KEY}.xml").read_bytes()

    # A day later (a retried run): the same payment, so the same file, not a second one.
    later = gateway(tmp_path, now=datetime(2026, 12, 8, 9, 0, tzinfo=UTC))
    again = later.submit_batch(req)
    assert again.read_back and not first.read_back
    assert again.gateway_batch_id == first.gateway_batch_id == KEY
    assert again.items == first.items
    assert files(tmp_path) == [f"{KEY}.xml"]
    assert (tmp_path / f"{KEY}.xml").read_bytes() == body

    found = later.find_batch(req, None)
    assert found is not None and found.gateway_batch_id == KEY and not found.read_back
    assert later.find_batch(req, KEY) == found
    assert later.get_batch(KEY).items == first.items
    item = later.get_item(f"{KEY}:101")
    assert (item.item_id, item.status) == (101, "WRITTEN")


def test_a_file_moved_to_sent_is_still_read_back_never_written_again(tmp_path: Path) -> None:
    req = request("EUR", [1050])
    gateway(tmp_path).submit_batch(req)
    (tmp_path / "sent").mkdir()
    (tmp_path / f"{KEY}.xml").rename(tmp_path / "sent" / f"{KEY}.xml")  # the operator uploaded it

    gw = gateway(tmp_path, now=datetime(2026, 12, 9, tzinfo=UTC))
    found = gw.find_batch(req, None)
    assert found is not None and found.gateway_batch_id == KEY
    assert gw.submit_batch(req).read_back
    assert files(tmp_path) == ["sent"]
    assert gw.get_item(f"{KEY}:100").status == "WRITTEN"
    with pytest.raises(GatewayRefused, match="same key, different payload"):
        gw.submit_batch(request("EUR", [1051]))


def test_the_same_key_with_another_payload_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    gw.submit_batch(request("EUR", [1050, 2000]))
    body = (tmp_path / f"{KEY}.xml").read_bytes()

    changed = [
        request("EUR", [1050, 2001]),
        request("EUR", [1050]),
        request("EUR", [1050, 2000], names=["Payee 0", "Someone Else"]),
        request("USD", [1050, 2000]),
    ]
    for req in changed:
        with pytest.raises(GatewayRefused, match="same key, different payload"):
            gw.submit_batch(req)
        with pytest.raises(GatewayRefused, match="same key, different payload"):
            gw.find_batch(req, None)
    other_debtor = BankFileGateway(tmp_path, "Finsup Agents Ltd", *ACCOUNTS[0], clock=lambda: NOW)
    with pytest.raises(GatewayRefused, match="same key, different payload"):
        other_debtor.submit_batch(request("EUR", [1050, 2000]))
    assert files(tmp_path) == [f"{KEY}.xml"]
    assert (tmp_path / f"{KEY}.xml").read_bytes() == body


@pytest.mark.parametrize(
    ("receiver", "why"),
    [
        ("DE89370400440532013001/COBADEFFXXX", "invalid IBAN"),  # check digits
        ("DE65100700000123456789/DEUTDEBBXXX", "invalid IBAN"),  # national check digits
        ("DE41370400440532013/COBADEFFXXX", "invalid IBAN"),  # too short for Germany
        ("DE89370400440532013000/COBAZZFFXXX", "invalid BIC"),  # no country ZZ
        ("DE89370400440532013000", "invalid BIC"),  # no BIC at all
    ],
)
def test_a_bad_iban_or_bic_never_reaches_the_outbox(
    tmp_path: Path, receiver: str, why: str
) -> None:
    outbox = tmp_path / "bank"
    good = request("EUR", [1050, 2000, 3000])
    lines = list(good.lines)
    lines[1] = PayoutLine(101, receiver, 2000, "EUR", "Bad Account")
    bad = PayoutRequest(good.batch_id, good.idempotency_key, "EUR", tuple(lines))

    with pytest.raises(GatewayRefused, match=f"item 101 .*{why}") as refused:
        gateway(outbox).submit_batch(bad)
    message = str(refused.value)
    assert "\n" not in message
    iban = receiver.split("/")[0]
    assert iban not in message and iban[:4] in message  # masked: DE89 **** 3001
    assert files(outbox) == []  # no file, not even a temporary one


def test_other_lines_a_bank_cannot_pay_are_refused_before_any_file(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    base = request("EUR", [1050])
    line = base.lines[0]
    cases = {
        "is in 'USD', the batch in EUR": PayoutLine(100, line.receiver, 1050, "USD", "A"),
        "has amount 0 minor units": PayoutLine(100, line.receiver, 0, "EUR", "A"),
        "has amount -5 minor units": PayoutLine(100, line.receiver, -5, "EUR", "A"),
        "has no beneficiary name": PayoutLine(100, line.receiver, 1050, "EUR", "  "),
        "has a beneficiary name with control": PayoutLine(100, line.receiver, 1, "EUR", "a\x01"),
    }
    for why, bad in cases.items():
        with pytest.raises(GatewayRefused, match=f"item 100 {why}"):
            gw.submit_batch(PayoutRequest("pb_1", KEY, "EUR", (bad,)))
    with pytest.raises(GatewayRefused, match="item 100 appears twice"):
        gw.submit_batch(PayoutRequest("pb_1", KEY, "EUR", (line, line)))
    with pytest.raises(GatewayRefused, match="has no items"):
        gw.submit_batch(PayoutRequest("pb_1", KEY, "EUR", ()))
    for key in ("../escape", ".hidden", "x" * 36, ""):
        with pytest.raises(GatewayRefused, match=r"cannot be a pain\.001 MsgId"):
            gw.submit_batch(PayoutRequest("pb_1", key, "EUR", (line,)))
    assert files(tmp_path) == []


def test_a_file_the_schema_refuses_is_never_written(tmp_path: Path) -> None:
    # Max140Text: a name the bank could not take whole is refused, never cut short.
    req = request("EUR", [1050, 2000], names=["Payee 0", "N" * 141])
    with pytest.raises(GatewayRefused, match=r"does not validate against pain\.001\.001\.09\.xsd"):
        gateway(tmp_path).submit_batch(req)
    assert files(tmp_path) == []


def test_a_crash_before_the_final_name_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in: a crash between writing the temporary file and publishing it.
    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(bank_pain001.os, "link", crash)
    with pytest.raises(GatewayError, match="could not write bank file"):
        gateway(tmp_path).submit_batch(request("EUR", [1050]))
    assert files(tmp_path) == []


def test_publishing_never_replaces_a_file_another_writer_published(tmp_path: Path) -> None:
    assert write_atomically(tmp_path, "a.xml", b"first")
    assert not write_atomically(tmp_path, "a.xml", b"second")
    assert (tmp_path / "a.xml").read_bytes() == b"first"
    assert files(tmp_path) == ["a.xml"]


def test_items_of_a_written_file_cannot_be_cancelled(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    gw.submit_batch(request("EUR", [1050]))
    with pytest.raises(GatewayRefused, match="cannot be cancelled item by item"):
        gw.cancel_item(f"{KEY}:100")
    with pytest.raises(GatewayRefused, match="no bank file"):
        gw.get_batch("pb_other-v1")
    with pytest.raises(GatewayRefused, match="has no item"):
        gw.get_item(f"{KEY}:999")


def test_the_debtor_account_is_checked_when_the_gateway_is_built(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"debtor account DE89 \*\*\*\* 3001: .*invalid IBAN"):
        BankFileGateway(tmp_path, "Finsup", "DE89370400440532013001", "COBADEFFXXX")
    with pytest.raises(InvalidInput, match="invalid BIC"):
        BankFileGateway(tmp_path, "Finsup", "DE89370400440532013000", "COBA")
    with pytest.raises(InvalidInput, match="debtor's account name"):
        BankFileGateway(tmp_path, " ", "DE89370400440532013000", "COBADEFFXXX")


@pytest.mark.parametrize(
    ("destination", "stored"),
    [
        ("DE89 3704 0044 0532 0130 00/COBADEFFXXX", "DE89370400440532013000/COBADEFFXXX"),
        ("gb82 west 1234 5698 7654 32 / nwbkgb2l", "GB82WEST12345698765432/NWBKGB2L"),
        ("FR1420041010050500013M02606/PSSTFRPP", "FR1420041010050500013M02606/PSSTFRPP"),
    ],
)
def test_beneficiary_bank_destinations_are_read_by_schwifty(destination: str, stored: str) -> None:
    assert check_destination("bank", destination) == stored


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        # ISO check digits right, but each wrong for its country in a way schwifty sees.
        ("DE65100700000123456789/DEUTDEBBXXX", "invalid IBAN"),  # national check digits
        ("DE41370400440532013/COBADEFFXXX", "invalid IBAN"),  # length for DE
        ("GB55WEST1234569876543A/NWBKGB2L", "invalid IBAN"),  # GB's BBAN format
        ("XX89370400440532013000/COBADEFFXXX", "invalid IBAN"),  # no such country
        ("DE89370400440532013000/COBAZZFF", "invalid BIC"),
        ("DE89370400440532013000/", "invalid BIC"),
    ],
)
def test_beneficiary_bank_destinations_schwifty_refuses(destination: str, message: str) -> None:
    with pytest.raises(
        InvalidInput, match=f"^bank destination has an {message} \\(write IBAN/BIC\\)$"
    ):
        check_destination("bank", destination)


CURRENCIES = st.sampled_from(["EUR", "USD", "JPY", "KRW", "KWD", "BHD"])  # exponents 2, 0, 3
NAMES = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "Zs", "P")),
    min_size=1,
    max_size=140,
).filter(lambda s: s.strip() == s and s != "")


@settings(max_examples=40, deadline=None)
@given(
    currency=CURRENCIES,
    lines=st.lists(
        st.tuples(st.integers(1, MAX_MINOR), st.sampled_from(ACCOUNTS), NAMES),
        min_size=1,
        max_size=12,
    ),
)
def test_generated_batches_validate_and_amounts_round_trip(
    schema: xmlschema.XMLSchema, currency: str, lines: list[tuple[int, tuple[str, str], str]]
) -> None:
    exp = {"JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3}.get(currency, 2)
    req = PayoutRequest(
        batch_id="pb_h",
        idempotency_key="pb_h-v1",
        currency=currency,
        lines=tuple(
            PayoutLine(n + 1, "/".join(account), amount, currency, name)
            for n, (amount, account, name) in enumerate(lines)
        ),
    )
    with tempfile.TemporaryDirectory() as outbox:
        gw = gateway(Path(outbox))
        batch = gw.submit_batch(req)
        path = Path(outbox) / "pb_h-v1.xml"
        schema.validate(str(path))
        root = parse(path)
        assert gw.submit_batch(req).read_back
        assert files(Path(outbox)) == ["pb_h-v1.xml"]

    def minor(text: str) -> int:
        value = Decimal(text) * 10**exp
        assert value == value.to_integral_value()
        assert len(text.partition(".")[2]) == exp  # exactly the currency's decimals
        return int(value)

    tx = "p:CstmrCdtTrfInitn/p:PmtInf/p:CdtTrfTxInf"
    assert [minor(t) for t in texts(root, f"{tx}/p:Amt/p:InstdAmt")] == [a for a, _, _ in lines]
    assert texts(root, f"{tx}/p:PmtId/p:EndToEndId") == [str(n + 1) for n in range(len(lines))]
    assert texts(root, f"{tx}/p:Cdtr/p:Nm") == [name for _, _, name in lines]
    total = sum(a for a, _, _ in lines)
    for block in ("p:CstmrCdtTrfInitn/p:GrpHdr", "p:CstmrCdtTrfInitn/p:PmtInf"):
        assert [minor(t) for t in texts(root, f"{block}/p:CtrlSum")] == [total]
        assert texts(root, f"{block}/p:NbOfTxs") == [str(len(lines))]
    assert [i.item_id for i in batch.items] == [n + 1 for n in range(len(lines))]

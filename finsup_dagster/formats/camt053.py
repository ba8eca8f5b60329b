"""ISO 20022 camt.053 bank-to-customer statements (001.02 to 001.08 and later), read whole or refused.

Elements are found by local name, so every camt.053 version's namespace is read
the same way; a document of another message type (camt.052, pain.001, ...) is
refused. The file must be UTF-8. A ``<!DOCTYPE`` or ``<!ENTITY`` declaration
refuses the file before it is parsed: a statement never needs one, and an
entity can expand a small file into gigabytes.

Each booked ``Stmt/Ntry`` becomes settlement rows. ``record_ref`` is a line id
unique in the file; ``settler_ref`` keeps the bank's own reference as written:

- An entry with zero or one ``NtryDtls/TxDtls`` is one row. Its line id is the
  entry's ``AcctSvcrRef`` (else ``NtryRef``, else ``<statement id>#<n>``);
  ``settler_ref`` the detail's ``Refs/AcctSvcrRef``, else the entry's reference;
  ``gateway_txn_id`` is the detail's ``Refs/EndToEndId`` (else ``Refs/TxId``;
  ``NOTPROVIDED`` counts as none), or None without a detail: such a row is
  matched later by amount and date.
- An entry with several ``TxDtls`` is one bank credit (or debit) settling several
  gateway transactions: one row per detail, line id ``<entry line id>/<n>`` (a
  bank's batch booking often gives every detail the entry's own
  ``AcctSvcrRef``: normal, and kept in ``settler_ref``), ``batch_ref`` the
  entry's line id and ``batch_net_minor`` the entry amount. Each detail needs its
  own amount. When the details' gross less charges differ from the entry amount
  a note says so; the file is still read (banks do not always itemise charges).
- An entry whose reference an earlier entry of the file already used is read
  like any other, its line id ``<reference>#<entry number>``, with a note.

``gross_minor`` is the amount the bank states for the row: the detail's
``AmtDtls/TxAmt/Amt`` (else its ``Amt``), else the entry ``Amt``. ``fee_minor`` is
the sum of the row's charges (``Chrgs/Rcrd/Amt`` from 001.04 on, ``Chrgs/Amt`` in
001.02, else ``TtlChrgsAndTaxAmt``; the detail's own, else the entry's for a
one-row entry): a DBIT charge (or one without an indicator) is a fee charged to
us, a CRDT charge a fee given back. A charge record with ``ChrgInclInd`` false is
"added as pre-advice": not taken out of this amount, booked by the bank as an
entry of its own, so it is no fee of the row (a note names it). Charges stated
once on a batch entry whose details state none are the batch's fee, shared over
its rows in proportion to their gross (``allocate``: exact to the minor unit,
remainders to the largest fractions, the earlier row first on a tie); when the
details state their own, the entry's must be their total (nothing is added),
else a note says so and nothing is allocated. ``Br`` (who bears charges along
the payment chain) does not change what this account was charged and is kept
in ``raw`` only. ``settled_on`` is the booking date (else the value date); ``occurred_at``
is None, a statement has no transaction time. ``event_code`` is the bank
transaction code, ``Domn/Fmly/SubFmly`` (e.g. ``PMNT/RCDT/ESCT``) or the
proprietary code. ``description`` is the remittance information (``Ustrd``
lines joined), else ``AddtlNtryInf``.

Kind: a credit is a ``sale``; a debit that names a gateway transaction is a
``refund``; a debit without one (bank charges, transfers out) and any reversal
entry (``RvslInd`` true) is ``other``. Entries whose status is not BOOK (PDNG,
INFO) are skipped and counted. Chargebacks cannot be told from refunds in a
statement; the reconciler sees them as refunds of the gateway transaction.

When a statement has ``TxsSummry``, its counts and sums (``TtlNtries``,
``TtlCdtNtries``, ``TtlDbtNtries`` and the net total) must agree with the
entries of that statement, all statuses included, else ``FooterMismatch``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from finsup_dagster.formats.common import (
    Parsed,
    as_int,
    as_opt_str,
    check_date,
    count_note,
    malformed,
    mismatch,
    raw_json,
    read_text,
    settlement_row,
)
from finsup_dagster.ledger import money
from finsup_dagster.ledger.errors import InvalidInput, MalformedFile

_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_NAMESPACE = re.compile(r"^\{([^}]*)\}")
NO_REF = "NOTPROVIDED"


# -- element helpers: local names only, so every version's namespace reads the same -------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _find(el: ET.Element | None, path: str) -> ET.Element | None:
    for name in path.split("/"):
        if el is None:
            return None
        el = next((c for c in el if _local(c.tag) == name), None)
    return el


def _text(el: ET.Element | None, path: str) -> str | None:
    found = _find(el, path)
    value = (found.text or "").strip() if found is not None else ""
    return value or None


def _to_json(el: ET.Element, skip: str | None = None) -> object:
    """An element as nested dicts (``@attr``, ``#text``, lists for repeats) for the ``raw`` column."""
    out: dict[str, object] = {f"@{_local(k)}": v for k, v in el.attrib.items()}
    for child in el:
        name = _local(child.tag)
        if name == skip:
            continue
        value = _to_json(child)
        if name in out:
            prior = out[name]
            out[name] = [*prior, value] if isinstance(prior, list) else [prior, value]
        else:
            out[name] = value
    text = (el.text or "").strip()
    if not out:
        return text
    if text:
        out["#text"] = text
    return out


# -- parsing -------------------------------------------------------------------------------------


def parse_camt053(path: Path) -> Parsed:
    return parse_camt053_text(read_text(path), path.name)


def parse_camt053_text(text: str, name: str) -> Parsed:
    if _DECLARATION.search(text):
        raise malformed(
            name, None, "contains a DOCTYPE/ENTITY declaration; refused (entity expansion risk)"
        )
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise malformed(name, None, f"is not well-formed XML ({exc})") from None
    namespace = _NAMESPACE.match(root.tag)
    uri = namespace.group(1) if namespace else ""
    if _local(root.tag) != "Document" or (uri and ":camt.053." not in uri):
        raise malformed(name, None, f"is not a camt.053 statement (root {root.tag[:80]})")
    report = _find(root, "BkToCstmrStmt")
    if report is None:
        raise malformed(name, None, "has no BkToCstmrStmt: not a bank-to-customer statement")
    statements = _children(report, "Stmt")
    if not statements:
        raise malformed(name, None, "has no statement (Stmt)")
    parsed = Parsed(rows=[])
    skipped: Counter[str] = Counter()
    entry_refs: dict[str, int] = {}
    ordinal = 0
    for number, stmt in enumerate(statements, 1):
        stmt_id = _text(stmt, "Id") or f"statement {number}"
        entries = _children(stmt, "Ntry")
        _check_summary(name, stmt_id, stmt, entries)
        for entry in entries:
            ordinal += 1
            where = f"statement {stmt_id} entry {ordinal}"
            status = _text(entry, "Sts/Cd") or _text(entry, "Sts") or "BOOK"
            if status.upper() != "BOOK":
                skipped[f"status {status}"] += 1
                continue
            ref = _entry_ref(entry, stmt_id, ordinal)
            # A bank reference used by an earlier entry is about this entry, not the
            # file: its lines get line ids of their own and land, with a note.
            line_id = ref if ref not in entry_refs else f"{ref}#{ordinal}"
            try:
                rows, notes = _entry_rows(entry, ref, line_id)
            except MalformedFile:
                raise
            except InvalidInput as exc:
                raise malformed(name, where, exc) from None
            if ref in entry_refs:
                notes.insert(0, f"reference {ref} repeats entry {entry_refs[ref]} (both land)")
            else:
                entry_refs[ref] = ordinal
            parsed.rows.extend(rows)
            parsed.notes.extend(f"{name}: {where}: {note}" for note in notes)
    # One row per settlement line, numbered in file order: the warehouse keys a
    # line by (file hash, row_number), and batch items share their entry.
    for n, row in enumerate(parsed.rows, 1):
        row["row_number"] = n
    parsed.skipped = sum(skipped.values())
    if skipped:
        parsed.notes.append(count_note("entries not booked", skipped))
    return parsed


def _amount(el: ET.Element | None, what: str) -> tuple[int, str]:
    if el is None or not (el.text or "").strip():
        raise InvalidInput(f"{what} is missing")
    currency = money.normalise_currency(el.get("Ccy", ""))
    return money.to_minor((el.text or "").strip(), currency), currency


def _credit(el: ET.Element | None, path: str, default: bool | None = None) -> bool:
    flag = _text(el, path)
    if flag is None and default is not None:
        return default
    if flag not in ("CRDT", "DBIT"):
        raise InvalidInput(f"{path} is {flag!r}, expected CRDT or DBIT")
    return flag == "CRDT"


@dataclass
class _Charges:
    """The charges an element states, signed (positive: charged to us)."""

    fee: int = 0
    currency: str | None = None
    # Charges the bank books as entries of their own (ChrgInclInd false): not in this amount.
    separate: list[str] = field(default_factory=list)

    @property
    def stated(self) -> bool:
        return self.currency is not None


def _charges(el: ET.Element | None) -> _Charges:
    """``el``'s Chrgs (001.02 ``Chrgs/Amt``, later ``Chrgs/Rcrd/Amt``, else ``TtlChrgsAndTaxAmt``).

    A record with ``ChrgInclInd`` false is "added as pre-advice" (ISO 20022): it is
    not taken out of this amount but booked by the bank on its own, so it is no
    fee of this line; it is listed in ``separate`` for a note.
    """
    out = _Charges()
    if el is None:
        return out
    records: list[ET.Element] = []
    for chrgs in _children(el, "Chrgs"):
        rcrds = _children(chrgs, "Rcrd")
        if rcrds:
            records.extend(rcrds)
        elif any(_find(chrgs, tag) is not None for tag in ("Amt", "TtlChrgsAndTaxAmt")):
            records.append(chrgs)
    for rec in records:
        amount_el = _find(rec, "Amt")
        amount, ccy = _amount(
            amount_el if amount_el is not None else _find(rec, "TtlChrgsAndTaxAmt"), "charge Amt"
        )
        signed = -amount if _credit(rec, "CdtDbtInd", default=False) else amount
        included = (_text(rec, "ChrgInclInd") or "true").lower()
        if included not in ("true", "false", "1", "0"):
            raise InvalidInput(f"ChrgInclInd is {included!r}, expected true or false")
        if included in ("false", "0"):
            out.separate.append(f"{money.format_minor(signed, ccy)} {ccy}")
            continue
        if out.currency is not None and ccy != out.currency:
            raise InvalidInput(
                f"charges in both {out.currency} and {ccy}; one fee currency expected"
            )
        out.currency = ccy
        out.fee += signed
    return out


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` shared in proportion to ``weights``, exact to the minor unit.

    Each share is rounded toward zero; the units left over go one each to the
    largest remainders, the earlier share first on a tie (largest remainder
    method). Deterministic, and the shares always add up to ``total``.
    """
    whole = sum(weights)
    if whole <= 0:
        raise ValueError("weights must add up to more than zero")
    size = abs(total)
    shares = [size * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(size * weights[i] % whole), i))
    for i in order[: size - sum(shares)]:
        shares[i] += 1
    return [-x for x in shares] if total < 0 else shares


def _gateway_ref(tx: ET.Element | None) -> str | None:
    for path in ("Refs/EndToEndId", "Refs/TxId"):
        value = _text(tx, path)
        if value and value.upper() != NO_REF:
            return value
    return None


def _bank_code(entry: ET.Element) -> str | None:
    domain = _find(entry, "BkTxCd/Domn")
    if domain is not None:
        parts = [_text(domain, "Cd"), _text(domain, "Fmly/Cd"), _text(domain, "Fmly/SubFmlyCd")]
        return "/".join(p for p in parts if p) or None
    return _text(entry, "BkTxCd/Prtry/Cd")


def _description(el: ET.Element | None) -> str | None:
    if el is None:
        return None
    info = _find(el, "RmtInf")
    lines = [(u.text or "").strip() for u in _children(info, "Ustrd")] if info is not None else []
    return " ".join(x for x in lines if x) or None


def _kind(credit: bool, reversal: bool, gateway_txn_id: str | None) -> str:
    if reversal:
        return "other"
    if credit:
        return "sale"
    return "refund" if gateway_txn_id else "other"


def _entry_ref(entry: ET.Element, stmt_id: str, ordinal: int) -> str:
    return _text(entry, "AcctSvcrRef") or _text(entry, "NtryRef") or f"{stmt_id}#{ordinal}"


def _separate_note(where: str, charges: _Charges) -> list[str]:
    if not charges.separate:
        return []
    return [
        f"{where}: charges {', '.join(charges.separate)} are not included in the amount "
        "(ChrgInclInd false): the bank books them as an entry of their own, not as this fee"
    ]


def _entry_rows(
    entry: ET.Element, ref: str, line_id: str
) -> tuple[list[dict[str, object]], list[str]]:
    """The settlement rows of one booked entry; ``line_id`` is unique in the file."""
    amount, currency = _amount(_find(entry, "Amt"), "entry Amt")
    credit = _credit(entry, "CdtDbtInd")
    reversal = (_text(entry, "RvslInd") or "").lower() == "true"
    booked = _text(entry, "BookgDt/Dt") or (_text(entry, "BookgDt/DtTm") or "")[:10]
    booked = booked or _text(entry, "ValDt/Dt") or (_text(entry, "ValDt/DtTm") or "")[:10]
    if not booked:
        raise InvalidInput("has no booking date (BookgDt) or value date (ValDt)")
    settled_on = check_date(booked)
    code = _bank_code(entry)
    txs = [tx for dtls in _children(entry, "NtryDtls") for tx in _children(dtls, "TxDtls")]
    entry_json = _to_json(entry, skip="NtryDtls")
    entry_charges = _charges(entry)
    notes = _separate_note(f"entry {ref}", entry_charges)

    if len(txs) <= 1:
        tx = txs[0] if txs else None
        gateway = _gateway_ref(tx)
        gross, gross_ccy = amount, currency
        tx_amount = _tx_amount(tx)
        if tx_amount is not None:
            gross, gross_ccy = tx_amount
        charges = _charges(tx)
        notes += _separate_note(f"entry {ref} detail 1", charges)
        if not charges.stated:
            charges = entry_charges
        raw = {"entry": entry_json, "tx": _to_json(tx)} if tx is not None else {"entry": entry_json}
        row = settlement_row(
            row_number=0,
            record_ref=line_id,
            settler_ref=_text(tx, "Refs/AcctSvcrRef") or ref,
            gateway=None,  # a bank statement does not say which gateway paid
            gateway_txn_id=gateway,
            batch_ref=None,
            batch_net_minor=None,
            event_code=code,
            kind=_kind(credit, reversal, gateway),
            direction="credit" if credit else "debit",
            gross_minor=gross,
            currency=gross_ccy,
            fee_minor=charges.fee,
            fee_currency=charges.currency or gross_ccy,
            settled_on=settled_on,
            occurred_at=None,
            description=_description(tx) or _text(entry, "AddtlNtryInf"),
            raw=raw_json(raw),
        )
        return [row], notes

    details: list[tuple[ET.Element, int, str, bool, _Charges]] = []
    for i, tx in enumerate(txs, 1):
        tx_amount = _tx_amount(tx)
        if tx_amount is None:
            raise InvalidInput(f"transaction detail {i} of {len(txs)} has no amount")
        charges = _charges(tx)
        notes += _separate_note(f"entry {ref} detail {i}", charges)
        details.append((tx, *tx_amount, _credit(tx, "CdtDbtInd", default=credit), charges))
    fees, fee_note = _batch_fees(ref, entry_charges, details)
    notes += fee_note

    rows: list[dict[str, object]] = []
    net = 0
    same_currency = True
    for i, ((tx, gross, gross_ccy, tx_credit, _), (fee, fee_ccy)) in enumerate(
        zip(details, fees, strict=True), 1
    ):
        gateway = _gateway_ref(tx)
        same_currency &= gross_ccy == currency and fee_ccy in (None, currency)
        net += (gross if tx_credit == credit else -gross) - (fee if credit else -fee)
        rows.append(
            settlement_row(
                row_number=0,
                # The bank may give every detail the entry's own reference (a batch
                # booking): the line id is the entry's plus the detail's ordinal.
                record_ref=f"{line_id}/{i}",
                settler_ref=_text(tx, "Refs/AcctSvcrRef") or ref,
                gateway=None,
                gateway_txn_id=gateway,
                batch_ref=line_id,
                batch_net_minor=amount,
                event_code=code,
                kind=_kind(tx_credit, reversal, gateway),
                direction="credit" if tx_credit else "debit",
                gross_minor=gross,
                currency=gross_ccy,
                fee_minor=fee,
                fee_currency=fee_ccy or gross_ccy,
                settled_on=settled_on,
                occurred_at=None,
                description=_description(tx) or _text(entry, "AddtlNtryInf"),
                raw=raw_json({"entry": entry_json, "tx": _to_json(tx)}),
            )
        )
    if same_currency and net != amount:
        notes.append(
            f"batch {ref}: details net to {money.format_minor(net, currency)} {currency}, "
            f"the entry amount is {money.format_minor(amount, currency)}"
        )
    return rows, notes


def _batch_fees(
    ref: str, entry: _Charges, details: Sequence[tuple[ET.Element, int, str, bool, _Charges]]
) -> tuple[list[tuple[int, str | None]], list[str]]:
    """Each detail's fee: its own charges, or its share of charges stated once for the entry.

    Charges on the entry of a batch are the batch's fee. When no detail states
    charges of its own, they are shared over the details in proportion to their
    gross (``allocate``). When details state theirs, the entry's must be their
    total (the bank repeating it) and nothing more is added; any other figure is
    left unallocated with a note, and the batch then shows as an amount mismatch.
    """
    own = [(c.fee, c.currency) for *_, c in details]
    if not entry.stated or entry.fee == 0:
        return own, []
    if not any(c.stated for *_, c in details):
        shares = allocate(entry.fee, [gross for _, gross, *_ in details])
        note = (
            f"batch {ref}: entry charges {money.format_minor(entry.fee, entry.currency or '')} "
            f"{entry.currency} shared over its {len(details)} lines in proportion to their gross"
        )
        return [(share, entry.currency) for share in shares], [note]
    currencies = {c.currency for *_, c in details if c.stated}
    total = sum(c.fee for *_, c in details)
    if currencies == {entry.currency} and total == entry.fee:
        return own, []
    return own, [
        f"batch {ref}: entry charges {money.format_minor(entry.fee, entry.currency or '')} "
        f"{entry.currency} are not the total of its details' charges; not allocated"
    ]


def _tx_amount(tx: ET.Element | None) -> tuple[int, str] | None:
    if tx is None:
        return None
    el = _find(tx, "AmtDtls/TxAmt/Amt")
    if el is None:
        el = _find(tx, "Amt")
    return None if el is None else _amount(el, "transaction detail amount")


def _check_summary(name: str, stmt_id: str, stmt: ET.Element, entries: list[ET.Element]) -> None:
    summary = _find(stmt, "TxsSummry")
    if summary is None:
        return
    where = f"statement {stmt_id} TxsSummry"
    amounts: list[tuple[Decimal, bool]] = []
    for n, entry in enumerate(entries, 1):
        try:
            amounts.append((_decimal(_text(entry, "Amt")), _credit(entry, "CdtDbtInd")))
        except InvalidInput as exc:
            raise malformed(name, f"statement {stmt_id} entry {n}", exc) from None
    groups = {
        "TtlNtries": amounts,
        "TtlCdtNtries": [a for a in amounts if a[1]],
        "TtlDbtNtries": [a for a in amounts if not a[1]],
    }
    for group, members in groups.items():
        block = _find(summary, group)
        if block is None:
            continue
        said_count = _text(block, "NbOfNtries")
        if said_count is not None and said_count != str(len(members)):
            raise mismatch(
                name,
                where,
                f"{group} NbOfNtries says {said_count} entries, statement has {len(members)}",
            )
        said_sum = _text(block, "Sum")
        total = sum((a for a, _ in members), Decimal(0))
        if said_sum is not None and _decimal(said_sum) != total:
            raise mismatch(name, where, f"{group} Sum says {said_sum}, entries add up to {total}")
    net_text = _text(summary, "TtlNtries/TtlNetNtryAmt") or _text(
        summary, "TtlNtries/TtlNetNtry/Amt"
    )
    if net_text is not None:
        flag = _text(summary, "TtlNtries/CdtDbtInd") or _text(
            summary, "TtlNtries/TtlNetNtry/CdtDbtInd"
        )
        said = _decimal(net_text) * (-1 if flag == "DBIT" else 1)
        net = sum((a if c else -a for a, c in amounts), Decimal(0))
        if said != net:
            raise mismatch(name, where, f"net total says {said}, entries net to {net}")


def _decimal(text: str | None) -> Decimal:
    # Summary sums are decimals with no currency of their own: compared exactly, never as floats.
    try:
        value = Decimal((text or "").strip())
    except InvalidOperation:
        raise InvalidInput(f"amount {text!r} is not a decimal number") from None
    if not value.is_finite():
        raise InvalidInput(f"amount {text!r} is not a decimal number")
    return value


# -- writer --------------------------------------------------------------------------------------

VERSIONS = ("001.02", "001.08")


def write_camt053(
    path: Path,
    rows: Iterable[Mapping[str, object]],
    *,
    statement_id: str,
    account_iban: str,
    currency: str = "EUR",
    created_at: str = "2026-01-01T00:00:00+00:00",
    version: str = "001.02",
    corrupt_summary: bool = False,
    charges_on_entry: Collection[str] = (),
) -> Path:
    """Writes settlement rows as one camt.053 statement that the parser reads back to them.

    Consecutive rows sharing a ``batch_ref`` become one entry with a detail per row
    (the entry amount is their ``batch_net_minor``); any other row is an entry of
    its own, with one detail when it names a gateway transaction. A batch detail's
    ``Refs/AcctSvcrRef`` is the row's ``settler_ref`` (a bank's batch booking may
    give every detail the entry's own reference). Rows must be in the account
    ``currency`` and their kind must be what the parser derives (see the module
    docstring). ``occurred_at`` is not written: a statement has no transaction
    time. ``corrupt_summary`` overstates TxsSummry's entry count. For the batches
    named in ``charges_on_entry`` the charges are stated once, on the entry (their
    rows' fees added up; the rows' fees must be the shares ``allocate`` gives).
    """
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}")
    ns = f"urn:iso:std:iso:20022:tech:xsd:camt.053.{version}"
    entries = list(_group(list(rows)))
    doc = ET.Element("Document", {"xmlns": ns})
    report = ET.SubElement(doc, "BkToCstmrStmt")
    header = ET.SubElement(report, "GrpHdr")
    _sub(header, "MsgId", statement_id)
    _sub(header, "CreDtTm", created_at)
    stmt = ET.SubElement(report, "Stmt")
    _sub(stmt, "Id", statement_id)
    _sub(stmt, "CreDtTm", created_at)
    acct = ET.SubElement(stmt, "Acct")
    _sub(ET.SubElement(acct, "Id"), "IBAN", account_iban)
    _sub(acct, "Ccy", currency)
    amounts = [(_entry_amount(group), group[0]["direction"] == "credit") for group in entries]
    _write_summary(stmt, amounts, currency, version, corrupt_summary)
    for group, (amount, credit) in zip(entries, amounts, strict=True):
        on_entry = len(group) > 1 and str(group[0]["batch_ref"]) in charges_on_entry
        _write_entry(stmt, group, amount, credit, currency, version, on_entry)
    ET.indent(doc)
    body = ET.tostring(doc, encoding="unicode")
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n", encoding="utf-8")
    return path


def _group(rows: Sequence[Mapping[str, object]]) -> Iterator[list[Mapping[str, object]]]:
    seen: set[str] = set()
    i = 0
    while i < len(rows):
        batch = as_opt_str(rows[i].get("batch_ref"))
        j = i + 1
        if batch is not None:
            if batch in seen:
                raise ValueError(f"rows of batch {batch} must be consecutive")
            seen.add(batch)
            while j < len(rows) and as_opt_str(rows[j].get("batch_ref")) == batch:
                j += 1
            if j - i == 1:
                raise ValueError(f"batch {batch} has one row; a batch entry needs several")
        yield list(rows[i:j])
        i = j


def _entry_amount(group: Sequence[Mapping[str, object]]) -> int:
    first = group[0]
    if len(group) > 1:
        nets = {as_int(r.get("batch_net_minor"), "batch_net_minor") for r in group}
        if len(nets) != 1:
            raise ValueError(f"batch {first.get('batch_ref')} rows disagree on batch_net_minor")
        if {r["direction"] for r in group} != {first["direction"]}:
            raise ValueError(f"batch {first.get('batch_ref')} mixes credits and debits")
        return nets.pop()
    gross = as_int(first["gross_minor"], "gross_minor")
    fee = as_int(first.get("fee_minor") or 0, "fee_minor")
    if first.get("gateway_txn_id") is None:
        return gross  # no detail to carry the gross: the entry amount is it
    net = gross - fee if first["direction"] == "credit" else gross + fee
    return net if net > 0 else gross


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _amt(parent: ET.Element, tag: str, minor: int, currency: str) -> None:
    _sub(parent, tag, money.format_minor(minor, currency), Ccy=currency)


def _write_summary(
    stmt: ET.Element, amounts: list[tuple[int, bool]], currency: str, version: str, corrupt: bool
) -> None:
    summary = ET.SubElement(stmt, "TxsSummry")
    credits = [a for a, c in amounts if c]
    debits = [a for a, c in amounts if not c]
    net = sum(credits) - sum(debits)
    total = ET.SubElement(summary, "TtlNtries")
    _sub(total, "NbOfNtries", str(len(amounts) + (1 if corrupt else 0)))
    _sub(total, "Sum", money.format_minor(sum(credits) + sum(debits), currency))
    flag = "CRDT" if net >= 0 else "DBIT"
    if version == "001.02":
        _sub(total, "TtlNetNtryAmt", money.format_minor(abs(net), currency))
        _sub(total, "CdtDbtInd", flag)
    else:
        net_el = ET.SubElement(total, "TtlNetNtry")
        _sub(net_el, "Amt", money.format_minor(abs(net), currency))
        _sub(net_el, "CdtDbtInd", flag)
    for tag, part in (("TtlCdtNtries", credits), ("TtlDbtNtries", debits)):
        block = ET.SubElement(summary, tag)
        _sub(block, "NbOfNtries", str(len(part)))
        _sub(block, "Sum", money.format_minor(sum(part), currency))


def _write_charges(parent: ET.Element, fee: int, currency: str, version: str) -> None:
    if not fee:
        return
    chrgs = ET.SubElement(parent, "Chrgs")
    target = chrgs if version == "001.02" else ET.SubElement(chrgs, "Rcrd")
    _amt(target, "Amt", abs(fee), currency)
    _sub(target, "CdtDbtInd", "CRDT" if fee < 0 else "DBIT")


def _write_entry(
    stmt: ET.Element,
    group: Sequence[Mapping[str, object]],
    amount: int,
    credit: bool,
    currency: str,
    version: str,
    charges_on_entry: bool = False,
) -> None:
    first = group[0]
    batch = len(group) > 1
    fees = [as_int(row.get("fee_minor") or 0, "fee_minor") for row in group]
    if charges_on_entry and fees != allocate(
        sum(fees), [as_int(r["gross_minor"], "gross_minor") for r in group]
    ):
        raise ValueError(f"batch {first['batch_ref']}: fees are not the entry charge's shares")
    ref = str(first["batch_ref"] if batch else (first.get("settler_ref") or first["record_ref"]))
    for row in group:
        if row["currency"] != currency:
            raise ValueError(f"row {row['record_ref']} is in {row['currency']}, not {currency}")
        gateway = as_opt_str(row.get("gateway_txn_id"))
        if row["kind"] != _kind(row["direction"] == "credit", False, gateway):
            raise ValueError(f"row {row['record_ref']}: kind {row['kind']} does not read back")
    entry = ET.SubElement(stmt, "Ntry")
    _sub(entry, "NtryRef", ref)
    _amt(entry, "Amt", amount, currency)
    _sub(entry, "CdtDbtInd", "CRDT" if credit else "DBIT")
    if version == "001.02":
        _sub(entry, "Sts", "BOOK")
    else:
        _sub(ET.SubElement(entry, "Sts"), "Cd", "BOOK")
    _sub(ET.SubElement(entry, "BookgDt"), "Dt", str(first["settled_on"]))
    _sub(ET.SubElement(entry, "ValDt"), "Dt", str(first["settled_on"]))
    _sub(entry, "AcctSvcrRef", ref)
    code = as_opt_str(first.get("event_code"))
    if code:
        bk = ET.SubElement(entry, "BkTxCd")
        parts = code.split("/")
        if len(parts) == 3:
            domain = ET.SubElement(bk, "Domn")
            _sub(domain, "Cd", parts[0])
            family = ET.SubElement(domain, "Fmly")
            _sub(family, "Cd", parts[1])
            _sub(family, "SubFmlyCd", parts[2])
        else:
            _sub(ET.SubElement(bk, "Prtry"), "Cd", code)
    if charges_on_entry:
        fee_ccy = {str(r.get("fee_currency") or currency) for r in group}
        if len(fee_ccy) != 1:
            raise ValueError(f"batch {first['batch_ref']}: fees in several currencies")
        _write_charges(entry, sum(fees), fee_ccy.pop(), version)
    if not batch and first.get("gateway_txn_id") is None:
        _write_charges(entry, as_int(first.get("fee_minor") or 0, "fee_minor"), currency, version)
        if first.get("description"):
            _sub(entry, "AddtlNtryInf", str(first["description"]))
        return
    details = ET.SubElement(entry, "NtryDtls")
    for row in group:
        tx = ET.SubElement(details, "TxDtls")
        refs = ET.SubElement(tx, "Refs")
        if batch:
            _sub(refs, "AcctSvcrRef", str(row.get("settler_ref") or row["record_ref"]))
        _sub(refs, "EndToEndId", as_opt_str(row.get("gateway_txn_id")) or NO_REF)
        fee_currency = str(row.get("fee_currency") or currency)
        _amt(
            ET.SubElement(ET.SubElement(tx, "AmtDtls"), "TxAmt"),
            "Amt",
            as_int(row["gross_minor"], "gross_minor"),
            currency,
        )
        if not charges_on_entry:
            _write_charges(
                tx, as_int(row.get("fee_minor") or 0, "fee_minor"), fee_currency, version
            )
        if row.get("description"):
            _sub(ET.SubElement(tx, "RmtInf"), "Ustrd", str(row["description"]))

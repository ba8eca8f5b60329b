"""Bank payouts as ISO 20022 pain.001.001.09 credit-transfer files.

The bank has no API here: a batch becomes one customer credit-transfer
initiation file in the outbox (``FINSUP_HOME/outbox/bank/<idempotency key>.xml``)
that an operator uploads to the bank's portal or host-to-host channel. Behind
:class:`~finsup_dagster.gateways.payouts.PayoutGateway` that is one more
provider: "submitting" writes the file, and "asking the provider" reads it back.

Mapping (one file = one batch = one ``PmtInf``):

* ``GrpHdr/MsgId`` and ``PmtInf/PmtInfId``: the batch's idempotency key (so
  the key is also the file name; at most 35 characters);
* ``CdtTrfTxInf/PmtId/EndToEndId``: finsup's payout item id;
* ``Amt/InstdAmt Ccy=...``: the exact decimal string of the integer minor
  units (``money.format_minor``: 1050 EUR is ``10.50``, 1050 JPY ``1050``,
  1050 KWD ``1.050``); ``NbOfTxs`` and ``CtrlSum`` in the header and the
  payment information;
* creditor: ``Cdtr/Nm``, ``CdtrAcct/Id/IBAN``, ``CdtrAgt/FinInstnId/BICFI``;
  debtor (the business's own account, from configuration): ``InitgPty/Nm``,
  ``Dbtr/Nm``, ``DbtrAcct/Id/IBAN``, ``DbtrAgt/FinInstnId/BICFI``;
* ``CreDtTm`` when the file was built, ``ReqdExctnDt/Dt`` that day (UTC).

Nothing reaches the outbox unchecked: IBANs and BICs go through schwifty (as
the beneficiary import does), the whole document through the pain.001.001.09
XSD that ships with ``sepaxml`` (xmlschema), and only then is it written to a
hidden temporary file in the same directory, synced, and published under its
final name with a hard link that never replaces an existing file. So a crash
leaves either no file or the whole one, and two writers of one key cannot
both win.

Whether a file already holds a request is decided on its payment content (key,
currency, debtor, every item's id, account, agent, name and amount), not on
its bytes: a file written yesterday has another ``CreDtTm``, yet is the same
payment and is read back, never written twice.

No Dagster imports; no full IBAN in an error message or in ``raw``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from finsup_dagster.gateways.payouts import (
    GatewayBatch,
    GatewayError,
    GatewayItem,
    GatewayRefused,
    PayoutRequest,
)
from finsup_dagster.ledger.beneficiaries import bank_account
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.masking import mask_destination
from finsup_dagster.ledger.money import MAX_MINOR, exponent, format_minor, to_minor

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
SCHEMA_FILE = "pain.001.001.09.xsd"
# The provider's own word for a batch and its items once the file is in the outbox.
STATUS_WRITTEN = "WRITTEN"
# Where operators move files once uploaded: still looked in, so an archived file is
# read back, never written (and paid) again.
SENT_DIR = "sent"
# Max35Text, and a file name that cannot leave the outbox or hide itself.
_MSG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,34}")
_NS = {"p": NAMESPACE}
# Characters XML 1.0 cannot carry at all (ElementTree would write them and break the file).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def schema_path() -> Path:
    """The pain.001.001.09 XSD bundled with sepaxml."""
    return Path(str(resources.files("sepaxml") / "schemas" / SCHEMA_FILE))


@lru_cache(maxsize=1)
def _schema() -> Any:
    # Imported and parsed once, on first use: loading the XSD takes most of a second.
    import xmlschema

    return xmlschema.XMLSchema(str(schema_path()))


@dataclass(frozen=True)
class CreditTransfer:
    """One ``CdtTrfTxInf``: what the bank needs to pay one item."""

    end_to_end_id: str
    amount_minor: int
    currency: str
    creditor_name: str
    creditor_iban: str
    creditor_bic: str


@dataclass(frozen=True)
class Pain001:
    """A credit-transfer initiation with one payment information block."""

    msg_id: str
    created_at: datetime
    execution_date: date
    currency: str
    debtor_name: str
    debtor_iban: str
    debtor_bic: str
    transfers: tuple[CreditTransfer, ...]

    @property
    def ctrl_sum_minor(self) -> int:
        return sum(t.amount_minor for t in self.transfers)

    def content_digest(self) -> str:
        """SHA-256 over the payment content: everything except when the file was built."""
        body = {
            "msg_id": self.msg_id,
            "currency": self.currency,
            "debtor": [self.debtor_name, self.debtor_iban, self.debtor_bic],
            "transfers": sorted(
                [
                    t.end_to_end_id,
                    t.amount_minor,
                    t.currency,
                    t.creditor_name,
                    t.creditor_iban,
                    t.creditor_bic,
                ]
                for t in self.transfers
            ),
        }
        canonical = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _mask_iban(iban: str) -> str:
    compact = iban.split("/")[0].replace(" ", "")
    # Too short to keep four characters each end and still hide anything.
    return mask_destination("bank", compact) if len(compact) >= 12 else "****"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _path(parent: ET.Element, tags: Iterable[str], text: str) -> None:
    for tag in tags:
        parent = _sub(parent, tag)
    parent.text = text


def _agent(parent: ET.Element, tag: str, bic: str) -> None:
    _path(_sub(parent, tag), ("FinInstnId", "BICFI"), bic)


def _account(parent: ET.Element, tag: str, iban: str) -> None:
    _path(_sub(parent, tag), ("Id", "IBAN"), iban)


def build_document(doc: Pain001) -> bytes:
    """The pain.001.001.09 XML of ``doc`` (UTF-8, with declaration); not yet validated."""
    ctrl_sum = format_minor(doc.ctrl_sum_minor, doc.currency)
    count = str(len(doc.transfers))
    # Plain tag names under a default xmlns on the root: ElementTree's default_namespace
    # option refuses the unqualified Ccy attribute, and ns0: prefixes put some portals off.
    root = ET.Element("Document", xmlns=NAMESPACE)
    initiation = _sub(root, "CstmrCdtTrfInitn")
    header = _sub(initiation, "GrpHdr")
    _sub(header, "MsgId", doc.msg_id)
    _sub(header, "CreDtTm", doc.created_at.astimezone(UTC).isoformat(timespec="seconds"))
    _sub(header, "NbOfTxs", count)
    _sub(header, "CtrlSum", ctrl_sum)
    _sub(_sub(header, "InitgPty"), "Nm", doc.debtor_name)

    payment = _sub(initiation, "PmtInf")
    _sub(payment, "PmtInfId", doc.msg_id)
    _sub(payment, "PmtMtd", "TRF")
    _sub(payment, "NbOfTxs", count)
    _sub(payment, "CtrlSum", ctrl_sum)
    _sub(_sub(payment, "ReqdExctnDt"), "Dt", doc.execution_date.isoformat())
    _sub(_sub(payment, "Dbtr"), "Nm", doc.debtor_name)
    _account(payment, "DbtrAcct", doc.debtor_iban)
    _agent(payment, "DbtrAgt", doc.debtor_bic)
    for t in doc.transfers:
        tx = _sub(payment, "CdtTrfTxInf")
        _sub(_sub(tx, "PmtId"), "EndToEndId", t.end_to_end_id)
        amount = format_minor(t.amount_minor, t.currency)
        _sub(_sub(tx, "Amt"), "InstdAmt", amount, Ccy=t.currency)
        _agent(tx, "CdtrAgt", t.creditor_bic)
        _sub(_sub(tx, "Cdtr"), "Nm", t.creditor_name)
        _account(tx, "CdtrAcct", t.creditor_iban)
    ET.indent(root)
    # The declaration in double quotes, as banks' own examples have it.
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode()


def validate_document(xml: bytes, msg_id: str) -> None:
    """Refuses (one line, no values) a document the pain.001.001.09 XSD does not accept."""
    try:
        tree = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise GatewayRefused(f"bank file {msg_id} is not well-formed XML: {exc}") from None
    error = next(iter(_schema().iter_errors(tree)), None)
    if error is not None:
        # Only where it failed and why in general: the reason text can quote a value (an IBAN).
        where = (getattr(error, "path", None) or "/Document").replace(f"{{{NAMESPACE}}}", "")
        rule = type(getattr(error, "validator", None)).__name__.removeprefix("Xsd")
        raise GatewayRefused(
            f"bank file {msg_id} does not validate against {SCHEMA_FILE} at {where} ({rule})"
        )


def _text(element: ET.Element, path: str) -> str:
    found = element.find(path, _NS)
    if found is None or found.text is None:
        raise GatewayRefused(f"bank file has no {path.replace('p:', '')}")
    return found.text.strip()


def read_document(xml: bytes) -> Pain001:
    """Reads back a file this module wrote (one ``PmtInf``); amounts to exact minor units."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise GatewayRefused(f"bank file is not well-formed XML: {exc}") from None
    initiation = root.find("p:CstmrCdtTrfInitn", _NS)
    payment = None if initiation is None else initiation.find("p:PmtInf", _NS)
    if initiation is None or payment is None:
        raise GatewayRefused("bank file is not a pain.001.001.09 credit transfer initiation")
    transfers = []
    currencies = set()
    try:
        for tx in payment.findall("p:CdtTrfTxInf", _NS):
            amount = tx.find("p:Amt/p:InstdAmt", _NS)
            if amount is None or amount.text is None:
                raise GatewayRefused("bank file has a transaction without InstdAmt")
            currency = amount.get("Ccy", "")
            currencies.add(currency)
            transfers.append(
                CreditTransfer(
                    end_to_end_id=_text(tx, "p:PmtId/p:EndToEndId"),
                    amount_minor=to_minor(amount.text.strip(), currency),
                    currency=currency,
                    creditor_name=_text(tx, "p:Cdtr/p:Nm"),
                    creditor_iban=_text(tx, "p:CdtrAcct/p:Id/p:IBAN"),
                    creditor_bic=_text(tx, "p:CdtrAgt/p:FinInstnId/p:BICFI"),
                )
            )
        created = datetime.fromisoformat(_text(initiation, "p:GrpHdr/p:CreDtTm"))
        executed = date.fromisoformat(_text(payment, "p:ReqdExctnDt/p:Dt"))
    except (InvalidInput, ValueError) as exc:
        raise GatewayRefused(f"bank file cannot be read back: {exc}") from None
    if len(currencies) != 1:
        raise GatewayRefused(
            "bank file has no transactions"
            if not currencies
            else "bank file mixes currencies in one payment information block"
        )
    return Pain001(
        msg_id=_text(initiation, "p:GrpHdr/p:MsgId"),
        created_at=created,
        execution_date=executed,
        currency=currencies.pop(),
        debtor_name=_text(payment, "p:Dbtr/p:Nm"),
        debtor_iban=_text(payment, "p:DbtrAcct/p:Id/p:IBAN"),
        debtor_bic=_text(payment, "p:DbtrAgt/p:FinInstnId/p:BICFI"),
        transfers=tuple(transfers),
    )


def write_atomically(directory: Path, name: str, body: bytes) -> bool:
    """Publishes ``body`` as ``directory/name`` whole or not at all; False if it already exists.

    The bytes go to a hidden temporary file beside the target (same file
    system), are synced, and are linked to the final name, which fails rather
    than replace a file someone else published first. The temporary file is
    removed whatever happens.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    tmp = directory / f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        _sync_directory(directory)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    # The new name survives a power cut only once the directory entry is on disk too.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BankFileGateway:
    """:class:`PayoutGateway` for bank transfers: one pain.001.001.09 file per batch.

    ``outbox_dir`` is where files go (``FINSUP_HOME/outbox/bank``); the debtor
    is the business's own account that pays. ``clock`` gives ``CreDtTm`` and,
    as a UTC date, ``ReqdExctnDt`` (tests pin it).
    """

    name = "bank"

    def __init__(
        self,
        outbox_dir: Path | str,
        debtor_name: str,
        debtor_iban: str,
        debtor_bic: str,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.outbox_dir = Path(outbox_dir)
        self.debtor_name = debtor_name.strip()
        if not self.debtor_name:
            raise InvalidInput("the bank gateway needs the debtor's account name")
        try:
            self.debtor_iban, self.debtor_bic = bank_account(f"{debtor_iban}/{debtor_bic}")
        except InvalidInput as exc:
            raise InvalidInput(f"debtor account {_mask_iban(debtor_iban)}: {exc}") from None
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- PayoutGateway -------------------------------------------------------------

    def find_batch(
        self, request: PayoutRequest, gateway_batch_id: str | None
    ) -> GatewayBatch | None:
        """The file already written for this request, or None; a different payload is refused."""
        path = self._existing(gateway_batch_id or request.idempotency_key)
        if path is None:
            return None
        return self._matching(path, self._document(request), read_back=False)

    def submit_batch(self, request: PayoutRequest) -> GatewayBatch:
        """Writes the batch's file; one already written for the same payload is read back.

        A batch refused before a file exists (a bad IBAN, a name the schema
        refuses) is refused with ``nothing_accepted``: nothing can be paid from it.
        """
        existing = self._existing(request.idempotency_key)
        try:
            doc = self._document(request)
        except GatewayRefused as exc:
            exc.nothing_accepted = existing is None
            raise
        if existing is not None:
            return self._matching(existing, doc, read_back=True)
        path = self._file(doc.msg_id)
        body = build_document(doc)
        try:
            validate_document(body, doc.msg_id)
        except GatewayRefused as exc:
            exc.nothing_accepted = True
            raise
        try:
            written = write_atomically(self.outbox_dir, path.name, body)
        except OSError as exc:
            raise GatewayError(
                f"could not write bank file {path.name}: {exc.strerror or exc}"
            ) from None
        if not written:  # another writer published this key between our check and our link
            return self._matching(path, doc, read_back=True)
        return self._batch(path, body, read_back=False)

    def get_batch(self, gateway_batch_id: str) -> GatewayBatch:
        path = self._existing(gateway_batch_id) or self._file(gateway_batch_id)
        return self._batch(path, self._read(path), read_back=False)

    def get_item(self, gateway_item_id: str) -> GatewayItem:
        msg_id, sep, end_to_end_id = gateway_item_id.rpartition(":")
        if not sep:
            raise GatewayRefused(f"bank item id {gateway_item_id!r:.60} is not MsgId:EndToEndId")
        for item in self.get_batch(msg_id).items:
            if item.gateway_item_id == gateway_item_id:
                return item
        raise GatewayRefused(f"bank file {msg_id} has no item {end_to_end_id!r:.40}")

    def cancel_item(self, gateway_item_id: str) -> GatewayItem:
        raise GatewayRefused(
            "a written bank file cannot be cancelled item by item: withdraw the whole file "
            "before it is uploaded, or ask the bank to recall the transfer"
        )

    # -- helpers ---------------------------------------------------------------------

    def _file(self, msg_id: str) -> Path:
        if not _MSG_ID.fullmatch(msg_id):
            raise GatewayRefused(
                f"idempotency key {msg_id!r:.60} cannot be a pain.001 MsgId and file name "
                "(1-35 letters, digits, '_', '-', '.')"
            )
        return self.outbox_dir / f"{msg_id}.xml"

    def _existing(self, msg_id: str) -> Path | None:
        """The file for ``msg_id`` in the outbox or, once uploaded, in ``sent/``."""
        path = self._file(msg_id)
        for candidate in (path, path.parent / SENT_DIR / path.name):
            if candidate.exists():
                return candidate
        return None

    def _document(self, request: PayoutRequest) -> Pain001:
        """The file's content for ``request``; every bad line refused before anything is written."""
        self._file(request.idempotency_key)
        try:
            exponent(request.currency)
        except InvalidInput as exc:
            raise GatewayRefused(f"batch {request.batch_id}: {exc}") from None
        if not request.lines:
            raise GatewayRefused(f"batch {request.batch_id} has no items")
        problems: list[str] = []
        transfers: list[CreditTransfer] = []
        seen: set[int] = set()
        for line in sorted(request.lines, key=lambda line: line.item_id):
            why = None
            iban = bic = ""
            if line.item_id in seen:
                why = "appears twice"
            elif line.currency != request.currency:
                why = f"is in {line.currency!r:.8}, the batch in {request.currency}"
            elif isinstance(line.amount_minor, bool) or not isinstance(line.amount_minor, int):
                why = "has an amount that is not integer minor units"
            elif not 0 < line.amount_minor <= MAX_MINOR:
                why = f"has amount {line.amount_minor} minor units (1 to {MAX_MINOR})"
            elif not line.name.strip():
                why = "has no beneficiary name (a bank transfer needs the creditor's name)"
            elif _NOT_XML.search(line.name):
                why = "has a beneficiary name with control characters"
            else:
                try:
                    iban, bic = bank_account(line.receiver)
                except InvalidInput as exc:
                    why = f"({_mask_iban(line.receiver)}): {exc}"
            seen.add(line.item_id)
            if why:
                problems.append(f"item {line.item_id} {why}")
                continue
            transfers.append(
                CreditTransfer(
                    end_to_end_id=str(line.item_id),
                    amount_minor=line.amount_minor,
                    currency=line.currency,
                    creditor_name=line.name.strip(),
                    creditor_iban=iban,
                    creditor_bic=bic,
                )
            )
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise GatewayRefused(f"batch {request.batch_id}: {problems[0]}{more}; no file written")
        created = self._clock().astimezone(UTC).replace(microsecond=0)
        return Pain001(
            msg_id=request.idempotency_key,
            created_at=created,
            execution_date=created.date(),
            currency=request.currency,
            debtor_name=self.debtor_name,
            debtor_iban=self.debtor_iban,
            debtor_bic=self.debtor_bic,
            transfers=tuple(transfers),
        )

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise GatewayRefused(f"no bank file {path.name} in the outbox") from None
        except OSError as exc:
            raise GatewayError(f"could not read bank file {path.name}: {exc.strerror}") from None

    def _matching(self, path: Path, wanted: Pain001, *, read_back: bool) -> GatewayBatch:
        body = self._read(path)
        if read_document(body).content_digest() != wanted.content_digest():
            raise GatewayRefused(
                f"bank file {path.name} exists for key {wanted.msg_id}: same key, different "
                "payload; the file was left as it is"
            )
        return self._batch(path, body, read_back=read_back)

    def _batch(self, path: Path, body: bytes, *, read_back: bool) -> GatewayBatch:
        doc = read_document(body)
        items = tuple(
            GatewayItem(
                item_id=int(t.end_to_end_id) if t.end_to_end_id.isdigit() else None,
                gateway_item_id=f"{doc.msg_id}:{t.end_to_end_id}",
                status=STATUS_WRITTEN,
                raw=json.dumps(
                    {
                        "end_to_end_id": t.end_to_end_id,
                        "amount": format_minor(t.amount_minor, t.currency),
                        "currency": t.currency,
                        "creditor_iban": _mask_iban(t.creditor_iban),
                        "creditor_bic": t.creditor_bic,
                    },
                    sort_keys=True,
                ),
            )
            for t in doc.transfers
        )
        # What gateway_events keeps: where the file is and what it adds up to, no full IBAN.
        raw = json.dumps(
            {
                "file": str(path),
                "sha256": hashlib.sha256(body).hexdigest(),
                "msg_id": doc.msg_id,
                "created_at": doc.created_at.isoformat(),
                "requested_execution_date": doc.execution_date.isoformat(),
                "nb_of_txs": len(doc.transfers),
                "ctrl_sum": format_minor(doc.ctrl_sum_minor, doc.currency),
                "currency": doc.currency,
            },
            sort_keys=True,
        )
        return GatewayBatch(
            gateway_batch_id=doc.msg_id,
            status=STATUS_WRITTEN,
            items=items,
            raw=raw,
            read_back=read_back,
        )

"""The landing zone and its quarantine, on disk under FINSUP_HOME.

Files arrive as ``landing/<format>/<YYYY-MM-DD>/<file>``: the folder's date is
the daily partition that lands them. A file that cannot be read as its format
is moved to ``quarantine/<format>/<YYYY-MM-DD>/<file>`` with
``<file>.reason.txt`` beside it, so nothing from it reaches the books and an
operator can look at it, fix it and drop it back into the landing folder.
Earnings (the payouts issue) still land flat in ``landing/earnings``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from finsup_dagster.formats.common import check_date
from finsup_dagster.ledger import clock
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.text import one_line

# Landing formats and the file names each accepts (anything else is quarantined).
SUFFIXES: dict[str, tuple[str, ...]] = {
    "revenue": (".csv", ".jsonl", ".ndjson"),
    "paypal-transactions": (".json",),
    "paypal-stl": (".csv",),
    "camt053": (".xml",),
    "settlement-csv": (".csv",),
}
FORMATS = tuple(SUFFIXES)
SETTLEMENT_FORMATS = ("paypal-stl", "camt053", "settlement-csv")
REASON_SUFFIX = ".reason.txt"


def partition_dir(landing: Path, fmt: str, day: str) -> Path:
    if fmt not in SUFFIXES:
        raise InvalidInput(f"unknown landing format {fmt!r}: use one of {', '.join(FORMATS)}")
    return landing / fmt / check_date(day)


def is_input(path: Path) -> bool:
    """Our own by-products (rejects, reasons) and hidden or partial files are not inputs."""
    name = path.name
    return (
        path.is_file()
        and not name.startswith(".")
        and not name.endswith((".part", ".tmp", REASON_SUFFIX))
        and ".rejects." not in name
    )


def partition_files(landing: Path, fmt: str, day: str) -> list[Path]:
    """The files waiting in one format's folder for one day, in name order."""
    folder = partition_dir(landing, fmt, day)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_input(p))


def accepts(fmt: str, path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES[fmt])


def landed_files(landing: Path, kind: str) -> list[Path]:
    """CSV and JSONL files of a flat landing folder (earnings), in name order."""
    folder = landing / kind
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if is_input(p) and p.suffix.lower() in (".csv", ".jsonl")
    )


@dataclass(frozen=True)
class Quarantined:
    path: Path
    fmt: str
    day: str
    reason: str
    error: str  # the error class, e.g. FooterMismatch

    @property
    def is_footer_mismatch(self) -> bool:
        return self.error == "FooterMismatch"

    def describe(self) -> str:
        """``<file>: <reason>``, the file named once (parsers' reasons often start with it)."""
        name = self.path.name
        return self.reason if self.reason.startswith(f"{name}:") else f"{name}: {self.reason}"


def file_stamp() -> str:
    """Now, as a file-name-safe text: 20261120T020006773596Z."""
    return clock.now().replace(":", "").replace("-", "").replace(".", "")


def quarantine_dir(home: Path, fmt: str, day: str) -> Path:
    return home / "quarantine" / fmt / check_date(day)


def quarantine(
    home: Path, path: Path, fmt: str, day: str, error: Exception, sha256: str
) -> Quarantined:
    """Moves a refused file out of the landing zone, with its reason beside it."""
    folder = quarantine_dir(home, fmt, day)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():  # the same name refused before: keep both
        target = folder / f"{path.stem}.{file_stamp()}{path.suffix}"
    reason = one_line(str(error))
    # The reason first: a crash between the two leaves the file where it was,
    # to be refused again next run, never a quarantined file without a reason.
    target.with_name(target.name + REASON_SUFFIX).write_text(
        f"reason: {reason}\n"
        f"error: {type(error).__name__}\n"
        f"format: {fmt}\n"
        f"partition: {day}\n"
        f"original: {path}\n"
        f"sha256: {sha256}\n"
        f"quarantined_at: {clock.now()}\n",
        encoding="utf-8",
    )
    shutil.move(str(path), target)
    return Quarantined(target, fmt, day, reason, type(error).__name__)


def quarantined(home: Path, fmt: str, day: str) -> list[Quarantined]:
    """Files refused for one format and day that are still in quarantine."""
    folder = quarantine_dir(home, fmt, day)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not is_input(path):
            continue
        fields = reason_fields(path.with_name(path.name + REASON_SUFFIX))
        found.append(
            Quarantined(
                path,
                fmt,
                day,
                fields.get("reason", "no reason file"),
                fields.get("error", "unknown"),
            )
        )
    return found


def reason_fields(path: Path) -> dict[str, str]:
    """The ``key: value`` lines of a reason file ({} when it is missing)."""
    if not path.is_file():
        return {}
    fields = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key] = value
    return fields

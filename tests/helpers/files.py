"""Writing revenue input files."""

from __future__ import annotations

import csv
from pathlib import Path

HEADER = ["source", "external_id", "amount", "currency", "occurred_at", "kind", "status"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path

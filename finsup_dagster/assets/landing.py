"""The landing zone: files waiting under FINSUP_HOME/landing/<kind>/."""

from pathlib import Path


def landed_files(landing: Path, kind: str) -> list[Path]:
    """CSV and JSONL files of one kind, in name order; rejects files are not inputs."""
    folder = landing / kind
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in (".csv", ".jsonl") and ".rejects." not in p.name
    )  # fmt: skip

"""Worker processes of the concurrency tests."""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.process import BaseProcess


def stop(procs: Sequence[BaseProcess], timeout: float) -> list[int | None]:
    """Waits ``timeout`` seconds for each worker, terminates one still running (a failed
    test must not leave workers behind), and returns their exit codes."""
    for proc in procs:
        proc.join(timeout=timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    return [proc.exitcode for proc in procs]

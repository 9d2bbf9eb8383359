"""Which jobs each embedded worker process holds, in a small file per worker.

With several embedded workers, a dead one's jobs must go back on the queue at once, and only
its own: the others' are running fine. The job rows do not say which process claimed them,
so each worker process keeps a file of the job ids in hand (rewritten whole, atomically, when
they change), and the server that started it reads that file when it dies. A job missed (a
death between the claim and the write) is still not lost: its lease runs out and the
reconciler sends it again (``job_lease``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from workers.settings import Settings

__all__ = ["ledger_path", "read_held", "record_held"]


def ledger_path(settings: Settings, slot: int) -> Path:
    return settings.data_dir / "workers" / f"held-{slot}.json"


def record_held(path: Path, job_ids: list[str]) -> None:
    """Write the job ids in hand (atomically: a reader sees the old list or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(job_ids))
    os.replace(temporary, path)


def read_held(path: Path) -> list[str]:
    """The job ids last recorded at ``path``; none if there is no such file or it is
    unreadable."""
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [job for job in held if isinstance(job, str)] if isinstance(held, list) else []

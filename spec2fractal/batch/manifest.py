"""``manifest.jsonl``: one line per finished item attempt, and the images it points at.

Crash safety rests on two orders. An image goes to a temp file that is flushed, synced and
renamed into place before its manifest line is written; a line is written with one ``write``
and synced before the next. So after Ctrl-C or ``kill -9`` every complete line points at
complete files; a torn last line is skipped on reading and cut off before appending.

The manifest is locked while a batch runs, so two runs never write into one folder.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fractal.errors import Spec2FractalError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run at a time is then up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = ["MANIFEST_NAME", "BatchError", "Manifest", "read_manifest", "write_file_atomic"]

MANIFEST_NAME = "manifest.jsonl"
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\.\d{5,}-[0-9a-f]{12}(-\d+)?\.png\.tmp$")


class BatchError(Spec2FractalError):
    """The batch cannot run at all (not an item's failure): one line, non-zero exit."""


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Every complete entry; a torn or foreign line (from a kill mid-write) is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("hash"), str):
            entries.append(entry)
    return entries


def write_file_atomic(path: Path, data: bytes) -> None:
    """``path`` holds all of ``data`` or is untouched: write a temp file, sync, rename."""
    temp = path.with_name(f".{path.name}{TEMP_SUFFIX}")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


@dataclass
class Manifest:
    """The open, locked manifest of one output folder."""

    folder: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    _fd: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    def open(self) -> Manifest:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BatchError(f"another batch is running in {self.folder}") from None
        self._fd = fd
        self.entries = read_manifest(self.path)
        self._repair()
        self._remove_temp_files()
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def __enter__(self) -> Manifest:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    def _repair(self) -> None:
        """A torn last line (killed mid-write) is cut off, so the next line starts clean."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        os.ftruncate(self._fd, data.rfind(b"\n") + 1)
        os.fsync(self._fd)

    def _remove_temp_files(self) -> None:
        # Left by a kill between writing and renaming; the lock says no run is using them.
        for path in self.folder.iterdir():
            if _TEMP_NAME.match(path.name):
                path.unlink(missing_ok=True)

    def append(self, entry: Mapping[str, Any]) -> None:
        """One line, written whole and synced before returning."""
        assert self._fd is not None, "open the manifest first"
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            view = memoryview(line)
            while view:  # os.write may write less than asked (rare, for regular files)
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
            self.entries.append(dict(entry))

    def finished(self, hashes: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Hash → its latest ``succeeded`` entry whose files all still exist."""
        wanted = set(hashes) if hashes is not None else None
        done: dict[str, dict[str, Any]] = {}
        for entry in self.entries:
            if entry.get("status") != "succeeded" or (wanted is not None
                                                      and entry["hash"] not in wanted):
                continue
            files = entry.get("files") or []
            if files and all(isinstance(name, str) and (self.folder / name).is_file()
                             for name in files):
                done[entry["hash"]] = entry
        return done

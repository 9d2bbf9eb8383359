"""Wake-up calls between processes of one machine: UDP datagrams on loopback.

A process that wants waking binds a socket on 127.0.0.1 and registers its port as a file in a
shared folder; a sender sends to every registered port. A datagram only says "look now": the
receiver still reads the truth (the database, the queue folder) itself, so a lost or stale one
costs only a little latency. Used by the embedded mode, where there is no Redis to signal with.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket
import time
from pathlib import Path

__all__ = ["DatagramSender", "DatagramWaker", "register_port"]

HOST = "127.0.0.1"
PORTS_REFRESH_SECONDS = 5.0  # the longest a sender trusts its listing of ports
# A folder changed this recently may change again within its clock tick, unseen by its mtime.
SETTLED_SECONDS = 0.1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register_port(folder: Path, port: int) -> Path:
    """Announce ``port`` in ``folder`` (written whole, then renamed into place); the files of
    processes that died without unregistering are removed on the way."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.glob("*.port"):
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            entry.unlink(missing_ok=True)
    name = f"{os.getpid()}-{secrets.token_hex(4)}"
    staging = folder / f"{name}.tmp"
    staging.write_text(str(port))
    return staging.rename(folder / f"{name}.port")


class DatagramSender:
    """Sends to every port registered in ``folder``; never blocks, never raises."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._ports: list[int] = []
        self._listed_at = float("-inf")
        self._listed_version: int | None = None

    def _current_ports(self) -> list[int]:
        """The listing, read again only when the folder has changed (one stat a send, not a
        directory walk: a send is on the path of an answer someone is waiting for)."""
        now = time.monotonic()
        try:
            version = os.stat(self.folder).st_mtime_ns
        except OSError:
            version = None
        if version != self._listed_version or now - self._listed_at > PORTS_REFRESH_SECONDS:
            ports = []
            with contextlib.suppress(OSError):
                for entry in self.folder.glob("*.port"):
                    with contextlib.suppress(OSError, ValueError):
                        ports.append(int(entry.read_text()))
            settled = version is not None and time.time() - version / 1e9 > SETTLED_SECONDS
            self._ports, self._listed_at = ports, now
            self._listed_version = version if settled else None
        return self._ports

    def send(self, payloads: list[bytes]) -> None:
        for port in self._current_ports():
            for payload in payloads:
                with contextlib.suppress(OSError):
                    self._socket.sendto(payload, (HOST, port))


class DatagramWaker:
    """A blocking receiver: ``wait(timeout)`` returns early when any datagram arrives."""

    def __init__(self, folder: Path) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((HOST, 0))
        self._socket.setblocking(False)
        self.registration = register_port(folder, self._socket.getsockname()[1])

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True if woken. Pending wake-ups are all used up."""
        ready, _, _ = select.select([self._socket], [], [], timeout)
        woken = bool(ready)
        while woken:
            try:
                self._socket.recv(64)
            except BlockingIOError:
                break
        return woken

    def wake(self) -> None:
        """End a ``wait`` from another thread or a signal handler."""
        with contextlib.suppress(OSError):
            self._socket.sendto(b"wake", self._socket.getsockname())

    def close(self) -> None:
        self.registration.unlink(missing_ok=True)
        self._socket.close()

"""What the service needs of object storage, whichever backend holds the objects."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Storage", "StorageError"]


class StorageError(Exception):
    """Storage could not be reached or refused an operation (an operator's problem).

    ``transient``: storage did not answer (unreachable, overloaded, timed out), so the same
    operation may well work a little later. False: it refused, or the object is missing,
    and asking again will not change that.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` at ``key``, replacing what was there (re-runs overwrite)."""

    def get(self, key: str) -> bytes:
        """The object's bytes; StorageError if it is missing or unreachable."""

    def url(self, key: str, expires_in: int) -> str:
        """A URL a client can GET for ``expires_in`` seconds, and no longer."""

    def check(self) -> None:
        """Raise StorageError unless storage is reachable and writable (for /ready)."""

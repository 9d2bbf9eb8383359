"""A folder as object storage, for the embedded mode. The API serves its files through
signed, expiring URLs (HMAC), never through guessable paths."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from workers.storage.base import StorageError

__all__ = ["FILES_ROUTE", "LocalStorage"]

FILES_ROUTE = "/files"

# Errors of a folder that may clear by themselves: a network mount that does not answer now,
# a file busy for a moment. A missing file, a refused permission or a full disk stay.
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.EIO, errno.ESTALE,
                     errno.ETIMEDOUT, errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH}


def _error(message: str, exc: OSError) -> StorageError:
    return StorageError(f"{message}: {exc.strerror}", transient=exc.errno in _TRANSIENT_ERRNOS)


class LocalStorage:
    def __init__(self, root: Path, *, secret: bytes, base_url: str = "") -> None:
        self.root = root.resolve()
        self.secret = secret
        self.base_url = base_url.rstrip("/")
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file behind ``key``; a key that would leave the root is refused."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StorageError(f"invalid key {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half a file, a re-run replaces it whole.
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
                handle.write(data)
            os.replace(handle.name, path)
        except OSError as exc:
            raise _error(f"cannot write {key!r}", exc) from exc

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise _error(f"cannot read {key!r}", exc) from exc

    def signature(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def url(self, key: str, expires_in: int) -> str:
        expires = int(time.time()) + expires_in
        query = urlencode({"expires": expires, "signature": self.signature(key, expires)})
        return f"{self.base_url}{FILES_ROUTE}/{quote(key)}?{query}"

    def verify(self, key: str, expires: int, signature: str) -> bool:
        """True only for an unexpired URL this storage signed for exactly this key."""
        if expires < time.time():
            return False
        # As bytes: compare_digest refuses a str that is not ASCII (a TypeError, a 500).
        return hmac.compare_digest(self.signature(key, expires).encode(),
                                   signature.encode("utf-8", "surrogatepass"))

    def check(self) -> None:
        probe = self.root / ".ready"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"image folder {self.root} is not writable: {exc}") from exc

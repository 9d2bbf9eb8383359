"""Object storage for rendered images: S3-compatible, or a local folder in embedded mode."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from workers.settings import Settings
from workers.storage.base import Storage, StorageError
from workers.storage.local import FILES_ROUTE, LocalStorage

__all__ = ["FILES_ROUTE", "LocalStorage", "Storage", "StorageError", "get_storage", "secret_key"]


def secret_key(settings: Settings) -> bytes:
    """The configured secret, or one generated once and kept in the data folder."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret.key"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            with path.open("x") as handle:  # first process wins; the others read its key
                handle.write(secrets.token_hex(32))
            path.chmod(0o600)
        except FileExistsError:
            pass
    return path.read_text().strip().encode()


@lru_cache(maxsize=4)
def _build(url: str, endpoint: str | None, public_endpoint: str | None, region: str,
           secret: bytes, base_url: str, retries: int) -> Storage:
    if url.startswith("s3://"):
        from workers.storage.s3 import S3Storage

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3Storage(bucket, prefix, endpoint_url=endpoint,
                         public_endpoint_url=public_endpoint, region=region, retries=retries)
    return LocalStorage(Path(url).expanduser(), secret=secret, base_url=base_url)


def get_storage(settings: Settings) -> Storage:
    """One storage client per configuration per process (boto3 clients are thread-safe)."""
    url = settings.resolved_storage_url
    secret = b"" if url.startswith("s3://") else secret_key(settings)
    return _build(url, settings.s3_endpoint_url, settings.s3_public_endpoint_url,
                  settings.s3_region, secret, settings.public_url or "", settings.storage_retries)

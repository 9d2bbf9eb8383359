"""S3-compatible object storage (AWS, MinIO, SeaweedFS) through boto3, with presigned URLs."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from workers.storage.base import StorageError

__all__ = ["S3Storage"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 8.0  # seconds: the longest pause between two tries
# S3 answers that say "not now" rather than "never": worth another try.
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "RequestTimeTooSkewed", "Throttling", "ThrottlingException"}


def _transient(exc: BotoCoreError | ClientError) -> bool:
    """Connection failures and 5xx/throttling are; a refusal (403, 404, ...) is not. Retried
    here within the budget, and told to callers as ``StorageError.transient`` after it."""
    if isinstance(exc, BotoCoreError):
        return True
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or error.get("Code") in _TRANSIENT_CODES


class S3Storage:
    """A private bucket; clients only ever get presigned GET URLs."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 public_endpoint_url: str | None = None, region: str = "us-east-1",
                 create_bucket: bool = True, retries: int = 0, backoff: float = 0.5) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # Uploads and downloads are tried ``retries`` more times, pausing ``backoff`` s,
        # doubled each time (with jitter, at most MAX_BACKOFF): an outage of storage shorter
        # than that budget costs a job nothing.
        self.retries, self.backoff = retries, backoff
        # Path-style addressing: MinIO and SeaweedFS serve buckets under the endpoint's path.
        # botocore does not retry on its own: the loop in _retrying is the whole budget.
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=5, read_timeout=30)
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                        config=config)
        # The host is part of a presigned URL's signature: sign for the address clients use
        # (outside a compose network, say), which may differ from the one workers use.
        self.signer: Any = self.client if not public_endpoint_url else boto3.client(
            "s3", endpoint_url=public_endpoint_url, region_name=region, config=config)
        if create_bucket:
            self._ensure_bucket()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                        "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach S3 storage: {exc}", transient=True) from exc

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        delay = self.backoff
        for attempt in range(1, self.retries + 2):
            try:
                return call()
            except (BotoCoreError, ClientError) as exc:
                if not _transient(exc) or attempt > self.retries:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise StorageError(f"image storage unavailable: {what} failed{tries}: "
                                       f"{exc}", transient=_transient(exc)) from exc
                pause = delay * random.uniform(0.5, 1.0)
                logger.warning("%s failed (attempt %d of %d), trying again in %.1f s: %s",
                               what, attempt, self.retries + 1, pause, exc)
                time.sleep(pause)
                delay = min(delay * 2, MAX_BACKOFF)
        raise AssertionError("unreachable")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._retrying(f"upload of {key!r}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type))

    def get(self, key: str) -> bytes:
        return self._retrying(f"download of {key!r}", lambda: self.client.get_object(
            Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def url(self, key: str, expires_in: int) -> str:
        return self.signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=expires_in,
        )

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}",
                               transient=_transient(exc)) from exc

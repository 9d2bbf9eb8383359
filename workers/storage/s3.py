"""S3-compatible object storage (AWS, MinIO, SeaweedFS) through boto3, with presigned URLs."""

from __future__ import annotations

import logging
import threading
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

# S3 answers that say "not now" rather than "never": worth another try.
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "RequestTimeTooSkewed", "Throttling", "ThrottlingException"}


def _transient(exc: BotoCoreError | ClientError) -> bool:
    """Connection failures and 5xx/throttling are; a refusal (403, 404, ...) is not. Told to
    callers as ``StorageError.transient`` once botocore's retries are spent."""
    if isinstance(exc, BotoCoreError):
        return True
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or error.get("Code") in _TRANSIENT_CODES


class S3Storage:
    """A private bucket; clients only ever get presigned GET URLs."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 public_endpoint_url: str | None = None, region: str = "us-east-1",
                 create_bucket: bool = True, retries: int = 0) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retries = retries
        # Path-style addressing: MinIO and SeaweedFS serve buckets under the endpoint's path.
        base = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      connect_timeout=5, read_timeout=30)
        # Uploads and downloads: botocore's standard retry mode tries a connection failure,
        # a 5xx, a throttling or timeout answer ``retries`` more times, pausing a random part
        # of 1 s, 2 s, 4 s ... (at most 20 s); a refusal (403, 404 ...) is not retried. An
        # outage of storage shorter than that costs a job nothing.
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                        config=base.merge(Config(retries={
                                            "mode": "standard", "max_attempts": retries})))
        # Creating the bucket and readiness checks try once: /ready must answer in seconds.
        self._once: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                       config=base.merge(Config(retries={
                                           "mode": "standard", "total_max_attempts": 1})))
        # The host is part of a presigned URL's signature: sign for the address clients use
        # (outside a compose network, say), which may differ from the one workers use.
        self.signer: Any = self.client if not public_endpoint_url else boto3.client(
            "s3", endpoint_url=public_endpoint_url, region_name=region, config=base)
        # botocore retries inside one call; these hooks tell the log about each retry and
        # count the attempts for the error (state per thread: the client is shared).
        self._call_state = threading.local()
        self.client.meta.events.register("needs-retry.s3", self._note_outcome)
        self.client.meta.events.register("request-created.s3", self._note_attempt)
        if create_bucket:
            self._ensure_bucket()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ensure_bucket(self) -> None:
        try:
            self._once.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self._once.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                        "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach S3 storage: {exc}", transient=True) from exc

    def _note_outcome(self, attempts: int, response: Any = None,
                      caught_exception: Exception | None = None, **_: Any) -> None:
        """needs-retry: what this attempt came to, should botocore try again."""
        if caught_exception is not None:
            outcome = str(caught_exception)
        else:
            http, parsed = response
            code = (parsed.get("Error") or {}).get("Code")
            outcome = f"HTTP {http.status_code}" + (f" {code}" if code else "")
        self._call_state.failed = (attempts, outcome, time.monotonic())

    def _note_attempt(self, request: Any, **_: Any) -> None:
        """request-created: an attempt starts; after the first, botocore is retrying."""
        state = self._call_state
        if getattr(state, "what", None) is None:
            return  # not an upload or download (a presigned URL, say)
        state.attempts += 1
        if state.attempts > 1 and state.failed is not None:
            attempt, outcome, when = state.failed
            logger.warning("%s: attempt %d of %d failed (%s); trying again after %.1f s",
                           state.what, attempt, self.retries + 1, outcome,
                           time.monotonic() - when)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` with botocore's retries; StorageError once they are spent."""
        state = self._call_state
        state.what, state.attempts, state.failed = what, 0, None
        try:
            return call()
        except (BotoCoreError, ClientError) as exc:
            tries = f" after {state.attempts} attempts" if state.attempts > 1 else ""
            raise StorageError(f"image storage unavailable: {what} failed{tries}: "
                               f"{exc}", transient=_transient(exc)) from exc
        finally:
            state.what = None

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
            self._once.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}",
                               transient=_transient(exc)) from exc

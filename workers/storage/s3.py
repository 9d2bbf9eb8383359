"""S3-compatible object storage (AWS, MinIO, SeaweedFS) through boto3, with presigned URLs."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from workers.storage.base import StorageError

__all__ = ["S3Storage"]


class S3Storage:
    """A private bucket; clients only ever get presigned GET URLs."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 public_endpoint_url: str | None = None, region: str = "us-east-1",
                 create_bucket: bool = True) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # Path-style addressing: MinIO and SeaweedFS serve buckets under the endpoint's path.
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                        retries={"max_attempts": 3, "mode": "standard"},
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
            raise StorageError(f"cannot reach S3 storage: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload of {key!r} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"download of {key!r} failed: {exc}") from exc

    def url(self, key: str, expires_in: int) -> str:
        return self.signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=expires_in,
        )

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}") from exc

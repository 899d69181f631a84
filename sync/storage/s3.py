"""S3 (and S3-compatible) storage via boto3: one whole-object PUT per write.

boto3's errors are translated here into :class:`StorageError`; nothing above this module
sees a ClientError.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sync.storage.base import StorageError, check_key, put_concurrently, register

_CONFIG = Config(
    retries={"max_attempts": 4, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=20,
)


def _translate(action: str, key: str, exc: Exception) -> StorageError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        return StorageError(f"cannot {action} {key}: S3 {code}")
    return StorageError(f"cannot {action} {key}: {type(exc).__name__}")


@register("s3")
class S3Storage:
    """Objects under ``s3://bucket/prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client=None,
        **_options: object,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = client or boto3.client(
            "s3", endpoint_url=endpoint_url or None, config=_CONFIG
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        full = self._key(key)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentType=content_type,
                ContentMD5=_b64md5(data),
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate("write", key, exc) from None

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        put_concurrently(self.put, items, workers=16)  # requests wait on the network

    def put_file(self, key: str, source: BinaryIO) -> None:
        try:  # multipart for large files: a part at a time in memory, never the whole
            self.client.upload_fileobj(source, self.bucket, self._key(key))
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise _translate("write", key, exc) from None

    def copy_many(self, pairs: list[tuple[str, str]], replace: bool = False) -> None:
        put_concurrently(self._copy, pairs, workers=16)  # server-side, always replacing

    def _copy(self, target: str, source: str) -> None:
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self._key(target),
                CopySource={"Bucket": self.bucket, "Key": self._key(source)},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate("copy", target, exc) from None

    def copy_in(self, target: str, bucket: str, key: str) -> str | None:
        try:
            answer = self.client.copy_object(
                Bucket=self.bucket, Key=self._key(target), CopySource={"Bucket": bucket, "Key": key}
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate("copy", target, exc) from None
        return answer.get("CopyObjectResult", {}).get("ETag")

    def open(self, key: str) -> BinaryIO | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise _translate("read", key, exc) from None
        except BotoCoreError as exc:
            raise _translate("read", key, exc) from None

    def get(self, key: str) -> bytes | None:
        body = self.open(key)
        if body is None:
            return None
        with body:
            try:
                return body.read()
            except BotoCoreError as exc:
                raise _translate("read", key, exc) from None

    def delete(self, key: str) -> None:
        full = self._key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            raise _translate("delete", key, exc) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        for key, _digest in self.list_digests(prefix):
            yield key

    def list_digests(self, prefix: str = "") -> Iterator[tuple[str, str | None]]:
        """``(key, md5 hex)``; the digest is None where the ETag is not an MD5 (multipart)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    etag = item.get("ETag", "").strip('"')
                    yield item["Key"][len(self.prefix) :], (None if "-" in etag else etag)
        except (ClientError, BotoCoreError) as exc:
            raise _translate("list", prefix or "/", exc) from None

    def tidy(self) -> int:
        """Nothing to tidy: a PUT is whole or absent."""
        return 0

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _translate("reach bucket", self.bucket, exc) from None


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()

"""The object store on S3 or Cloudflare R2 (boto3 with `endpoint_url`).

Credentials come from the standard AWS variables / config chain and never appear in repr, logs or errors.
Uploads use boto3's managed transfer (multipart above `multipart_threshold`), record the content's sha256 as
object metadata (`x-amz-meta-sha256`) and, by default, read the object back to prove it arrived intact; a
mismatch deletes the object and raises ChecksumMismatchError.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any, BinaryIO

from lora_pipelines.domain.keys import validate_key
from lora_pipelines.store.local_objects import atomic_write
from lora_pipelines.store.objects import (
    CHUNK_SIZE,
    ChecksumMismatchError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    sha256_of_file,
    validate_prefix,
)

MIB = 1024 * 1024
SHA256_METADATA = "sha256"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


class S3ObjectStore(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        multipart_threshold: int = 64 * MIB,
        multipart_chunksize: int = 16 * MIB,
        max_attempts: int = 5,
        verify_uploads: bool = True,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not _BUCKET.match(bucket or ""):
            raise ValueError(f"bucket name {bucket!r} is not a valid S3 bucket name")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix, endpoint_url
        # R2 signs with region "auto"; AWS itself has no such region, so without an endpoint boto3's chain decides
        env_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.region_name = region_name or env_region or ("auto" if endpoint_url else None)
        self.verify_uploads = verify_uploads
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else {},
            # R2 and older S3-compatible servers reject boto3's default CRC trailers; send checksums only when required
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=120,
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=self.region_name, config=config
        )
        self.transfer_config = TransferConfig(multipart_threshold=multipart_threshold,
                                              multipart_chunksize=multipart_chunksize)

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3ObjectStore({self.url!r}{endpoint})"

    # --- helpers -----------------------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFoundError(key) from None
            message = f"{operation} {key!r} in {self.url} failed: {code} {error.get('Message', '')}".rstrip()
            raise ObjectStoreError(message) from None
        except BotoCoreError as exc:
            message = f"{operation} {key!r} in {self.url} failed: {exc.__class__.__name__}: {exc}"
            raise ObjectStoreError(message) from None

    def _get(self, key: str) -> dict[str, Any]:
        with self._errors("get", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._full_key(key))

    @staticmethod
    def _info(key: str, response: dict[str, Any], size: int | None = None) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size_bytes=int(size if size is not None else response.get("ContentLength", response.get("Size", 0))),
            sha256=(response.get("Metadata") or {}).get(SHA256_METADATA),
            last_modified=modified.astimezone(UTC) if (modified := response.get("LastModified")) else None,
            content_type=response.get("ContentType"),
        )

    def _stream_hash(self, key: str, body: Any, sink: BinaryIO | None = None) -> str:
        digest = hashlib.sha256()
        with self._errors("read", key):
            for chunk in body.iter_chunks(CHUNK_SIZE):
                digest.update(chunk)
                if sink is not None:
                    sink.write(chunk)
        return digest.hexdigest()

    def _upload(self, key: str, stream: BinaryIO, sha256: str, content_type: str | None) -> ObjectInfo:
        extra: dict[str, Any] = {"Metadata": {SHA256_METADATA: sha256}}
        if content_type:
            extra["ContentType"] = content_type
        with self._errors("upload", key):
            self.client.upload_fileobj(stream, self.bucket, self._full_key(key), ExtraArgs=extra,
                                       Config=self.transfer_config)
        if self.verify_uploads:
            return self._verify_upload(key, sha256)
        return self.stat(key)

    def _verify_upload(self, key: str, expected: str) -> ObjectInfo:
        response = self._get(key)
        actual = self._stream_hash(key, response["Body"])
        recorded = (response.get("Metadata") or {}).get(SHA256_METADATA)
        if actual != expected or recorded != expected:
            self.delete(key)
            raise ChecksumMismatchError(key, expected, actual if actual != expected else f"{recorded} (metadata)")
        return self._info(key, response)

    # --- ObjectStore -------------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        return self._upload(key, io.BytesIO(data), hashlib.sha256(data).hexdigest(), content_type)

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> ObjectInfo:
        sha256 = sha256_of_file(path)
        with open(path, "rb") as stream:
            return self._upload(key, stream, sha256, content_type)

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        """The bytes, checked against `expected_sha256` or, when absent, the sha256 recorded at upload."""
        response = self._get(key)
        with self._errors("read", key):
            data = response["Body"].read()
        expected = expected_sha256 or (response.get("Metadata") or {}).get(SHA256_METADATA)
        if expected is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise ChecksumMismatchError(key, expected, actual)
        return data

    def download_file(self, key: str, dest_path: str | Path, expected_sha256: str | None = None) -> ObjectInfo:
        response = self._get(key)
        expected = expected_sha256 or (response.get("Metadata") or {}).get(SHA256_METADATA)
        dest = Path(dest_path)
        with atomic_write(dest) as out:
            actual = self._stream_hash(key, response["Body"], out)
            if expected is not None and actual != expected:
                raise ChecksumMismatchError(key, expected, actual)
        info = self._info(key, response)
        return ObjectInfo(key, info.size_bytes, actual, info.last_modified, info.content_type)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def stat(self, key: str) -> ObjectInfo:
        with self._errors("stat", key):
            return self._info(key, self.client.head_object(Bucket=self.bucket, Key=self._full_key(key)))

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full_key(key))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        validate_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        found: list[ObjectInfo] = []
        with self._errors("list", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root + prefix):
                for item in page.get("Contents", []):
                    found.append(self._info(item["Key"][len(root):], item, size=item["Size"]))
        return sorted(found, key=lambda info: info.key)

    def sha256(self, key: str) -> str:
        return self._stream_hash(key, self._get(key)["Body"])

    def presigned_url(self, key: str, expires_seconds: int = 3600) -> str:
        if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_seconds must be between 1 and {MAX_PRESIGN_SECONDS}, got {expires_seconds}")
        with self._errors("presign", key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._full_key(key)}, ExpiresIn=expires_seconds
            )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

"""The run's evidence: write-once files under one prefix of the workload's evidence bucket.

Inventories, transfer reports and validation results are files here; XCom only
carries their keys and counts. Every file is written with ``If-None-Match: *`` so a
rerun never silently replaces what an earlier attempt recorded: each attempt writes
under its own name, and the reader takes the name its upstream task returned.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from botocore.exceptions import ClientError

from bascule.exceptions import StoreAccessError

EVIDENCE_ROOT = "_bascule/"
SINGLE_PUT_LIMIT = 5 * 1024**3  # S3's (and Scaleway's) largest single PUT


def _md5_and_size(fileobj: IO[bytes]) -> tuple[str, int]:
    """Base64 MD5 and size of the rest of ``fileobj``, read in chunks; the position is put back."""
    start = fileobj.tell()
    digest, size = hashlib.md5(usedforsecurity=False), 0
    for chunk in iter(lambda: fileobj.read(1024 * 1024), b""):
        digest.update(chunk)
        size += len(chunk)
    fileobj.seek(start)
    return base64.b64encode(digest.digest()).decode(), size


class EvidenceExists(StoreAccessError):
    """The evidence file is already there: evidence is never overwritten."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class EvidenceStore:
    """``s3://<evidence bucket>/_bascule/<workload>/`` holding one workload's runs' evidence (never a data bucket)."""

    def __init__(self, client: Any, bucket: str, workload_id: str):
        self._client = client
        self.bucket = bucket
        self.prefix = f"{EVIDENCE_ROOT}{workload_id}/"

    @property
    def client(self) -> Any:
        return self._client

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def put_bytes(self, name: str, body: bytes, content_type: str) -> str:
        key = self.prefix + name
        try:
            # Content-MD5: S3 requires it (or a checksum) for any write into an Object Lock bucket.
            md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*", ContentMD5=md5
            )
        except ClientError as exc:
            raise self._error(exc, key) from None
        return key

    def put_json(self, name: str, document: Any) -> str:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        return self.put_bytes(name, body, "application/json")

    def put_file(self, name: str, fileobj: IO[bytes], content_type: str) -> str:
        """Upload a (possibly large, spooled, seekable) file; write-once like every evidence file.

        One conditional PUT with its Content-MD5 (hashed in 1 MiB chunks first: memory stays
        flat), which an Object Lock bucket requires of every write. Only a file beyond a single
        PUT's 5 GB goes multipart, with a CRC32 checksum on each part instead; conditional PUT
        does not cover that path, so an existence check guards the usual rerun case there.
        """
        key = self.prefix + name
        md5, size = _md5_and_size(fileobj)
        if size <= SINGLE_PUT_LIMIT:
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=fileobj, ContentLength=size, ContentType=content_type,
                    IfNoneMatch="*", ContentMD5=md5,
                )  # fmt: skip
            except ClientError as exc:
                raise self._error(exc, key) from None
            return key
        if self.exists(name):
            raise EvidenceExists(f"evidence {self.uri(name)} already exists; it is never overwritten")
        try:
            self._client.upload_fileobj(
                fileobj, self.bucket, key, ExtraArgs={"ContentType": content_type, "ChecksumAlgorithm": "CRC32"}
            )
        except ClientError as exc:
            raise self._error(exc, key) from None
        return key

    def keys(self, name_prefix: str = "") -> list[tuple[str, Any]]:
        """(key, last modified) of the evidence files whose name starts with ``name_prefix``."""
        found: list[tuple[str, Any]] = []
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + name_prefix):
                found.extend((o["Key"], o["LastModified"]) for o in page.get("Contents", []))
        except ClientError as exc:
            raise self._error(exc, self.prefix + name_prefix) from None
        return found

    def exists(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.prefix + name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(exc, self.prefix + name) from None
        return True

    @contextmanager
    def open(self, key: str) -> Iterator[IO[bytes]]:
        """Stream an evidence file by its full key (as returned by a put)."""
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            raise self._error(exc, key) from None
        try:
            yield body
        finally:
            body.close()

    def read_json(self, key: str) -> Any:
        with self.open(key) as stream:
            return json.load(stream)

    def _error(self, exc: ClientError, key: str) -> StoreAccessError:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "PreconditionFailed" or status == 412:
            return EvidenceExists(f"evidence s3://{self.bucket}/{key} already exists; it is never overwritten")
        if code in ("NoSuchKey", "404"):
            return StoreAccessError(f"evidence s3://{self.bucket}/{key} not found", retryable=False)
        return StoreAccessError(
            f"evidence s3://{self.bucket}/{key}: {code or 'error'} (HTTP {status})",
            retryable=status is None or status >= 500,
        )

"""S3-compatible object storage (Scaleway), the target side, over boto3."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Protocol, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.storage.base import CONTENT_SETTINGS, MD5_KEY, TRANSIENT_HTTP_STATUS, ObjectInfo
from bascule.storage.bucket_guard import WRITE_STORAGE_CLASS, guard_policy
from bascule.storage.client_side import ClientSideKey, DecryptingStream, plaintext_size, reveal
from bascule.storage.encryption import RUNBOOK as SSE_C_RUNBOOK
from bascule.storage.encryption import EncryptionKeyError, SseCKey
from bascule.storage.metadata import decode_metadata, encode_metadata

_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}
# Beyond TRANSIENT_HTTP_STATUS, the codes S3 throttles or hiccups with.
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    # The body was damaged in transit (the server's MD5 of what it received differs
    # from our Content-MD5): sending the same bytes again is the cure.
    "BadDigest",
    "IncompleteBody",
}
_T = TypeVar("_T")



class Readable(Protocol):
    """What botocore needs of a streamed body (with ``content_length`` given)."""

    def read(self, size: int = ..., /) -> bytes: ...


Body = bytes | bytearray | memoryview | Readable


@dataclass(frozen=True)
class UploadedPart:
    part_number: int
    etag: str


@dataclass(frozen=True)
class MultipartUpload:
    """An upload in progress (or left behind by a crashed attempt)."""

    key: str
    upload_id: str
    initiated: datetime | None


class S3Bucket:
    """One bucket behind one S3 endpoint.

    With ``sse_c`` every object request this class makes (PUT, CreateMultipartUpload,
    UploadPart, CompleteMultipartUpload, CopyObject source and target, HEAD, GET, range
    GET) carries the SSE-C headers: callers cannot forget them, because no object call
    goes around this class. Bucket-level calls (listing, settings) take no key.

    With ``client_side`` (the key-encryption key of :mod:`bascule.storage.client_side`)
    every read this class makes shows the plaintext: HEAD and listings give plaintext
    sizes, HEAD the unsealed MD5, GET decrypts and authenticates frame by frame. Writes
    take bytes already sealed by the copier (:mod:`bascule.objects.body_codec`).
    """

    def __init__(
        self, client: Any, bucket: str, *, sse_c: SseCKey | None = None, client_side: ClientSideKey | None = None
    ):
        self._client = client
        self.bucket = bucket
        self.sse_c = sse_c
        self.client_side = client_side
        self._key_params = sse_c.request_params() if sse_c is not None else {}

    @property
    def etag_is_md5(self) -> bool:
        """False for SSE-C and client-side objects: their ETag is not the MD5 of the plaintext, so it proves nothing."""
        return self.sse_c is None and self.client_side is None

    @property
    def client(self) -> Any:
        """The boto3 client, for callers that share it (one connection pool per task)."""
        return self._client

    @property
    def endpoint(self) -> str:
        return str(self._client.meta.endpoint_url)

    @property
    def client_region(self) -> str | None:
        return self._client.meta.region_name

    def describe(self) -> str:
        return f"S3 bucket '{self.bucket}' at {self.endpoint}"

    def region(self) -> str | None:
        """The bucket's region, or None if the bucket does not exist."""
        try:
            answer = self._client.get_bucket_location(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchBucket", "404"):
                return None
            raise self._access_error(exc, code) from None
        except (EndpointConnectionError, ConnectionError) as exc:
            raise StoreAccessError(
                f"{self.describe()}: endpoint unreachable ({exc}); check the connection's endpoint_url",
                retryable=True,
            ) from None
        except NoCredentialsError:
            raise StoreAccessError(
                f"{self.describe()}: no credentials in the target connection (login/password)",
                retryable=False,
            ) from None
        # S3 reports the historical default region as an empty constraint.
        return answer.get("LocationConstraint") or "us-east-1"

    def create(
        self, region: str, *, health_data: bool = False, object_lock: tuple[str, int] | None = None
    ) -> None:
        """Create the bucket in ``region``, encrypted at rest by default (a policy rule requires it).

        ``health_data``: also attach the guard policy that denies lifecycle rules and writes
        in another storage class (:mod:`bascule.storage.bucket_guard`). ``object_lock``:
        ``(mode, days)``, Object Lock enabled at creation (the only moment Scaleway allows it)
        with that default retention.
        """
        lock = {"ObjectLockEnabledForBucket": True} if object_lock else {}
        try:
            self._client.create_bucket(
                Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": region}, **lock
            )
        except ClientError as exc:
            code = _code(exc)
            if code != "BucketAlreadyOwnedByYou":
                raise self._access_error(exc, code) from None
        try:
            self._client.put_bucket_encryption(
                Bucket=self.bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
            )
            if health_data:
                self._client.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(guard_policy(self.bucket)))
            if object_lock:
                mode, days = object_lock
                self._client.put_object_lock_configuration(
                    Bucket=self.bucket,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
                    },
                )
        except ClientError as exc:
            raise self._access_error(exc, _code(exc)) from None

    # -- capabilities ---------------------------------------------------------------

    def can_stream_uploads(self, *, with_content_md5: bool) -> bool:
        """True if botocore will send a file-like body without reading it all first.

        botocore reads a streamed body twice (then seeks back) when it must hash it
        up front: SigV4 payload signing over plain HTTP (or over HTTPS without a
        Content-MD5), or a CRC32 header checksum over plain HTTP
        (``request_checksum_calculation="when_supported"``, boto3's default). The
        copier then buffers instead of streaming; :func:`bascule.objects.copy_config.recommended_s3_config`
        sets what makes streaming possible.
        """
        config = self._client.meta.config
        https = self.endpoint.startswith("https")
        checksum = getattr(config, "request_checksum_calculation", None) or "when_supported"
        if checksum == "when_supported":
            # A trailing (aws-chunked) checksum streams, and makes the payload unsigned.
            return https
        signing = (getattr(config, "s3", None) or {}).get("payload_signing_enabled")
        if signing is not None:
            return not signing
        return https and with_content_md5

    # -- objects -----------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size, ETag and metadata (decoded), or None if there is no such key."""
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=key, **self._key_params)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._object_error(exc, "HEAD", key) from None
        except Exception as exc:
            raise self._object_error(exc, "HEAD", key) from None
        metadata = decode_metadata(answer.get("Metadata") or {})
        size = int(answer["ContentLength"])
        if self.client_side is not None:
            envelope, metadata = reveal(self.client_side, metadata, f"{self.describe()}: object '{key}'")
            size = envelope.plaintext_size
        return ObjectInfo(
            key=key,
            size=size,
            etag=_etag(answer),
            last_modified=answer["LastModified"],
            # The MD5 of the source as we recorded it; the ETag is not an MD5 for
            # multipart or SSE-C objects, so it is never used in its place.
            content_md5=metadata.get(MD5_KEY),
            content_type=answer.get("ContentType"),
            content_encoding=answer.get("ContentEncoding"),
            metadata=metadata,
            access_tier=answer.get("StorageClass"),
            cache_control=answer.get("CacheControl"),
            content_language=answer.get("ContentLanguage"),
            content_disposition=answer.get("ContentDisposition"),
        )

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, page by page (a "fresh target inventory").

        A listing carries no user metadata, so ``content_md5`` and ``metadata`` are
        empty here; use :meth:`head` for one object's metadata.
        """
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=self._listed_size(int(item["Size"])),
                        etag=_etag(item),
                        last_modified=item["LastModified"],
                        access_tier=item.get("StorageClass"),
                    )
        except Exception as exc:
            raise self._object_error(exc, "LIST", prefix or "<whole bucket>") from None

    def put_object(
        self,
        key: str,
        body: Body,
        *,
        content_length: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_md5: str | None = None,
        if_none_match: bool = False,
        **settings: str | None,
    ) -> str:
        """One PUT; returns the new ETag (unquoted).

        ``content_md5`` (base64) lets the server refuse bytes damaged in transit.
        ``metadata`` is user metadata, encoded by :func:`encode_metadata`. A file-like
        ``body`` needs ``content_length``. ``if_none_match`` refuses to overwrite.
        """
        params = self._object_params(key, content_type, content_encoding, metadata, settings)
        params["Body"] = body
        if content_length is not None:
            params["ContentLength"] = content_length
        if content_md5:
            params["ContentMD5"] = content_md5
        if if_none_match:
            params["IfNoneMatch"] = "*"
        answer = self._call("PUT", key, lambda: self._client.put_object(**params))
        return _etag(answer)

    def create_multipart(
        self,
        key: str,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
        **settings: str | None,
    ) -> str:
        """Start a multipart upload; returns its upload id. Metadata is fixed here, before any part."""
        params = self._object_params(key, content_type, content_encoding, metadata, settings)
        answer = self._call("CreateMultipartUpload", key, lambda: self._client.create_multipart_upload(**params))
        return str(answer["UploadId"])

    def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: Body,
        *,
        content_length: int | None = None,
        content_md5: str | None = None,
    ) -> str:
        """Upload one part; returns its ETag (unquoted), needed to complete the upload."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "Body": body,
            **self._key_params,
        }
        if content_length is not None:
            params["ContentLength"] = content_length
        if content_md5:
            params["ContentMD5"] = content_md5
        answer = self._call(f"UploadPart #{part_number}", key, lambda: self._client.upload_part(**params))
        return _etag(answer)

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[UploadedPart], *, if_none_match: bool = False
    ) -> str:
        """Make the upload visible as one object; returns its ETag (unquoted)."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": [{"PartNumber": p.part_number, "ETag": f'"{p.etag}"'} for p in parts]},
            # Not needed by every server to complete, but a strict one (and AWS with checksums) asks for it.
            **self._key_params,
        }
        if if_none_match:
            params["IfNoneMatch"] = "*"
        answer = self._call("CompleteMultipartUpload", key, lambda: self._client.complete_multipart_upload(**params))
        return _etag(answer)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload and free its parts. An upload already gone is not an error."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload" or _status(exc) == 404:
                return
            raise self._object_error(exc, "AbortMultipartUpload", key) from None
        except Exception as exc:
            raise self._object_error(exc, "AbortMultipartUpload", key) from None

    def list_multipart_uploads(self, prefix: str = "") -> Iterator[MultipartUpload]:
        """Uploads in progress under ``prefix``, e.g. leftovers of a crashed earlier attempt."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        try:
            while True:
                page = self._client.list_multipart_uploads(**params)
                for item in page.get("Uploads", ()):
                    yield MultipartUpload(item["Key"], item["UploadId"], item.get("Initiated"))
                if not page.get("IsTruncated"):
                    return
                params["KeyMarker"] = page.get("NextKeyMarker", "")
                params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
        except Exception as exc:
            raise self._object_error(exc, "ListMultipartUploads", prefix or "<whole bucket>") from None

    def replace_metadata(
        self,
        key: str,
        *,
        if_etag: str,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
        **settings: str | None,
    ) -> str:
        """Rewrite an object's metadata in place (server-side copy onto itself, up to 5 GB).

        ``if_etag`` makes it a no-op failure (HTTP 412) if the object changed meanwhile.
        ``settings``: the other content settings (``cache_control``...), which REPLACE would drop.
        """
        params = self._object_params(key, content_type, content_encoding, metadata, settings)
        params.update(
            CopySource={"Bucket": self.bucket, "Key": key},
            CopySourceIfMatch=f'"{if_etag}"',
            MetadataDirective="REPLACE",
            # The server decrypts the source and encrypts the copy: it needs the key for both.
            **(self.sse_c.copy_source_params() if self.sse_c is not None else {}),
        )
        answer = self._call("CopyObject (metadata)", key, lambda: self._client.copy_object(**params))
        return _etag(answer.get("CopyObjectResult", {}))

    def reencrypt(self, key: str, old: SseCKey) -> str:
        """Rewrite an object in place from ``old`` to this bucket's SSE-C key (key rotation); returns the new ETag.

        A server-side CopyObject onto itself: no egress, metadata kept, up to 5 GB (larger
        objects need UploadPartCopy, which rotation refuses rather than half-does).
        """
        if self.sse_c is None:
            raise EncryptionKeyError(f"{self.describe()}: re-encrypting '{key}' needs the new SSE-C key")
        # REPLACE with the object's own settings rather than COPY: some servers (moto) refuse a
        # copy onto itself that "changes nothing", not counting the key.
        current = self._call(
            "HEAD (old key)", key, lambda: self._client.head_object(Bucket=self.bucket, Key=key, **old.request_params())
        )
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "CopySource": {"Bucket": self.bucket, "Key": key},
            "CopySourceIfMatch": current["ETag"],
            "MetadataDirective": "REPLACE",
            "Metadata": current.get("Metadata") or {},
            **{name: current[name] for name in CONTENT_SETTINGS.values() if current.get(name)},
            **old.copy_source_params(),
            **self._key_params,
        }
        answer = self._call("CopyObject (re-encrypt)", key, lambda: self._client.copy_object(**params))
        return _etag(answer.get("CopyObjectResult", {}))

    def get_stream(self, key: str) -> IO[bytes]:
        """The object's body (its plaintext, on a client-side target) as a stream; the caller reads and closes it."""
        answer = self._call(
            "GET", key, lambda: self._client.get_object(Bucket=self.bucket, Key=key, **self._key_params)
        )
        body: IO[bytes] = answer["Body"]
        if self.client_side is not None:
            where = f"{self.describe()}: object '{key}'"
            try:
                envelope, _ = reveal(self.client_side, decode_metadata(answer.get("Metadata") or {}), where)
            except BaseException:
                body.close()
                raise
            return DecryptingStream(body, envelope, where)  # type: ignore[return-value]
        return body

    def read_all(self, key: str) -> bytes:
        """The whole object in memory: for small files (reports, manifests) only."""

        def read() -> bytes:
            stream = self.get_stream(key)
            try:
                return bytes(stream.read())
            finally:
                stream.close()

        return self._call("GET", key, read)

    def _listed_size(self, stored: int) -> int:
        """A listed object's size as readers see it: on a client-side target, the plaintext's (-1: no valid body)."""
        if self.client_side is None:
            return stored
        size = plaintext_size(stored)
        return -1 if size is None else size

    def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error (S3 says 204 either way)."""
        self._call("DELETE", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key))

    # -- errors ------------------------------------------------------------------------

    def _object_params(
        self,
        key: str,
        content_type: str | None,
        content_encoding: str | None,
        metadata: Mapping[str, str] | None,
        settings: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """``settings``: ``cache_control``, ``content_language``, ``content_disposition`` (ObjectInfo names)."""
        # Always STANDARD, said out loud: the guard policy denies any other class (no archive for HDS).
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "StorageClass": WRITE_STORAGE_CLASS}
        params.update(self._key_params)
        if content_type:
            params["ContentType"] = content_type
        if content_encoding:
            params["ContentEncoding"] = content_encoding
        if metadata:
            params["Metadata"] = encode_metadata(metadata)
        for name, value in (settings or {}).items():
            if name not in CONTENT_SETTINGS:
                raise TypeError(f"unknown content setting {name!r}")
            if value:
                params[CONTENT_SETTINGS[name]] = value
        return params

    def _call(self, operation: str, key: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except Exception as exc:
            raise self._object_error(exc, operation, key) from None

    def _object_error(self, exc: Exception, operation: str, key: str) -> BasculeError:
        """Classify a boto error on one object: what failed, where, and whether a retry can help."""
        if isinstance(exc, BasculeError):
            return exc
        cause = exc.kwargs.get("error") if isinstance(exc, HTTPClientError) else None
        if isinstance(cause, BasculeError):
            # Raised by a streamed body while botocore sent it (source changed, integrity
            # check, source unreachable); botocore wraps it, the original is the precise one.
            return cause
        where = f"{self.describe()}: {operation} '{key}'"
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message", "")
            if self.sse_c is not None and (key_refused := self._sse_c_refusal(code, status, message)):
                return EncryptionKeyError(f"{where}: {key_refused}")
            if _denied(code, status):
                return StoreAccessError(
                    f"{where}: access denied ({code}); check the access key and secret in the target "
                    "connection and the key's write permission on this bucket",
                    retryable=False,
                )
            return StoreAccessError(
                f"{where}: {code or 'error'} (HTTP {status}){': ' + message if message else ''}",
                retryable=status is None or status in TRANSIENT_HTTP_STATUS or code in _TRANSIENT_CODES,
            )
        if isinstance(
            exc, HTTPClientError | BotoConnectionError | IncompleteReadError | ConnectionError | TimeoutError
        ):
            return StoreAccessError(f"{where}: network error ({type(exc).__name__}: {exc})", retryable=True)
        if isinstance(exc, NoCredentialsError):
            return StoreAccessError(f"{where}: no credentials in the target connection", retryable=False)
        if isinstance(exc, BotoCoreError):
            return StoreAccessError(f"{where}: {type(exc).__name__}: {exc}", retryable=False)
        return StoreAccessError(f"{where}: unexpected {type(exc).__name__}: {exc}", retryable=False)

    def _sse_c_refusal(self, code: str, status: int | None, message: str) -> str | None:
        """What a refusal means when the bucket is written with SSE-C: the key is the usual suspect.

        S3 answers 400 when the SSE-C headers are missing or malformed and 403 when the key
        is not the one the object was written with (HEAD answers carry no error code).
        """
        assert self.sse_c is not None
        which = f"the SSE-C key of connection '{self.sse_c.conn_id}' (fingerprint {self.sse_c.fingerprint})"
        if status == 400 and code in ("InvalidRequest", "InvalidArgument", "InvalidEncryptionAlgorithmError", "400"):
            return (
                f"the server refused {which} ({code}: {message or 'no message'}); check that the connection "
                f"holds the workload's key. Runbook: {SSE_C_RUNBOOK}"
            )
        if _denied(code, status):
            return (
                f"access denied ({code or status}): either the target connection's access key lacks the "
                f"permission, or the object was written with another key than {which} (a key rotated "
                f"without re-encrypting, or the wrong connection). Runbook: {SSE_C_RUNBOOK}"
            )
        return None

    def _access_error(self, exc: ClientError, code: str) -> StoreAccessError:
        status = _status(exc)
        if _denied(code, status):
            return StoreAccessError(
                f"{self.describe()}: access denied ({code}); check the access key and secret "
                "in the target connection and the key's permissions on this bucket",
                retryable=False,
            )
        return StoreAccessError(
            f"{self.describe()}: {code or 'error'} (HTTP {status})",
            retryable=status is None or status >= 500,
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _denied(code: str, status: int | None) -> bool:
    return code in _AUTH_ERRORS or status == 403


def _etag(answer: Mapping[str, Any]) -> str:
    # S3 answers with the ETag in quotes; inventories and If-Match conditions here keep it bare.
    return str(answer.get("ETag", "")).strip('"')

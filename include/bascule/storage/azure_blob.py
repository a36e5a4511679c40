"""Azure Blob Storage, the source side, over the official ``azure-storage-blob`` SDK."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.storage.base import TRANSIENT_HTTP_STATUS, ObjectInfo

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient

log = logging.getLogger(__name__)

# Names per listing page: Azure's maximum. A module setting, not a manifest field: only a
# test that must interrupt a listing after a few pages has a reason to make it smaller.
LIST_PAGE_SIZE = 5000

# Bytes per ranged GET. Bodies are streamed block by block, so this bounds the
# number of requests (and what a failure re-reads), not memory.
DEFAULT_CHUNK_SIZE = 64 * 1024 * 1024
# When the SDK's public API must be used instead (see _raw_sender), each piece is
# held whole, and the SDK's list(response) transiently reserves 8 bytes of
# (untouched) pointers per byte: keep pieces small.
_PUBLIC_CHUNK_SIZE = 4 * 1024 * 1024
# Azure throttles with 503 ServerBusy / 500 OperationTimedOut: both are in TRANSIENT_HTTP_STATUS.


class SourceChangedError(BasculeError):
    """A blob no longer matches the snapshot (its ETag changed, or it was deleted).

    Retrying cannot help: the snapshot is the contract of this run. Take a new
    snapshot (or let the cutover's delta sync pick the change up).
    """

    retryable = False

    def __init__(self, where: str, key: str, etag: str, detail: str):
        self.key = key
        self.etag = etag
        super().__init__(
            f"{where}: blob '{key}' changed since snapshot (snapshot ETag {etag}; {detail}); it was not copied. "
            "Take a new snapshot, or leave it to the cutover's final delta sync"
        )


class AzureBlobContainer:
    """One container of one storage account."""

    def __init__(self, service: BlobServiceClient, container: str):
        self._service = service
        self.container = container
        self._client = service.get_container_client(container)

    @property
    def account_url(self) -> str:
        return self._service.url

    @property
    def container_client(self) -> ContainerClient:
        """The SDK's client of this container, for what the seam does not wrap (its access policy, the freeze)."""
        return self._client

    def describe(self) -> str:
        return f"Azure container '{self.container}' at {self.account_url}"

    def check_exists(self) -> bool:
        """True if the container exists; raise StoreAccessError if we cannot tell."""
        try:
            return bool(self._client.exists())
        except ClientAuthenticationError as exc:
            raise StoreAccessError(
                f"{self.describe()}: authentication failed ({_first_line(exc)}); "
                "check the account key or SAS token in the source connection",
                retryable=False,
            ) from None
        except ServiceRequestError as exc:
            raise StoreAccessError(
                f"{self.describe()}: endpoint unreachable ({_first_line(exc)}); "
                "check the connection's host/account URL and the network path",
                retryable=True,
            ) from None
        except HttpResponseError as exc:
            retryable = exc.status_code is None or exc.status_code >= 500
            if exc.status_code == 403:
                raise StoreAccessError(
                    f"{self.describe()}: access denied (HTTP 403, {getattr(exc, 'error_code', None)}); "
                    "check the account key or SAS token in the source connection",
                    retryable=False,
                ) from None
            raise StoreAccessError(
                f"{self.describe()}: HTTP {exc.status_code} {getattr(exc, 'error_code', None)}", retryable=retryable
            ) from None

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every blob under ``prefix``, page by page: memory stays flat however many there are.

        ``LIST_PAGE_SIZE`` names a page (5,000, Azure's maximum): a listing of N blobs costs
        N/5000 requests.
        """
        try:
            listing = self._client.list_blobs(
                name_starts_with=prefix or None, include=["metadata"], results_per_page=LIST_PAGE_SIZE
            )
            for blob in listing:
                yield _object_info(blob)
        except ResourceNotFoundError:
            raise StoreAccessError(f"{self.describe()}: container not found", retryable=False) from None

    def properties(self, key: str) -> ObjectInfo:
        """The blob's current properties (one HEAD). Raises StoreAccessError if it does not exist."""
        try:
            props = self._client.get_blob_client(key).get_blob_properties()
        except Exception as exc:  # the SDK raises a wide family; classify once, below
            raise self._blob_error(exc, key, etag=None) from None
        return _object_info(props)

    def read_all(self, key: str) -> bytes:
        """A whole blob in memory, as stored (never gunzipped), whatever its version: small files only."""
        try:
            return bytes(self._client.download_blob(key, max_concurrency=1, decompress=False).readall())
        except Exception as exc:
            raise self._blob_error(exc, key, etag=None) from None

    def check_unchanged(self, key: str, etag: str) -> None:
        """Raise SourceChangedError unless the blob still has ``etag`` (one conditional HEAD)."""
        try:
            self._client.get_blob_client(key).get_blob_properties(
                etag=_quoted(etag), match_condition=MatchConditions.IfNotModified
            )
        except Exception as exc:
            raise self._blob_error(exc, key, etag=etag) from None

    def read_range(self, key: str, offset: int, length: int, *, etag: str) -> bytes:
        """``length`` bytes from ``offset``, only if the blob still has ``etag``."""
        if length == 0:
            self.check_unchanged(key, etag)
            return b""
        return b"".join(self.iter_chunks(key, etag=etag, offset=offset, length=length))

    def read_into(
        self, key: str, offset: int, buffer: memoryview, *, etag: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        """Fill ``buffer`` with the blob's bytes from ``offset``: memory is the buffer plus one socket block."""
        if len(buffer) == 0:
            self.check_unchanged(key, etag)
            return
        written = 0
        for block in self.iter_chunks(key, etag=etag, chunk_size=chunk_size, offset=offset, length=len(buffer)):
            buffer[written : written + len(block)] = block
            written += len(block)

    def iter_chunks(
        self,
        key: str,
        *,
        etag: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        offset: int = 0,
        length: int | None = None,
    ) -> Iterator[bytes]:
        """The blob's bytes from ``offset``, as they arrive, in ranged GETs of at most ``chunk_size``.

        Every GET carries If-Match ``etag``: a blob rewritten meanwhile fails with
        SourceChangedError instead of yielding a mix of two versions. Each GET's body
        is streamed in socket-sized blocks (256 KiB): ``chunk_size`` bounds the
        number of requests, not memory. ``length`` None means "to the end".
        """
        if length is None:
            length = self.properties(key).size - offset
        if length == 0:
            self.check_unchanged(key, etag)
            return
        done = 0
        while done < length:
            n = min(chunk_size, length - done)
            yield from self._ranged_get(key, offset + done, n, etag)
            done += n

    def _ranged_get(self, key: str, offset: int, length: int, etag: str) -> Iterator[bytes]:
        blob = self._client.get_blob_client(key)
        send = _raw_sender(blob)
        if send is None:
            yield from self._ranged_get_public(key, offset, length, etag)
            return
        request = HttpRequest(
            "GET",
            blob.url,
            headers={
                "x-ms-range": f"bytes={offset}-{offset + length - 1}",
                "If-Match": _quoted(etag),
                "x-ms-version": blob.api_version,
            },
        )
        got = 0
        try:
            response = send(request, stream=True)
        except Exception as exc:
            raise self._blob_error(exc, key, etag=etag) from None
        try:
            if response.status_code not in (200, 206) or (response.status_code == 200 and offset != 0):
                response.read()
                raise self._status_error(response.status_code, response.headers.get("x-ms-error-code"), key, etag)
            # iter_raw: the stored bytes, never gunzipped (see _ranged_get_public).
            for block in response.iter_raw():
                got += len(block)
                if got > length:
                    break
                yield block
        except BasculeError:
            raise
        except Exception as exc:
            raise self._blob_error(exc, key, etag=etag) from None
        finally:
            response.close()
        if got != length:
            raise self._short_read(key, offset, length, got)

    def _ranged_get_public(self, key: str, offset: int, length: int, etag: str) -> Iterator[bytes]:
        """The same through the SDK's public API: more CPU, and each piece is buffered whole."""
        done = 0
        while done < length:
            n = min(_PUBLIC_CHUNK_SIZE, length - done)
            sink = _Collect()
            try:
                downloader = self._client.download_blob(
                    key,
                    offset=offset + done,
                    length=n,
                    max_concurrency=1,
                    etag=_quoted(etag),
                    match_condition=MatchConditions.IfNotModified,
                    # The SDK gunzips blobs stored with Content-Encoding: gzip by default: we
                    # copy the stored bytes, the encoding header travels with them.
                    decompress=False,
                )
                # readinto hands over the SDK's own buffer: no BytesIO copy as readall makes.
                downloader.readinto(cast("IO[bytes]", sink))  # only .write is used
            except Exception as exc:
                raise self._blob_error(exc, key, etag=etag) from None
            data = sink.result()
            if len(data) != n:
                raise self._short_read(key, offset + done, n, len(data))
            yield data
            done += n

    def _status_error(self, status: int, code: str | None, key: str, etag: str) -> BasculeError:
        where = self.describe()
        if status in (404, 412):
            detail = "the blob no longer exists" if status == 404 else "the If-Match condition failed"
            return SourceChangedError(where, key, etag, detail)
        if status == 403:
            return StoreAccessError(
                f"{where}: blob '{key}': access denied (HTTP 403 {code}); check the account key or SAS token in the "
                "source connection and its read permission",
                retryable=False,
            )
        return StoreAccessError(
            f"{where}: blob '{key}': HTTP {status} {code or ''}".rstrip(), retryable=status in TRANSIENT_HTTP_STATUS
        )

    def _short_read(self, key: str, offset: int, expected: int, got: int) -> StoreAccessError:
        # With If-Match holding, a short read means a broken response, not a changed blob: retry.
        return StoreAccessError(
            f"{self.describe()}: blob '{key}': asked for {expected:,} bytes at offset {offset:,}, got {got:,}",
            retryable=True,
        )

    def _blob_error(self, exc: Exception, key: str, *, etag: str | None) -> BasculeError:
        """Classify an SDK error on one blob into what the on-call engineer can act on."""
        where = self.describe()
        if isinstance(exc, BasculeError):
            return exc
        if isinstance(exc, ResourceModifiedError) or getattr(exc, "status_code", None) == 412:
            return SourceChangedError(where, key, etag or "?", "the If-Match condition failed")
        if isinstance(exc, ResourceNotFoundError):
            if etag is not None:
                return SourceChangedError(where, key, etag, "the blob no longer exists")
            return StoreAccessError(f"{where}: blob '{key}' not found", retryable=False)
        if isinstance(exc, ClientAuthenticationError) or getattr(exc, "status_code", None) == 403:
            return StoreAccessError(
                f"{where}: blob '{key}': access denied ({_first_line(exc)}); check the account key or SAS "
                "token in the source connection and its read permission",
                retryable=False,
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return StoreAccessError(
                f"{where}: blob '{key}': network error ({type(exc).__name__}: {_first_line(exc)})", retryable=True
            )
        if isinstance(exc, HttpResponseError):
            status = exc.status_code
            return StoreAccessError(
                f"{where}: blob '{key}': HTTP {status} {getattr(exc, 'error_code', None) or ''} "
                f"({_first_line(exc)})".replace("  ", " "),
                retryable=status is None or status in TRANSIENT_HTTP_STATUS,
            )
        if isinstance(exc, ConnectionError | TimeoutError):
            return StoreAccessError(f"{where}: blob '{key}': network error ({_first_line(exc)})", retryable=True)
        return StoreAccessError(
            f"{where}: blob '{key}': unexpected {type(exc).__name__}: {_first_line(exc)}", retryable=False
        )


class _Collect:
    """A write-only stream that keeps the SDK's chunk objects as they are (no copy for one chunk)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        return len(data)

    def result(self) -> bytes:
        if len(self._parts) == 1:
            return self._parts[0]
        return b"".join(self._parts)


def _raw_sender(blob: Any) -> Any:
    """The SDK pipeline's ``send_request`` (signing, retry and logging policies included), or None.

    Why not ``download_blob``: it holds each response whole (joined from a list
    presized to 8 bytes per response byte), costs ~3 ms of CPU per request, and so
    needs many small requests to stay within memory. One streamed GET per part or
    object reads at socket speed in 256 KiB blocks: for a 64 MiB blob, half the CPU
    and wall time, 0.5 MiB of Python allocations instead of ~40 MiB.
    The SDK does not expose its pipeline publicly on blob clients (12.31): reach it
    defensively, and fall back to the public API should a release move it.
    """
    send = getattr(getattr(getattr(blob, "_client", None), "_client", None), "send_request", None)
    if send is None or not hasattr(blob, "api_version"):
        global _WARNED_FALLBACK
        if not _WARNED_FALLBACK:
            _WARNED_FALLBACK = True
            log.warning("azure-storage-blob no longer exposes its pipeline as expected: reading through download_blob")
        return None
    return send


_WARNED_FALLBACK = False


def _quoted(etag: str) -> str:
    # Inventories keep ETags unquoted; If-Match wants the quoted form Azure sends.
    return etag if etag.startswith('"') else f'"{etag}"'


def _object_info(props: BlobProperties) -> ObjectInfo:
    settings = props.content_settings
    md5 = settings.content_md5 if settings else None
    return ObjectInfo(
        key=props.name,
        size=int(props.size),
        etag=str(props.etag).strip('"'),
        last_modified=props.last_modified,
        content_md5=base64.b64encode(bytes(md5)).decode() if md5 else None,
        content_type=settings.content_type if settings else None,
        content_encoding=settings.content_encoding if settings else None,
        metadata=dict(props.metadata or {}),
        access_tier=str(props.blob_tier) if props.blob_tier else None,
        cache_control=(settings.cache_control or None) if settings else None,
        content_language=(settings.content_language or None) if settings else None,
        content_disposition=(settings.content_disposition or None) if settings else None,
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

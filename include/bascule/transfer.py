"""Copy blobs from Azure Blob Storage to S3 (Scaleway): streaming, verified, idempotent.

What one object's copy guarantees
---------------------------------
- **Bounded memory, whatever the size.** A single PUT streams: bytes flow from one
  ranged GET on the source to the PUT body in socket-sized blocks (256 KiB). A
  multipart upload holds one part per object (parts above
  ``max_buffered_part_size`` stream too). No whole-blob read, no temp file.
- **The bytes are hashed (MD5) as they pass**, and checked against the source's
  Content-MD5 when it has one, *before* the object can become visible: a single PUT
  withholds its last bytes until the hash matches (the request is cut short
  otherwise, so the server stores nothing), a multipart upload is aborted instead of
  completed. Every buffered PUT and part carries its own Content-MD5 so the server
  refuses bytes damaged in transit.
- **Blobs without Content-MD5** (committed from staged blocks: most large blobs on
  real Azure, and on Azurite) have nothing to check against at copy time. The MD5
  computed while streaming is what gets recorded (``md5chksum``; for multipart
  uploads by an in-place metadata rewrite after completion, as metadata is fixed
  when an upload starts). That the target holds the source's bytes is then proven
  by the validation phase, which re-reads both sides; this module does not.
- **What the target records**: ``md5chksum`` (base64 MD5 of the source bytes, the
  form ``rclone check`` reads for multipart objects), ``bascule-snapshot`` (the run's
  snapshot id) and ``bascule-source-etag`` (the blob's ETag at snapshot time), plus
  the blob's content type, content encoding and user metadata (see
  :func:`bascule.storage.s3.encode_metadata` for non-ASCII values).
  Cache-Control, Content-Disposition and Content-Language are not in the snapshot
  inventory (:class:`ObjectInfo`) and so are not carried over.
- **Idempotent.** A target object of the same size whose recorded source hash
  matches is skipped (see :func:`already_copied`). Leftover multipart uploads of a
  crashed attempt on the same key are aborted before a new one starts.
- **Source changed under the snapshot** (ETag differs, blob deleted): every source
  read carries If-Match, so the object fails with "changed since snapshot" and is
  not copied.
- **Transient faults** (HTTP 408/429/5xx, SlowDown, resets, timeouts) are retried
  with exponential backoff and jitter, per part for multipart uploads and per
  object for single PUTs, a bounded number of times; everything else fails the
  object at once. Retries are counted in the outcome.

Clients are passed in (built from Airflow connections by the glue). What they must
be configured with is in :func:`recommended_s3_config` and
:func:`recommended_azure_client_kwargs`.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.parts import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    MAX_OBJECT_SIZE,
    MAX_SINGLE_PUT_SIZE,
    MiB,
    ObjectTooLarge,
    PartPlan,
    plan_parts,
)
from bascule.storage.base import ObjectInfo
from bascule.storage.s3 import Body, MultipartUpload, UploadedPart

log = logging.getLogger(__name__)

MD5_KEY = "md5chksum"
SNAPSHOT_KEY = "bascule-snapshot"
SOURCE_ETAG_KEY = "bascule-source-etag"
_RESERVED_KEYS = (MD5_KEY, SNAPSHOT_KEY, SOURCE_ETAG_KEY)

# Bytes per ranged GET on the source. Bodies stream through in socket-sized blocks,
# so this bounds requests (and what one failed GET re-reads), not memory.
DEFAULT_CHUNK_SIZE = 64 * MiB
DEFAULT_MAX_BUFFERED_PART_SIZE = 32 * MiB
# copy_shard(target_keys="auto") on an iterable of unknown length lists at most this many keys.
AUTO_LIST_MAX_KEYS = 100_000
RUNBOOK = "docs/runbooks.md#transfer"

_T = TypeVar("_T")
Status = Literal["copied", "skipped", "failed"]


class IntegrityError(BasculeError):
    """The bytes read do not hash to what the source declares. Nothing was made visible.

    Not retried: re-reading the same blob gives the same bytes. Either the blob's
    stored Content-MD5 is wrong (rewritten properties, a buggy uploader) or its data
    is damaged at the source; a person has to decide which.
    """

    retryable = False

    def __init__(self, where: str, key: str, *, expected: str, actual: str, detail: str = ""):
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{where}: blob '{key}': integrity check failed: source Content-MD5 is {expected}, the bytes read hash "
            f"to {actual}{' (' + detail + ')' if detail else ''}; nothing was written at the target. Compare the "
            f"blob with its producer's copy before re-running; see {RUNBOOK}"
        )


class RetriesExhausted(BasculeError):
    """A transient fault outlasted the retry budget. A later retry (of the task) may succeed."""

    retryable = True

    def __init__(self, what: str, attempts: int, waited_s: float, last: BaseException):
        self.attempts = attempts
        self.last = last
        super().__init__(
            f"{what}: gave up after {attempts} attempts ({waited_s:.1f} s of backoff); last error: {last}. "
            "The store kept failing: check its status page and the network path, then re-run "
            f"(copied objects are skipped); see {RUNBOOK}"
        )


class Cancelled(BasculeError):
    """The shard was asked to stop (task killed or timed out); the object was left untouched."""

    retryable = True


# -- the seam, as the copier uses it (real classes in bascule.storage, fakes in tests) ----


class Source(Protocol):
    def describe(self) -> str: ...

    def read_into(self, key: str, offset: int, buffer: memoryview, *, etag: str, chunk_size: int = ...) -> None: ...

    def iter_chunks(
        self, key: str, *, etag: str, chunk_size: int = ..., offset: int = ..., length: int | None = ...
    ) -> Iterator[bytes]: ...


class Target(Protocol):
    def describe(self) -> str: ...

    def can_stream_uploads(self, *, with_content_md5: bool) -> bool: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def put_object(
        self,
        key: str,
        body: Body,
        *,
        content_length: int | None = ...,
        content_type: str | None = ...,
        content_encoding: str | None = ...,
        metadata: Mapping[str, str] | None = ...,
        content_md5: str | None = ...,
        if_none_match: bool = ...,
    ) -> str: ...

    def create_multipart(
        self,
        key: str,
        *,
        content_type: str | None = ...,
        content_encoding: str | None = ...,
        metadata: Mapping[str, str] | None = ...,
    ) -> str: ...

    def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: Body,
        *,
        content_length: int | None = ...,
        content_md5: str | None = ...,
    ) -> str: ...

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[UploadedPart], *, if_none_match: bool = ...
    ) -> str: ...

    def abort_multipart(self, key: str, upload_id: str) -> None: ...

    def list_multipart_uploads(self, prefix: str = ...) -> Iterator[MultipartUpload]: ...

    def replace_metadata(
        self,
        key: str,
        *,
        if_etag: str,
        content_type: str | None = ...,
        content_encoding: str | None = ...,
        metadata: Mapping[str, str] | None = ...,
    ) -> str: ...

    def iter_objects(self, prefix: str = ...) -> Iterator[ObjectInfo]: ...


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded in attempts and in total waiting.

    Defaults: 6 attempts, waits of ~0.5, 1, 2, 4, 8 s (each between half and all of
    that), at most 60 s of waiting for one operation.
    """

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_total_delay_s: float = 60.0

    def delay(self, retry_number: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry_number - 1))
        # "Equal jitter": never near zero (a retry storm), never in lockstep with the other threads.
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class CopyConfig:
    # Objects up to this size go in one buffered PUT; parts are this size (or larger,
    # to stay within 1,000 parts). Memory per object in flight is about one part.
    preferred_part_size: int = DEFAULT_PART_SIZE
    # See bascule.parts for why 128 MiB. A single PUT above preferred_part_size must
    # stream, which needs the MD5 up front (the blob's Content-MD5) and a target
    # client able to stream: otherwise such objects go multipart.
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    # Bytes per ranged GET on the source (streamed: bounds requests, not memory).
    chunk_size: int = DEFAULT_CHUNK_SIZE
    # Parts larger than this (objects above ~31 GiB) are streamed, not held.
    max_buffered_part_size: int = DEFAULT_MAX_BUFFERED_PART_SIZE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Multipart uploads fix metadata before the first byte; for blobs without
    # Content-MD5 the computed MD5 is added afterwards by a server-side in-place copy
    # (no egress, objects up to 5 GB). Off: such objects carry no md5chksum.
    record_computed_md5: bool = True
    # Streamed parts (above max_buffered_part_size) cannot carry a Content-MD5 (it is
    # not known before the part is read); their ETag, the part's MD5 on S3/Scaleway
    # without SSE-C, is checked instead. Turn off for SSE-C targets, where it is not.
    verify_part_etag: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    seed: int | None = None  # jitter; fixed only in tests

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.max_buffered_part_size <= 0:
            raise ValueError("chunk_size and max_buffered_part_size must be > 0")
        # Validates the part size and threshold against Scaleway's limits once, up front.
        plan_parts(0, self.preferred_part_size, self.multipart_threshold)


def recommended_s3_config(concurrency: int = 8) -> dict[str, Any]:
    """``botocore.config.Config(**kwargs)`` for the target client of a copier with ``concurrency`` threads.

    - ``max_pool_connections`` >= threads: botocore's default (10) makes threads
      queue for a connection, or open and drop one per request.
    - botocore's own retries off: this module retries every call itself, with
      classification, jitter, per-part granularity and a count in the report;
      two stacked layers would multiply attempts (6 x 5) and hide them.
    - ``request_checksum_calculation="when_required"``: boto3 >= 1.36 otherwise adds
      a CRC32 to each upload, which some S3-compatible stores reject and which over
      plain HTTP forces it to read a streamed body twice. Content-MD5 is sent instead.
    - ``payload_signing_enabled=False``: SigV4 would otherwise hash every body over
      plain HTTP (again reading a stream twice). Over HTTPS with Content-MD5 botocore
      already sends unsigned payloads; this only makes HTTP behave the same.
    Through an Airflow S3Hook these go in the connection extra's ``config_kwargs``.
    """
    return {
        "max_pool_connections": max(10, concurrency + 2),
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "connect_timeout": 10,
        "read_timeout": 120,
        "tcp_keepalive": True,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "s3": {"payload_signing_enabled": False},
    }


def recommended_azure_client_kwargs() -> dict[str, Any]:
    """Keyword arguments for the source ``BlobServiceClient``.

    The storage SDK's default retry waits 15 s, then 18 s, then 24 s before it gives
    up; stacked under this module's retries that would stall a thread for minutes.
    Its connection pool holds 10 connections (requests' default): above ~10 threads,
    pass a ``session`` whose HTTPAdapter has ``pool_maxsize`` >= threads. Under
    Airflow (root logger at INFO) the SDK's ``azure.core.pipeline.policies.http_logging_policy``
    logger writes two records per request: set it to WARNING in the task.
    ``connection_data_block_size``: reads of 1 MiB instead of 256 KiB cost ~14 % less
    CPU per GB (bench/transfer.py, dataset B). Through an Airflow WasbHook, put these
    in the connection's extra: the hook passes extra fields to the client.
    """
    return {"retry_total": 0, "connection_timeout": 10, "read_timeout": 120, "connection_data_block_size": 1024 * 1024}


# -- outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyOutcome:
    key: str
    status: Status
    bytes: int
    md5_b64: str | None
    seconds: float
    reason: str = ""
    target_key: str = ""
    retries: int = 0
    multipart: bool = False


@dataclass(frozen=True)
class ShardFailure:
    key: str
    target_key: str
    reason: str


@dataclass
class ShardReport:
    snapshot_id: str
    objects: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    retries: int = 0
    seconds: float = 0.0
    failures: list[ShardFailure] = field(default_factory=list)
    stopped: str | None = None  # why the shard stopped before its end, if it did

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.stopped is None

    @property
    def bytes(self) -> int:
        """Bytes copied (skipped objects excluded)."""
        return self.bytes_copied

    @property
    def rate_mb_s(self) -> float:
        return self.bytes_copied / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def add(self, outcome: CopyOutcome) -> None:
        self.objects += 1
        self.retries += outcome.retries
        if outcome.status == "copied":
            self.copied += 1
            self.bytes_copied += outcome.bytes
        elif outcome.status == "skipped":
            self.skipped += 1
            self.bytes_skipped += outcome.bytes
        else:
            self.failed += 1
            self.failures.append(ShardFailure(outcome.key, outcome.target_key, outcome.reason))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (large shards: write it to object storage, pass its key by XCom)."""
        data = asdict(self)
        data["ok"] = self.ok
        data["bytes"] = self.bytes_copied
        data["rate_mb_s"] = round(self.rate_mb_s, 3)
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary(self) -> str:
        line = (
            f"shard of snapshot {self.snapshot_id}: {self.objects:,} objects, copied {self.copied:,} "
            f"({_fmt_bytes(self.bytes_copied)}), skipped {self.skipped:,}, failed {self.failed:,}, "
            f"{self.retries:,} retries, {self.seconds:.1f} s, {self.rate_mb_s:.1f} MB/s"
        )
        if self.stopped:
            line += f"; {self.stopped}"
        elif self.failures:
            line += f"; first failure: {self.failures[0].key}: {self.failures[0].reason}"
        return line


@dataclass(frozen=True)
class Progress:
    """A heartbeat of a running shard, for the on-call log."""

    objects_done: int
    objects_total: int | None
    copied: int
    skipped: int
    failed: int
    bytes_done: int  # copied + skipped objects, plus bytes already sent of objects in flight
    bytes_total: int | None
    elapsed_s: float
    rate_mb_s: float  # bytes actually transferred per second (skips excluded)
    eta_s: float | None

    def describe(self) -> str:
        objects = f"{self.objects_done:,}" + (f"/{self.objects_total:,}" if self.objects_total is not None else "")
        size = _fmt_bytes(self.bytes_done) + (f" of {_fmt_bytes(self.bytes_total)}" if self.bytes_total else "")
        eta = f", ETA {_fmt_duration(self.eta_s)}" if self.eta_s is not None else ""
        return (
            f"{objects} objects (copied {self.copied:,}, skipped {self.skipped:,}, failed {self.failed:,}), "
            f"{size}, {self.rate_mb_s:.1f} MB/s{eta}"
        )


# -- one object ---------------------------------------------------------------------------


def target_key_for(key: str, source_prefix: str, target_prefix: str) -> str:
    """Where a source key lands: ``target_prefix`` + the key without ``source_prefix``."""
    if not key.startswith(source_prefix):
        raise ValueError(f"blob '{key}' is not under the source prefix '{source_prefix}'")
    return target_prefix + key[len(source_prefix) :]


def target_metadata(obj: ObjectInfo, snapshot_id: str, md5_b64: str | None) -> dict[str, str]:
    """The user metadata written with the copy: the blob's own, plus what proves the copy."""
    metadata = {name.lower(): value for name, value in obj.metadata.items() if name.lower() not in _RESERVED_KEYS}
    metadata[SNAPSHOT_KEY] = snapshot_id
    metadata[SOURCE_ETAG_KEY] = obj.etag
    if md5_b64:
        metadata[MD5_KEY] = md5_b64
    return metadata


def already_copied(existing: ObjectInfo, obj: ObjectInfo) -> bool:
    """True if ``existing`` (a target HEAD) already holds this source blob, as we would write it.

    - Same size, and the recorded ``bascule-source-etag`` equals the blob's ETag:
      Azure changes the ETag on every write to a blob's data, properties or metadata,
      so it is the same blob version we copied (and verified) before, in whichever
      snapshot. Deliberately not also requiring the same snapshot id: the cutover's
      final delta sync takes a new snapshot, and must not re-copy every blob that
      lacks a Content-MD5.
    - Otherwise (the blob was rewritten), only when the blob has a Content-MD5 equal
      to the recorded ``md5chksum`` and the content type, encoding and user metadata
      also match: same bytes, same properties.
    """
    if existing.size != obj.size:
        return False
    recorded = existing.metadata
    if obj.content_md5 is not None and recorded.get(MD5_KEY) != obj.content_md5:
        return False
    if recorded.get(SOURCE_ETAG_KEY) == obj.etag:
        return True
    if obj.content_md5 is None:
        return False
    own = {k: v for k, v in recorded.items() if k not in _RESERVED_KEYS}
    wanted = {k.lower(): v for k, v in obj.metadata.items() if k.lower() not in _RESERVED_KEYS}
    return (
        own == wanted
        and (obj.content_type is None or existing.content_type == obj.content_type)
        and (existing.content_encoding or None) == (obj.content_encoding or None)
    )


def copy_object(
    obj: ObjectInfo,
    source: Source,
    target: Target,
    *,
    snapshot_id: str,
    target_key: str | None = None,
    config: CopyConfig | None = None,
    target_absent: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> CopyOutcome:
    """Copy one blob, as listed in the snapshot, to ``target_key`` (default: the same key).

    Never raises for a failure of this object: the outcome says ``failed`` and why.
    ``target_absent`` (the key is missing from a fresh target listing) saves the HEAD
    of the idempotency check. ``on_bytes(n)`` reports bytes as they are sent (n < 0
    when a retry rewinds).
    """
    started = time.monotonic()
    cfg = config or CopyConfig()
    tkey = obj.key if target_key is None else target_key
    ctx = _Attempts(cfg, cancel, obj.key)

    def outcome(status: Status, md5: str | None, reason: str = "", multipart: bool = False) -> CopyOutcome:
        return CopyOutcome(
            key=obj.key,
            status=status,
            bytes=obj.size,
            md5_b64=md5,
            seconds=time.monotonic() - started,
            reason=reason,
            target_key=tkey,
            retries=ctx.retries,
            multipart=multipart,
        )

    try:
        if obj.size > MAX_OBJECT_SIZE:
            raise ObjectTooLarge(obj.key, obj.size)
        if not target_absent:
            existing = ctx.call(f"HEAD '{tkey}'", lambda: target.head(tkey))
            if existing is not None and already_copied(existing, obj):
                log.debug("skipped %s: already at %s with the same hash", obj.key, tkey)
                return outcome("skipped", existing.metadata.get(MD5_KEY) or obj.content_md5)
        copier = _ObjectCopy(obj, source, target, tkey, snapshot_id, cfg, ctx, on_bytes)
        md5_b64, note = copier.run()
        log.debug("copied %s -> %s (%d bytes, md5 %s)", obj.key, tkey, obj.size, md5_b64)
        return outcome("copied", md5_b64, note, copier.plan.multipart)
    except BasculeError as exc:
        log.error("copy of '%s' -> '%s' failed: %s", obj.key, tkey, exc)
        return outcome("failed", None, str(exc))
    except Exception as exc:  # a bug here must fail one object, not the shard of 100k
        log.exception("copy of '%s' -> '%s' failed unexpectedly", obj.key, tkey)
        return outcome("failed", None, f"unexpected {type(exc).__name__}: {exc} (a Bascule bug: report it)")


class _Attempts:
    """Retries of one object's operations, and their count."""

    def __init__(self, config: CopyConfig, cancel: threading.Event | None, key: str):
        self._policy = config.retry
        self._sleep = config.sleep
        self._cancel = cancel
        self._rng = random.Random(config.seed) if config.seed is not None else random.Random()
        self.key = key
        self.retries = 0

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"copy of '{self.key}' cancelled: the shard is stopping; nothing was left half-written")

    def call(self, what: str, operation: Callable[[], _T]) -> _T:
        attempt, waited = 0, 0.0
        while True:
            self.check_cancel()
            attempt += 1
            try:
                return operation()
            except BasculeError as exc:
                if not getattr(exc, "retryable", False):
                    raise
                if attempt >= self._policy.max_attempts:
                    raise RetriesExhausted(what, attempt, waited, exc) from exc
                delay = self._policy.delay(attempt, self._rng)
                if waited + delay > self._policy.max_total_delay_s:
                    raise RetriesExhausted(what, attempt, waited, exc) from exc
                self.retries += 1
                log.warning(
                    "%s (blob '%s'): transient failure, retry %d/%d in %.1f s: %s",
                    what,
                    self.key,
                    attempt,
                    self._policy.max_attempts - 1,
                    delay,
                    exc,
                )
                if self._cancel is not None:
                    if self._cancel.wait(delay):
                        self.check_cancel()
                else:
                    self._sleep(delay)
                waited += delay


class _ObjectCopy:
    def __init__(
        self,
        obj: ObjectInfo,
        source: Source,
        target: Target,
        target_key: str,
        snapshot_id: str,
        config: CopyConfig,
        attempts: _Attempts,
        on_bytes: Callable[[int], None] | None,
    ):
        self.obj = obj
        self.source = source
        self.target = target
        self.tkey = target_key
        self.snapshot_id = snapshot_id
        self.cfg = config
        self.ctx = attempts
        self.on_bytes = on_bytes or (lambda n: None)
        self.expected = _md5_digest(obj.content_md5, source.describe(), obj.key) if obj.content_md5 else None
        self.stream_single = self.expected is not None and target.can_stream_uploads(with_content_md5=True)
        # A single PUT holds the object in memory unless it can be streamed, and it can
        # be streamed only when its MD5 is known up front (it must be in the headers).
        threshold = config.multipart_threshold
        if not self.stream_single:
            threshold = min(threshold, config.preferred_part_size + 1)
        self.plan: PartPlan = plan_parts(obj.size, config.preferred_part_size, threshold, key=obj.key)

    def run(self) -> tuple[str, str]:
        if self.plan.multipart:
            return self._multipart()
        if self.obj.size <= self.cfg.preferred_part_size:
            return self._put_buffered(), ""
        return self._put_streamed(), ""

    # -- single PUT ----------------------------------------------------------------

    def _put_buffered(self) -> str:
        body = bytearray(self.obj.size)  # bytearray: botocore sends it as is (bytes get copied into a BytesIO)
        self._read_into(0, body)
        md5_b64 = self._check(hashlib.md5(body, usedforsecurity=False).digest())
        self.ctx.call(
            f"PUT '{self.tkey}'",
            lambda: self.target.put_object(
                self.tkey,
                body,
                content_length=len(body),
                content_md5=md5_b64,
                **self._object_fields(md5_b64),
            ),
        )
        self.on_bytes(len(body))
        return md5_b64

    def _put_streamed(self) -> str:
        assert self.obj.content_md5 is not None
        md5_b64 = self.obj.content_md5

        def attempt() -> None:
            body = self._stream(0, self.obj.size, expected=self.expected)
            try:
                self.target.put_object(
                    self.tkey,
                    body,
                    content_length=self.obj.size,
                    content_md5=md5_b64,
                    **self._object_fields(md5_b64),
                )
            except BaseException:
                body.rewind_progress()
                raise
            finally:
                body.close()

        self.ctx.call(f"streamed PUT '{self.tkey}'", attempt)
        return md5_b64

    # -- multipart -----------------------------------------------------------------

    def _multipart(self) -> tuple[str, str]:
        self._abort_leftovers()
        known = self.obj.content_md5
        fields = self._object_fields(known)
        upload_id = self.ctx.call(
            f"CreateMultipartUpload '{self.tkey}'", lambda: self.target.create_multipart(self.tkey, **fields)
        )
        whole = hashlib.md5(usedforsecurity=False)
        parts: list[UploadedPart] = []
        try:
            for number, offset, length in self.plan.parts():
                self.ctx.check_cancel()
                if length <= self.cfg.max_buffered_part_size or not self.target.can_stream_uploads(
                    with_content_md5=False
                ):
                    etag = self._buffered_part(upload_id, number, offset, length, whole)
                else:
                    etag, whole = self._streamed_part(upload_id, number, offset, length, whole)
                parts.append(UploadedPart(number, etag))
            md5_b64 = self._check(whole.digest())
            final_etag = self.ctx.call(
                f"CompleteMultipartUpload '{self.tkey}'", lambda: self._complete(upload_id, parts)
            )
        except BaseException:
            self._abort(upload_id)
            raise
        note = ""
        if known is None and self.cfg.record_computed_md5:
            note = self._record_md5(md5_b64, final_etag)
        return md5_b64, note

    def _buffered_part(self, upload_id: str, number: int, offset: int, length: int, whole: Any) -> str:
        body = bytearray(length)
        self._read_into(offset, body)
        whole.update(body)
        part_md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        etag = self.ctx.call(
            f"UploadPart {number}/{self.plan.part_count} '{self.tkey}'",
            lambda: self.target.upload_part(
                self.tkey, upload_id, number, body, content_length=length, content_md5=part_md5
            ),
        )
        self.on_bytes(length)
        return etag

    def _streamed_part(self, upload_id: str, number: int, offset: int, length: int, whole: Any) -> tuple[str, Any]:
        def attempt() -> tuple[str, Any]:
            body = self._stream(offset, length, expected=None, seed=whole)
            try:
                etag = self.target.upload_part(self.tkey, upload_id, number, body, content_length=length)
            except BaseException:
                body.rewind_progress()
                raise
            finally:
                body.close()
            if self.cfg.verify_part_etag and etag.lower() != body.md5.hex():
                body.rewind_progress()
                raise StoreAccessError(
                    f"{self.target.describe()}: part {number} of '{self.tkey}': the server's ETag {etag} is not the "
                    f"MD5 {body.md5.hex()} of the bytes sent: damaged in transit (or an SSE-C bucket: set "
                    "verify_part_etag=False)",
                    retryable=True,
                )
            return etag, body.outer

        return self.ctx.call(f"UploadPart {number}/{self.plan.part_count} (streamed) '{self.tkey}'", attempt)

    def _complete(self, upload_id: str, parts: list[UploadedPart]) -> str:
        try:
            return self.target.complete_multipart(self.tkey, upload_id, parts)
        except StoreAccessError as exc:
            # An earlier attempt may have completed it and only the answer was lost.
            if "NoSuchUpload" in str(exc):
                current = self.target.head(self.tkey)
                if (
                    current is not None
                    and current.size == self.obj.size
                    and current.metadata.get(SOURCE_ETAG_KEY) == self.obj.etag
                    and current.metadata.get(SNAPSHOT_KEY) == self.snapshot_id
                ):
                    return current.etag
            raise

    def _abort(self, upload_id: str) -> None:
        try:
            # Not under the cancel flag: a stopping shard must still clean up.
            _Attempts(self.cfg, None, self.obj.key).call(
                f"AbortMultipartUpload '{self.tkey}'", lambda: self.target.abort_multipart(self.tkey, upload_id)
            )
        except BasculeError as exc:
            log.error(
                "%s: could not abort multipart upload %s of '%s' (%s): its parts stay stored (invisible, but "
                "billed) until the next copy of this key aborts it, or abort it by hand: "
                "aws s3api abort-multipart-upload --key '%s' --upload-id %s --bucket <that bucket>",
                self.target.describe(),
                upload_id,
                self.tkey,
                exc,
                self.tkey,
                upload_id,
            )

    def _abort_leftovers(self) -> None:
        uploads = self.ctx.call(
            f"ListMultipartUploads '{self.tkey}'",
            lambda: [u for u in self.target.list_multipart_uploads(self.tkey) if u.key == self.tkey],
        )
        for upload in uploads:
            log.warning(
                "aborting leftover multipart upload %s of '%s' (started %s by an earlier, interrupted attempt)",
                upload.upload_id,
                self.tkey,
                upload.initiated,
            )
            abort = functools.partial(self.target.abort_multipart, self.tkey, upload.upload_id)
            self.ctx.call(f"AbortMultipartUpload '{self.tkey}'", abort)

    def _record_md5(self, md5_b64: str, etag: str) -> str:
        if self.obj.size > MAX_SINGLE_PUT_SIZE:
            return "md5chksum not recorded on the object (above the 5 GB limit of an in-place copy)"
        fields = self._object_fields(md5_b64)
        try:
            self.ctx.call(
                f"CopyObject (record md5chksum) '{self.tkey}'",
                lambda: self.target.replace_metadata(self.tkey, if_etag=etag, **fields),
            )
        except BasculeError as exc:
            # The object is complete and its parts were verified in transit; only the
            # convenience record is missing. Validation re-reads it either way.
            log.warning("copied '%s' but could not record its md5chksum: %s", self.tkey, exc)
            return f"md5chksum not recorded: {exc}"
        return ""

    # -- shared --------------------------------------------------------------------

    def _object_fields(self, md5_b64: str | None) -> dict[str, Any]:
        return {
            "content_type": self.obj.content_type,
            "content_encoding": self.obj.content_encoding,
            "metadata": target_metadata(self.obj, self.snapshot_id, md5_b64),
        }

    def _read_into(self, offset: int, buffer: bytearray) -> None:
        view = memoryview(buffer)
        self.ctx.call(
            f"read '{self.obj.key}' [{offset:,}+{len(buffer):,}]",
            lambda: self.source.read_into(
                self.obj.key, offset, view, etag=self.obj.etag, chunk_size=self.cfg.chunk_size
            ),
        )

    def _stream(self, offset: int, length: int, *, expected: bytes | None, seed: Any = None) -> _VerifyingStream:
        def open_chunks() -> Iterator[bytes]:
            return self.source.iter_chunks(
                self.obj.key, etag=self.obj.etag, chunk_size=self.cfg.chunk_size, offset=offset, length=length
            )

        return _VerifyingStream(
            open_chunks,
            length,
            expected=expected,
            describe=lambda actual: self._integrity_error(actual),
            on_bytes=self.on_bytes,
            check_cancel=self.ctx.check_cancel,
            seed=seed,
        )

    def _check(self, digest: bytes) -> str:
        if self.expected is not None and digest != self.expected:
            raise self._integrity_error(digest)
        return base64.b64encode(digest).decode()

    def _integrity_error(self, actual: bytes) -> IntegrityError:
        return IntegrityError(
            self.source.describe(),
            self.obj.key,
            expected=self.obj.content_md5 or "?",
            actual=base64.b64encode(actual).decode(),
        )


class _VerifyingStream:
    """A read-only body for botocore that pulls source chunks, hashes them and verifies the MD5.

    The last bytes are released only once the whole object has hashed to
    ``expected``: otherwise ``read`` raises and the HTTP request is cut short, so the
    server stores nothing. ``seek(0)`` starts over from the source (botocore's own
    retries rewind the body that way).
    """

    def __init__(
        self,
        open_chunks: Callable[[], Iterator[bytes]],
        size: int,
        *,
        expected: bytes | None,
        describe: Callable[[bytes], IntegrityError],
        on_bytes: Callable[[int], None],
        check_cancel: Callable[[], None],
        seed: Any = None,
    ):
        self._open = open_chunks
        self._size = size
        self._expected = expected
        self._describe = describe
        self._on_bytes = on_bytes
        self._check_cancel = check_cancel
        self._seed = seed
        self._reset()

    def _reset(self) -> None:
        self._chunks: Iterator[bytes] | None = None
        self._chunk = b""
        self._offset = 0  # within the current chunk
        self._position = 0  # bytes handed out
        self._fetched = 0
        self._counted = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        # An object-wide hash carried across streamed parts; restarted from its seed on rewind.
        self.outer = self._seed.copy() if self._seed is not None else None

    @property
    def md5(self) -> bytes:
        return self._md5.digest()

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0 and offset == self._position:
            return offset
        if whence == 0 and offset == 0:
            self.close()
            self.rewind_progress()
            self._reset()
            return 0
        raise OSError(f"this stream can only rewind to its start (asked: seek({offset}, {whence}))")

    def read(self, size: int | None = -1) -> bytes:
        if self._position >= self._size:
            return b""
        while self._offset >= len(self._chunk):
            self._fetch()
        available = len(self._chunk) - self._offset
        take = available if size is None or size < 0 else min(size, available)
        if self._position + take >= self._size:
            self._verify()
        if self._offset == 0 and take == len(self._chunk):
            data = self._chunk
        else:
            data = self._chunk[self._offset : self._offset + take]
        self._offset += take
        self._position += take
        return data

    def rewind_progress(self) -> None:
        if self._counted:
            self._on_bytes(-self._counted)
            self._counted = 0

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def _fetch(self) -> None:
        self._check_cancel()
        if self._chunks is None:
            self._chunks = iter(self._open())
        chunk = next(self._chunks, None)
        if chunk is None or self._fetched + len(chunk) > self._size:
            got = self._fetched + (len(chunk) if chunk else 0)
            raise StoreAccessError(
                f"source returned {got:,} bytes where the snapshot lists {self._size:,}", retryable=True
            )
        self._md5.update(chunk)
        if self.outer is not None:
            self.outer.update(chunk)
        self._fetched += len(chunk)
        self._chunk, self._offset = chunk, 0
        self._counted += len(chunk)
        self._on_bytes(len(chunk))

    def _verify(self) -> None:
        if self._expected is not None and self._md5.digest() != self._expected:
            raise self._describe(self._md5.digest())


# -- a shard --------------------------------------------------------------------------


class _Meter:
    """Bytes in motion across threads, for progress lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


def list_target_keys(target: Target, prefix: str) -> set[str]:
    """Keys under ``prefix`` at the target (a fresh listing): pass as ``copy_shard(target_keys=...)``.

    One LIST per 1,000 keys instead of one HEAD per object; worth it on a first run
    into an empty or sparse prefix, where most keys are absent.
    """
    return {info.key for info in target.iter_objects(prefix)}


def _list_target_keys_up_to(target: Target, prefix: str, cap: int) -> set[str] | None:
    keys: set[str] = set()
    try:
        for info in target.iter_objects(prefix):
            keys.add(info.key)
            if len(keys) > cap:
                log.info("target prefix '%s' holds over %d keys: checking objects one HEAD each", prefix, cap)
                return None
    except BasculeError as exc:
        # Only an optimisation: without it every object gets a HEAD.
        log.warning("could not list the target prefix '%s' (%s): checking objects one HEAD each", prefix, exc)
        return None
    return keys


def copy_shard(
    objects: Iterable[ObjectInfo],
    source: Source,
    target: Target,
    *,
    target_prefix: str,
    source_prefix: str,
    snapshot_id: str,
    concurrency: int = 8,
    progress: Callable[[Progress], None] | None = None,
    progress_interval_s: float = 10.0,
    config: CopyConfig | None = None,
    part_size: int | None = None,
    target_keys: Container[str] | Literal["auto"] | None = "auto",
    total_objects: int | None = None,
    total_bytes: int | None = None,
    cancel: threading.Event | None = None,
    stop_after_failures: int | None = 100,
) -> ShardReport:
    """Copy every object of ``objects`` (a snapshot shard) with ``concurrency`` threads.

    - One object's failure never stops the shard: it is counted, with its reason,
      in the report. Raises only for bad arguments, or when the calling thread is
      interrupted (after cancelling and draining the workers).
    - ``objects`` is consumed lazily through a bounded window: memory stays flat
      for 100k objects.
    - Keys absent from ``target_keys`` skip the HEAD of the idempotency check
      (present ones still get one, for their metadata). ``"auto"`` lists
      ``target_prefix`` first, unless it holds far more keys than the shard
      (:data:`AUTO_LIST_MAX_KEYS` when the shard's length is unknown); None HEADs
      every object; or pass the keys of a fresh listing (:func:`list_target_keys`).
    - ``progress`` gets a :class:`Progress` every ``progress_interval_s`` and once
      at the end, on the calling thread.
    - ``part_size`` is a shortcut for ``config.preferred_part_size``.
    - Setting ``cancel`` stops the shard between chunks; multipart uploads in
      flight are aborted. So does a run of ``stop_after_failures`` failures in a
      row (None: never), which smells systemic (revoked key, full quota): grinding
      through 100k objects would only bury the cause; ``report.stopped`` says why.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    cfg = config or CopyConfig()
    if part_size is not None:
        cfg = dataclasses.replace(cfg, preferred_part_size=part_size)
    stop = cancel or threading.Event()
    objects_total = total_objects if total_objects is not None else _len_or_none(objects)
    if target_keys == "auto":
        # One LIST per 1,000 keys beats one HEAD per object unless the target prefix is
        # much larger than the shard: stop listing past that point and HEAD instead.
        cap = 2 * objects_total + 1_000 if objects_total is not None else AUTO_LIST_MAX_KEYS
        target_keys = _list_target_keys_up_to(target, target_prefix, cap)
    if total_bytes is None and isinstance(objects, Sequence):
        total_bytes = sum(o.size for o in objects)
    report = ShardReport(snapshot_id=snapshot_id)
    meter = _Meter()  # bytes sent of copies still in flight
    finished_bytes = 0  # copied + skipped objects
    started = time.monotonic()
    next_beat = started + progress_interval_s

    def beat() -> None:
        if progress is None:
            return
        elapsed = time.monotonic() - started
        in_flight = meter.value
        transferred = report.bytes_copied + in_flight
        done = finished_bytes + in_flight
        rate = transferred / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        if total_bytes is not None and rate > 0:
            eta = max(0.0, (total_bytes - done) / rate)
        elif objects_total and report.objects:
            eta = (objects_total - report.objects) * elapsed / report.objects
        try:
            progress(
                Progress(
                    objects_done=report.objects,
                    objects_total=objects_total,
                    copied=report.copied,
                    skipped=report.skipped,
                    failed=report.failed,
                    bytes_done=done,
                    bytes_total=total_bytes,
                    elapsed_s=elapsed,
                    rate_mb_s=rate / 1e6,
                    eta_s=eta,
                )
            )
        except Exception:  # a broken log sink must not fail a migration
            log.exception("progress callback failed (ignored)")

    def one(obj: ObjectInfo) -> CopyOutcome:
        try:
            tkey = target_key_for(obj.key, source_prefix, target_prefix)
        except ValueError as exc:
            return CopyOutcome(obj.key, "failed", obj.size, None, 0.0, f"{exc}; the shard was built wrongly")
        absent = target_keys is not None and tkey not in target_keys
        sent = 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            meter.add(n)

        try:
            return copy_object(
                obj,
                source,
                target,
                snapshot_id=snapshot_id,
                target_key=tkey,
                config=cfg,
                target_absent=absent,
                on_bytes=counted,
                cancel=stop,
            )
        finally:
            meter.add(-sent)  # the finished object is accounted for in the report now

    window = 2 * concurrency  # enough queued work to keep threads busy, little held in memory
    consecutive_failures = 0
    pending: dict[Future[CopyOutcome], ObjectInfo] = {}
    source_iter = iter(objects)
    exhausted = False
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bascule-copy")
    try:
        while True:
            while not exhausted and len(pending) < window:
                obj = next(source_iter, None)
                if obj is None:
                    exhausted = True
                    break
                pending[pool.submit(one, obj)] = obj
            if not pending:
                break
            timeout = max(0.0, next_beat - time.monotonic()) if progress is not None else None
            done, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                obj = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # copy_object returns failures; this is a bug, keep going
                    log.exception("copy of '%s' crashed", obj.key)
                    outcome = CopyOutcome(obj.key, "failed", obj.size, None, 0.0, f"unexpected {exc!r}")
                report.add(outcome)
                if outcome.status != "failed":
                    finished_bytes += outcome.bytes
                    consecutive_failures = 0
                elif not stop.is_set():
                    consecutive_failures += 1
                    if stop_after_failures is not None and consecutive_failures >= stop_after_failures:
                        report.stopped = (
                            f"stopped after {consecutive_failures} failures in a row (last: {outcome.key}: "
                            f"{outcome.reason}); something systemic is wrong (credentials, network, quota): fix "
                            "it and re-run, copied objects are skipped"
                        )
                        log.error("%s", report.stopped)
                        stop.set()
                        exhausted = True  # pull no more objects; those in flight end as cancelled
            if progress is not None and time.monotonic() >= next_beat:
                beat()
                next_beat = time.monotonic() + progress_interval_s
    except BaseException:
        # Interrupted (task killed, timeout): stop workers between chunks; multipart
        # uploads in flight abort themselves; nothing half-written stays visible.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    report.seconds = time.monotonic() - started
    beat()
    log.info("%s", report.summary())
    return report


def _md5_digest(md5_b64: str, where: str, key: str) -> bytes:
    try:
        digest = base64.b64decode(md5_b64, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 16:
        raise IntegrityError(where, key, expected=md5_b64, actual="?", detail="the source Content-MD5 is not an MD5")
    return digest


def _len_or_none(objects: Iterable[ObjectInfo]) -> int | None:
    return len(objects) if isinstance(objects, Sized) else None


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"

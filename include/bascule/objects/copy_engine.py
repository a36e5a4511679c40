"""Copy one blob from Azure Blob Storage to S3 (Scaleway): streaming, verified, idempotent.

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
  the blob's content type, content encoding, Cache-Control, Content-Language,
  Content-Disposition and user metadata (see :func:`bascule.storage.s3.encode_metadata`
  for non-ASCII values); the source's Content-MD5 survives as ``md5chksum`` and is sent
  as the PUT's Content-MD5.
- **Client-side encryption** (a target built with ``client_side``): everything above
  holds for the plaintext; what is sent is sealed by :mod:`bascule.objects.body_codec`
  (whole frames per part, a Content-MD5 of the ciphertext per PUT and part, the
  envelope and the sealed MD5 in the metadata). Single PUTs are then always buffered.
- **Idempotent.** A target object of the same size whose recorded source hash
  matches is skipped (see :func:`bascule.objects.provenance.already_copied`). Leftover multipart uploads of a
  crashed attempt on the same key are aborted before a new one starts.
- **Source changed under the snapshot** (ETag differs, blob deleted): every source
  read carries If-Match, so the object fails with "changed since snapshot" and is
  not copied.
- **Transient faults** (HTTP 408/429/5xx, SlowDown, resets, timeouts) are retried
  with exponential backoff and jitter, per part for multipart uploads and per
  object for single PUTs, a bounded number of times; everything else fails the
  object at once. Retries are counted in the outcome.

Clients are passed in (built from Airflow connections by the glue). What they must
be configured with is in :mod:`bascule.objects.copy_config`; a whole shard is
copied by :func:`bascule.objects.shard.copy_shard`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.objects.body_codec import PlainBody, SealedBody, body_codec
from bascule.objects.copy_config import CopyConfig
from bascule.objects.copy_errors import IntegrityError
from bascule.objects.copy_report import CopyOutcome, Status
from bascule.objects.integrity import VerifyingStream, md5_digest
from bascule.objects.parts import MAX_OBJECT_SIZE, MAX_SINGLE_PUT_SIZE, ObjectTooLarge, PartPlan
from bascule.objects.provenance import already_copied, copied_in_this_snapshot, target_metadata
from bascule.objects.retries import Attempts
from bascule.storage.base import MD5_KEY, ObjectInfo
from bascule.storage.client_side import CiphertextError
from bascule.storage.s3 import UploadedPart

if TYPE_CHECKING:
    from bascule.storage.azure_blob import AzureBlobContainer
    from bascule.storage.s3 import S3Bucket

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def copy_object(
    obj: ObjectInfo,
    source: AzureBlobContainer,
    target: S3Bucket,
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
    ctx = Attempts(cfg, cancel, obj.key)

    def outcome(
        status: Status, md5: str | None, reason: str = "", multipart: bool = False, check: str | None = None
    ) -> CopyOutcome:
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
            server_check=check,
        )

    try:
        if obj.size > MAX_OBJECT_SIZE:
            raise ObjectTooLarge(obj.key, obj.size)
        if not target_absent:
            existing = _existing(ctx, target, tkey)
            if existing is not None and already_copied(existing, obj):
                log.debug("skipped %s: already at %s with the same hash", obj.key, tkey)
                return outcome("skipped", existing.metadata.get(MD5_KEY) or obj.content_md5)
        copier = _ObjectCopy(obj, source, target, tkey, snapshot_id, cfg, ctx, on_bytes or (lambda n: None))
        md5_b64, note = copier.run()
        log.debug("copied %s -> %s (%d bytes, md5 %s)", obj.key, tkey, obj.size, md5_b64)
        check = "etag" if copier.etag_checked else "content-md5"
        return outcome("copied", md5_b64, note, copier.plan.multipart, check)
    except BasculeError as exc:
        log.error("copy of '%s' -> '%s' failed: %s", obj.key, tkey, exc)
        return outcome("failed", None, str(exc))
    except Exception as exc:  # a bug here must fail one object, not the shard of 100k
        log.exception("copy of '%s' -> '%s' failed unexpectedly", obj.key, tkey)
        return outcome("failed", None, f"unexpected {type(exc).__name__}: {exc} (a Bascule bug: report it)")


@dataclass(eq=False)
class _ObjectCopy:
    """One object's copy: its part plan, then one PUT or a multipart upload, and what the target records."""

    obj: ObjectInfo
    source: AzureBlobContainer
    target: S3Bucket
    tkey: str
    snapshot_id: str
    cfg: CopyConfig
    ctx: Attempts
    on_bytes: Callable[[int], None]
    expected: bytes | None = field(init=False)  # the source's Content-MD5, when it has one
    # What is stored for the bytes read: themselves, or (client-side encryption) their sealed frames.
    codec: PlainBody | SealedBody = field(init=False)
    stream_single: bool = field(init=False)
    plan: PartPlan = field(init=False)
    # True once a part was checked by its ETag rather than by a Content-MD5 the server verified.
    etag_checked: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        obj = self.obj
        self.expected = md5_digest(obj.content_md5, self.source.describe(), obj.key) if obj.content_md5 else None
        self.codec = body_codec(self.target, obj.size)
        # A sealed single PUT cannot stream: its Content-MD5 (of the ciphertext) is known only once sealed.
        self.stream_single = (
            self.expected is not None
            and not self.codec.sealed
            and self.target.can_stream_uploads(with_content_md5=True)
        )
        # A single PUT holds the object in memory unless it can be streamed, and it can
        # be streamed only when its MD5 is known up front (it must be in the headers).
        threshold = self.cfg.multipart_threshold
        if not self.stream_single:
            threshold = min(threshold, self.cfg.preferred_part_size + 1)
        self.plan = self.codec.plan(obj.size, self.cfg.preferred_part_size, threshold, obj.key)

    def run(self) -> tuple[str, str]:
        if self.plan.multipart:
            return self._multipart()
        # A sealed single PUT is always buffered (its plan keeps it within one part): streaming
        # it would send the plaintext, and its Content-MD5 is the ciphertext's.
        if self.obj.size <= self.cfg.preferred_part_size or self.codec.sealed:
            return self._put_buffered(), ""
        return self._put_streamed(), ""

    # -- single PUT ----------------------------------------------------------------

    def _put_buffered(self) -> str:
        body = bytearray(self.obj.size)  # bytearray: botocore sends it as is (bytes get copied into a BytesIO)
        self._read_into(0, body)
        md5_b64 = self._check(hashlib.md5(body, usedforsecurity=False).digest())
        stored = self.codec.seal(body, 0)
        stored_md5 = md5_b64 if stored is body else _md5_b64(stored)
        self.ctx.call(
            f"PUT '{self.tkey}'",
            lambda: self.target.put_object(
                self.tkey,
                stored,
                content_length=len(stored),
                content_md5=stored_md5,
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
            _send(
                body,
                lambda: self.target.put_object(
                    self.tkey,
                    body,
                    content_length=self.obj.size,
                    content_md5=md5_b64,
                    **self._object_fields(md5_b64),
                ),
            )

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
        stored = self.codec.seal(body, offset)
        part_md5 = _md5_b64(stored)
        etag = self.ctx.call(
            f"UploadPart {number}/{self.plan.part_count} '{self.tkey}'",
            lambda: self.target.upload_part(
                self.tkey, upload_id, number, stored, content_length=len(stored), content_md5=part_md5
            ),
        )
        self.on_bytes(length)
        return etag

    def _streamed_part(self, upload_id: str, number: int, offset: int, length: int, whole: Any) -> tuple[str, Any]:
        # Where the ETag is the part's MD5 (no SSE-C), checking it costs nothing. Otherwise
        # (SSE-C: the ETag is not an MD5) the part is read once to hash it, so that it can
        # carry a Content-MD5 the server checks: memory stays one chunk, the source is read twice.
        by_etag = self.cfg.verify_part_etag and self.target.etag_is_md5
        part_md5 = None if by_etag else self._hash_part(number, offset, length)
        if by_etag:
            self.etag_checked = True

        def attempt() -> tuple[str, Any]:
            # Sealed: part_md5 is the ciphertext's, which the server checks; the plaintext is hashed into `whole`.
            plain = self._stream(offset, length, expected=None if self.codec.sealed else part_md5, seed=whole)
            body = self.codec.wrap(plain, offset, length)
            content_md5 = base64.b64encode(part_md5).decode() if part_md5 is not None else None
            stored_length = self.codec.stored_length(offset, length)
            etag = _send(
                body,
                lambda: self.target.upload_part(
                    self.tkey, upload_id, number, body, content_length=stored_length, content_md5=content_md5
                ),
            )
            if by_etag and etag.lower() != body.md5.hex():
                body.rewind_progress()
                raise StoreAccessError(
                    f"{self.target.describe()}: part {number} of '{self.tkey}': the server's ETag {etag} is not the "
                    f"MD5 {body.md5.hex()} of the bytes sent: damaged in transit (or a server whose part ETags are "
                    "not MD5s: set verify_part_etag=False to send a Content-MD5 instead)",
                    retryable=True,
                )
            return etag, plain.outer

        return self.ctx.call(f"UploadPart {number}/{self.plan.part_count} (streamed) '{self.tkey}'", attempt)

    def _hash_part(self, number: int, offset: int, length: int) -> bytes:
        def attempt() -> bytes:
            body = self.codec.wrap(self._stream(offset, length, expected=None, on_bytes=lambda n: None), offset, length)
            try:
                while body.read(self.cfg.chunk_size):
                    pass
            finally:
                body.close()
            return body.md5

        return self.ctx.call(f"hash part {number}/{self.plan.part_count} of '{self.obj.key}'", attempt)

    def _complete(self, upload_id: str, parts: list[UploadedPart]) -> str:
        try:
            return self.target.complete_multipart(self.tkey, upload_id, parts)
        except StoreAccessError as exc:
            # An earlier attempt may have completed it and only the answer was lost.
            if "NoSuchUpload" in str(exc):
                current = self.target.head(self.tkey)
                if current is not None and copied_in_this_snapshot(current, self.obj, self.snapshot_id):
                    return current.etag
            raise

    def _abort(self, upload_id: str) -> None:
        try:
            # Not under the cancel flag: a stopping shard must still clean up.
            Attempts(self.cfg, None, self.obj.key).call(
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
        fields: dict[str, Any] = {
            "content_type": self.obj.content_type,
            "content_encoding": self.obj.content_encoding,
            "metadata": self.codec.metadata(target_metadata(self.obj, self.snapshot_id, md5_b64), md5_b64),
        }
        # Passed only when set, so a target that does not know them is not asked to.
        for name in ("cache_control", "content_language", "content_disposition"):
            if value := getattr(self.obj, name):
                fields[name] = value
        return fields

    def _read_into(self, offset: int, buffer: bytearray) -> None:
        view = memoryview(buffer)
        self.ctx.call(
            f"read '{self.obj.key}' [{offset:,}+{len(buffer):,}]",
            lambda: self.source.read_into(
                self.obj.key, offset, view, etag=self.obj.etag, chunk_size=self.cfg.chunk_size
            ),
        )

    def _stream(
        self,
        offset: int,
        length: int,
        *,
        expected: bytes | None,
        seed: Any = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> VerifyingStream:
        def open_chunks() -> Iterator[bytes]:
            return self.source.iter_chunks(
                self.obj.key, etag=self.obj.etag, chunk_size=self.cfg.chunk_size, offset=offset, length=length
            )

        return VerifyingStream(
            open_chunks,
            length,
            expected=expected,
            describe=lambda actual: self._integrity_error(actual),
            on_bytes=on_bytes or self.on_bytes,
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


def _existing(ctx: Attempts, target: S3Bucket, tkey: str) -> ObjectInfo | None:
    """The target object as HEAD shows it; on a client-side target, one not client-side encrypted counts as absent.

    So it is overwritten by an encrypted copy. A KEK mismatch is not that case: it raises
    (EncryptionKeyError, the connection named) and nothing is written.
    """
    try:
        return ctx.call(f"HEAD '{tkey}'", lambda: target.head(tkey))
    except CiphertextError as exc:
        log.warning("'%s' will be overwritten by a client-side encrypted copy: %s", tkey, exc)
        return None


def _md5_b64(data: Any) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _send(body: Any, request: Callable[[], _T]) -> _T:
    """Run a request that streams ``body``; a failed one takes back the bytes it reported as sent."""
    try:
        return request()
    except BaseException:
        body.rewind_progress()
        raise
    finally:
        body.close()

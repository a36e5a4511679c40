"""What the copier sends for an object's bytes, chosen by the target's encryption method.

The copy engine reads, hashes and verifies the *plaintext* (the source's bytes) whatever
the method; the codec turns a buffered part or a streamed part into what is stored:

- :class:`PlainBody` (no encryption, or SSE-C: the server encrypts): the bytes themselves.
- :class:`SealedBody` (``client_side``): the part's frames sealed under the object's own
  data key (:mod:`bascule.storage.client_side`), the envelope in the object's metadata and
  the plaintext MD5 sealed there. Parts are whole frames, and the plan keeps the *stored*
  part and object sizes within Scaleway's limits (5 MB..5 GB parts, 1,000 parts, 5 TB).

Every PUT and part then carries the Content-MD5 of what it sends, so the server verified
what it stored, and the transfer record keeps the plaintext MD5, which parity compares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bascule.objects.parts import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MiB, ObjectTooLarge, PartPlan, plan_parts
from bascule.storage.client_side import FRAME_SIZE, TAG_BYTES, ClientSideKey, EncryptingStream, ObjectEnvelope

if TYPE_CHECKING:
    from bascule.storage.s3 import S3Bucket

# The largest whole-MiB part whose sealed form stays within 5 GB (4,768 MiB + 16 bytes a frame).
_MAX_SEALED_PART = (MAX_PART_SIZE // (FRAME_SIZE + TAG_BYTES)) * FRAME_SIZE // MiB * MiB
MAX_CLIENT_SIDE_OBJECT = MAX_PARTS * _MAX_SEALED_PART


class PlainBody:
    """The bytes as they are (no client-side encryption)."""

    sealed = False
    kek_fingerprint: str | None = None

    def plan(self, size: int, preferred: int, threshold: int, key: str) -> PartPlan:
        return plan_parts(size, preferred, threshold, key=key)

    def metadata(self, metadata: dict[str, str], md5_b64: str | None) -> dict[str, str]:
        return metadata

    def seal(self, plaintext: bytearray, offset: int) -> Any:
        return plaintext

    def stored_length(self, offset: int, length: int) -> int:
        return length

    def wrap(self, stream: Any, offset: int, length: int) -> Any:
        return stream


class SealedBody:
    """One object's client-side encryption: a fresh data key, sealed parts, the envelope in its metadata."""

    sealed = True

    def __init__(self, kek: ClientSideKey, size: int):
        self.envelope = ObjectEnvelope.new(kek, size)
        self.kek_fingerprint = kek.fingerprint

    def plan(self, size: int, preferred: int, threshold: int, key: str) -> PartPlan:
        if size > MAX_CLIENT_SIDE_OBJECT:
            raise ObjectTooLarge(key, size, MAX_CLIENT_SIDE_OBJECT)
        frame = self.envelope.frame_size
        whole_frames = min(-(-preferred // frame) * frame, _MAX_SEALED_PART)
        plan = plan_parts(size, whole_frames, min(threshold, whole_frames + 1), key=key)
        # plan_parts grows parts in whole MiB, i.e. whole frames; the bound above keeps them within 5 GB sealed.
        assert plan.part_size % frame == 0 or not plan.multipart, (plan, frame)
        assert self.envelope.stored_size <= MAX_OBJECT_SIZE, (size, self.envelope.stored_size)
        return plan

    def metadata(self, metadata: dict[str, str], md5_b64: str | None) -> dict[str, str]:
        from bascule.storage.base import MD5_KEY

        visible = {name: value for name, value in metadata.items() if name != MD5_KEY}
        return visible | self.envelope.metadata(md5_b64)

    def seal(self, plaintext: bytearray, offset: int) -> Any:
        return self.envelope.seal(plaintext, offset)

    def stored_length(self, offset: int, length: int) -> int:
        return self.envelope.stored_length(offset, length)

    def wrap(self, stream: Any, offset: int, length: int) -> Any:
        return EncryptingStream(stream, self.envelope, offset, length)


def body_codec(target: S3Bucket, size: int) -> PlainBody | SealedBody:
    """The codec for one object of ``size`` bytes copied to ``target`` (a fresh data key per call)."""
    kek = getattr(target, "client_side", None)  # in-memory fakes of the seam have no such attribute
    if kek is not None:
        return SealedBody(kek, size)
    return PlainBody()

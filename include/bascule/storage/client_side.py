"""Client-side envelope encryption: objects leave Bascule already encrypted, Scaleway never sees a key.

The second encryption method Scaleway's HDS guidance allows ("encrypted client-side before
upload", combined with ``PutBucketEncryption`` for compliant deletion). Format
``bascule-cse-v1`` (docs/security.md#client-side-encryption):

- **One fresh data key per object**: 32 random bytes (``os.urandom``), wrapped with the
  workload's key-encryption key (KEK, the password of the Airflow connection
  ``target.encryption.key_conn_id``) by AES key wrap (RFC 3394,
  ``cryptography``'s ``aes_key_wrap``). Only the wrapped key is stored, in the object's
  metadata, next to the KEK's fingerprint (base64 MD5, as for SSE-C keys).
- **Frames**: the plaintext is cut into ``frame_size`` frames (1 MiB); every frame is sealed
  with AES-256-GCM under the data key (16-byte tag appended), the last one possibly short
  (an empty object is one empty frame, so that even emptiness is authenticated). The body
  is the frames back to back: no header, so the stored size is
  ``plaintext + 16 x frames`` and a listing's size alone gives the plaintext size.
- **Nonce** of frame *i*: the object's random 12-byte nonce base XOR *i* (unique per frame
  under a key used for one object only). **AAD** of frame *i*: the format name, the frame
  size, the plaintext size, *i* and a last-frame flag. So a truncated body (the last frame
  missing, or cut), frames reordered or swapped in from another object (another data key),
  and a metadata size edited to match a truncation all fail authentication.
- **The plaintext MD5** (what parity compares with the source) is stored only sealed under
  the data key (``bascule-cse-md5``): Scaleway sees no digest of the plaintext.

Memory is one frame when streaming (:class:`DecryptingStream`, :class:`EncryptingStream`),
one part when sealing a buffered part. No Airflow import: the glue reads the KEK.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from bascule.exceptions import StoreAccessError
from bascule.storage.encryption import ConnectionKey, EncryptionKeyError

FORMAT = "bascule-cse-v1"
ALGORITHM = "AES-256-GCM, data key wrapped with AES-KW (RFC 3394)"
FRAME_SIZE = 1024 * 1024
TAG_BYTES = 16
NONCE_BYTES = 12
DATA_KEY_BYTES = 32
RUNBOOK = "docs/runbooks.md#client-side-key-missing-or-wrong"

# x-amz-meta-* names (lowercase: S3 returns them so).
META_FORMAT = "bascule-cse"
META_WRAPPED_KEY = "bascule-cse-key"
META_KEK = "bascule-cse-kek"
META_NONCE = "bascule-cse-nonce"
META_FRAME = "bascule-cse-frame"
META_SIZE = "bascule-cse-size"
META_MD5 = "bascule-cse-md5"
ENVELOPE_KEYS = (META_FORMAT, META_WRAPPED_KEY, META_KEK, META_NONCE, META_FRAME, META_SIZE, META_MD5)
# The nonce of the sealed MD5: outside the frame counter's range (frames stay below 2**64).
_MD5_NONCE_INDEX = 1 << 95


@dataclass(frozen=True)
class ClientSideKey(ConnectionKey):
    """The workload's key-encryption key (32 bytes, base64 in a connection's password); never logged."""

    purpose: ClassVar[str] = "client-side key-encryption key"
    runbook: ClassVar[str] = RUNBOOK


class CiphertextError(StoreAccessError):
    """Stored bytes or envelope metadata that fail authentication, or an object that is not client-side encrypted.

    Never retryable: reading again returns the same bytes.
    """

    def __init__(self, message: str):
        super().__init__(f"{message} ({RUNBOOK})", retryable=False)


def frame_count(plaintext_size: int, frame_size: int = FRAME_SIZE) -> int:
    return max(1, -(-plaintext_size // frame_size))


def sealed_size(plaintext_size: int, frame_size: int = FRAME_SIZE) -> int:
    """Bytes stored for ``plaintext_size`` bytes of plaintext."""
    return plaintext_size + TAG_BYTES * frame_count(plaintext_size, frame_size)


def plaintext_size(stored_size: int, frame_size: int = FRAME_SIZE) -> int | None:
    """The plaintext size a stored size stands for, or None if no plaintext seals to that size."""
    frames = max(1, -(-stored_size // (frame_size + TAG_BYTES)))
    size = stored_size - TAG_BYTES * frames
    valid = size >= 0 and (size > (frames - 1) * frame_size or (frames == 1 and size == 0))
    return size if valid else None


@dataclass(frozen=True)
class ObjectEnvelope:
    """One object's data key and format parameters: seals and opens its frames."""

    data_key: bytes = field(repr=False)
    nonce_base: bytes
    plaintext_size: int
    kek_fingerprint: str
    wrapped_key: bytes
    frame_size: int = FRAME_SIZE
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aead", AESGCM(self.data_key))

    @classmethod
    def new(cls, kek: ClientSideKey, plaintext_size: int, frame_size: int = FRAME_SIZE) -> ObjectEnvelope:
        data_key = os.urandom(DATA_KEY_BYTES)
        return cls(
            data_key, os.urandom(NONCE_BYTES), plaintext_size, kek.fingerprint, aes_key_wrap(kek.key, data_key),
            frame_size,
        )  # fmt: skip

    @classmethod
    def open(cls, kek: ClientSideKey, metadata: Mapping[str, str], where: str) -> ObjectEnvelope:
        """The envelope recorded in an object's (decoded) metadata; ``where`` names the object in errors."""
        if metadata.get(META_FORMAT) != FORMAT:
            found = metadata.get(META_FORMAT) or "no client-side encryption metadata"
            raise CiphertextError(
                f"{where} is not client-side encrypted ({found}; expected format {FORMAT}): it was not written by "
                "Bascule's client-side encryption. Delete or re-copy it"
            )
        if metadata.get(META_KEK) != kek.fingerprint:
            raise EncryptionKeyError(
                f"{where} was encrypted under the key-encryption key with fingerprint {metadata.get(META_KEK)}, "
                f"but connection '{kek.conn_id}' holds the key with fingerprint {kek.fingerprint}: put the "
                f"workload's key in that connection, or rewrap the objects ({RUNBOOK})"
            )
        try:
            wrapped = base64.b64decode(metadata[META_WRAPPED_KEY], validate=True)
            data_key = aes_key_unwrap(kek.key, wrapped)
            nonce_base = base64.b64decode(metadata[META_NONCE], validate=True)
            size, frame = int(metadata[META_SIZE]), int(metadata[META_FRAME])
        except (KeyError, ValueError, InvalidUnwrap) as exc:
            raise CiphertextError(
                f"{where}: its client-side envelope cannot be opened with connection '{kek.conn_id}' "
                f"({type(exc).__name__}): the metadata was damaged or tampered with"
            ) from None
        if len(nonce_base) != NONCE_BYTES or size < 0 or frame <= 0:
            raise CiphertextError(f"{where}: its client-side envelope metadata is malformed")
        return cls(data_key, nonce_base, size, kek.fingerprint, wrapped, frame)

    def rewrapped(self, kek: ClientSideKey) -> ObjectEnvelope:
        """The same data key wrapped under another KEK (rotation: the stored frames do not change)."""
        return dataclasses.replace(
            self, kek_fingerprint=kek.fingerprint, wrapped_key=aes_key_wrap(kek.key, self.data_key)
        )

    # -- layout ------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        return frame_count(self.plaintext_size, self.frame_size)

    @property
    def stored_size(self) -> int:
        return sealed_size(self.plaintext_size, self.frame_size)

    def stored_length(self, offset: int, length: int) -> int:
        """Bytes stored for the plaintext range ``[offset, offset+length)`` (frame-aligned ``offset``)."""
        self._check_aligned(offset)
        return length + TAG_BYTES * max(1, -(-length // self.frame_size))

    def metadata(self, md5_b64: str | None) -> dict[str, str]:
        """What the object's metadata records (plaintext MD5 sealed, never in clear)."""
        entries = {
            META_FORMAT: FORMAT,
            META_WRAPPED_KEY: base64.b64encode(self.wrapped_key).decode("ascii"),
            META_KEK: self.kek_fingerprint,
            META_NONCE: base64.b64encode(self.nonce_base).decode("ascii"),
            META_FRAME: str(self.frame_size),
            META_SIZE: str(self.plaintext_size),
        }
        if md5_b64:
            sealed = self._aead.encrypt(self._nonce(_MD5_NONCE_INDEX), md5_b64.encode("ascii"), self._aad(-1, True))
            entries[META_MD5] = base64.b64encode(sealed).decode("ascii")
        return entries

    def open_md5(self, metadata: Mapping[str, str], where: str) -> str | None:
        sealed = metadata.get(META_MD5)
        if not sealed:
            return None
        try:
            plain = self._aead.decrypt(
                self._nonce(_MD5_NONCE_INDEX), base64.b64decode(sealed, validate=True), self._aad(-1, True)
            )
        except (InvalidTag, ValueError):
            raise CiphertextError(f"{where}: its sealed MD5 fails authentication (metadata tampered with)") from None
        return plain.decode("ascii")

    # -- frames ------------------------------------------------------------------------

    def seal_frame(self, index: int, plaintext: Any) -> bytes:
        return self._aead.encrypt(self._nonce(index), plaintext, self._aad(index, index == self.frames - 1))

    def open_frame(self, index: int, sealed: bytes, where: str) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(index), sealed, self._aad(index, index == self.frames - 1))
        except InvalidTag:
            raise CiphertextError(
                f"{where}: frame {index + 1} of {self.frames} fails authentication: the stored bytes were damaged, "
                "truncated, reordered or swapped"
            ) from None

    def seal(self, plaintext: Any, offset: int) -> bytearray:
        """The stored bytes of a buffered range starting at frame-aligned ``offset`` (whole frames but the last)."""
        first = self._check_aligned(offset)
        view = memoryview(plaintext)
        frames = max(1, -(-len(view) // self.frame_size))
        out = bytearray(len(view) + TAG_BYTES * frames)  # allocated once: a growing buffer would copy the part
        step = self.frame_size + TAG_BYTES
        for number in range(frames):
            sealed = self.seal_frame(first + number, view[number * self.frame_size : (number + 1) * self.frame_size])
            out[number * step : number * step + len(sealed)] = sealed
        return out

    def _check_aligned(self, offset: int) -> int:
        if offset % self.frame_size:
            raise ValueError(f"offset {offset} is not on a frame boundary ({self.frame_size} bytes)")
        return offset // self.frame_size

    def _nonce(self, index: int) -> bytes:
        return (int.from_bytes(self.nonce_base, "big") ^ index).to_bytes(NONCE_BYTES, "big")

    def _aad(self, index: int, last: bool) -> bytes:
        # index -1 (the sealed MD5) packs as an unsigned all-ones value: never a frame index.
        return FORMAT.encode() + struct.pack(">IQQ?", self.frame_size, self.plaintext_size, index % (1 << 64), last)


def reveal(kek: ClientSideKey, metadata: Mapping[str, str], where: str) -> tuple[ObjectEnvelope, dict[str, str]]:
    """An object's envelope and its metadata as the plaintext object would carry it (MD5 unsealed, envelope out)."""
    from bascule.storage.base import MD5_KEY

    envelope = ObjectEnvelope.open(kek, metadata, where)
    visible = {name: value for name, value in metadata.items() if name not in ENVELOPE_KEYS and name != MD5_KEY}
    md5 = envelope.open_md5(metadata, where)
    if md5:
        visible[MD5_KEY] = md5
    return envelope, visible


def _read_exact(raw: Any, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = raw.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class DecryptingStream:
    """The plaintext of a stored body, frame by frame (one frame in memory); every frame authenticated."""

    def __init__(self, raw: Any, envelope: ObjectEnvelope, where: str):
        self._raw, self._envelope, self._where = raw, envelope, where
        self._index = 0
        self._plain = b""
        self._position = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(self._envelope.frame_size), b""))
        while self._position >= len(self._plain):
            if self._index >= self._envelope.frames:
                self._check_end()
                return b""
            self._plain, self._position = self._next_frame(), 0
        data = self._plain[self._position : self._position + size]
        self._position += len(data)
        return data

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> DecryptingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_frame(self) -> bytes:
        envelope, index = self._envelope, self._index
        plain_length = min(envelope.frame_size, envelope.plaintext_size - index * envelope.frame_size)
        sealed = _read_exact(self._raw, plain_length + TAG_BYTES)
        if len(sealed) < plain_length + TAG_BYTES:
            raise CiphertextError(
                f"{self._where}: the stored body ends inside frame {index + 1} of {envelope.frames} (truncated)"
            )
        self._index += 1
        return envelope.open_frame(index, sealed, self._where)

    def _check_end(self) -> None:
        if self._raw.read(1):
            raise CiphertextError(f"{self._where}: bytes follow the last frame (the stored body was extended)")


class EncryptingStream:
    """A streamed part's stored bytes: reads whole frames of plaintext from ``inner`` and seals them.

    Sealing is deterministic for one envelope, so a rewind (``seek(0)``, botocore's retry)
    re-reads the plaintext and yields the same bytes. ``md5`` is the MD5 of the bytes handed
    out (the part's Content-MD5 once read through). Everything else (``outer``,
    ``rewind_progress``, ``close``) is the inner stream's.
    """

    def __init__(self, inner: Any, envelope: ObjectEnvelope, offset: int, length: int):
        self._inner, self._envelope, self._length = inner, envelope, length
        self._first = envelope._check_aligned(offset)
        self._reset()

    def _reset(self) -> None:
        self._index = self._first
        self._sealed = b""
        self._position = 0
        self._taken = 0  # plaintext bytes read from inner
        self._handed = 0
        self._md5 = hashlib.md5(usedforsecurity=False)

    @property
    def md5(self) -> bytes:
        return self._md5.digest()

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._handed

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0 and offset == self._handed:
            return offset
        self._inner.seek(offset, whence)  # only a rewind to 0 is supported, as by the inner stream
        self._reset()
        return 0

    def read(self, size: int | None = -1) -> bytes:
        if self._position >= len(self._sealed):
            if self._taken >= self._length and self._index > self._first:
                return b""
            want = min(self._envelope.frame_size, self._length - self._taken)
            plain = _read_exact(self._inner, want)
            if len(plain) != want:
                raise StoreAccessError(
                    f"source returned {self._taken + len(plain):,} of {self._length:,} bytes", retryable=True
                )
            self._taken += want
            self._sealed, self._position = self._envelope.seal_frame(self._index, plain), 0
            self._index += 1
        end = len(self._sealed) if size is None or size < 0 else self._position + size
        data = self._sealed[self._position : end]
        self._position += len(data)
        self._handed += len(data)
        self._md5.update(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

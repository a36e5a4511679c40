"""The client-side format (bascule-cse-v1) with the real `cryptography` primitives: round trips and every tampering."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tracemalloc
from typing import Any

import pytest

from bascule.storage.base import MD5_KEY
from bascule.storage.client_side import (
    FRAME_SIZE,
    META_SIZE,
    TAG_BYTES,
    CiphertextError,
    ClientSideKey,
    DecryptingStream,
    EncryptingStream,
    ObjectEnvelope,
    plaintext_size,
    reveal,
    sealed_size,
)
from bascule.storage.encryption import EncryptionKeyError

pytestmark = pytest.mark.unit

KEK = ClientSideKey(bytes(range(32)), "hdh_scaleway_cse")
OTHER = ClientSideKey(bytes(range(1, 33)), "hdh_scaleway_cse_other")
F = FRAME_SIZE


def _sealed(plaintext: bytes, kek: ClientSideKey = KEK) -> tuple[bytes, dict[str, str]]:
    envelope = ObjectEnvelope.new(kek, len(plaintext))
    md5 = base64.b64encode(hashlib.md5(plaintext).digest()).decode()
    return bytes(envelope.seal(plaintext, 0)), envelope.metadata(md5)


def _open(stored: bytes, metadata: dict[str, str], kek: ClientSideKey = KEK) -> bytes:
    envelope, _ = reveal(kek, metadata, "object 'k'")
    return DecryptingStream(io.BytesIO(stored), envelope, "object 'k'").read()


@pytest.mark.parametrize("size", [0, 1, F - 1, F, F + 1, 3 * F + 17])
def test_round_trip_and_sizes(size: int) -> None:
    plaintext = os.urandom(size)
    stored, metadata = _sealed(plaintext)
    assert len(stored) == sealed_size(size) == size + TAG_BYTES * max(1, -(-size // F))
    assert plaintext_size(len(stored)) == size  # what a listing's size stands for
    assert _open(stored, metadata) == plaintext
    if size >= 64:
        assert plaintext[:64] not in stored  # the stored bytes are not the plaintext
    # The MD5 is in the metadata only sealed; reveal gives it back.
    _, visible = reveal(KEK, metadata, "object 'k'")
    assert visible == {MD5_KEY: base64.b64encode(hashlib.md5(plaintext).digest()).decode()}
    assert visible[MD5_KEY] not in metadata.values()


def test_streamed_sealing_equals_buffered_and_parts_concatenate() -> None:
    plaintext = os.urandom(5 * F + 3)
    envelope = ObjectEnvelope.new(KEK, len(plaintext))
    whole = bytes(envelope.seal(plaintext, 0))
    # Two parts of whole frames, one sealed buffered, one streamed: their concatenation is the object.
    first = bytes(envelope.seal(plaintext[: 2 * F], 0))
    stream = EncryptingStream(io.BytesIO(plaintext[2 * F :]), envelope, 2 * F, len(plaintext) - 2 * F)
    second = b"".join(iter(lambda: stream.read(100_000), b""))
    assert first + second == whole
    assert stream.md5 == hashlib.md5(second).digest()
    assert envelope.stored_length(2 * F, len(plaintext) - 2 * F) == len(second)
    with pytest.raises(ValueError, match="frame boundary"):
        envelope.seal(plaintext[:10], 10)


def test_sizes_no_plaintext_seals_to_are_refused() -> None:
    assert plaintext_size(TAG_BYTES - 1) is None
    assert plaintext_size(F + TAG_BYTES + 3) is None  # a second frame shorter than its tag
    assert plaintext_size(TAG_BYTES) == 0


def _frames(stored: bytes) -> list[bytes]:
    return [stored[i : i + F + TAG_BYTES] for i in range(0, len(stored), F + TAG_BYTES)]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda s: s[:100] + bytes([s[100] ^ 1]) + s[101:], "frame 1 of 3 fails authentication"),
        (lambda s: s[:-1], "ends inside frame 3"),  # truncated last frame
        (lambda s: b"".join(_frames(s)[:2]), "ends inside frame 3"),  # last frame dropped
        (lambda s: b"".join([_frames(s)[1], _frames(s)[0], _frames(s)[2]]), "frame 1 of 3 fails"),  # swapped
        (lambda s: s + b"x", "bytes follow the last frame"),
    ],
)
def test_tampered_bodies_fail_loudly(damage: Any, expected: str) -> None:
    plaintext = os.urandom(2 * F + 5)
    stored, metadata = _sealed(plaintext)
    with pytest.raises(CiphertextError, match=expected):
        _open(damage(stored), metadata)


def test_a_frame_from_another_object_fails() -> None:
    plaintext = os.urandom(2 * F)
    stored, metadata = _sealed(plaintext)
    other, _ = _sealed(plaintext)  # same plaintext, another data key
    with pytest.raises(CiphertextError, match="frame 2 of 2"):
        _open(_frames(stored)[0] + _frames(other)[1], metadata)


def test_truncation_with_the_size_edited_to_match_fails() -> None:
    plaintext = os.urandom(2 * F + 5)
    stored, metadata = _sealed(plaintext)
    edited = metadata | {META_SIZE: str(2 * F)}  # as if the body had always been two frames
    with pytest.raises(CiphertextError, match="fails authentication"):
        _open(b"".join(_frames(stored)[:2]), edited)


def test_wrong_or_missing_kek_and_unsealed_objects_name_the_connection_or_object() -> None:
    stored, metadata = _sealed(b"secret rows")
    with pytest.raises(EncryptionKeyError, match="'hdh_scaleway_cse_other'") as wrong:
        _open(stored, metadata, OTHER)
    assert KEK.fingerprint in str(wrong.value) and OTHER.fingerprint in str(wrong.value)
    with pytest.raises(CiphertextError, match="object 'k' is not client-side encrypted"):
        reveal(KEK, {}, "object 'k'")
    # A KEK with the same fingerprint claim but damaged wrapped key: the unwrap refuses.
    forged = metadata | {"bascule-cse-key": base64.b64encode(os.urandom(40)).decode()}
    with pytest.raises(CiphertextError, match="cannot be opened"):
        _open(stored, forged)
    with pytest.raises(EncryptionKeyError, match="'c'.*has no password"):
        ClientSideKey.from_base64("", "c")
    with pytest.raises(EncryptionKeyError, match="client-side key-encryption key .* is 16 bytes"):
        ClientSideKey.from_base64(base64.b64encode(os.urandom(16)).decode(), "c")
    assert KEK.key.hex() not in repr(KEK) + str(KEK)


class _Frames:
    """A plaintext of ``count`` frames produced on demand (never held whole), as a readable."""

    def __init__(self, count: int):
        self.count, self.index, self.digest = count, 0, hashlib.md5()

    def read(self, size: int = -1) -> bytes:
        if self.index >= self.count:
            return b""
        self.index += 1
        frame = self.index.to_bytes(4, "big") * (F // 4)
        self.digest.update(frame)
        return frame


def test_memory_stays_near_a_frame_for_a_many_frame_object() -> None:
    count = 32
    source = _Frames(count)
    envelope = ObjectEnvelope.new(KEK, count * F)
    opened, _ = reveal(KEK, envelope.metadata(None), "object 'big'")
    tracemalloc.start()
    try:
        sealing = EncryptingStream(source, envelope, 0, count * F)
        reading = DecryptingStream(sealing, opened, "object 'big'")
        digest = hashlib.md5()
        for chunk in iter(lambda: reading.read(256 * 1024), b""):
            digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == source.digest.digest()
    assert peak < 6 * F, f"peak {peak:,} bytes for a {count * F:,}-byte object"

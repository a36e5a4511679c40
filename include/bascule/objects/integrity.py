"""Checking bytes against the source's Content-MD5 as they pass, before the target may show them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from bascule.exceptions import StoreAccessError
from bascule.objects.copy_errors import IntegrityError


def md5_digest(md5_b64: str, where: str, key: str) -> bytes:
    """The 16 bytes of a source's base64 Content-MD5; IntegrityError if it is not an MD5."""
    try:
        digest = base64.b64decode(md5_b64, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 16:
        raise IntegrityError(where, key, expected=md5_b64, actual="?", detail="the source Content-MD5 is not an MD5")
    return digest


class VerifyingStream:
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

"""A strict SSE-C stand-in: a proxy in front of moto that answers like Scaleway where moto does not.

moto accepts SSE-C headers and ignores them (objects stored in clear, HEAD and GET work
without the key, the ETag is the plaintext's MD5). In front of it, for one guarded bucket,
this interceptor (on :class:`tests.faultproxy.FaultProxy`, so real HTTP clients talk to it):

- refuses a write (PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
  CopyObject) without valid SSE-C headers (AES256, a 32-byte key whose MD5 matches the
  ``-key-MD5`` header) with **400** ``InvalidRequest``: the bucket stores only what an
  encrypted write may store; parts and completion must use the upload's key;
- remembers each object's key fingerprint, and answers a HEAD or GET of an SSE-C object
  **without** the key with **400** (what Scaleway's HDS page tells a reader to check),
  with another key with **403**, and echoes the fingerprint with the right one; a
  CopyObject must give the source's key (``x-amz-copy-source-server-side-encryption-*``);
- rewrites the ETags of SSE-C objects (and parts) to values that are *not* the MD5 of
  the plaintext, as real SSE-C ETags are not, and maps them back on the way in
  (If-Match, CompleteMultipartUpload), so no test can pass by trusting an ETag.

Objects written to moto around the proxy (``moto`` client directly) are "stored in clear":
readable without a key, and a HEAD/GET *with* a key is refused with 400, as S3 does.
No key is exempt: Bascule writes nothing of its own into a data bucket (its evidence has its own bucket).

``bucket=None`` (the demo's and the end-to-end tests' stand-in, started by
``scripts/devstack.py``): every bucket is watched, and a write without a key is stored in
clear rather than refused, as Scaleway itself does; the read rules are the same.

    python scripts/ssec_standin.py --port 9091 --upstream-port 9090
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from dataclasses import dataclass, field

from faultproxy import FaultProxy, Refusal, Request

_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
_KEY = "x-amz-server-side-encryption-customer-key"
_KEY_MD5 = "x-amz-server-side-encryption-customer-key-md5"
_COPY_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"
_ETAG_XML = re.compile(r"<ETag>(&quot;|\")?([0-9a-f]{32}(?:-\d+)?)(&quot;|\")?</ETag>")


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _fingerprint(headers: dict[str, str], prefix: str = "x-amz-server-side-encryption-customer-") -> str | None:
    """The key's MD5 if the three headers are there and consistent; '' if malformed; None if absent."""
    algorithm, key, key_md5 = (headers.get(prefix + part) for part in ("algorithm", "key", "key-md5"))
    if algorithm is None and key is None and key_md5 is None:
        return None
    try:
        raw = base64.b64decode(key or "", validate=True)
    except (binascii.Error, ValueError):
        return ""
    actual = base64.b64encode(hashlib.md5(raw).digest()).decode()
    if algorithm != "AES256" or len(raw) != 32 or key_md5 != actual:
        return ""
    return actual


@dataclass
class SseCStandIn:
    """The interceptor; ``requests`` counts what it saw per verdict (tests read it)."""

    bucket: str | None  # None: every bucket, and writes without a key are stored in clear
    objects: dict[str, str] = field(default_factory=dict)  # key -> key fingerprint
    uploads: dict[str, str] = field(default_factory=dict)  # upload id -> key fingerprint
    refused: list[tuple[str, str, int]] = field(default_factory=list)  # (operation, key, status)
    _fake: dict[str, str] = field(default_factory=dict)  # real ETag -> shown ETag
    _real: dict[str, str] = field(default_factory=dict)  # shown ETag -> real ETag
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- requests --------------------------------------------------------------------

    def _object_key(self, request: Request) -> str | None:
        """``bucket/key`` of an object request this stand-in rules on, else None."""
        bucket, _, key = request.path.lstrip("/").partition("/")
        if self.bucket not in (None, bucket) or not key:
            return None
        return f"{bucket}/{key}"

    def _refuse(self, request: Request, key: str, status: int, message: str) -> Refusal:
        self.refused.append((request.operation, key, status))
        code = "InvalidRequest" if status == 400 else "AccessDenied"
        return Refusal(status, code, message)

    def before(self, request: Request, headers: dict[str, str], body: bytes) -> Refusal | tuple[dict[str, str], bytes]:
        key = self._object_key(request)
        if key is None:
            return headers, body
        lower = _lower(headers)
        given = _fingerprint(lower)
        if request.method == "DELETE" or (request.method == "GET" and "uploadId" in request.query):
            return headers, body  # DeleteObject, AbortMultipartUpload, ListParts carry no key
        if request.method in ("GET", "HEAD"):
            return self._read(request, key, given, headers, body)
        # PutObject, UploadPart, CopyObject (PUT); CreateMultipartUpload, CompleteMultipartUpload (POST)
        if not given and (given == "" or self.bucket is not None):
            return self._refuse(request, key, 400, "this bucket stores SSE-C objects only: send a valid customer key")
        upload = (request.query.get("uploadId") or [None])[0]
        if upload is not None and self.uploads.get(upload) != given:
            return self._refuse(request, key, 400, "the parts of an SSE-C upload must use the upload's key")
        if "x-amz-copy-source" in lower:
            source_key = lower["x-amz-copy-source"].split("?")[0].lstrip("/")
            stored = self.objects.get(_unquote(source_key))
            if stored is not None and _fingerprint(lower, _COPY_PREFIX) != stored:
                return self._refuse(request, key, 403, "the copy source needs the key it was written with")
        return self._map_in(headers, body)

    def _read(
        self, request: Request, key: str, given: str | None, headers: dict[str, str], body: bytes
    ) -> Refusal | tuple[dict[str, str], bytes]:
        stored = self.objects.get(key)
        if stored is not None and given is None:
            return self._refuse(request, key, 400, "the object is SSE-C encrypted: the key must be provided")
        if stored is not None and given != stored:
            return self._refuse(request, key, 403, "the key does not match the object's")
        return self._map_in(headers, body)

    def _map_in(self, headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
        """Shown ETags back to moto's, in conditions and in a CompleteMultipartUpload body."""
        mapped = {}
        for name, value in headers.items():
            if name.lower() in ("if-match", "x-amz-copy-source-if-match", "if-none-match"):
                value = self._real.get(value.strip('"'), value.strip('"'))
                value = f'"{value}"' if value != "*" else value
            mapped[name] = value
        if body.startswith(b"<") and b"<ETag>" in body:
            text = _ETAG_XML.sub(lambda m: f'<ETag>"{self._real.get(m.group(2), m.group(2))}"</ETag>', body.decode())
            body = text.encode()
            for name in list(mapped):
                if name.lower() == "content-length":
                    mapped[name] = str(len(body))
                if name.lower() == "content-md5":
                    mapped[name] = base64.b64encode(hashlib.md5(body).digest()).decode()
        return mapped, body

    # -- responses -------------------------------------------------------------------

    def after(
        self, request: Request, sent: dict[str, str], status: int, headers: list[tuple[str, str]], data: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        key = self._object_key(request)
        lower = _lower(sent)
        given = _fingerprint(lower) or None
        reading = request.method in ("GET", "HEAD") and "uploadId" not in request.query
        if key is not None and reading and given and self.objects.get(key) is None and status < 300:
            # The object exists but was stored in clear: S3 refuses a read that sends a key.
            self.refused.append((request.operation, key, 400))
            return 400, [("Content-Length", "0")], b""
        if key is not None and status < 300 and given:
            self._remember(request, key, given, data)
        writes = request.method == "DELETE" or (request.method in ("PUT", "POST") and not given)
        if key is not None and status < 300 and writes and "partNumber" not in request.query:
            self.objects.pop(key, None)  # deleted, or overwritten in clear
        encrypted = key is not None and (given is not None or self.objects.get(key) is not None)
        shown = []
        for name, value in headers:
            if name.lower() == "etag" and encrypted:
                value = f'"{self._show(value.strip(chr(34)))}"'
            shown.append((name, value))
        if encrypted and given and not any(n.lower() == _KEY_MD5 for n, _ in shown):
            shown += [(_ALGORITHM, "AES256"), (_KEY_MD5, given)]
        if data.startswith(b"<") and b"<ETag>" in data:
            data = self._show_xml(data, register=encrypted)
        return status, shown, data

    def _remember(self, request: Request, key: str, given: str, data: bytes) -> None:
        with self._lock:
            if request.method == "POST" and "uploads" in request.query:
                found = re.search(rb"<UploadId>([^<]+)</UploadId>", data)
                if found:
                    self.uploads[found.group(1).decode()] = given
            elif request.method in ("PUT", "POST") and "partNumber" not in request.query:
                self.objects[key] = given

    def _show(self, real: str) -> str:
        with self._lock:
            if real not in self._fake:
                shown = hashlib.md5(b"sse-c:" + real.encode()).hexdigest()
                self._fake[real], self._real[shown] = shown, real
            return self._fake[real]

    def _show_xml(self, data: bytes, *, register: bool) -> bytes:
        """ETags in copy/complete results (``register``: a new SSE-C object) and in listings (only
        those of SSE-C objects this proxy already showed: objects stored in clear keep their MD5)."""

        def swap(match: re.Match[str]) -> str:
            real = match.group(2)
            if register:
                self._show(real)
            return f"<ETag>&quot;{self._fake[real]}&quot;</ETag>" if real in self._fake else match.group(0)

        return _ETAG_XML.sub(swap, data.decode()).encode()


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def strict_proxy(moto_port: int, bucket: str) -> tuple[FaultProxy, SseCStandIn]:
    """A started proxy in front of moto with the SSE-C rules on ``bucket``; the caller stops it."""
    standin = SseCStandIn(bucket)
    return FaultProxy(moto_port, interceptor=standin).start(), standin


def main() -> None:
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="SSE-C stand-in in front of moto (loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    # A day, not the test default of 5 minutes: the demo runs for several minutes; devstack stops it by PID.
    proxy = FaultProxy(
        args.upstream_port, port=args.port, interceptor=SseCStandIn(None), lifetime_s=86400, max_body=256 * 1024 * 1024
    )
    proxy.start()
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    proxy.stop()


if __name__ == "__main__":
    main()

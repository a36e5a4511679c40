"""A small fault-injecting HTTP reverse proxy, for tests of retry and cleanup paths.

It sits between a client and a local server (moto), forwards requests, and for the
requests a :class:`Fault` selects answers instead with 503 SlowDown (an S3 XML error
body), 500 InternalError, or a TCP reset. Loopback only; every body it holds is
bounded; it stops itself after ``lifetime_s`` even if a test forgets to.

    with FaultProxy(upstream_port=moto_port) as proxy:
        proxy.add(Fault("slowdown", times=5))
        proxy.add(Fault("reset", times=2))
        client = boto3.client("s3", endpoint_url=proxy.url, ...)
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

FaultKind = Literal["slowdown", "error500", "reset"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "error500": (500, "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass(frozen=True)
class Request:
    """What a fault's ``match`` sees of a request."""

    method: str
    path: str  # unquoted, e.g. "/bucket/some key"
    query: dict[str, list[str]]

    @property
    def part_number(self) -> int | None:
        values = self.query.get("partNumber")
        return int(values[0]) if values else None

    @property
    def operation(self) -> str:
        """A rough S3 operation name, enough to aim a fault."""
        if "uploads" in self.query:
            return "ListMultipartUploads" if self.method == "GET" else "CreateMultipartUpload"
        if "uploadId" in self.query:
            return {"PUT": "UploadPart", "POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload"}.get(
                self.method, "ListParts"
            )
        return {"GET": "Get", "HEAD": "Head", "PUT": "Put", "DELETE": "Delete", "POST": "Post"}[self.method]


@dataclass
class Fault:
    """Answer matching requests with ``kind`` instead of forwarding them.

    ``after`` matching requests pass first; then the next ``times`` get the fault
    (None: all of them) while the fault is active, i.e. for ``seconds`` after it
    was added (None: until removed).
    """

    kind: FaultKind
    times: int | None = None
    after: int = 0
    seconds: float | None = None
    match: Callable[[Request], bool] | None = None
    seen: int = field(default=0, init=False)
    injected: int = field(default=0, init=False)
    _since: float = field(default_factory=time.monotonic, init=False, repr=False)

    def applies(self, request: Request) -> bool:
        if self.seconds is not None and time.monotonic() - self._since > self.seconds:
            return False
        if self.match is not None and not self.match(request):
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.times is not None and self.injected >= self.times:
            return False
        self.injected += 1
        return True


@dataclass(frozen=True)
class Refusal:
    """An answer an :class:`Interceptor` gives instead of forwarding."""

    status: int
    code: str
    message: str


class Interceptor(Protocol):
    """Screens requests before they are forwarded and may rewrite what comes back (a strict stand-in)."""

    def before(self, request: Request, headers: dict[str, str], body: bytes) -> Refusal | tuple[dict[str, str], bytes]:
        """Refuse the request, or return the headers and body to forward (possibly rewritten)."""
        ...

    def after(
        self, request: Request, sent: dict[str, str], status: int, headers: list[tuple[str, str]], data: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The response status, headers and body to return (possibly rewritten)."""
        ...


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        lifetime_s: float = 300.0,
        max_body: int = 128 * 1024 * 1024,
        interceptor: Interceptor | None = None,
        port: int = 0,
    ):
        if upstream_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"faultproxy forwards to loopback only, not {upstream_host!r}")
        self.upstream = (upstream_host, upstream_port)
        self.max_body = max_body
        self.interceptor = interceptor
        self.lifetime_s = lifetime_s
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.requests: list[Request] = []  # every request seen, in order (tests are small)
        self.injected: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    def count(self, predicate: Callable[[Request], bool]) -> int:
        with self._lock:
            return sum(1 for r in self.requests if predicate(r))

    def _decide(self, request: Request) -> FaultKind | None:
        with self._lock:
            self.requests.append(request)
            for fault in self._faults:
                if fault.applies(request):
                    self.injected[fault.kind] += 1
                    return fault.kind
        return None


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" for Expect
        timeout = 30

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:
            self._handle()

        do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            request = Request(self.command, unquote(parts.path), parse_qs(parts.query, keep_blank_values=True))
            fault = proxy._decide(request)
            if fault == "reset":
                self._reset()
                return
            body = self._read_body()
            if body is None:
                return
            if fault is not None:
                self._send_error(*_ERRORS[fault])
                return
            headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
            if proxy.interceptor is not None:
                screened = proxy.interceptor.before(request, headers, body)
                if isinstance(screened, Refusal):
                    self._send_error(screened.status, screened.code, screened.message)
                    return
                headers, body = screened
            self._forward(request, headers, body)

        def _read_body(self) -> bytes | None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._send_error(501, "NotImplemented", "faultproxy does not forward chunked bodies")
                self.close_connection = True
                return None
            length = int(self.headers.get("Content-Length") or 0)
            if length > proxy.max_body:
                self._send_error(413, "EntityTooLarge", f"faultproxy holds at most {proxy.max_body} bytes")
                self.close_connection = True
                return None
            return self.rfile.read(length) if length else b""

        def _forward(self, request: Request, headers: dict[str, str], body: bytes) -> None:
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers.items():
                    upstream.putheader(name, value)
                upstream.endheaders(body or None)
                response = upstream.getresponse()
                data = response.read()
                status, answer = response.status, response.getheaders()
                if proxy.interceptor is not None:
                    status, answer, data = proxy.interceptor.after(request, headers, status, answer, data)
                self.send_response_only(status, None if status != response.status else response.reason)
                for name, value in answer:
                    lower = name.lower()
                    if lower in _HOP_BY_HOP or (lower == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD" and data:
                    self.wfile.write(data)
            finally:
                upstream.close()

        def _send_error(self, status: int, code: str, message: str) -> None:
            payload = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>faultproxy</RequestId></Error>"
            ).encode()
            self.send_response_only(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _reset(self) -> None:
            # SO_LINGER 0 then close: the peer gets a TCP RST, as from a crashed middlebox.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            try:
                self.connection.close()
            except OSError:
                pass

    return Handler

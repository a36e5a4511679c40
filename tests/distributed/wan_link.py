"""A loopback TCP proxy with a bandwidth cap: the WAN link between the copy workers and the
Scaleway database, for the distributed Postgres test.

The workers run close to the source (docs/deployment.md), so a table copy's bytes cross the
internet on their way to the target. On one machine the copy of a few MB is over in a
fraction of a second, too fast to kill a worker in the middle of it; behind this link it
takes seconds, with the same few MB of data (the CI budget pays for seconds of waiting,
not for hundreds of MB of rows generated, copied and diffed).

Each accepted connection is forwarded to ``upstream_port``; the client -> server direction
(a ``COPY FROM STDIN`` stream) is capped at
``bytes_per_second`` per connection, the answers come back uncapped. When either end closes
or dies, both sockets are closed: a ``kill -9`` of the client reaches the server as a lost
connection and its open transaction is rolled back there. As from a real host whose
process died, what the client had already handed to its kernel (its socket's send buffer)
still arrives first, at the link's pace: a COPY may go on for a few seconds after its
client is gone, and then fails.
"""

from __future__ import annotations

import socket
import threading
import time

_CHUNK = 16 * 1024
# Socket buffers of a few chunks: what is "in flight" stays small, as on a slow link. With
# loopback's default (MBs), a killed client's last MBs would still trickle to the server
# for seconds after its death.
_BUFFER = 4 * _CHUNK


class WanLink:
    def __init__(self, upstream_port: int, bytes_per_second: int, host: str = "127.0.0.1"):
        self.upstream = (host, upstream_port)
        self.bytes_per_second = bytes_per_second
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)  # accepted sockets inherit it
        self._listener.bind((host, 0))
        self._listener.listen()
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> WanLink:
        threading.Thread(target=self._accept, name="wan-link-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                _close(sock)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            try:
                server.settimeout(10)
                server.connect(self.upstream)
            except OSError:
                _close(client)
                _close(server)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, capped: bool) -> None:
        free_at = time.monotonic()  # when the capped link has sent what it was given so far
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    return
                sink.sendall(data)
                if capped:
                    # Paced chunk by chunk: an idle connection earns no burst.
                    now = time.monotonic()
                    free_at = max(free_at, now) + len(data) / self.bytes_per_second
                    time.sleep(max(0.0, free_at - now))
        except OSError:
            return
        finally:
            # One end gone (closed, reset, or its process killed): the other end learns it now.
            with self._lock:
                self._open.difference_update((source, sink))
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

"""Syslog stream receivers that misbehave on purpose, on loopback, for the fault tests
(tests/integration/test_faults_*).

``StreamReceiver`` listens on 127.0.0.1:<free port> (TCP, or TLS with a context the test can swap) and serves each
connection in a thread of its own by its current ``mode``:

- ``read``: reads RFC 6587 octet-counted frames (``LEN SP MSG``) and keeps every MSG, in arrival order;
- ``hold``: accepts and never reads: the agent's writes fill the socket buffers and then block;
- ``reset``: accepts and closes at once with ``SO_LINGER`` 0, so the client's next write meets a TCP RST.

Over TLS a handshake the client refuses (an expired certificate, an unknown CA) is counted in ``handshake_errors``
with the server's side of the error. ``set_tls(context)`` changes the certificate for the next connections and
``drop_clients()`` closes the current ones, as a receiver restarted with a new certificate does.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path

MODES = ("read", "hold", "reset")


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class StreamReceiver:
    def __init__(self, mode: str = "read", tls: ssl.SSLContext | None = None) -> None:
        assert mode in MODES
        self.mode = mode
        self.tls = tls
        self.lock = threading.Lock()
        self.messages: list[bytes] = []
        self.connections = 0
        self.resets = 0
        self.handshake_errors: list[str] = []
        self.cert_name = "first"  # names the TLS context in use (set_tls)
        self.served: list[str] = []  # per TLS session that completed its handshake: the context's name
        self._clients: list[socket.socket] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="StreamReceiver", daemon=True)

    def start(self) -> StreamReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self.drop_clients()

    # --- what tests change and read ---

    def set_mode(self, mode: str) -> None:
        assert mode in MODES
        with self.lock:
            self.mode = mode

    def set_tls(self, ctx: ssl.SSLContext, name: str) -> None:
        with self.lock:
            self.tls, self.cert_name = ctx, name

    def drop_clients(self) -> None:
        """Close every open connection (a receiver restarting); the client dials again."""
        with self.lock:
            clients, self._clients = self._clients, []
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def received(self) -> list[bytes]:
        with self.lock:
            return list(self.messages)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    # --- serving ---

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._sock], [], [], 0.1)
            if not readable:
                continue
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with self.lock:
                self.connections += 1
                mode, tls, name = self.mode, self.tls, self.cert_name
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # RST instead of FIN
                with self.lock:
                    self.resets += 1
                continue
            with self.lock:
                self._clients.append(conn)
            if mode == "hold":
                continue  # accepted, never read: the socket stays open until drop_clients or stop
            threading.Thread(target=self._serve, args=(conn, tls, name), name="StreamReceiver conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket, tls: ssl.SSLContext | None, name: str) -> None:
        sock: socket.socket = conn
        if tls is not None:
            try:
                conn.settimeout(10)
                sock = tls.wrap_socket(conn, server_side=True)
                sock.settimeout(None)
                assert isinstance(sock, ssl.SSLSocket)
                with self.lock:
                    self._clients.append(sock)
                    self.served.append(name)
            except (OSError, ssl.SSLError) as exc:
                with self.lock:
                    self.handshake_errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                return
        self._read_frames(sock.recv)
        with contextlib.suppress(OSError):
            sock.close()

    def _read_frames(self, recv: Callable[[int], bytes]) -> None:
        buf = b""
        while True:
            try:
                chunk = recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            messages = []
            pos = 0
            while True:
                space = buf.find(b" ", pos, pos + 12)
                if space < 0:
                    break
                length = int(buf[pos:space])
                end = space + 1 + length
                if end > len(buf):
                    break
                messages.append(buf[space + 1:end])
                pos = end
            buf = buf[pos:]
            if messages:
                with self.lock:
                    self.messages.extend(messages)


def rss_bytes(pid: int) -> int:
    """A process's resident set size (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for {pid}")

"""Syslog transports: TCP and TLS (RFC 6587 / 5425) and RELP (rsyslog's reliable protocol); UDP (RFC 5426) is in udp.py.

They run in a worker thread with blocking sockets and timeouts. ``send`` returns only when the
batch is as delivered as the protocol can tell, and raises otherwise so the pipeline retries:
- UDP (exporters.syslog.udp): handed to the kernel (no acknowledgement exists);
- TCP/TLS: written *and* acknowledged by the receiver's kernel (the socket's unacknowledged send
  queue, SIOCOUTQ, drained to zero); a connection that breaks before that is re-dialled and the
  batch sent again (at-least-once);
- RELP: every message answered ``200`` by the receiver; after a reconnect only the messages
  without an answer are sent again.
"""

from __future__ import annotations

import contextlib
import fcntl
import select
import socket
import ssl
import struct
import termios
import time
from dataclasses import dataclass, field

from agent.params import client_tls_context

SIOCOUTQ = termios.TIOCOUTQ
CONNECT_TIMEOUT = 5.0
ACK_TIMEOUT = 30.0


class TransportError(ConnectionError):
    pass


def unacked_bytes(sock: socket.socket) -> int:
    """Bytes written to a TCP socket that the peer's kernel has not acknowledged yet."""
    raw = fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


@dataclass
class TlsOptions:
    ca: str = ""
    cert: str = ""
    key: str = ""
    verify: bool = True
    server_name: str = ""

    def context(self) -> ssl.SSLContext:
        """The client context; ``ValueError`` naming the option and the file when a TLS file is missing or bad."""
        ctx = client_tls_context(self.ca, self.cert, self.key)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 5425 §4.2
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class StreamTransport:
    """TCP or TLS with octet-counting or LF framing already applied to the payload."""

    def __init__(self, host: str, port: int, tls: TlsOptions | None = None) -> None:
        self.host, self.port = host, port
        self.tls = tls
        self._ctx = tls.context() if tls else None
        self._sock: socket.socket | None = None
        self._raw: socket.socket | None = None

    def _connect(self) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock: socket.socket = raw
        if self._ctx is not None:
            assert self.tls is not None
            started = time.monotonic()
            sock = self._ctx.wrap_socket(raw, server_hostname=self.tls.server_name or self.host)
            try:
                self._confirm_session(sock, time.monotonic() - started)
            except Exception:
                sock.close()
                raise
        sock.settimeout(ACK_TIMEOUT)
        # ``wrap_socket`` detaches ``raw`` (its fileno becomes -1): the TLS socket owns the descriptor now,
        # and SIOCOUTQ on it counts the TLS bytes the receiver's kernel has not acknowledged.
        self._raw = sock
        return sock

    @staticmethod
    def _confirm_session(sock: ssl.SSLSocket, handshake: float) -> None:
        """TLS 1.3 ends the client's handshake before the server has checked the client's certificate: a
        server that refuses it answers with an alert one round trip later, when its kernel may already have
        acknowledged records written meanwhile (counted as delivered, then dropped). So wait that round trip
        (twice the handshake's time plus 50 ms, at most 1 s, once per connection) for an alert or a close.
        TLS 1.2 checks the client certificate inside the handshake."""
        if sock.version() not in (None, "TLSv1.3"):
            return
        readable, _, _ = select.select([sock], [], [], min(1.0, 2 * handshake + 0.05))
        if readable and StreamTransport._peer_closed(sock):  # an alert raises ssl.SSLError here
            raise TransportError("the TLS receiver closed the session after the handshake "
                                 "(client certificate missing or refused?)")

    def send(self, payload: bytes) -> None:
        if self._sock is None:
            self._sock = self._connect()
        sock, raw = self._sock, self._raw
        assert raw is not None
        try:
            sock.sendall(payload)
            self._wait_acknowledged(raw)
        except Exception:
            self.close()  # whatever broke, the stream's state is unknown: dial again and resend the batch
            raise

    @staticmethod
    def _wait_acknowledged(raw: socket.socket) -> None:
        deadline = time.monotonic() + ACK_TIMEOUT
        delay = 0.0005
        while unacked_bytes(raw) > 0:
            if time.monotonic() > deadline:
                raise TransportError(f"receiver did not acknowledge within {ACK_TIMEOUT:.0f}s")
            readable, _, _ = select.select([raw], [], [], delay)
            if readable and StreamTransport._peer_closed(raw):
                raise TransportError("receiver closed the connection")
            delay = min(delay * 2, 0.05)

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """A syslog receiver never talks back: readable means it closed (FIN) or reset the connection,
        or, over TLS, that it sent protocol records (TLS 1.3 session tickets, close_notify)."""
        if isinstance(sock, ssl.SSLSocket):
            # SSLSocket.recv takes no flags (no MSG_PEEK): read without blocking, which consumes the
            # records; ``b""`` is close_notify or EOF, and a receiver's application data is ignored.
            sock.setblocking(False)
            try:
                return sock.recv(65536) == b""
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return False
            finally:
                sock.settimeout(ACK_TIMEOUT)
        return sock.recv(1, socket.MSG_PEEK) == b""

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._raw = None


@dataclass
class RelpBatch:
    """Messages of one batch and which of them the receiver has answered (kept across retries)."""

    messages: list[bytes]
    acked: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.acked:
            self.acked = [False] * len(self.messages)


class RelpError(TransportError):
    pass


class RelpTransport:
    """RELP client (rsyslog's imrelp): ``TXNR SP COMMAND SP DATALEN [SP DATA] LF`` frames, a window of
    outstanding messages, and a ``rsp 200`` per message before it counts as delivered."""

    WINDOW = 1024

    def __init__(self, host: str, port: int, tls: TlsOptions | None = None) -> None:
        self.stream = StreamTransport(host, port, tls)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._txnr = 0

    def _frame(self, command: bytes, data: bytes) -> tuple[int, bytes]:
        self._txnr = self._txnr % 999_999_999 + 1
        if data:
            return self._txnr, b"%d %s %d %s\n" % (self._txnr, command, len(data), data)
        return self._txnr, b"%d %s 0\n" % (self._txnr, command)

    def _read_frame(self) -> tuple[int, bytes, bytes]:
        assert self._sock is not None
        while True:
            head_end = -1
            parts = self._buf.split(b" ", 3)
            if len(parts) >= 3 and parts[2].split(b"\n")[0].isdigit():
                txnr, command = parts[0], parts[1]
                length_field = parts[2].split(b"\n")[0]
                length = int(length_field)
                head = len(txnr) + len(command) + len(length_field) + 2
                head_end = head + (1 + length if length else 0)
                if len(self._buf) >= head_end + 1:
                    data = self._buf[head + 1 : head_end] if length else b""
                    if self._buf[head_end : head_end + 1] != b"\n":
                        raise RelpError("malformed RELP frame from receiver")
                    self._buf = self._buf[head_end + 1 :]
                    if not txnr.isdigit():  # the receiver's fault, not the sink's: a reconnect and a retry
                        raise RelpError(f"malformed RELP frame from receiver: transaction number {txnr[:20]!r}")
                    return int(txnr), command, data
            chunk = self._sock.recv(65536)
            if not chunk:
                raise RelpError("receiver closed the RELP session")
            self._buf += chunk

    def _open(self) -> None:
        self._sock = self.stream._sock = self.stream._connect()
        self._buf = b""
        self._txnr = 0
        offer = b"relp_version=0\nrelp_software=lookout\ncommands=syslog"
        txnr, frame = self._frame(b"open", offer)
        self._sock.sendall(frame)
        rtxnr, command, data = self._read_frame()
        if rtxnr != txnr or command != b"rsp" or not data.startswith(b"200"):
            raise RelpError(f"RELP open refused: {data[:200]!r}")

    def send(self, batch: RelpBatch) -> None:
        try:
            if self._sock is None:
                self._open()
            self._send(batch)
        except (OSError, ssl.SSLError, ValueError):
            self.close()
            raise

    def _send(self, batch: RelpBatch) -> None:
        assert self._sock is not None
        pending: dict[int, int] = {}  # txnr -> message index
        todo = [i for i, done in enumerate(batch.acked) if not done]
        pos = 0
        while pos < len(todo) or pending:
            frames = []
            while pos < len(todo) and len(pending) < self.WINDOW:
                txnr, frame = self._frame(b"syslog", batch.messages[todo[pos]])
                pending[txnr] = todo[pos]
                frames.append(frame)
                pos += 1
            if frames:
                self._sock.sendall(b"".join(frames))
            txnr, command, data = self._read_frame()
            if command == b"serverclose":
                raise RelpError("receiver closed the RELP session")
            if command != b"rsp" or txnr not in pending:
                continue
            index = pending.pop(txnr)
            if data.startswith(b"200"):
                batch.acked[index] = True
            else:
                raise RelpError(f"receiver refused a message: {data[:200]!r}")

    def close(self) -> None:
        if self._sock is not None:
            try:
                _, frame = self._frame(b"close", b"")
                self._sock.sendall(frame)
            except OSError:
                pass
        self.stream.close()
        self._sock = None

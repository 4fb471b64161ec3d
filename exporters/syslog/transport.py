"""Syslog transports: UDP (RFC 5426), TCP and TLS (RFC 6587 / 5425), and RELP (rsyslog's reliable protocol).

They run in a worker thread with blocking sockets and timeouts. ``send`` returns only when the
batch is as delivered as the protocol can tell, and raises otherwise so the pipeline retries:
- UDP: handed to the kernel (no acknowledgement exists);
- TCP/TLS: written *and* acknowledged by the receiver's kernel (the socket's unacknowledged send
  queue, SIOCOUTQ, drained to zero); a connection that breaks before that is re-dialled and the
  batch sent again (at-least-once);
- RELP: every message answered ``200`` by the receiver; after a reconnect only the messages
  without an answer are sent again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import select
import socket
import ssl
import struct
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
        ctx = ssl.create_default_context(cafile=self.ca or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 5425 §4.2
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key or None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


# Linux: IP_RECVERR / IPV6_RECVERR (not in Python's socket module before 3.12) and struct sock_extended_err.
IP_RECVERR = 11
IPV6_RECVERR = 25
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
SEND_TIMEOUT = 5.0  # SO_SNDTIMEO: a send that finds the socket buffer full this long fails with EAGAIN
NOBUFS_PATIENCE = 1.0  # ENOBUFS (a full device queue): retry the datagram for this long before raising

# Pacing for receivers that cannot be watched: a rsyslog (imudp, default 208 KiB receive buffer: ~160 datagrams
# of 200 bytes) drops what arrives while its socket buffer is full; locally it lost nothing at 20,000/s and lost
# some at 40,000/s (bench/bench_udp_syslog.py, BENCHMARKS.md section 8).
UDP_RATE = 20_000.0  # datagrams per second on average
UDP_BURST = 64  # datagrams sent back to back at most
TOKEN_SLACK = 1e-6


class Pacer:
    """Token bucket: on average at most ``rate`` datagrams per second, at most ``burst`` back to back.

    ``take(want)`` blocks until the bucket holds enough tokens and returns how many datagrams (1..want) may
    go now. An empty bucket is refilled to ``step`` tokens (a quarter of the burst) before it gives any, so
    a paced stream is groups of ``step`` datagrams with one sleep between them, not a sleep per datagram
    (a sleep shorter than ~100 us costs more than it waits). The bucket is kept across batches: back-to-back
    batches share one budget. ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = float(rate), int(burst)
        self.step = max(1, self.burst // 4)
        self.clock, self.sleep = clock, sleep
        self.tokens = float(self.burst)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, want: int) -> int:
        self._refill()
        if self.tokens < 1 - TOKEN_SLACK:
            need = min(want, self.step)
            # The slack: a sleep of exactly the missing time can refill to a hair below ``need`` (floating
            # point), and sleeping for that hair again and again would spin.
            while self.tokens < need - TOKEN_SLACK:
                self.sleep((need - self.tokens) / self.rate)
                self._refill()
        n = min(want, int(self.tokens + TOKEN_SLACK))
        self.tokens -= n
        return n


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_SKMEMINFO = 7
RECEIVER_PATIENCE = 5.0  # a loopback receiver that reads nothing for this long: raise, the pipeline retries


class LoopbackReceiver:
    """How full the socket buffer of a receiver on this host's loopback is (Linux sock_diag, ~5 us a query).

    Only for a loopback peer in our network namespace: it is the socket our datagrams land in (looked up by
    their 4-tuple, as the kernel delivers them). A remote receiver's buffer cannot be seen from here."""

    def __init__(self, sock: socket.socket) -> None:
        local, peer = sock.getsockname(), sock.getpeername()
        family = sock.family
        addr = lambda a: socket.inet_pton(family, a).ljust(16, b"\0")  # noqa: E731
        req = struct.pack("=BBBBI", family, socket.IPPROTO_UDP, 1 << (INET_DIAG_SKMEMINFO - 1), 0, 0xFFFFFFFF)
        req += struct.pack("!HH", local[1], peer[1]) + addr(local[0]) + addr(peer[0])
        req += struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # any interface, no cookie
        self._request = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, 1, 1, 0) + req  # NLM_F_REQUEST
        self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)

    @classmethod
    def open(cls, sock: socket.socket) -> LoopbackReceiver | None:
        """For a connected UDP socket whose peer is a loopback address, on Linux, when sock_diag answers."""
        if not sys.platform.startswith("linux") or not ipaddress.ip_address(sock.getpeername()[0]).is_loopback:
            return None
        try:
            receiver = cls(sock)
            if receiver.fill() is not None:
                return receiver
            receiver.close()
        except (OSError, ValueError, struct.error):
            pass
        return None

    def fill(self) -> tuple[int, int] | None:
        """(bytes queued, buffer size) of the receiving socket, or None when no socket receives on that port."""
        self._nl.send(self._request)
        data = self._nl.recv(8192)
        length, kind = struct.unpack_from("=IH", data)
        if kind != SOCK_DIAG_BY_FAMILY:
            return None  # NLMSG_ERROR: ENOENT, nobody listens (the ICMP errors will say so)
        off = 16 + 72  # nlmsghdr, inet_diag_msg
        while off + 4 <= length:
            alen, atype = struct.unpack_from("=HH", data, off)
            if alen < 4:
                break
            if atype == INET_DIAG_SKMEMINFO and alen >= 12:
                rmem_alloc, rcvbuf = struct.unpack_from("=II", data, off + 4)
                return rmem_alloc, rcvbuf
            off += (alen + 3) & ~3
        return None

    def close(self) -> None:
        self._nl.close()


class UdpTransport:
    """RFC 5426: one message per datagram on a connected UDP socket, paced by a token bucket (``Pacer``).

    ``send`` returns once every datagram of the batch was handed to the kernel; a datagram the kernel did not
    take (ENOBUFS for longer than ``NOBUFS_PATIENCE``, EAGAIN after ``SEND_TIMEOUT`` with the send buffer
    full, ECONNREFUSED and other errors an earlier ICMP message left on the socket) raises ``TransportError``
    and the pipeline retries the batch: the retry (the same list) resumes at that datagram, so the
    datagrams already sent are not sent twice.

    A receiver on this host's loopback is watched (``LoopbackReceiver``, Linux): a group waits while its
    socket buffer is too full to take it, so a receiver starved of CPU loses nothing; one that reads nothing
    for ``RECEIVER_PATIENCE`` makes ``send`` raise (the pipeline retries, as for TCP). ``rate``: None (the
    default) paces at ``UDP_RATE`` only a receiver that cannot be watched (remote, or no sock_diag); a number
    paces every receiver at that rate, 0 none.

    ``refused`` counts datagrams that are lost and will not be sent again (read it at any time; it only grows):
    - datagrams the kernel sent and an ICMP error (port or host unreachable, ...) then reported undelivered.
      On Linux every such error is read from the socket's error queue (IP_RECVERR), one per datagram; a
      loopback receiver's kernel reports every one, a remote host's ICMP replies are rate-limited, so the
      count is a lower bound there. Elsewhere an ECONNREFUSED from ``send`` counts one.
    - datagrams the kernel refuses for good (EMSGSIZE): skipped, so they cannot block the route.
    Drops in the receiver's own socket buffer are invisible to the sender and are not counted.
    """

    def __init__(self, host: str, port: int, rate: float | None = None, burst: int = UDP_BURST,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.address = (host, port)
        self.rate = rate
        self.pacer = Pacer(UDP_RATE if rate is None else rate, burst, clock, sleep) if rate != 0 else None
        self.clock, self.sleep = clock, sleep
        self.refused = 0
        self._sock: socket.socket | None = None
        self._receiver: LoopbackReceiver | None = None
        self._recverr = False
        # The batch a failed send stopped in and the index of the first datagram not handed to the kernel.
        self._resume: tuple[list[bytes], int] | None = None

    def _connect(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            # Blocking: a full send buffer waits (a NIC slower than the pacing) for at most SEND_TIMEOUT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(SEND_TIMEOUT), int(SEND_TIMEOUT % 1 * 1e6)))
            self._recverr = False
            if sys.platform.startswith("linux"):
                # Without it Linux drops a datagram its device queue refused and reports success (only
                # /proc/net/snmp's SndbufErrors counts it); with it send raises ENOBUFS, and every ICMP error
                # is queued on the socket, so each refused datagram can be counted.
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                self._recverr = True
            sock.connect(self.address)  # connected: ICMP port unreachable surfaces as an error
        except OSError:
            sock.close()
            raise
        return sock

    def send(self, messages: list[bytes]) -> None:
        i = 0
        if self._resume is not None and self._resume[0] is messages:
            i = self._resume[1]
        self._resume = (messages, i)  # kept while a connect fails too: its retry must not start over
        if self._sock is None:
            self._sock = self._connect()
            self._receiver = LoopbackReceiver.open(self._sock)
        sock = self._sock
        try:
            # rate=None: a loopback receiver whose buffer is watched needs no pacing (and gets ~4x the lines/s).
            pacer = None if self.rate is None and self._receiver is not None else self.pacer
            while i < len(messages):
                n = pacer.take(len(messages) - i) if pacer is not None else len(messages) - i
                n = self._room(messages, i, n)
                if self._drain_errors(sock):
                    raise TransportError("the receiver's host answered with ICMP errors (port unreachable?): "
                                         f"{self.refused} datagram(s) refused so far")
                for msg in messages[i : i + n]:
                    self._send_one(sock, msg)
                    i += 1
            self._drain_errors(sock)
            self._resume = None
        except OSError as exc:
            self._resume = (messages, i)
            with contextlib.suppress(OSError):
                self._drain_errors(sock)
            self.close()
            if isinstance(exc, TransportError):
                raise
            raise TransportError(f"UDP send to {self.address[0]}:{self.address[1]} failed at datagram "
                                 f"{i + 1} of {len(messages)}: {exc}") from exc

    def _room(self, messages: list[bytes], i: int, n: int) -> int:
        """How many of the ``n`` datagrams from ``messages[i]`` a loopback receiver's socket buffer has room for,
        once it has room for one: up to three quarters of the buffer, each datagram costing twice its size
        plus 1 KiB (the kernel charges a 200-byte datagram 1,280 bytes on loopback). Waits while the receiver
        reads; raises ``TransportError`` when it has read nothing for ``RECEIVER_PATIENCE``."""
        receiver = self._receiver
        if receiver is None:
            return n
        deadline = 0.0
        last = -1
        delay = 0.0005
        while True:
            fill = receiver.fill()
            if fill is None:
                return n  # nobody receives: what is sent is refused and counted
            used, size = fill
            budget = size * 3 // 4 - used
            k = 0
            while k < n:
                budget -= 2 * len(messages[i + k]) + 1024
                if budget < 0:
                    break
                k += 1
            if k or used == 0:
                return max(k, 1)
            now = self.clock()
            if used != last:  # it read something (or got more from another sender): wait on
                last, deadline = used, now + RECEIVER_PATIENCE
            elif now >= deadline:
                raise TransportError(f"the receiver on {self.address[0]}:{self.address[1]} has read nothing for "
                                     f"{RECEIVER_PATIENCE:.0f}s (its socket buffer holds {used} of {size} bytes)")
            self.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _send_one(self, sock: socket.socket, msg: bytes) -> None:
        deadline = 0.0
        delay = 0.0005
        while True:
            try:
                sock.send(msg)
                return
            except ConnectionRefusedError:
                if not self._recverr:
                    self.refused += 1  # an earlier datagram; with IP_RECVERR the error queue counts it
                raise
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    self.refused += 1  # refused for good: skip it rather than block the route
                    return
                if exc.errno != errno.ENOBUFS:
                    raise
                now = self.clock()
                deadline = deadline or now + NOBUFS_PATIENCE
                if now >= deadline:
                    raise
                self.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _drain_errors(self, sock: socket.socket) -> int:
        """Read the socket's error queue (IP_RECVERR); count and return the ICMP errors in it (each reports one
        datagram undelivered). Never blocks: an empty queue answers EAGAIN."""
        if not self._recverr:
            return 0
        found = 0
        while True:
            try:
                _, ancdata, _, _ = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            for _level, _type, data in ancdata:
                if len(data) >= 5 and data[4] in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                    found += 1
        self.refused += found
        return found

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


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

"""The syslog+udp transport (RFC 5426): one message per datagram, paced for receivers that cannot be watched, a
loopback receiver's socket buffer watched instead (Linux sock_diag), a failed batch resumed where it stopped, and
the datagrams lost for good counted (see ``UdpTransport``)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import sys
import time
from collections.abc import Callable

from exporters.syslog.transport import TransportError

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

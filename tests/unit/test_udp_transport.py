"""The syslog UDP transport without rsyslog: the token bucket on a fake clock, the pacing as a real loopback
receiver sees it (datagrams counted between the transport's pauses), resuming a failed batch without
duplicates, and what ``refused`` counts (ICMP port unreachable from a closed loopback port, EMSGSIZE)."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator

import pytest

from exporters.syslog.sink import SyslogSink
from exporters.syslog.transport import TransportError
from exporters.syslog.udp import UDP_BURST, UDP_RATE, LoopbackReceiver, Pacer, UdpTransport


class FakeTime:
    """A clock that only moves when the code under test sleeps (by what it asked, plus ``overshoot``)."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.now = 1000.0
        self.overshoot = overshoot
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds + self.overshoot


def drive(pacer: Pacer, total: int) -> list[int]:
    """Take ``total`` datagrams in the largest grants the pacer gives; the grant sizes."""
    grants = []
    while total:
        n = pacer.take(total)
        assert 1 <= n <= total
        grants.append(n)
        total -= n
    return grants


# --- Pacer ------------------------------------------------------------------------------------------------


def test_pacer_gives_the_burst_at_once_then_groups_at_the_rate() -> None:
    t = FakeTime()
    pacer = Pacer(rate=1000, burst=64, clock=t.clock, sleep=t.sleep)
    assert pacer.take(10_000) == 64 and t.sleeps == []  # a full bucket: the burst goes without a pause
    grants = drive(pacer, 16 * 100)
    assert set(grants) == {16}  # then a quarter of the burst per pause, never one datagram per sleep
    assert len(t.sleeps) == 100
    assert t.now - 1000.0 == pytest.approx(1.6)  # 1600 datagrams beyond the burst at 1000/s


@pytest.mark.parametrize("overshoot", [0.0, 0.0003, 0.004])
def test_pacer_never_exceeds_rate_times_time_plus_burst(overshoot: float) -> None:
    """Sleeps that overshoot (a busy machine) earn tokens, but never more than the burst."""
    t = FakeTime(overshoot)
    pacer = Pacer(rate=20_000, burst=64, clock=t.clock, sleep=t.sleep)
    sent = 0
    for n in drive(pacer, 50_000):
        sent += n
        assert sent <= 64 + 20_000 * (t.now - 1000.0) + 1e-6
    # ... and no slower than the rate, or than a full bucket per (overshoot + a group's time) when the overshoot
    # alone is worth more than the burst.
    achieved = (50_000 - 64) / (t.now - 1000.0)
    assert achieved >= 0.99 * min(20_000, 64 / (overshoot + 16 / 20_000))


def test_pacer_refills_to_the_burst_only_after_idling() -> None:
    t = FakeTime()
    pacer = Pacer(rate=1000, burst=64, clock=t.clock, sleep=t.sleep)
    drive(pacer, 64)
    t.now += 3600  # an hour idle
    assert pacer.take(10_000) == 64
    assert pacer.take(10_000) == 16 and len(t.sleeps) == 1


def test_pacer_rejects_a_rate_or_burst_below_one() -> None:
    with pytest.raises(ValueError):
        Pacer(rate=0, burst=10)
    with pytest.raises(ValueError):
        Pacer(rate=10, burst=0)


# --- UdpTransport on loopback ----------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket, at_most: int = 1 << 30) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < at_most:
        try:
            out.append(sock.recv(70_000))
        except BlockingIOError:
            break
    return out


def test_udp_transport_paces_what_the_receiver_gets(receiver: socket.socket) -> None:
    """Between two of the transport's pauses the receiver gets at most the burst (the first time) or the
    group; all datagrams arrive in order. The fake sleep reads what arrived so far (loopback delivers
    during ``send``)."""
    t = FakeTime()
    arrived: list[bytes] = []
    per_pause: list[int] = []

    def sleep(seconds: float) -> None:
        got = drain(receiver)
        per_pause.append(len(got))
        arrived.extend(got)
        t.sleep(seconds)

    transport = UdpTransport(*receiver.getsockname(), rate=5000, burst=40, clock=t.clock, sleep=sleep)
    messages = [b"<14>1 - h app - - - line %d" % i for i in range(1000)]
    transport.send(messages)
    arrived.extend(drain(receiver))
    assert arrived == messages
    assert per_pause[0] == 40 and set(per_pause[1:]) == {10}
    assert t.now - 1000.0 == pytest.approx(960 / 5000)
    assert transport.refused == 0
    # The bucket is shared by the next batch: it starts empty, so the first group waits too.
    sleeps = len(t.sleeps)
    transport.send(messages[:10])
    assert len(t.sleeps) == sleeps + 1
    transport.close()


def test_udp_transport_rate_zero_sends_back_to_back(receiver: socket.socket) -> None:
    t = FakeTime()
    transport = UdpTransport(*receiver.getsockname(), rate=0, clock=t.clock, sleep=t.sleep)
    transport.send([b"m%d" % i for i in range(500)])
    assert len(drain(receiver)) == 500 and t.sleeps == []
    transport.close()


def closed_port() -> tuple[str, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    sock.close()
    return address


def test_refused_counts_datagrams_a_closed_port_refused_and_the_retry_resumes() -> None:
    """A loopback port nobody listens on answers every datagram with ICMP port unreachable. ``send`` raises
    (the pipeline retries) and counts the refused datagrams; once a receiver listens, the retry of the same
    batch sends only what was not handed to the kernel yet: received + refused == sent, no duplicates."""
    host, port = closed_port()
    transport = UdpTransport(host, port, rate=0)
    messages = [b"line %d" % i for i in range(50)]
    with pytest.raises(TransportError):
        transport.send(messages)
    refused = transport.refused
    assert refused >= 1
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener.bind((host, port))
        listener.setblocking(False)
        transport.send(messages)
        got = drain(listener)
    finally:
        listener.close()
    assert len(got) == len(set(got))
    assert set(got) | set(messages[:refused]) == set(messages)  # the first `refused` went to the closed port
    assert len(got) + transport.refused == len(messages)
    assert transport.refused == refused
    transport.close()


def test_a_new_batch_after_a_failed_one_starts_at_its_first_datagram() -> None:
    host, port = closed_port()
    transport = UdpTransport(host, port, rate=0)
    with pytest.raises(TransportError):
        transport.send([b"a", b"b", b"c"])
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener.bind((host, port))
        listener.setblocking(False)
        transport.send([b"x", b"y"])  # another list: nothing of the failed batch's position applies
        assert drain(listener) == [b"x", b"y"]
    finally:
        listener.close()
        transport.close()


def test_a_datagram_the_kernel_refuses_for_good_is_skipped_and_counted(receiver: socket.socket) -> None:
    transport = UdpTransport(*receiver.getsockname(), rate=0)
    transport.send([b"before", b"x" * 70_000, b"after"])  # over 65507: EMSGSIZE
    assert drain(receiver) == [b"before", b"after"]
    assert transport.refused == 1
    transport.close()


class StubSocket:
    """``send`` fails with ``errors`` (errno values) first, then succeeds."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> int:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, errno.errorcode[code])
        self.sent.append(data)
        return len(data)

    def close(self) -> None:
        self.closed = True


def stubbed(errors: list[int]) -> tuple[UdpTransport, StubSocket, FakeTime]:
    t = FakeTime()
    transport = UdpTransport("127.0.0.1", 9, rate=0, clock=t.clock, sleep=t.sleep)
    stub = StubSocket(errors)
    transport._sock = stub  # type: ignore[assignment]
    return transport, stub, t


def test_enobufs_is_retried_in_place_then_raised_for_the_pipeline() -> None:
    transport, stub, t = stubbed([errno.ENOBUFS] * 3)
    transport.send([b"a", b"b"])
    assert stub.sent == [b"a", b"b"] and len(t.sleeps) == 3 and transport.refused == 0

    transport, stub, t = stubbed([errno.ENOBUFS] * 100_000)
    with pytest.raises(TransportError, match="datagram 1 of 2"):
        transport.send([b"a", b"b"])
    assert 0.9 <= t.now - 1000.0 <= 1.1  # NOBUFS_PATIENCE, then the pipeline's backoff takes over
    assert stub.closed and transport.refused == 0


def test_eagain_from_a_full_send_buffer_raises_and_counts_nothing() -> None:
    transport, stub, _ = stubbed([errno.EAGAIN])
    messages = [b"a", b"b"]
    with pytest.raises(TransportError):
        transport.send(messages)
    assert transport.refused == 0 and stub.sent == []


def test_the_sink_exposes_the_transports_refused_count() -> None:
    sink = SyslogSink("syslog+udp", "127.0.0.1", 9, {})
    assert sink.refused == 0
    assert isinstance(sink.transport, UdpTransport)
    sink.transport.refused = 7
    assert sink.refused == 7
    assert SyslogSink("syslog+tcp", "127.0.0.1", 9, {}).refused == 0


def test_a_retry_whose_connect_fails_keeps_the_batchs_position(monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = closed_port()
    transport = UdpTransport(host, port, rate=0)
    messages = [b"p%d" % i for i in range(20)]
    with pytest.raises(TransportError):
        transport.send(messages)
    refused = transport.refused

    def unreachable() -> socket.socket:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(transport, "_connect", unreachable)
    with pytest.raises(OSError):
        transport.send(messages)
    monkeypatch.undo()
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener.bind((host, port))
        listener.setblocking(False)
        transport.send(messages)
        got = drain(listener)
    finally:
        listener.close()
        transport.close()
    assert got == messages[refused:]


def small_receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # the kernel doubles it: ~12 datagrams
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def test_a_slow_loopback_receiver_loses_nothing() -> None:
    """Unpaced, into a receiver that holds ~12 datagrams and reads only while the transport waits: every
    datagram arrives, in order (without the watch on its buffer the kernel would drop ~98 % of them)."""
    receiver = small_receiver()
    t = FakeTime()
    arrived: list[bytes] = []

    def sleep(seconds: float) -> None:
        arrived.extend(drain(receiver, at_most=3))  # ... and slowly: at most 3 datagrams per wait
        t.sleep(seconds)

    try:
        transport = UdpTransport(*receiver.getsockname(), rate=0, clock=t.clock, sleep=sleep)
        messages = [b"<14>1 - h app - - - slow %04d " % i + b"x" * 150 for i in range(600)]
        transport.send(messages)
        arrived.extend(drain(receiver))
        transport.close()
    finally:
        receiver.close()
    assert arrived == messages


def test_a_loopback_receiver_that_reads_nothing_makes_send_raise_and_the_retry_resumes() -> None:
    receiver = small_receiver()
    t = FakeTime()
    try:
        transport = UdpTransport(*receiver.getsockname(), rate=0, clock=t.clock, sleep=t.sleep)
        messages = [b"stuck %04d " % i + b"x" * 150 for i in range(100)]
        with pytest.raises(TransportError, match="has read nothing"):
            transport.send(messages)
        assert 5.0 <= t.now - 1000.0 <= 5.1  # RECEIVER_PATIENCE on the clock
        got = drain(receiver)
        assert 1 <= len(got) < len(messages)
        while len(got) < len(messages):  # the pipeline's retries, the receiver reading in between
            with contextlib.suppress(TransportError):
                transport.send(messages)
            got += drain(receiver)
        transport.close()
    finally:
        receiver.close()
    assert got == messages and transport.refused == 0


def test_by_default_only_a_receiver_that_cannot_be_watched_is_paced(
        receiver: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [b"d%d" % i for i in range(500)]
    t = FakeTime()
    watched = UdpTransport(*receiver.getsockname(), clock=t.clock, sleep=t.sleep)
    watched.send(messages)  # loopback, buffer room for all: back to back
    assert t.sleeps == [] and drain(receiver) == messages
    watched.close()
    monkeypatch.setattr(LoopbackReceiver, "open", classmethod(lambda cls, sock: None))  # as for a remote one
    blind = UdpTransport(*receiver.getsockname(), clock=t.clock, sleep=t.sleep)
    blind.send(messages)
    assert drain(receiver) == messages
    assert t.now - 1000.0 == pytest.approx((500 - UDP_BURST) / UDP_RATE)
    blind.close()


def test_a_relp_answer_with_a_bad_transaction_number_is_a_retryable_transport_error() -> None:
    """The receiver's fault (a proxy, a wrong service) must not pass for a bug of the sink, which would stop the
    route for good: it is a RelpError, an OSError, which the pipeline retries after reconnecting."""
    import socket
    import threading

    from exporters.syslog.transport import RelpBatch, RelpError, RelpTransport

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(65536)  # the open offer
        conn.sendall(b"x1 rsp 6 200 OK\n")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    transport = RelpTransport("127.0.0.1", server.getsockname()[1])
    try:
        with pytest.raises(RelpError, match="transaction number"):
            transport.send(RelpBatch([b"<14>1 - - - - - - hello"]))
    finally:
        transport.close()
        server.close()
        thread.join(5)


def test_a_relp_message_answered_500_is_not_delivered_and_is_sent_again_alone() -> None:
    """rsp 500 for one message: it stays unacknowledged (a RelpError, retried by the pipeline after reconnecting, as
    rsyslog's omrelp retries); the message answered 200 is acknowledged and is not sent again."""
    import socket
    import threading

    from exporters.syslog.transport import RelpBatch, RelpError, RelpTransport

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(2)
    resent: list[bytes] = []

    def read_until(conn: socket.socket, count: int) -> bytes:
        data = b""
        while data.count(b"\n") < count:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def answer() -> None:
        conn, _ = server.accept()
        read_until(conn, 1)  # open
        conn.sendall(b"1 rsp 6 200 OK\n")
        read_until(conn, 2)  # txnr 2: "first", txnr 3: "second"
        conn.sendall(b"3 rsp 6 200 OK\n2 rsp 9 500 error\n")
        conn.close()
        again, _ = server.accept()
        read_until(again, 1)
        again.sendall(b"1 rsp 6 200 OK\n")
        resent.append(read_until(again, 1))
        again.sendall(b"2 rsp 6 200 OK\n")
        read_until(again, 1)  # close
        again.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    transport = RelpTransport("127.0.0.1", server.getsockname()[1])
    batch = RelpBatch([b"<14>1 - - - - - - first", b"<14>1 - - - - - - second"])
    try:
        with pytest.raises(RelpError, match="refused a message"):
            transport.send(batch)
        assert batch.acked == [False, True]
        transport.send(RelpBatch(batch.messages, batch.acked))
        assert batch.acked == [True, True]
        assert resent[0].endswith(b"first\n") and b"second" not in resent[0]
    finally:
        transport.close()
        server.close()
        thread.join(5)

"""The live log stream behind ``GET /logs`` (docs/API.md): one extra route whose sink fans records out to clients.

While at least one client is connected, a tap route reads every container's files from their end (files that appear
later from their head, as any route's) with checkpoints kept in memory only, and its sink hands each batch to every
subscription whose filter matches. A subscription is a bounded buffer: when a client reads too slowly, what does not
fit is dropped, counted (``lookout_stream_records_dropped_total``) and told to that client where the gap is; the
tap, and so the routes, never wait for a client. The tap stops ``LINGER`` seconds after the last client left.

``?tail=N`` reads the last N records of each matching container from its live file before the stream goes on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.logs.routes import RouteError, RouteFilter, parse_filter
from agent.model import ApiError, ContainerInfo, DeliveryResult, LogRecord, LogSource, Payload, Segment
from collectors.logs.checkpoints import CheckpointStore
from collectors.logs.decoders import CriDecoder, JsonFileDecoder
from collectors.logs.files import Tail
from collectors.logs.sources import SourceSpec

if TYPE_CHECKING:
    from agent.logs.pipeline import LogPipeline
    from agent.logs.runner import RouteRunner

log = structlog.get_logger("lookout.live")

LINGER = 10.0  # seconds the tap keeps reading after the last client left (a reconnecting client misses nothing)
BUFFER_BYTES = 8 << 20  # a client's buffer holds at most this much message text
MAX_CLIENTS = 32  # so that the buffers stay bounded together (32 x 8 MiB at most)
TAIL_BLOCK = 64 << 10


@dataclass(slots=True)
class TapPayload(Payload):
    segments: list[Segment] = field(default_factory=list)


class TapSink:
    """The tap route's sink: a batch is "delivered" once it is in every matching client's buffer (or counted as
    missed there)."""

    def __init__(self, hub: LogHub) -> None:
        self.hub = hub

    def encode(self, segments: Sequence[Segment]) -> Payload:
        return TapPayload(b"", sum(len(seg.records) for seg in segments), segments=list(segments))

    async def send(self, payload: Payload) -> DeliveryResult:
        assert isinstance(payload, TapPayload)
        self.hub.publish(payload.segments)
        return DeliveryResult(delivered=payload.count)

    async def close(self) -> None:
        pass


class LiveSubscription:
    """One client's bounded buffer."""

    def __init__(self, flt: RouteFilter, records: int, on_drop: Callable[[int], None],
                 on_close: Callable[[LiveSubscription], None]) -> None:
        self.filter = flt
        self.max_records = records
        self.ready = asyncio.Event()
        self.buffer: list[Segment] = []
        self.records = 0
        self.bytes = 0
        self.missed = 0
        self._on_drop = on_drop
        self._on_close = on_close
        self.closed = False
        self.ended = False  # the agent is stopping: the client's stream ends after what is buffered

    def offer(self, segments: Sequence[Segment], front: bool = False) -> None:
        flt = self.filter
        added = False
        for seg in segments:
            if not flt.match(seg.source.container):
                continue
            records = seg.records if not flt.streams else [r for r in seg.records if r[1] in flt.streams]
            if not records:
                continue
            size = sum(len(r[2]) for r in records)
            if not self.missed and self.records + len(records) <= self.max_records \
                    and self.bytes + size <= BUFFER_BYTES:
                keep = records
            elif self.missed:
                keep = []  # once records were missed nothing is buffered until the client took what it has:
                # the gap it is told of is at the end of its buffer
            else:
                keep = records[:self.max_records - self.records]
                size = 0
                for i, record in enumerate(keep):
                    if self.bytes + size + len(record[2]) > BUFFER_BYTES:
                        keep = keep[:i]
                        break
                    size += len(record[2])
            if len(keep) < len(records):
                self.missed += len(records) - len(keep)
                self._on_drop(len(records) - len(keep))
            if keep:
                part = seg if keep is seg.records else Segment(seg.source, keep)
                if front:
                    self.buffer.insert(0, part)
                else:
                    self.buffer.append(part)
                self.records += len(keep)
                self.bytes += size
                added = True
        if added or self.missed:
            self.ready.set()

    def take(self) -> tuple[list[Segment], int]:
        """What is buffered, then how many records were missed after it."""
        out, missed = self.buffer, self.missed
        self.buffer, self.records, self.bytes, self.missed = [], 0, 0, 0
        self.ready.clear()
        return out, missed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close(self)


class LogHub:
    """The subscriptions and the tap route that feeds them.

    ``pipeline()`` gives the agent's log pipeline (built on first use); ``make_tap(sink)`` a route runner for the
    tap's sink; ``scan()`` and ``lookup(spec)`` the log sources and their containers (for ``?tail=``)."""

    def __init__(self, pipeline: Callable[[], LogPipeline],
                 make_tap: Callable[[TapSink, CheckpointStore], RouteRunner], tap_id: str,
                 scan: Callable[[], dict[str, SourceSpec]], lookup: Callable[[SourceSpec], ContainerInfo | None],
                 registry: CollectorRegistry, host: str = "", max_line_bytes: int = 1 << 20) -> None:
        self.pipeline = pipeline
        self.make_tap = make_tap
        self.tap_id = tap_id
        self._starting = asyncio.Lock()
        self.scan = scan
        self.lookup = lookup
        self.host = host
        self.max_line_bytes = max_line_bytes
        self.subscriptions: set[LiveSubscription] = set()
        self.tap: RouteRunner | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.clients = Gauge("lookout_stream_clients", "Clients of the live log stream (/logs).", registry=registry)
        self.dropped = Counter("lookout_stream_records_dropped", "Records a live stream client missed because it "
                               "read too slowly (its buffer was full); told in its stream.", registry=registry)

    async def subscribe(self, params: dict[str, str], tail: int, size: int) -> LiveSubscription:
        try:
            flt = parse_filter(params)
        except RouteError as exc:
            raise ApiError(400, str(exc)) from exc
        if len(self.subscriptions) >= MAX_CLIENTS:
            raise ApiError(503, f"the live stream has {MAX_CLIENTS} clients already; try again later")
        sub = LiveSubscription(flt, size, self.dropped.inc, self._closed)
        self.subscriptions.add(sub)
        self.clients.set(len(self.subscriptions))
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        ends: dict[str, int] = {}
        async with self._starting:
            if self.tap is None:
                # The tap starts where every file ends now: a line written after this request is streamed, one
                # written before it is not (but ?tail= reads up to exactly there).
                store = CheckpointStore(None)
                ends = await asyncio.to_thread(self._positions, store)
                self.tap = self.make_tap(TapSink(self), store)
                self.pipeline().add(self.tap)
                log.info("live_stream_started")
        if tail:
            try:
                segments = await asyncio.to_thread(self.last_records, flt, tail, ends)
            except BaseException:
                sub.close()
                raise
            sub.offer(segments[::-1], front=True)  # before anything the tap delivered meanwhile, in order
        return sub

    def end(self) -> None:
        """The agent stops: every stream ends (after what its client has buffered), so the web server's shutdown
        need not wait for clients that would otherwise stay connected for ever."""
        for sub in list(self.subscriptions):
            sub.ended = True
            sub.ready.set()

    def publish(self, segments: list[Segment]) -> None:
        for sub in list(self.subscriptions):
            sub.offer(segments)

    def _closed(self, sub: LiveSubscription) -> None:
        self.subscriptions.discard(sub)
        self.clients.set(len(self.subscriptions))
        if not self.subscriptions and self.tap is not None and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER, self._stop_tap)

    def _stop_tap(self) -> None:
        self._linger = None
        tap, self.tap = self.tap, None
        if tap is not None and not self.subscriptions:
            log.info("live_stream_stopped")
            task = asyncio.get_running_loop().create_task(self.pipeline().remove(tap, forget=True))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        elif tap is not None:
            self.tap = tap

    # --- worker threads ---

    def _positions(self, store: CheckpointStore) -> dict[str, int]:
        """Acknowledge every existing log file to its end in the tap's ``store``; their sizes by path."""
        ends = {}
        for spec in self.scan().values():
            for path in spec.files():
                tail = Tail.open(path)
                if tail is not None:
                    store.ack(self.tap_id, tail.key, path, tail.size, spec.source_id)
                    ends[path] = tail.size
                    tail.close()
        return ends

    def last_records(self, flt: RouteFilter, count: int, ends: dict[str, int]) -> list[Segment]:
        """The last ``count`` records of every matching container (up to where the tap began, when this request
        started it), one segment per container."""
        out = []
        for spec in self.scan().values():
            info = self.lookup(spec)
            if info is None or not flt.match(info):
                continue
            files = spec.files()
            if not files:
                continue
            records = last_records(files[-1], spec.format, count, flt.streams, self.max_line_bytes,
                                   ends.get(files[-1]))
            if records:
                out.append(Segment(LogSource(files[-1], "", info, self.host), records))
        return out


def last_records(path: str, fmt: str, count: int, streams: frozenset[str] = frozenset(),
                 max_line_bytes: int = 1 << 20, end: int | None = None) -> list[LogRecord]:
    """The last ``count`` records of a log file before ``end`` (its size by default), of ``streams`` or all, read
    backwards a block at a time."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        size = os.fstat(fd).st_size
        end = size if end is None else min(end, size)
        start = end
        data = b""
        while start > 0:
            start = max(0, start - max(TAIL_BLOCK, len(data)))
            data = os.pread(fd, end - start, start)
            if data.count(b"\n") > count * 2 + 2 or start == 0:  # CRI records may be split in a few lines
                break
    finally:
        os.close(fd)
    cut = data.rfind(b"\n") + 1
    data = data[:cut]  # only complete lines
    begin = 0
    if start > 0:  # the first line is probably cut: start after it
        begin = data.find(b"\n") + 1
    decoder = JsonFileDecoder(max_line_bytes) if fmt == "json-file" else CriDecoder(max_line_bytes)
    decoded = decoder.decode(data[begin:], start + begin)
    records = decoded.records if not streams else [r for r in decoded.records if r[1] in streams]
    return records[-count:]

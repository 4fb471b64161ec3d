"""The log pipeline: per-route readers with their own cursors, bounded queues, retries and acknowledgements.

Each route reads the log files on its own (the page cache makes the second read cheap), so a
route that is down never holds up the others, and its cursor is simply its checkpoint. A route
has one reader task and one sender task joined by a small bounded queue: when the sender is
slow or its receiver is down the queue fills, the reader stops reading, and the file on disk is
the buffer. A checkpoint moves only after the sink acknowledged the batch (at-least-once).

File handling per log source (one container): rotated files are read oldest first; a renamed
or deleted file stays open until read to its end, then the next file is followed; a file that
shrinks (copytruncate) is read again from 0; identity is (device, inode, first-line CRC).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent.model import ContainerInfo, LogSource, Segment
from agent.routes import Route
from collectors.logs.checkpoints import CheckpointStore
from collectors.logs.decoders import CriDecoder, JsonFileDecoder, time_order_key
from collectors.logs.files import READ_CHUNK, Tail
from collectors.logs.sources import DirectoryWatch, SourceSpec, watch

if TYPE_CHECKING:
    from agent.offload import ChunkWorkers, Job

log = structlog.get_logger("lookout.pipeline")

QUEUE_BATCHES = 4
BATCH_BYTES = 1 << 20
BATCH_RECORDS = 10_000
METADATA_WAIT = 5.0  # how long a new Docker container's lines wait for its name before shipping without
BACKOFF_BASE = 0.2
BACKOFF_CAP = 30.0
# Files per source the inotify thread holds open ahead of the reader (see ``RouteRunner.pin_new_files``).
PIN_MAX_FILES = 16
# A CRI log file renamed by the kubelet's rotation is still written by the runtime until the kubelet has it reopen
# the live name (ReopenContainerLog): it is ended only once it has not changed for this long.
CRI_REOPEN_GRACE = 1.0
# The interpreter's GIL switch interval while logs are shipped. Each system call of the inotify thread's
# pinning (a listing, then open/fstat/pread per file) releases the GIL, and getting it back from the busy
# reader takes up to one interval: at CPython's 5 ms default one pin could take longer than a file lives at
# Docker's top speed with max-file=3 (200,000 lines from `seq`, in-process: 7 of 30 runs lost a rotated file
# at 5 ms, 1 of 30 at 1 ms; no throughput difference measurable in bench/bench_logs.py).
SWITCH_INTERVAL = 0.001
# The cyclic collector's first-generation threshold while logs are shipped (CPython's default is 700). Each
# record allocates a tuple (and its decoded line a dict), so at 700 a young collection ran every few hundred
# records and an older one, walking the records in flight, every few thousand. Decoding + encoding the route
# benchmark's log took ~7 % less CPU at 50,000 (1.43 -> 1.34 us/line in-process); records hold no cycles, and
# the few garbage cycles there are (asyncio, aiohttp) are freed a little later.
GC_THRESHOLD = 50_000
# Per-record events a sink counts in ``Sink.events``, by the side that counts them, and their route counters.
ENCODE_EVENTS = ("truncated",)
DELIVER_EVENTS = ("rejected", "dead_lettered", "retried_items")
EVENT_COUNTERS = {"truncated": "truncated_out", "rejected": "rejected", "dead_lettered": "dead_lettered",
                  "retried_items": "item_retries"}  # event -> LogMetrics attribute


class Sink(Protocol):
    """A route's encoder and transport. ``encode`` is pure and runs in the reader thread; ``send``
    returns once the receiver acknowledged the whole batch (or the sink dead-lettered what it must
    never retry) and raises on anything the pipeline should retry. ``events`` counts per-record
    outcomes the sink decides itself (truncated, rejected, dead_lettered, retried_items)."""

    events: collections.Counter[str]

    def encode(self, segments: Sequence[Segment]) -> object: ...

    async def send(self, payload: object, count: int) -> None: ...

    async def close(self) -> None: ...


@dataclass
class LogOptions:
    read_from: str = "head"
    max_line_bytes: int = 1 << 20
    host: str = ""
    poll_interval: float = 0.25
    batch_bytes: int = BATCH_BYTES
    batch_records: int = BATCH_RECORDS
    flush_interval: float = 0.0  # wait this long for a batch to fill before sending it anyway
    workers: int = 0  # chunk worker processes for routes whose sink can use them (agent.offload)


class LogMetrics:
    """The log self-metrics on /metrics (names fixed by the log collection issue)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.records_read = Counter("lookout_log_records_read", "Log records decoded, per route reader.",
                                    ["route"], registry=r)
        self.bytes_read = Counter("lookout_log_bytes_read", "Log file bytes read, per route reader.",
                                  ["route"], registry=r)
        self.parse_errors = Counter("lookout_log_parse_errors", "Log lines that could not be decoded and were "
                                    "skipped (counted and logged with file and offset).", ["route"], registry=r)
        self.truncated = Counter("lookout_log_lines_truncated", "Log records cut at --max-line-bytes.",
                                 ["route"], registry=r)
        self.files_lost = Counter("lookout_log_files_lost", "Log files the runtime created and rotated away (deleted) "
                                  "before the route could open them: their lines are lost.", ["route"], registry=r)
        self.files_watched = Gauge("lookout_log_files_watched", "Log files open for reading, per route.",
                                   ["route"], registry=r)
        self.lag_bytes = Gauge("lookout_log_lag_bytes", "Bytes in watched log files not yet acknowledged by "
                               "the route (file size minus acknowledged offset).", ["route"], registry=r)
        self.sent = Counter("lookout_route_records_sent", "Records the route's receiver acknowledged.",
                            ["route"], registry=r)
        self.dropped = Counter("lookout_route_records_dropped", "Records not sent on purpose or by failure, by "
                               "reason.", ["route", "reason"], registry=r)
        self.queue_depth = Gauge("lookout_route_queue_depth", "Batches read and waiting for the route's sender.",
                                 ["route"], registry=r)
        self.retries = Counter("lookout_route_retries", "Batch sends retried after a failure.", ["route"],
                               registry=r)
        self.truncated_out = Counter("lookout_route_records_truncated", "Records cut to fit the route's maximum "
                                     "message size.", ["route"], registry=r)
        self.rejected = Counter("lookout_route_records_rejected", "Records the receiver refused for good "
                                "(e.g. Elasticsearch mapping errors, HTTP 4xx).", ["route"], registry=r)
        self.dead_lettered = Counter("lookout_route_records_dead_lettered", "Rejected records written to the "
                                     "route's dead-letter file in the state dir.", ["route"], registry=r)
        self.item_retries = Counter("lookout_route_items_retried", "Single records resent after the receiver "
                                    "answered 429 or 5xx for them.", ["route"], registry=r)
        self.up = Gauge("lookout_route_up", "1 while the route's last send succeeded, 0 while it is failing.",
                        ["route"], registry=r)
        self.worker_chunks = Counter("lookout_log_worker_chunks", "Log chunks read ahead and given to a chunk "
                                     "worker process, by outcome: taken (shipped as the worker encoded it) or "
                                     "reread (decoded by the reader after all: a partial line, a bad line, a "
                                     "changed file or a late or failed worker).", ["route", "outcome"],
                                     registry=r)
        self.batch_latency = Histogram("lookout_route_batch_duration_seconds", "Time to deliver one batch, "
                                       "retries included.", ["route"],
                                       buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120), registry=r)


@dataclass(slots=True)
class EncodedSegment:
    """A chunk of one file that a chunk worker decoded and encoded (agent.offload): only its payload and count
    come back. ``first_offset`` is where its first record starts (the chunk's start: nothing was held)."""

    source: LogSource
    payload: bytes
    count: int
    first_offset: int
    truncated: int = 0


@dataclass
class Batch:
    segments: list[Segment | EncodedSegment] = field(default_factory=list)
    count: int = 0
    started: float = 0.0
    # file key -> (path, offset, source id, tail): the offsets to acknowledge once sent
    acks: dict[str, tuple[str, int, str, Tail]] = field(default_factory=dict)
    payload: object = None
    size: int = 0

    def merge(self, other: Batch) -> None:
        self.segments += other.segments
        self.count += other.count
        self.size += other.size
        self.acks.update(other.acks)  # later offsets of the same file replace earlier ones

    def split(self, limit: int) -> Batch:
        """Keep the first ``limit`` records and return the rest as a new batch.

        One read decodes a whole chunk (up to 1 MiB of lines), so a batch can overshoot the route's
        ``batch=`` count; the receiver must still get at most ``limit`` records per request. This batch
        acknowledges each file only up to the first record that moved to the rest (never past a record
        still being joined); the rest carries the original acknowledgements. A chunk encoded by a worker
        cannot be cut: it moves whole, or stays whole when it comes first (only stream sinks, whose receivers
        see no requests, take such chunks)."""
        rest = Batch(started=time.monotonic(), acks=dict(self.acks))
        kept: list[Segment | EncodedSegment] = []
        room = limit
        for seg in self.segments:
            if isinstance(seg, EncodedSegment):
                if room >= seg.count or not kept:
                    kept.append(seg)
                    room = max(room - seg.count, 0)
                else:
                    rest.segments.append(seg)
                    room = 0
                continue
            if room >= len(seg.records):
                kept.append(seg)
                room -= len(seg.records)
                continue
            if room > 0:
                kept.append(Segment(seg.source, seg.records[:room]))
            rest.segments.append(Segment(seg.source, seg.records[room:]))
            room = 0
        moved_from: dict[str, int] = {}  # file key -> lowest offset of a record that moved
        for seg in rest.segments:
            key = seg.source.file_key
            # a joined record carries its first part's (earlier) offset
            low = seg.first_offset if isinstance(seg, EncodedSegment) else min(r[3] for r in seg.records)
            moved_from[key] = min(low, moved_from.get(key, low))
        for key, low in moved_from.items():
            if key in self.acks:
                path, offset, sid, tail = self.acks[key]
                self.acks[key] = (path, min(offset, low), sid, tail)
        kept_count = sum(_count(seg) for seg in kept)
        rest.count = self.count - kept_count
        moved = rest.count / self.count if self.count else 0.0
        rest.size = int(self.size * moved)
        self.segments, self.count, self.size = kept, kept_count, self.size - rest.size
        return rest


def _count(seg: Segment | EncodedSegment) -> int:
    return seg.count if isinstance(seg, EncodedSegment) else len(seg.records)


class SourceState:
    """One container's log files for one route, in reading order."""

    def __init__(self, spec: SourceSpec, max_line_bytes: int) -> None:
        self.spec = spec
        self.decoder: JsonFileDecoder | CriDecoder = (
            JsonFileDecoder(max_line_bytes) if spec.format == "json-file" else CriDecoder(max_line_bytes))
        self.tails: list[Tail] = []
        self.sources: dict[str, LogSource] = {}  # file key -> LogSource
        self.done: dict[str, int] = {}  # finished file key -> inode
        self.dir_mtime = -1.0
        self.initial = False  # present at the very first start: --read-from applies
        self.info: ContainerInfo | None = None
        self.first_seen = time.monotonic()
        self.gone = False
        self.skip = False  # filtered out by the route, or opted out with lookout.logs=false
        # Rotated-away accounting against the directory watch's ``Births`` (see ``RouteRunner._account``).
        self.births_generation = 0
        self.known_new = 0  # files created since the watch began that this route has opened or finished
        self.lost = 0  # of those, reported lost
        self.suspect_since = 0.0  # when fewer were known than created, if still so

    def close(self) -> None:
        for tail in self.tails:
            tail.close()
        self.tails.clear()


class LogPipeline:
    """All routes: periodic and inotify-driven source discovery, checkpoint flushing, one runner per route."""

    RESCAN_INTERVAL = 5.0
    FLUSH_INTERVAL = 1.0

    def __init__(self, runners: list[RouteRunner], store: CheckpointStore,
                 scan: Callable[[], dict[str, SourceSpec]], watch_paths: list[str]) -> None:
        self.runners = runners
        self.store = store
        self.scan = scan
        self.watch_paths = watch_paths
        self._rescan = asyncio.Event()

    def _wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        def wake() -> None:
            loop.call_soon_threadsafe(self._rescan.set)
        return wake

    def _pin(self, directory: str) -> None:
        """Files appeared in ``directory`` (inotify thread): let every route open them right away."""
        for runner in self.runners:
            runner.pin_new_files(directory)

    async def discover(self) -> None:
        loop = asyncio.get_running_loop()
        observer = await asyncio.to_thread(watch, [Path(p) for p in self.watch_paths],
                                           self._wake_threadsafe(loop))
        pins = DirectoryWatch(self._pin)
        for runner in self.runners:
            runner.watch = pins
        try:
            while True:
                self._rescan.clear()
                specs = await asyncio.to_thread(self.scan)
                for runner in self.runners:
                    await asyncio.to_thread(runner.update_sources, specs)
                    await asyncio.to_thread(runner.collect_garbage)
                    runner.wake.set()
                await asyncio.to_thread(pins.sync, {spec.directory for spec in specs.values()})
                try:
                    await asyncio.wait_for(self._rescan.wait(), timeout=self.RESCAN_INTERVAL)
                    await asyncio.sleep(0.05)  # let a burst of inotify events settle
                except TimeoutError:
                    pass
        finally:
            pins.close()
            if observer is not None:
                observer.stop()

    async def flusher(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_INTERVAL)
            try:
                await asyncio.to_thread(self.store.flush)
            except OSError as exc:
                log.error("checkpoint_write_failed", path=str(self.store.path), error=str(exc))
            for runner in self.runners:
                await asyncio.to_thread(runner.update_gauges, True)

    def tasks(self) -> list[asyncio.Task[None]]:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        threshold, *older = gc.get_threshold()
        gc.set_threshold(max(threshold, GC_THRESHOLD), *older)
        out = [asyncio.create_task(self.discover(), name="log-discovery"),
               asyncio.create_task(self.flusher(), name="checkpoint-flusher")]
        self._readers = []
        for runner in self.runners:
            reader = asyncio.create_task(runner.reader(), name=f"reader {runner.label}")
            self._readers.append(reader)
            out.append(reader)
            out.append(asyncio.create_task(runner.sender(), name=f"sender {runner.label}"))
        return out

    async def drain(self, timeout: float) -> None:
        """Stop reading and give the senders ``timeout`` seconds to deliver what is queued, so a clean
        stop re-sends (almost) nothing after a restart."""
        for reader in getattr(self, "_readers", []):
            reader.cancel()
        waits = [asyncio.create_task(r.queue.join()) for r in self.runners]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        for runner in self.runners:
            if runner.offload is not None:
                await asyncio.to_thread(runner.offload.close)
            await runner.sink.close()
        await asyncio.to_thread(self.store.flush)


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


def _live_rank(path: str) -> int | None:
    """None for a rotated file's name (complete: runtimes write only to the live name); for a live name, the CRI
    restart count of ``<n>.log`` (0 for Docker's ``<id>-json.log``): a higher one is a later container's file."""
    name = os.path.basename(path)
    if name.endswith("-json.log"):
        return 0
    if name.endswith(".log") and name[:-4].isdigit():
        return int(name[:-4])
    return None


class RouteRunner:
    def __init__(self, route: Route, sink: Sink, store: CheckpointStore, metrics: LogMetrics,
                 options: LogOptions, lookup: Callable[[SourceSpec], ContainerInfo | None],
                 fresh_start: bool) -> None:
        self.route = route
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.options = options
        self.lookup = lookup
        self.label = route.redacted
        self.states: dict[str, SourceState] = {}
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(QUEUE_BATCHES)
        # Files present at the very first start (no checkpoints at all) honour --read-from.
        self._initial = fresh_start
        self._order: list[str] = []
        self._gc_due = False
        self._rr = 0
        self._failing = False
        # Guards opening and closing a source's files: the reader thread, discovery's thread and the
        # inotify thread (``pin_new_files``) all do it.
        self._files_lock = threading.RLock()
        self.watch: DirectoryWatch | None = None  # set by the pipeline: counts the files runtimes create
        self.wake = asyncio.Event()
        # Every per-route series exists from the start at 0, so rate() and increase() see the first events.
        label = self.label
        for counter in (metrics.records_read, metrics.bytes_read, metrics.parse_errors, metrics.truncated,
                        metrics.files_lost,
                        metrics.sent, metrics.retries, metrics.truncated_out, metrics.rejected,
                        metrics.dead_lettered, metrics.item_retries):
            counter.labels(label)
        for reason in ("filtered", "rejected"):
            metrics.dropped.labels(label, reason)
        # Chunk workers (agent.offload), for sinks whose payloads concatenate, when the route reads every stream.
        self.offload: ChunkWorkers | None = None
        self._jobs: dict[tuple[str, int], Job] = {}  # (file key, offset) -> a chunk read ahead
        spec = getattr(sink, "offload_spec", lambda: None)()
        if options.workers > 0 and spec is not None and not route.filter.streams:
            from agent.offload import ChunkWorkers

            self.offload = ChunkWorkers(options.workers, spec, options.max_line_bytes, self._worker_failed)
            for outcome in ("taken", "reread"):
                metrics.worker_chunks.labels(label, outcome)
        for gauge in (metrics.files_watched, metrics.lag_bytes, metrics.queue_depth):
            gauge.labels(label).set(0)
        metrics.up.labels(label).set(1)

    # --- discovery (reader thread) ---

    def update_sources(self, specs: dict[str, SourceSpec]) -> None:
        for sid, spec in specs.items():
            if sid not in self.states:
                state = self.states[sid] = SourceState(spec, self.options.max_line_bytes)
                state.initial = self._initial
        self._initial = False
        for sid, state in self.states.items():
            state.gone = sid not in specs
        self._order = sorted(self.states)
        if specs:  # an empty scan may be a transient error: never forget checkpoints on it
            keep = {t.key for st in self.states.values() for t in st.tails}
            self.store.retain_sources(self.route.id, set(self.states), keep)

    def _resolve(self, state: SourceState) -> bool:
        """Attach metadata and apply the route filter; False while a new container's name is unknown."""
        info = self.lookup(state.spec)
        if info is None:
            if state.spec.format == "json-file" and time.monotonic() - state.first_seen < METADATA_WAIT:
                return False
            info = ContainerInfo(cgroup="", container_id=state.spec.container_id)
        if info is not state.info:
            state.info = info
            state.skip = not self.route.filter.match(info)
            state.sources.clear()
        return True

    def _source(self, state: SourceState, tail: Tail) -> LogSource:
        src = state.sources.get(tail.key)
        if src is None:
            assert state.info is not None
            src = state.sources[tail.key] = LogSource(tail.path, tail.key, state.info, self.options.host)
        return src

    def pin_new_files(self, directory: str) -> None:
        """Open the new files of the source in ``directory`` now (called on the inotify thread).

        Docker deletes its oldest rotated file as soon as the live file fills up again (``max-file``): at a
        fast writer's pace a file can exist for only a few tens of milliseconds, less than the reader may take
        to come back to the source while it parses, encodes or waits for the sender. A file held open here is
        read to its end later even once deleted. At most ``PIN_MAX_FILES`` files per source are held ahead of
        the reader, so a route that is down for long does not keep every rotated file on disk."""
        for state in list(self.states.values()):
            if (state.spec.directory == directory and state.info is not None and not state.skip
                    and len(state.tails) < PIN_MAX_FILES):
                self._refresh_files(state, force=True)

    def _refresh_files(self, state: SourceState, force: bool = False) -> None:
        """Open files of the source not yet known (new, or after rotation), in reading order."""
        with self._files_lock:
            # A rotation while the names are opened one by one (oldest first) can make a name open a newer file
            # than the listing showed and skip the one that was there; list again until every name still names
            # the file opened through it and the listing is the same, so an older file is never found after a newer
            # one has been begun.
            for _ in range(3):
                if self._open_new_files(state, force):
                    break
                force = True

    def _open_new_files(self, state: SourceState, force: bool) -> bool:
        """Open the new files; False when a name no longer named the file opened through it by the end."""
        try:
            mtime = os.stat(state.spec.directory).st_mtime
        except OSError:
            mtime = -2.0
        if mtime == state.dir_mtime and not force:
            return True
        state.dir_mtime = mtime
        births = self.watch.births(state.spec.directory) if self.watch is not None else None
        if births is not None and births.generation != state.births_generation:
            state.births_generation, state.known_new, state.lost, state.suspect_since = births.generation, 0, 0, 0.0
        created = births.created if births is not None else 0  # before the listing: all of these are in it, or gone
        files = state.spec.files()
        initial = state.initial
        open_keys = {t.key for t in state.tails}
        open_inos = {t.ino for t in state.tails}
        present: set[str] = set()
        opened: list[tuple[str, int]] = []
        pending = 0
        for path in files:
            tail = Tail.open(path)
            if tail is None:
                state.dir_mtime = -1.0  # gone, or no complete first line yet: look again next time
                pending += 1
                continue
            opened.append((path, tail.ino))
            if tail.ino in open_inos:
                present.update(t.key for t in state.tails if t.ino == tail.ino)
                tail.close()
                continue
            present.add(tail.key)
            if tail.key in open_keys or tail.key in state.done:
                tail.close()
                continue
            acked = self.store.offset(self.route.id, tail.key)
            if acked is not None:
                tail.offset = acked
            elif initial and self.options.read_from == "tail":
                tail.offset = tail.size
            if births is not None and not births.is_base(tail.key):
                state.known_new += 1
            if acked is not None and acked >= tail.size and path != files[-1]:
                state.done[tail.key] = tail.ino  # a rotated file already fully delivered
                tail.close()
                continue
            # A rotation while the names are opened one by one can make a name open a newer file than the
            # listing showed, and the file skipped that way is found by a later listing: new files are put in
            # place by their first record's time, not in the order found.
            tail.order = time_order_key(tail.first_line(), state.spec.format)
            self._insert(state, tail)
            open_keys.add(tail.key)
            open_inos.add(tail.ino)
        if not all(_inode(path) == ino for path, ino in opened) or state.spec.files() != files:
            state.dir_mtime = -1.0  # list again next time, even if this was the last try
            return False  # a file renamed meanwhile may be missing from ``present``: forget nothing yet
        state.initial = False
        # Forget finished files that are gone from disk (their checkpoints too).
        for key in list(state.done):
            if key not in present:
                del state.done[key]
                self.store.forget(self.route.id, key)
        if births is not None:
            self._account(state, created - pending)
        return True

    def _account(self, state: SourceState, created: int) -> None:
        """Count files the runtime created and deleted before this route opened them (Docker's ``max-file``
        under a writer faster than the reader, or a reader starved of CPU). ``created`` files were born since
        the watch began, not counting those listed but not readable yet; the route knows ``known_new`` of them.
        The difference must last a second and another listing before it counts: a file being renamed while the
        directory is listed can be missed by one listing."""
        missing = created - state.known_new - state.lost
        if missing <= 0:
            state.suspect_since = 0.0
            return
        now = time.monotonic()
        if not state.suspect_since:
            state.suspect_since = now
        if now - state.suspect_since < 1.0:
            state.dir_mtime = -1.0  # list again on the next refresh
            return
        state.lost += missing
        state.suspect_since = 0.0
        self.metrics.files_lost.labels(self.label).inc(missing)
        info = state.info
        log.error("log_files_rotated_away", route=self.label, directory=state.spec.directory, files=missing,
                  container=info.name if info is not None else "",
                  hint="the runtime deleted them before they could be read: raise max-file/max-size, or give the "
                       "agent more CPU")

    @staticmethod
    def _insert(state: SourceState, tail: Tail) -> None:
        """Put a new file among the source's files by its first record's time (never before a file already
        being read; at the end when its time is unknown)."""
        tails = state.tails
        i = len(tails)
        if tail.order:
            while i > 0 and tails[i - 1].order > tail.order and not tails[i - 1].begun:
                i -= 1
        tails.insert(i, tail)

    # --- reading (reader thread) ---

    def fill(self, batch: Batch, records: int, size: int) -> None:
        """Read from the sources round-robin into ``batch`` until it holds ``records`` records or ``size``
        bytes, or nothing is left to read."""
        order = self._order
        if not order:
            return
        n = len(order)
        idle = 0
        while idle < n and batch.size < size and batch.count < records:
            sid = order[self._rr % n]
            self._rr += 1
            state = self.states.get(sid)
            if state is None or not self._read_source(state, batch):
                idle += 1
            else:
                idle = 0

    def _read_source(self, state: SourceState, batch: Batch) -> bool:
        """One read from the source's active file; True if it produced anything."""
        if not self._resolve(state):
            return False
        if state.skip:
            return False
        if not state.tails:
            self._refresh_files(state)
            if not state.tails:
                return False
        else:
            self._refresh_files(state)
        tail = state.tails[0]
        try:
            data, start, skipped = tail.read(READ_CHUNK)
        except OSError as exc:
            log.warning("log_read_failed", route=self.label, file=tail.path, error=str(exc))
            self._finish(state, tail, batch)
            return True
        if skipped:
            self.metrics.parse_errors.labels(self.label).inc()
            log.warning("log_line_too_long_skipped", route=self.label, file=tail.path, offset=start,
                        bytes=skipped)
            self._ack(batch, state, tail)
            return True
        if not data:
            # End of this file. It is complete when it has a rotated name, its name now names another file, or a
            # later live file of the source exists (a CRI container's next restart); otherwise it is the live file
            # and the runtime may write more. Read once more after that check so a write racing a rename is not lost.
            later = state.tails[1:]
            rank = _live_rank(tail.path)
            if (rank is None or tail.replaced()
                    or any((other := _live_rank(t.path)) is not None and other > rank for t in later)):
                if state.spec.format == "cri" and self._recently_written(tail):
                    return False  # the kubelet renames first and has the runtime reopen after: more may come
                data, start, _ = tail.read(READ_CHUNK)
                if not data:
                    self._finish(state, tail, batch)
                    if len(state.tails) == 0:
                        self._refresh_files(state, force=True)
                    return True
            elif later and state.decoder.safe_offset(tail.offset, tail.key) == tail.offset:
                # The live file, and only rotated files follow: found after it was begun (a rotation raced a
                # listing). Read them first and come back to it, never close it early; but not while a line of it
                # is half joined, which the older file's next line would otherwise be joined to.
                with self._files_lock:
                    state.tails.remove(tail)
                    state.tails.append(tail)
                return True
            else:
                return False
        self._decode(state, tail, data, start, batch)
        return True

    @staticmethod
    def _recently_written(tail: Tail) -> bool:
        try:
            return time.time() - os.fstat(tail.fd).st_mtime < CRI_REOPEN_GRACE
        except OSError:
            return False

    def _decode(self, state: SourceState, tail: Tail, data: bytes, start: int, batch: Batch) -> None:
        decoder = state.decoder
        if self.offload is not None and state.spec.format == "json-file":
            job = self._jobs.pop((tail.key, start), None)
            if job is not None:
                pool = self.offload
                done = None
                # The worker's payload only for the same bytes, nothing held, and the source's metadata as it is now.
                if job.data == data and not decoder.pending and job.source is self._source(state, tail):
                    done = pool.take(job)
                else:
                    pool.drop(job)
                self._prefetch(state, tail, start + len(data))
                if done is not None:
                    payload, count, truncated = done
                    metrics, label = self.metrics, self.label
                    metrics.worker_chunks.labels(label, "taken").inc()
                    metrics.bytes_read.labels(label).inc(len(data))
                    metrics.records_read.labels(label).inc(count)
                    batch.segments.append(EncodedSegment(self._source(state, tail), payload, count, start, truncated))
                    batch.count += count
                    batch.size += len(data)
                    self._ack(batch, state, tail)
                    return
                self.metrics.worker_chunks.labels(self.label, "reread").inc()
            else:
                self._prefetch(state, tail, start + len(data))  # the workers start on what follows at once
        decoder.file = tail.key
        out = decoder.decode(data, start)
        metrics, label = self.metrics, self.label
        metrics.bytes_read.labels(label).inc(len(data))
        if out.errors:
            metrics.parse_errors.labels(label).inc(len(out.errors))
            for offset, reason in out.errors[:5]:
                log.warning("log_line_unparseable", route=label, file=tail.path, offset=offset, reason=reason)
        if out.truncated:
            metrics.truncated.labels(label).inc(out.truncated)
        records = out.records
        metrics.records_read.labels(label).inc(len(records))
        streams = self.route.filter.streams
        if streams:
            kept = [r for r in records if r[1] in streams]
            if len(kept) < len(records):
                metrics.dropped.labels(label, "filtered").inc(len(records) - len(kept))
            records = kept
        if records:
            batch.segments.append(Segment(self._source(state, tail), records))
            batch.count += len(records)
        batch.size += len(data)
        self._ack(batch, state, tail)

    def _prefetch(self, state: SourceState, tail: Tail, offset: int) -> None:
        """Hand the chunks after ``offset`` to the chunk workers, up to one more than there are workers."""
        pool = self.offload
        assert pool is not None
        for _ in range(pool.size + 1):
            job = self._jobs.get((tail.key, offset))
            if job is None:
                try:
                    data = tail.peek(offset)
                except OSError:
                    return
                if not data:
                    return
                job = pool.submit(data, offset, self._source(state, tail))
                if job is None:
                    return
                self._jobs[(tail.key, offset)] = job
            offset += len(job.data)

    def _drop_jobs(self, key: str | None = None) -> None:
        """Give up the chunks read ahead in file ``key`` (every file when None)."""
        if self.offload is None:
            return
        for job_key in [k for k in self._jobs if key is None or k[0] == key]:
            self.offload.drop(self._jobs.pop(job_key))

    def _worker_failed(self, why: str) -> None:
        log.error("log_chunk_worker_failed", route=self.label, error=why)

    def _ack(self, batch: Batch, state: SourceState, tail: Tail) -> None:
        offset = state.decoder.safe_offset(tail.offset, tail.key)
        batch.acks[tail.key] = (tail.path, offset, state.spec.source_id, tail)

    def _finish(self, state: SourceState, tail: Tail, batch: Batch) -> None:
        """A file read to its end and replaced: close it; the next file in order becomes active."""
        self._ack(batch, state, tail)
        self._drop_jobs(tail.key)
        with self._files_lock:
            tail.close()
            state.tails.remove(tail)
            state.done[tail.key] = tail.ino
        state.sources.pop(tail.key, None)

    def collect_garbage(self) -> None:
        """Have the reader drop sources whose directory is gone and whose open files are drained (on its next
        ``read_batch``: it owns the files and the chunks read ahead, and may be reading them right now)."""
        self._gc_due = True

    def _collect_garbage(self) -> None:
        self._gc_due = False
        with self._files_lock:
            for sid in [sid for sid, st in self.states.items() if st.gone]:
                state = self.states[sid]
                if all(t.unread() == 0 for t in state.tails):
                    for tail in state.tails:
                        self._drop_jobs(tail.key)
                    state.close()
                    del self.states[sid]
            self._order = sorted(self.states)

    def update_gauges(self, fresh: bool = False) -> None:
        """Set the route's gauges; ``fresh`` takes the files' sizes from the files themselves instead of from
        the reader's last read (the flusher does so every second: while the route is down the reader waits for
        the sender and reads nothing, and the lag would stay where it was when the route went down)."""
        lag = files = 0
        with self._files_lock:
            for state in list(self.states.values()):
                if fresh and not state.tails and not state.skip:
                    lag += self._unopened_lag(state)
                for tail in list(state.tails):
                    files += 1
                    size = tail.size
                    if fresh:
                        with contextlib.suppress(OSError):
                            size = os.fstat(tail.fd).st_size
                    acked = self.store.offset(self.route.id, tail.key)
                    lag += max(size - (acked if acked is not None else 0), 0)
        self.metrics.files_watched.labels(self.label).set(files)
        self.metrics.lag_bytes.labels(self.label).set(lag)
        self.metrics.queue_depth.labels(self.label).set(self.queue.qsize())

    def _unopened_lag(self, state: SourceState) -> int:
        """Bytes not acknowledged in the files of a source the reader has not opened yet (a new container while
        the route is down), when the route ships it."""
        info = state.info or self.lookup(state.spec)
        if info is None or not self.route.filter.match(info):
            return 0
        lag = 0
        for path in state.spec.files():
            tail = Tail.open(path)
            if tail is not None:
                acked = self.store.offset(self.route.id, tail.key)
                lag += max(tail.size - (acked or 0), 0)
                tail.close()
        return lag

    def read_batch(self, records: int, size: int) -> Batch:
        if self._gc_due:
            self._collect_garbage()
        batch = Batch()
        self.fill(batch, records, size)
        self.update_gauges()
        return batch

    def encode(self, batch: Batch) -> None:
        segments = batch.segments
        if not any(isinstance(seg, EncodedSegment) for seg in segments):
            batch.payload = self.sink.encode(segments)  # type: ignore[arg-type]
        else:
            # Runs of decoded segments are encoded here; a worker's payload goes in as it is, in order.
            parts: list[bytes] = []
            run: list[Segment] = []
            for seg in segments:
                if isinstance(seg, EncodedSegment):
                    if run:
                        parts.append(self.sink.encode(run))  # type: ignore[arg-type]
                        run = []
                    parts.append(seg.payload)
                    if seg.truncated:
                        self.sink.events["truncated"] += seg.truncated
                else:
                    run.append(seg)
            if run:
                parts.append(self.sink.encode(run))  # type: ignore[arg-type]
            batch.payload = b"".join(parts)
        self._drain_events(ENCODE_EVENTS)

    def _drain_events(self, names: tuple[str, ...]) -> int:
        """Move the sink's per-record event counts ``names`` to the route's counters; return the rejected.

        Encoding (reader thread) and delivery (event loop) run at the same time and count different events:
        each side drains only its own names, so neither can lose or double the other's counts."""
        events = self.sink.events
        label, m = self.label, self.metrics
        rejected = 0
        for name in names:
            n = events.pop(name, 0)
            if not n:
                continue
            counter: Counter = getattr(m, EVENT_COUNTERS[name])
            counter.labels(label).inc(n)
            if name == "rejected":
                m.dropped.labels(label, "rejected").inc(n)
                rejected = n
        return rejected

    # --- tasks (event loop) ---

    async def reader(self) -> None:
        """Read into a pending batch; hand it to the sender when full, when its flush time is up, or when
        it only moves checkpoints. ``queue.put`` blocks while the sender is behind: backpressure."""
        opts = self.options
        pending = Batch()
        while True:
            got = await asyncio.to_thread(self.read_batch, opts.batch_records - pending.count,
                                          opts.batch_bytes - pending.size)
            if got.count and not pending.count:
                pending.started = time.monotonic()
            pending.merge(got)
            waited = time.monotonic() - pending.started
            full = pending.count >= opts.batch_records or pending.size >= opts.batch_bytes
            if pending.acks and (full or not pending.count or waited >= opts.flush_interval):
                overflow = pending.split(opts.batch_records) if pending.count > opts.batch_records else None
                if pending.count:
                    await asyncio.to_thread(self.encode, pending)
                await self.queue.put(pending)
                self.metrics.queue_depth.labels(self.label).set(self.queue.qsize())
                pending = overflow or Batch()
                continue  # more may be ready right away
            if got.count:
                continue
            timeout = opts.poll_interval
            if pending.count:
                timeout = max(0.0, min(timeout, opts.flush_interval - waited))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)

    async def sender(self) -> None:
        while True:
            batch: Batch = await self.queue.get()
            if batch.count:
                await self._deliver(batch)
            for key, (path, offset, sid, _tail) in batch.acks.items():
                self.store.ack(self.route.id, key, path, offset, sid)
            self.queue.task_done()
            self.metrics.queue_depth.labels(self.label).set(self.queue.qsize())

    async def _deliver(self, batch: Batch) -> None:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                await self.sink.send(batch.payload, batch.count)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self.metrics.retries.labels(self.label).inc()
                self.metrics.up.labels(self.label).set(0)
                if not self._failing:
                    log.warning("route_send_failed", route=self.label, error=str(exc) or type(exc).__name__,
                                records=batch.count)
                    self._failing = True
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))  # full jitter
                hint = getattr(exc, "retry_after", None)  # the receiver's Retry-After wins
                if hint is not None:
                    delay = max(delay, hint)
                await asyncio.sleep(delay)
        if self._failing:
            log.info("route_recovered", route=self.label, attempts=attempt + 1)
            self._failing = False
        rejected = self._drain_events(DELIVER_EVENTS)
        self.metrics.up.labels(self.label).set(1)
        self.metrics.sent.labels(self.label).inc(max(batch.count - rejected, 0))
        batch.segments = []  # the records are delivered: free them before the acks
        self.metrics.batch_latency.labels(self.label).observe(time.monotonic() - started)

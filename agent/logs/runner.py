"""A route, as thin glue between its stages: the follower reads its files (collectors.logs.follower), the codec
decodes the chunks or takes a chunk worker's payload (agent.logs.codec), batches are encoded by the sink and handed
to the sender, which delivers them (agent.logs.delivery) and acknowledges their offsets in the checkpoint store.

A route has one reader task and one sender task joined by a small bounded queue: when the sender is slow or its
receiver is down the queue fills, the reader stops reading, and the file on disk is the buffer. A checkpoint moves
only after the sink delivered the batch (at-least-once). A bug in the sink (agent.logs.delivery.SinkFailed, or an
exception while encoding) stops this route only: it is logged once with its traceback and shown by
``lookout_route_failed`` and /readyz, while the other routes go on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from agent.logs.batch import Batch, EncodedSegment
from agent.logs.codec import InlineCodec, WorkerCodec, offload_spec
from agent.logs.delivery import Delivery, Sink, SinkFailed
from agent.logs.metrics import LogMetrics
from agent.logs.process import Processing
from agent.logs.routes import LogOptions, Route
from agent.model import ContainerInfo, Payload, Segment
from agent.waits import wait_event
from collectors.logs.checkpoints import CheckpointStore
from collectors.logs.follower import Follower
from collectors.logs.sources import SourceSpec

if TYPE_CHECKING:
    from agent.logs.offload import ChunkWorkers

log = structlog.get_logger("lookout.route")

QUEUE_BATCHES = 4
# A read that returned this much (or more) may not have reached the file's end: read again at once. Smaller reads
# reached it, and the reader waits for new lines (``LogOptions.poll_interval``, or a wake) instead of visiting
# every source again to find nothing.
MORE_AFTER = 64 << 10
EXPIRE_EVERY = 0.25  # seconds: how often held multiline events are looked at while the reader is never idle


class RouteRunner:
    def __init__(self, route: Route, sink: Sink, store: CheckpointStore, metrics: LogMetrics,
                 options: LogOptions, lookup: Callable[[SourceSpec], ContainerInfo | None],
                 fresh_start: bool, workers: ChunkWorkers | None = None, processing: bool = True) -> None:
        self.route = route
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.options = options
        self.label = label = route.redacted
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(QUEUE_BATCHES)
        self.wake = asyncio.Event()
        self.delivery = Delivery(sink, metrics, label)
        self.failed = ""  # why the route stopped on a bug in its sink ("" while it runs)
        self.tasks: list[asyncio.Task[None]] = []
        self.more = False  # the last read_batch stopped before it reached the end of every source
        self.more_recently = True  # some read_batch since the last wait did: the next wait is the shortest
        self.on_acked: Callable[[], None] = lambda: None  # the pipeline's group commit of the checkpoints
        self.lines: Counter[str] = Counter()  # records delivered, by container id (the API's log rates)
        self.last_record_time = ""  # the time of the last record delivered, when the reader decoded it
        self.multiline_due: float | None = None  # when the next held multiline event expires (monotonic)
        self._expired_at = 0.0  # when codec.expire last ran
        self._reading = threading.Lock()  # held by read_batch: a removed route closes its files after it
        self.files_open = self.lag_bytes = 0  # as of the last gauge update
        self.started_at = time.time()
        self.follower = Follower(
            route.id, label, store, lookup, route.filter.match, read_from=options.read_from,
            max_line_bytes=options.max_line_bytes, host=options.host, fresh_start=fresh_start,
            on_lost=metrics.files_lost.labels(label).inc, on_skipped=metrics.parse_errors.labels(label).inc,
            on_close=lambda key: self.codec.forget(key), multiline=options.multiline,
            multiline_set=options.multiline_set, multiline_timeout=options.multiline_timeout)
        # The agent's chunk workers (shared by the routes) decode for sinks whose payload is one buffer, when the
        # route reads every stream; else the reader decodes every chunk itself.
        # The processing stage (agent.logs.process; not for the live stream's tap, which shows lines as written): a
        # route that transforms every record decodes inline.
        self.process = Processing(route.params, metrics, label, options.rate_limit) if processing else None
        spec = offload_spec(sink)
        self.codec: InlineCodec = (
            WorkerCodec(self.follower, metrics, label, workers, spec, self.process)
            if workers is not None and spec is not None and not route.filter.streams
            and not (self.process is not None and self.process.transforms)
            else InlineCodec(self.follower, metrics, label, route.filter.streams, self.process))
        metrics.route(label, offload=isinstance(self.codec, WorkerCodec))

    @property
    def offload(self) -> ChunkWorkers | None:
        """The chunk workers this route's chunks go to (None: decoded by the reader)."""
        return self.codec.workers if isinstance(self.codec, WorkerCodec) else None

    # --- reading (the reader's thread) ---

    def read_batch(self, records: int, size: int) -> Batch:
        """Read from the sources round-robin until the batch holds ``records`` records or ``size`` bytes, or a
        pass over every source finds nothing more to read right away. ``more`` tells the caller whether another
        read may find something at once (a large chunk came, or a file ended): else it waits for new lines."""
        with self._reading:
            return self._read_batch(records, size)

    def _read_batch(self, records: int, size: int) -> Batch:
        follower = self.follower
        follower.take_offers()
        batch = Batch()
        n = follower.source_count
        self.more = True
        while self.more and batch.size < size and batch.count < records:
            self.more = False  # one visit per source and pass, another pass only while a source had more
            for _ in range(n):
                if batch.size >= size or batch.count >= records:
                    self.more = True
                    break
                state = follower.next_state()
                got = follower.read(state, batch.acks) if state is not None else False
                if got is False:
                    continue
                if got is True:
                    self.more = True
                    continue
                tail, data, start = got
                assert state is not None
                self.codec.chunk(state, tail, data, start, batch)
                if len(data) >= MORE_AFTER or not data:  # no data: a file's end finished its multiline events
                    self.more = True
        # Held multiline events with no new line expire: after a pass that read every source to its end, and at
        # least every EXPIRE_EVERY while other sources keep the reader busy.
        now = time.monotonic()
        if not self.more or now - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = now
            self.multiline_due = self.codec.expire(batch)
        if self.process is not None:
            self.process.flush_due(batch)  # rate-limit summaries of containers gone quiet (agent.logs.process)
        return batch

    def encode(self, batch: Batch) -> None:
        """The batch's payload: runs of decoded segments encoded by the sink; a worker's payload goes in as it is,
        in order (only sinks whose payloads are one buffer take worker chunks)."""
        segments = batch.segments
        if not any(isinstance(seg, EncodedSegment) for seg in segments):
            payload = self.sink.encode(segments)  # type: ignore[arg-type]
        else:
            parts: list[bytes] = []
            run: list[Segment] = []
            truncated = 0
            for seg in segments:
                if isinstance(seg, EncodedSegment):
                    if run:
                        truncated += self._encode_run(run, parts)
                        run = []
                    parts.append(seg.payload)
                    truncated += seg.truncated
                else:
                    run.append(seg)
            if run:
                truncated += self._encode_run(run, parts)
            payload = Payload(b"".join(parts), batch.count, truncated)
        if payload.truncated:
            self.metrics.truncated_out.labels(self.label).inc(payload.truncated)
        batch.payload = payload

    def _encode_run(self, run: list[Segment], parts: list[bytes]) -> int:
        payload = self.sink.encode(run)
        assert isinstance(payload.data, bytes), "worker chunks go only to sinks whose payload is one buffer"
        parts.append(payload.data)
        return payload.truncated

    def update_gauges(self) -> None:
        """Set the route's gauges (see ``Follower.lag``)."""
        files, lag = self.files_open, self.lag_bytes = self.follower.lag()
        self.delivery.stats.sample(time.monotonic())
        self.metrics.files_watched.labels(self.label).set(files)
        self.metrics.lag_bytes.labels(self.label).set(lag)
        self.metrics.queue_depth.labels(self.label).set(self.queue.qsize())

    # --- tasks (event loop) ---

    async def reader(self) -> None:
        """Read into a pending batch; hand it to the sender when full, when its flush time is up, or when
        it only moves checkpoints. ``queue.put`` blocks while the sender is behind: backpressure."""
        opts = self.options
        pending = Batch()
        poll = opts.poll_interval
        while True:
            got = await asyncio.to_thread(self.read_batch, opts.batch_records - pending.count,
                                          opts.batch_bytes - pending.size)
            if got.count and not pending.count:
                pending.started = time.monotonic()
            pending.merge(got)
            self.more_recently = self.more_recently or self.more
            waited = time.monotonic() - pending.started
            full = pending.count >= opts.batch_records or pending.size >= opts.batch_bytes
            # (A batch holds records without acknowledgements only for a rate-limit summary of a quiet container.)
            if (pending.acks or pending.count) and (full or not pending.count or waited >= opts.flush_interval):
                overflow = pending.split(opts.batch_records) if pending.count > opts.batch_records else None
                if pending.count:
                    try:
                        await asyncio.to_thread(self.encode, pending)
                    except Exception as exc:  # a bug in the sink's encoder: retrying would repeat it
                        self._fail(exc)
                        return
                await self.queue.put(pending)
                self.metrics.queue_depth.labels(self.label).set(self.queue.qsize())
                pending = overflow or Batch()
                if full or overflow is not None or self.more:
                    continue  # more is ready right away
            elif self.more:
                continue
            # New lines are waited for: every poll interval while reads come in large chunks, backing off to
            # ``poll_max`` while they trickle in (the whole pass over every source is the cost of a wake; lines then
            # wait at most 1 s by default, as with Fluent Bit's default flush).
            poll = opts.poll_interval if self.more_recently else min(poll * 2, max(opts.poll_max, opts.poll_interval))
            self.more_recently = False
            timeout = poll
            if pending.count:
                timeout = max(0.0, min(timeout, opts.flush_interval - waited))
            due = self.multiline_due
            if due is not None:  # a held multiline event expires before the wait would end
                timeout = max(0.0, min(timeout, due - time.monotonic()))
            self.wake.clear()
            await wait_event(self.wake, timeout)

    async def sender(self) -> None:
        while True:
            batch: Batch = await self.queue.get()
            if batch.count:
                assert batch.payload is not None
                try:
                    await self.delivery.deliver(batch.payload)
                except SinkFailed as exc:
                    self._fail(exc)
                    return
                self._count_lines(batch)
                batch.segments = []  # the records are delivered: free them before the acks
            for key, (path, offset, sid, _tail) in batch.acks.items():
                self.store.ack(self.route.id, key, path, offset, sid)
            if batch.acks:
                self.on_acked()
            self.queue.task_done()
            self.metrics.queue_depth.labels(self.label).set(self.queue.qsize())

    def _count_lines(self, batch: Batch) -> None:
        lines = self.lines
        last = ""  # unknown when the batch ends in a chunk worker's payload
        for seg in batch.segments:
            if isinstance(seg, EncodedSegment):
                lines[seg.source.container.container_id] += seg.count
                last = ""
            elif seg.records:
                lines[seg.source.container.container_id] += len(seg.records)
                last = seg.records[-1][0]
        self.last_record_time = last

    def forget_gone_lines(self) -> None:
        """Drop the delivered-records counts of containers whose source the follower dropped (removed containers):
        under churn they would otherwise pile up for the agent's lifetime. On the event loop, as the sender that
        counts them."""
        follower = self.follower
        with follower.lock:
            live = {st.spec.container_id for st in follower.states.values()}
        for container_id in self.lines.keys() - live:
            del self.lines[container_id]

    def shipped(self) -> list[str]:
        """The ids of the containers this route reads."""
        follower = self.follower
        with follower.lock:
            return [st.info.container_id for st in follower.states.values()
                    if st.info is not None and not st.skip and st.info.container_id]

    @property
    def state(self) -> str:
        """running, stalled (a send has had no outcome for ``STALL_AFTER`` s or more), retrying (the last send
        failed and is being retried) or failed (stopped by a bug)."""
        if self.failed:
            return "failed"
        if self.delivery.stalled_for(time.monotonic()):
            return "stalled"
        return "retrying" if self.delivery.failing else "running"

    @property
    def error(self) -> str | None:
        """Why the route is not running (None while it is)."""
        if self.failed:
            return self.failed
        stalled = self.delivery.stalled_for(time.monotonic())
        if stalled:
            return (f"no answer for {stalled:.0f}s to a batch of {self.delivery.sending_count} record(s): the receiver "
                    f"does not read or answer" + (f" (last error: {self.delivery.stats.last_error})"
                                                  if self.delivery.failing else ""))
        return self.delivery.stats.last_error if self.delivery.failing else None

    def _fail(self, exc: BaseException) -> None:
        """Stop this route on a bug in its sink: logged once with the traceback, shown by ``lookout_route_failed``
        and /readyz; its records stay in their files, unacknowledged, for the next start."""
        self.failed = f"{type(exc).__name__}: {exc}"
        self.metrics.failed.labels(self.label).set(1)
        self.metrics.up.labels(self.label).set(0)
        cause = exc.__cause__ or exc
        log.error("route_failed", route=self.label, error=self.failed,
                  exc_info=(type(cause), cause, cause.__traceback__))
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        # Nothing more is sent: wake whoever waits for the queue to drain (a stopping agent).
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()

    def stop_reading(self) -> None:
        """Cancel the reader (a stopping agent); the sender goes on delivering what is queued."""
        if self.tasks:
            self.tasks[0].cancel()

    async def stop(self) -> None:
        """Stop for good (a route removed or replaced at run time): the tasks end, its files are closed once its
        reader's thread is out of them, and its sink is closed. Unacknowledged batches are re-read by whoever
        takes over its checkpoints."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.to_thread(self.close_files)
        await self.sink.close()

    def close_files(self) -> None:
        """Close the route's files, once its reader's thread is out of them."""
        with self._reading, self.follower.lock:
            for state in self.follower.states.values():
                for tail in state.tails:
                    self.codec.forget(tail.key)
                state.close()
            self.follower.states.clear()

    def start(self) -> list[asyncio.Task[None]]:
        self.tasks = [asyncio.create_task(self.reader(), name=f"reader {self.label}"),
                      asyncio.create_task(self.sender(), name=f"sender {self.label}")]
        return self.tasks

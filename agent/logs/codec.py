"""A route's codec: the chunks its follower reads made into its batch's segments, by one interface.

- ``InlineCodec`` decodes each chunk in the reader's thread (json-file or CRI decoder of the source), counts
  parse errors and truncations, applies the route's stream filter and acknowledges the chunk.
- ``WorkerCodec`` is for sinks whose payload is one buffer (file, stdout, syslog TCP/TLS): it reads the next chunks
  of a file ahead and hands them to the agent's chunk workers (agent.logs.offload, one pool for every route), and
  takes a worker's encoded payload for a chunk only when the worker saw exactly the bytes read now and the
  source's decoder holds nothing; anything else is decoded inline, in order. A worker can only save work, never
  change what is shipped. A source with a multiline mode is always decoded inline (a worker does not join events),
  and so are the chunks of a container that the route's processing stage must see (agent.logs.process: its labels
  ask for parsing or a rate limit).

Both finish the multiline events held past their timeout (``expire``), which the reader calls when a pass over the
sources found nothing more to read at once; records finished that way go through the processing stage too.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import structlog

from agent.logs.batch import Batch, EncodedSegment
from agent.logs.metrics import LogMetrics
from agent.model import LogRecord, Segment
from collectors.logs.files import Tail
from collectors.logs.follower import Follower
from collectors.logs.source_files import SourceState

if TYPE_CHECKING:
    from agent.logs.delivery import Sink
    from agent.logs.offload import ChunkWorkers, EncoderSpec, Job
    from agent.logs.process import Processing

log = structlog.get_logger("lookout.codec")


def offload_spec(sink: Sink) -> EncoderSpec | None:
    """How a chunk worker encodes for the sink, if it can (sinks whose payload is one buffer say so)."""
    spec: EncoderSpec | None = getattr(sink, "offload_spec", lambda: None)()
    return spec


class InlineCodec:
    """Decodes every chunk in the reader's thread."""

    def __init__(self, follower: Follower, metrics: LogMetrics, label: str,
                 streams: frozenset[str] = frozenset(), process: Processing | None = None) -> None:
        self.follower = follower
        self.metrics = metrics
        self.label = label
        self.streams = streams  # the route's filter.sources (empty: every stream)
        self.process = process  # the route's processing stage (agent.logs.process)

    def chunk(self, state: SourceState, tail: Tail, data: bytes, start: int, batch: Batch) -> None:
        """Add the records of ``data`` (complete lines of ``tail`` from ``start``) to ``batch`` and acknowledge."""
        decoder = state.decoder
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
        self._add(state, tail, out.records, batch)
        batch.size += len(data)
        self.follower.ack(batch.acks, state, tail)

    def _add(self, state: SourceState, tail: Tail, records: list[LogRecord], batch: Batch) -> None:
        metrics, label = self.metrics, self.label
        metrics.records_read.labels(label).inc(len(records))
        streams = self.streams
        if streams:
            kept = [r for r in records if r[1] in streams]
            if len(kept) < len(records):
                metrics.dropped.labels(label, "filtered").inc(len(records) - len(kept))
            records = kept
        if self.process is not None:
            self.process.add(self.follower.source(state, tail), records, batch)
        elif records:
            batch.segments.append(Segment(self.follower.source(state, tail), records))
            batch.count += len(records)

    def expire(self, batch: Batch) -> float | None:
        """Add the multiline events that saw no new line for their timeout to ``batch`` and acknowledge past them;
        when the next held event is due (monotonic), None when none is held. An event whose file has bytes not read
        yet (its next line may be there, or is being written) is not finished: the reader gets to them first."""
        follower = self.follower
        if not follower.joining:
            return None
        now = time.monotonic()
        due: float | None = None
        for state in follower.joining.values():
            multiline = state.decoder.multiline
            if multiline is None or not multiline.held:
                continue
            unread = False
            for key in multiline.files():
                tail = follower.tail_of(state, key)
                if tail is None:
                    continue  # cannot happen: a file's events are finished before it is closed
                try:
                    if os.fstat(tail.fd).st_size > tail.offset:
                        unread = True  # the reader's next visit reads it; no early wake for this one
                        continue
                except OSError:
                    pass  # the read reports it; the file's end finishes its events
                records = multiline.expired(now, key)
                if records:
                    self._add(state, tail, records, batch)
                    follower.ack(batch.acks, state, tail)
            next_due = None if unread else multiline.due()
            if next_due is not None and (due is None or next_due < due):
                due = next_due
        return due

    def forget(self, key: str) -> None:
        """The follower closed file ``key``."""


class WorkerCodec(InlineCodec):
    """Takes the chunk workers' payloads where it may, and decodes inline where it may not."""

    def __init__(self, follower: Follower, metrics: LogMetrics, label: str, workers: ChunkWorkers,
                 spec: EncoderSpec, process: Processing | None = None) -> None:
        super().__init__(follower, metrics, label, process=process)
        self.workers = workers
        self.spec = spec
        self._jobs: dict[tuple[str, int], Job] = {}  # (file key, offset) -> a chunk read ahead

    def chunk(self, state: SourceState, tail: Tail, data: bytes, start: int, batch: Batch) -> None:
        job = self._jobs.pop((tail.key, start), None)
        # Events are joined by the reader (nothing read ahead), and a container whose labels ask for processing has
        # its chunks decoded here.
        if state.decoder.multiline is not None or (
                self.process is not None and self.process.active(self.follower.source(state, tail))):
            if job is not None:
                self.workers.drop(job)
            super().chunk(state, tail, data, start, batch)
            return
        if job is None:
            self._prefetch(state, tail, start + len(data))  # the workers start on what follows at once
            super().chunk(state, tail, data, start, batch)
            return
        pool, follower = self.workers, self.follower
        done = None
        # The worker's payload only for the same bytes, nothing held, and the source's metadata as it is now.
        if job.data == data and not state.decoder.pending and job.source is follower.source(state, tail):
            done = pool.take(job)
        else:
            pool.drop(job)
        self._prefetch(state, tail, start + len(data))
        if done is None:
            self.metrics.worker_chunks.labels(self.label, "reread").inc()
            super().chunk(state, tail, data, start, batch)
            return
        payload, count, truncated = done
        metrics, label = self.metrics, self.label
        metrics.worker_chunks.labels(label, "taken").inc()
        metrics.bytes_read.labels(label).inc(len(data))
        metrics.records_read.labels(label).inc(count)
        batch.segments.append(EncodedSegment(follower.source(state, tail), payload, count, start, truncated))
        batch.count += count
        batch.size += len(data)
        follower.ack(batch.acks, state, tail)

    def _prefetch(self, state: SourceState, tail: Tail, offset: int) -> None:
        """Hand the chunks after ``offset`` to the chunk workers, up to one more than there are workers."""
        pool = self.workers
        for _ in range(pool.size + 1):
            job = self._jobs.get((tail.key, offset))
            if job is None:
                try:
                    data = tail.peek(offset)
                except OSError:
                    return
                if not data:
                    return
                job = pool.submit(data, offset, self.follower.source(state, tail), self.spec, state.spec.format)
                if job is None:
                    return
                self._jobs[(tail.key, offset)] = job
            offset += len(job.data)

    def forget(self, key: str) -> None:
        """Give up the chunks read ahead in the closed file ``key``."""
        for job_key in [k for k in self._jobs if k[0] == key]:
            self.workers.drop(self._jobs.pop(job_key))

"""Chunk workers: a route's json-file chunks decoded and encoded in other processes, so shipping uses more cores.

The reader stays the owner of every file, decoder and checkpoint. While it works on a chunk it reads the next
chunks of the same file ahead (``peek``) and hands them to worker processes; when it reaches such a chunk it reads
it as always and takes the worker's payload instead of decoding the chunk itself, but only when

- the worker saw exactly the bytes the reader read now (the chunk is compared whole), and
- the source's decoder holds nothing (no partial line waiting to be joined), and
- the worker's decoder, starting from nothing, ended with nothing held, no error and nothing truncated.

Anything else (a partial, a bad line, a worker that died or is late, a file that changed) is decoded by the
reader, in order, as it always was: a worker can only save work, never change what is shipped.

Data path: the reader copies the chunk into the job's slot of a shared memory area (``memfd``) and sends a small
request over a pipe; the worker decodes and encodes, writes the payload into the same slot and answers with its
size. Payloads over the slot's room come back over the pipe. Pipes alone cost more than the work saved here
(about 0.6 s of wall per 330 MB on this machine's 2-vCPU VM); the copies in and out of shared memory cost about
0.03 s for the same bytes.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.model import LogSource, Segment

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

SLOTS = 2  # jobs each worker can hold: one being worked on, one waiting
SLOT_INPUT = 1 << 20  # a chunk (collectors.logs.files.READ_CHUNK)
SLOT_BYTES = 16 << 20  # input + payload; a larger payload comes back over the pipe
MAX_WORKERS = 4
STALE_JOB = 5.0  # a job not taken for this long gives its slot to another (its file's reader moved on)
ANSWER_TIMEOUT = 10.0  # a worker alive but silent this long while the reader waits (stopped, starved) is given up
# What the forkserver imports once for every worker: only what the workers run, never __main__ (the agent itself),
# and no structlog (the workers log nothing; tests/unit/test_startup_imports.py).
PRELOAD = ("agent.logs.offload", "collectors.logs.decoders", "exporters.logs.ndjson", "exporters.syslog.format")

# The encoder a route's sink names with its ``offload_spec()``: ("ndjson", None) or ("syslog", SyslogFormat).
EncoderSpec = tuple[str, Any]


def default_workers(cpus: float) -> int:
    """One worker per CPU this process may use (``cpus``: its affinity capped by its cgroup's CPU quota, from the
    wiring), up to ``MAX_WORKERS``; none below two, where a worker would only take turns with the reader. An agent
    run as a DaemonSet with ``limits.cpu: 500m`` on a 64-CPU node starts no workers (each is ~30-35 MB of RSS, plus
    ~35 MB once for multiprocessing's forkserver and resource tracker, all counted against the pod's memory limit,
    for CPU the quota does not give)."""
    whole = int(cpus)
    return 0 if whole < 2 else min(whole, MAX_WORKERS)


# --- the worker process ------------------------------------------------------------------------------------


def _encoder(spec: EncoderSpec) -> Callable[[Sequence[Segment]], tuple[bytes, int]]:
    kind, arg = spec
    if kind == "ndjson":
        from exporters.logs.ndjson import NdjsonEncoder

        ndjson = NdjsonEncoder()
        return lambda segments: (ndjson.encode(segments), 0)
    if kind == "syslog":
        from exporters.syslog.format import SyslogEncoder

        syslog = SyslogEncoder(arg)

        def encode(segments: Sequence[Segment]) -> tuple[bytes, int]:
            payload = syslog.encode(segments)
            return payload, syslog.last_truncated
        return encode
    raise ValueError(f"unknown encoder {kind!r}")


def work(shm: mmap.mmap | memoryview, slot: int, length: int, offset: int, source: LogSource, spec: EncoderSpec,
         max_line_bytes: int, encoders: dict[str, Callable[[Sequence[Segment]], tuple[bytes, int]]],
         fmt: str = "json-file") -> tuple[str, int, int, int, bytes | None]:
    """One job: (status, records, truncated, payload size in the slot, payload if it did not fit)."""
    from collectors.logs.decoders import CriDecoder, JsonFileDecoder

    base = slot * SLOT_BYTES
    data = bytes(shm[base:base + length])
    decoder = JsonFileDecoder(max_line_bytes) if fmt == "json-file" else CriDecoder(max_line_bytes)
    decoder.file = "chunk"
    out = decoder.decode(data, offset)
    if decoder.pending or out.errors or out.truncated:
        return "careful", 0, 0, 0, None
    key = repr(spec)
    encode = encoders.get(key)
    if encode is None:
        encode = encoders[key] = _encoder(spec)
    payload, truncated = encode([Segment(source, out.records)])
    if len(payload) <= SLOT_BYTES:
        shm[base:base + len(payload)] = payload
        return "ok", len(out.records), truncated, len(payload), None
    return "ok", len(out.records), truncated, len(payload), payload


def _serve(conn: Connection, area: str) -> None:
    """The worker's loop: one request at a time until the reader closes its end (or goes away)."""
    fd = os.open(area, os.O_RDWR)
    shm = mmap.mmap(fd, SLOTS * SLOT_BYTES)
    os.close(fd)
    encoders: dict[str, Callable[[Sequence[Segment]], tuple[bytes, int]]] = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        job_id, slot, length, offset, source, spec, max_line_bytes, fmt = request
        try:
            answer: tuple[Any, ...] = work(shm, slot, length, offset, source, spec, max_line_bytes, encoders, fmt)
        except Exception as exc:  # the reader decodes this chunk itself; the error tells why
            answer = ("failed", 0, 0, 0, f"{type(exc).__name__}: {exc}")
        try:
            conn.send((job_id, *answer))
        except OSError:  # the reader closed its end (shutdown, or it gave this worker up)
            return


# --- the reader's side -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Job:
    id: int
    worker: _Worker
    slot: int
    data: bytes
    offset: int
    source: LogSource
    submitted: float
    answer: tuple[Any, ...] | None = None
    abandoned: bool = False


class _Worker:
    def __init__(self, context: Any) -> None:
        area = os.memfd_create("lookout-chunks", os.MFD_CLOEXEC)
        shm = conn = None
        try:
            os.ftruncate(area, SLOTS * SLOT_BYTES)
            shm = mmap.mmap(area, SLOTS * SLOT_BYTES)
            conn, child = context.Pipe()
            try:
                process = context.Process(target=_serve, args=(child, f"/proc/{os.getpid()}/fd/{area}"),
                                          name="lookout-chunk-worker", daemon=True)
                process.start()
            finally:
                child.close()
        except BaseException:  # nothing of a worker that did not start stays open
            if conn is not None:
                conn.close()
            if shm is not None:
                shm.close()
            os.close(area)
            raise
        self.area, self.shm, self.conn, self.process = area, shm, conn, process
        self.free = list(range(SLOTS))
        self.jobs: dict[int, Job] = {}
        self.alive = True

    def close(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
        self.alive = False
        with contextlib.suppress(OSError):
            self.conn.close()
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=1)
        self.shm.close()
        os.close(self.area)


class ChunkWorkers:
    """One pool of worker processes for every route's reader (each reader calls it from its own thread).

    ``submit`` hands a chunk to a worker with a free slot (None when every slot is taken); ``take`` waits for
    the job's answer and returns ``(payload, records, truncated)``, or None when the reader must decode the chunk
    itself; ``drop`` gives up a job (its answer is read and thrown away later). Each job names its encoder
    (``EncoderSpec``: a route's sink) and its format (json-file or CRI); ``spec`` is the default encoder."""

    def __init__(self, workers: int, spec: EncoderSpec | None, max_line_bytes: int,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.size = workers
        self.spec = spec
        self._lock = threading.RLock()  # the workers, their slots and pipes, the jobs
        self.max_line_bytes = max_line_bytes
        self.on_failure = on_failure
        self.failures = 0
        self.disabled = False
        self._workers: list[_Worker] = []
        self._starter: threading.Thread | None = None
        self._start_error = ""
        self._ids = 0
        self.jobs: collections.OrderedDict[int, Job] = collections.OrderedDict()

    def start(self, wait: bool = False) -> None:
        """Start the missing workers in a thread: starting one takes a new interpreter's start-up (~0.1-0.2 s), and
        the reader decodes by itself meanwhile instead of waiting. ``wait``: return once they run."""
        if ((self._starter is None or not self._starter.is_alive()) and len(self._workers) < self.size
                and not self.disabled):
            self._starter = threading.Thread(target=self._start, name="lookout-chunk-workers", daemon=True)
            self._starter.start()
        if wait and self._starter is not None:
            self._starter.join()

    def _start(self) -> None:
        try:
            context = multiprocessing.get_context("forkserver")
            # Only what the workers run, and never __main__ (the agent itself).
            context.set_forkserver_preload(list(PRELOAD))
            while len(self._workers) < self.size and not self.disabled:
                worker = _Worker(context)
                with self._lock:
                    self._workers.append(worker)  # the readers use each as soon as it is in
        except Exception as exc:  # reported (and counted) on the reader's next submit
            self._start_error = f"cannot start chunk workers: {type(exc).__name__}: {exc}"

    def submit(self, data: bytes, offset: int, source: LogSource, spec: EncoderSpec | None = None,
               fmt: str = "json-file") -> Job | None:
        spec = spec or self.spec
        if self.disabled or len(data) > SLOT_INPUT or spec is None:
            return None
        with self._lock:
            return self._submit(data, offset, source, spec, fmt)

    def _submit(self, data: bytes, offset: int, source: LogSource, spec: EncoderSpec, fmt: str) -> Job | None:
        if self._start_error:
            why, self._start_error = self._start_error, ""
            self._fail(why)
        if len(self._workers) < self.size:
            self.start()
        for worker in list(self._workers):
            self._collect(worker, wait_for=None)
        if not self._workers:
            return None
        worker = max(self._workers, key=lambda w: len(w.free) if w.alive else -1)
        if not worker.alive or not worker.free:
            self._reclaim_stale()
            return None
        slot = worker.free.pop()
        base = slot * SLOT_BYTES
        worker.shm[base:base + len(data)] = data
        self._ids += 1
        job = Job(self._ids, worker, slot, data, offset, source, time.monotonic())
        try:
            worker.conn.send((job.id, slot, len(data), offset, source, spec, self.max_line_bytes, fmt))
        except (OSError, ValueError) as exc:
            worker.free.append(slot)
            self._lost(worker, f"chunk worker gone: {exc}")
            return None
        worker.jobs[job.id] = job
        self.jobs[job.id] = job
        return job

    def take(self, job: Job) -> tuple[bytes, int, int] | None:
        """The job's payload, records and truncated count; None when the reader must decode the chunk itself."""
        worker = job.worker
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while True:
            with self._lock:
                if job.abandoned:  # given up as stale: its slot may hold another job's chunk by now
                    self.jobs.pop(job.id, None)
                    return None
                if job.answer is None and worker.alive:
                    self._collect(worker, wait_for=None)  # what is ready, for every route's jobs
                if job.answer is not None or not worker.alive:
                    self.jobs.pop(job.id, None)
                    return self._taken(job)
                if time.monotonic() >= deadline:
                    self.jobs.pop(job.id, None)
                    self._lost(worker, f"chunk worker silent for {ANSWER_TIMEOUT:.0f} s")  # closing kills it
                    return None
            # Wait without the lock: other routes' readers use the pool meanwhile.
            with contextlib.suppress(OSError, ValueError):
                multiprocessing.connection.wait([worker.conn], timeout=min(0.1, deadline - time.monotonic()))

    def _taken(self, job: Job) -> tuple[bytes, int, int] | None:
        worker = job.worker
        answer = job.answer
        if answer is None or not worker.alive:  # a dead worker's slots are unmapped: its answers are worthless
            return None
        status, records, truncated, size, extra = answer
        if status != "ok":
            worker.free.append(job.slot)
            if status == "failed":
                self._fail(f"chunk worker error: {extra}")
            return None
        if extra is not None:
            payload = extra
        else:
            base = job.slot * SLOT_BYTES
            payload = bytes(worker.shm[base:base + size])
        worker.free.append(job.slot)
        return payload, records, truncated

    def drop(self, job: Job) -> None:
        """Give up a job: its slot is free once its answer is in (it may be in already)."""
        with self._lock:
            self._drop(job)

    def _drop(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.abandoned:  # dropped before (as stale): its slot is given back once, not twice
            return
        job.abandoned = True
        if job.answer is not None and job.worker.alive:
            job.worker.free.append(job.slot)

    def _collect(self, worker: _Worker, wait_for: Job | None) -> None:
        """Read the worker's answers that are ready (all of them until ``wait_for``'s, when given)."""
        try:
            while worker.alive and ((wait_for is not None and wait_for.answer is None) or worker.conn.poll()):
                if wait_for is not None and wait_for.answer is None and not worker.conn.poll(ANSWER_TIMEOUT):
                    self._lost(worker, f"chunk worker silent for {ANSWER_TIMEOUT:.0f} s")  # closing kills it
                    return
                answer = worker.conn.recv()
                job = worker.jobs.pop(answer[0], None)
                if job is None:
                    continue
                if job.abandoned:
                    worker.free.append(job.slot)
                else:
                    job.answer = answer[1:]  # the slot holds the payload until the job is taken or dropped
        except (EOFError, OSError) as exc:
            self._lost(worker, f"chunk worker died: {str(exc) or type(exc).__name__}")

    def _lost(self, worker: _Worker, why: str) -> None:
        worker.alive = False
        for job in worker.jobs.values():
            job.answer = None
        worker.jobs.clear()
        self._workers.remove(worker)
        worker.close()
        self._fail(why)

    def _fail(self, why: str) -> None:
        """A worker failed: started again on the next chunk, up to 3 times; then the reader decodes alone."""
        self.failures += 1
        if self.failures >= 3:
            self.disabled = True
        if self.on_failure is not None:
            self.on_failure(why + ("; decoding in the reader from now on" if self.disabled else ""))

    def _reclaim_stale(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if now - job.submitted < STALE_JOB:
                break
            self._drop(job)

    def close(self) -> None:
        self.disabled = True  # a starter thread still running adds no more workers
        if self._starter is not None:
            self._starter.join(timeout=10)
        with self._lock:
            for worker in self._workers:
                worker.close()
            self._workers.clear()
            self.jobs.clear()

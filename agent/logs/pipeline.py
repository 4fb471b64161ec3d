"""The log pipeline: discovery of log sources for every route, checkpoint group commits, and the routes' tasks.

Discovery scans the host's log directories (collectors.logs.sources) on inotify wake-ups and every
``RESCAN_INTERVAL`` and offers each scan to every route's follower; the directory watch reports new files at once
so a route can hold a rotated file open before the runtime deletes it (collectors.logs.watch; without inotify,
discovery rescans every second). Checkpoints are written by group commit: a
route that acknowledged a batch wakes the flusher, which writes everything acknowledged by then in one go, so a
crash repeats at most what was in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from agent.logs.metrics import LogMetrics
from agent.logs.offload import ChunkWorkers
from agent.logs.runner import RouteRunner
from agent.waits import wait_event
from collectors.logs.checkpoints import CheckpointStore
from collectors.logs.sources import SourceSpec
from collectors.logs.watch import POLL_INTERVAL, LogWatch

log = structlog.get_logger("lookout.pipeline")


class LogPipeline:
    """All routes: periodic and inotify-driven source discovery, checkpoint flushing, one runner per route."""

    RESCAN_INTERVAL = 5.0
    GAUGE_INTERVAL = 5.0  # the lag and files gauges, from the files' sizes (an fstat per open file)

    def __init__(self, runners: list[RouteRunner], store: CheckpointStore,
                 scan: Callable[[], dict[str, SourceSpec]], parents: Callable[[], list[str]],
                 workers: ChunkWorkers | None = None,
                 spawned: Callable[[list[asyncio.Task[None]]], None] = lambda tasks: None,
                 metrics: LogMetrics | None = None) -> None:
        self.runners: list[RouteRunner] = []
        self.workers = workers  # the chunk workers the routes share
        self.store = store
        self.scan = scan
        self.parents = parents  # the directories in which new sources appear
        self.spawned = spawned  # told of the tasks of routes added while the pipeline runs (the supervisor)
        self._rescan = asyncio.Event()
        self._acked = asyncio.Event()
        self._started = False
        self._watch: LogWatch | None = None
        self._specs: dict[str, SourceSpec] | None = None  # the last scan
        self.metrics = metrics
        self._write_failing_since = 0.0  # monotonic time of the first failed checkpoint write of a run of them
        self._write_failures = 0
        self._watch_counted: dict[str, int] = {}  # the watch's fallbacks already added to the metric
        # Other long-running parts started with the pipeline's tasks (the journal spool's reader, agent.control).
        self.services: list[Callable[[], Coroutine[Any, Any, None]]] = []
        for runner in runners:
            self.add(runner)

    def add(self, runner: RouteRunner) -> None:
        """A route joins: it gets the last scan and the directory watch at once, and its tasks start if the
        pipeline runs."""
        runner.on_acked = self._acked.set
        self.runners.append(runner)
        if self._watch is not None:
            runner.follower.watch = self._watch
        if self._specs is not None:
            runner.follower.offer(self._specs)
        if self._started:
            self.spawned(runner.start())
            self._rescan.set()

    async def remove(self, runner: RouteRunner, forget: bool) -> None:
        """A route leaves: its tasks stop, its files are closed and its sink too; its checkpoints are forgotten
        if ``forget`` (else a route that replaces it under the same id goes on from them)."""
        self.runners.remove(runner)
        await runner.stop()
        if forget:
            self.store.forget_route(runner.route.id)
            self._acked.set()  # written by the next group commit

    def _pin(self, directory: str) -> None:
        """Files appeared in ``directory`` (inotify thread): let every route open them right away."""
        for runner in self.runners:
            runner.follower.pin_new_files(directory)

    async def discover(self) -> None:
        loop = asyncio.get_running_loop()

        def wake() -> None:  # a new container or pod directory (inotify thread)
            loop.call_soon_threadsafe(self._rescan.set)

        watch = self._watch = await asyncio.to_thread(LogWatch, wake, self._pin)
        for runner in self.runners:
            runner.follower.watch = watch
        try:
            while True:
                self._rescan.clear()
                specs = self._specs = await asyncio.to_thread(self.scan)
                for runner in list(self.runners):
                    runner.follower.offer(specs)  # taken by the route's reader on its next read
                    runner.follower.collect_garbage()
                    runner.wake.set()
                await asyncio.to_thread(watch.sync, self.parents(), {spec.directory for spec in specs.values()})
                self._count_watch_fallbacks(watch)
                interval = min(POLL_INTERVAL, self.RESCAN_INTERVAL) if watch.polling else self.RESCAN_INTERVAL
                if await wait_event(self._rescan, interval):
                    await asyncio.sleep(0.05)  # let a burst of inotify events settle
        finally:
            await asyncio.to_thread(watch.close)

    async def flusher(self) -> None:
        """Write the checkpoints as soon as a route acknowledged something (one write for all the acknowledgements
        made while the previous one ran), and refresh the routes' gauges every ``GAUGE_INTERVAL``."""
        gauges_due = time.monotonic() + self.GAUGE_INTERVAL
        while True:
            await wait_event(self._acked, max(gauges_due - time.monotonic(), 0.0))
            self._acked.clear()
            if not await self._flush():
                await asyncio.sleep(self.GAUGE_INTERVAL)  # not in a tight loop while the disk is full
            if time.monotonic() >= gauges_due:
                for runner in list(self.runners):
                    await asyncio.to_thread(runner.update_gauges)
                gauges_due = time.monotonic() + self.GAUGE_INTERVAL

    async def _flush(self) -> bool:
        """One group commit; False when the write failed. A failure (full or read-only state directory) is logged
        once when it begins (then once a minute while it lasts) and counted in
        ``lookout_checkpoint_write_failures_total``; the offsets stay in memory and shipping goes on, so what is lost
        is only the resume point: a restart before a write succeeds sends again what was delivered meanwhile."""
        try:
            await asyncio.to_thread(self.store.flush)
        except OSError as exc:
            now = time.monotonic()
            self._write_failures += 1
            if self.metrics is not None:
                self.metrics.checkpoint_write_failures.inc()
            if not self._write_failing_since or now - self._write_failing_since >= 60.0:
                first = not self._write_failing_since
                self._write_failing_since = now
                log.error("checkpoint_write_failed", path=str(self.store.path), error=str(exc),
                          failures=self._write_failures, first=first,
                          consequence="shipping goes on; offsets are kept in memory only, so a restart now sends "
                                      "again what was delivered since the last checkpoint write")
            return False
        if self._write_failing_since:
            log.warning("checkpoint_write_recovered", path=str(self.store.path), failures=self._write_failures)
            self._write_failing_since = 0.0
            self._write_failures = 0
        return True

    def _count_watch_fallbacks(self, watch: LogWatch) -> None:
        """Add the watch's new fallbacks to polling to ``lookout_log_watch_fallbacks_total{reason}``."""
        if self.metrics is None:
            return
        for reason, count in watch.fallbacks.items():
            new = count - self._watch_counted.get(reason, 0)
            if new > 0:
                self.metrics.watch_fallbacks.labels(reason).inc(new)
                self._watch_counted[reason] = count

    def tasks(self) -> list[asyncio.Task[None]]:
        self._started = True
        out = [asyncio.create_task(self.discover(), name="log-discovery"),
               asyncio.create_task(self.flusher(), name="checkpoint-flusher")]
        out += [asyncio.create_task(service(), name=f"log-service-{n}") for n, service in enumerate(self.services)]
        for runner in self.runners:
            out += runner.start()
        return out

    def failed(self) -> dict[str, str]:
        """Routes stopped by a bug in their sink: label -> why."""
        return {r.label: r.failed for r in self.runners if r.failed}

    async def drain(self, timeout: float) -> None:
        """Stop reading and give the senders ``timeout`` seconds to deliver what is queued, so a clean
        stop re-sends (almost) nothing after a restart."""
        for runner in self.runners:
            runner.stop_reading()
        waits = [asyncio.create_task(r.queue.join()) for r in self.runners]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        if self.workers is not None:
            await asyncio.to_thread(self.workers.close)
        for runner in self.runners:
            await runner.sink.close()
            await asyncio.to_thread(runner.close_files)
        if not await self._flush():
            log.error("checkpoint_final_write_failed", path=str(self.store.path),
                      consequence="the next start sends again what was delivered since the last checkpoint write")

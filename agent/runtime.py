"""The daemon: asyncio tasks for housekeeping, filesystem usage, Docker metadata and the HTTP server.

Start-up faults of the environment (no Docker, no cgroups yet) are logged and retried; only bad
configuration stops the agent (exit 2, in the CLI). SIGTERM and SIGINT shut down in order.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import functools
import gc
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent import __version__
from agent.config import Config, ConfigError, server_ssl_context
from agent.control import RouteTable
from agent.logconfig import configure_logging
from agent.model import ApiError, LiveSurface, Subscription
from agent.waits import wait_event
from agent.wiring import Agent, build

log = structlog.get_logger("lookout")

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
MIN_WAKE_SPACING = 0.5
DRAIN_TIMEOUT = 5.0  # on SIGTERM, how long queued log batches may take to reach their routes
MMAP_THRESHOLD = 32 << 20  # glibc: blocks below this come from the heap, not their own mmap
TRIM_THRESHOLD = 64 << 20  # glibc: free heap kept at the top before it is given back to the kernel
HEAP_TRIM_INTERVAL = 60.0  # how often free pages inside the heap are given back (trim_heap)


async def housekeeping(agent: Agent, wake: asyncio.Event) -> None:
    trimmed = time.monotonic()
    while True:
        interval = agent.config.housekeeping_interval  # a reload may change it
        wake.clear()
        try:
            snapshot = await asyncio.to_thread(agent.cycle)
            if snapshot is not None:
                agent.rates.update(snapshot, agent.routes.lines())
        except Exception:  # a bug must not stop metrics; it is logged with its traceback
            log.exception("housekeeping_failed")
        if time.monotonic() - trimmed >= HEAP_TRIM_INTERVAL:
            trimmed = time.monotonic()
            await asyncio.to_thread(trim_heap)
        if await wait_event(wake, interval):
            await asyncio.sleep(MIN_WAKE_SPACING)  # debounce bursts of Docker events


async def fs_usage_loop(agent: Agent) -> None:
    if agent.fs_usage is None:
        return
    while agent.collector is None:
        await asyncio.sleep(1.0)  # the first housekeeping cycle builds the collector
    while True:
        collector = agent.collector
        if collector is not None:
            try:
                await asyncio.to_thread(agent.fs_usage.measure, collector.layered_containers())
            except Exception:
                log.exception("fs_usage_failed")
        await asyncio.sleep(agent.config.fs_usage_interval)


class Supervisor:
    """Watches the agent's long-running tasks. A task that ends with an exception is a bug: it is logged with
    its traceback and the agent stops in order (queued log batches drained, acknowledged offsets written) and
    exits 1, so systemd or the kubelet restarts it and the routes resume from their checkpoints. Kept running
    half-dead, a route whose reader died would silently ship nothing while /healthz said ok."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.failed: list[str] = []

    def watch(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return  # a task with nothing to do (no filesystem usage to measure) returns
        self.failed.append(task.get_name())
        log.error("task_failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}",
                  exc_info=(type(exc), exc, exc.__traceback__))
        self.stop.set()


def tune_interpreter_for_logs() -> None:
    """The interpreter settings of an agent that ships logs (``SWITCH_INTERVAL``, ``GC_THRESHOLD``)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    threshold, *older = gc.get_threshold()
    gc.set_threshold(max(threshold, GC_THRESHOLD), *older)


def _import_web() -> tuple[Any, Any, Any]:
    from aiohttp import web

    from exporters.web.app import make_app
    from exporters.web.guard import GuardedRunner

    return web, make_app, GuardedRunner


# Settings a reload (SIGHUP) applies; a change to any other setting is logged as needing a restart.
RELOADABLE = frozenset({"routes", "log_level", "log_format", "housekeeping_interval", "fs_usage_interval",
                        "api_token", "api_token_file", "extra", "storage_duration"})  # the last has no effect


async def reload(agent: Agent, load: Callable[[], Config]) -> None:
    """SIGHUP: read the TOML file and the flags again and apply what may change while running; a configuration that
    does not validate is refused and logged, and the running one stays."""
    try:
        new = await asyncio.to_thread(load)
    except ConfigError as exc:
        log.error("reload_refused", problems=exc.problems)
        return
    except Exception:  # a bug in reading the configuration must not stop the agent that runs on the old one
        log.exception("reload_refused")
        return
    old = agent.config
    try:
        done = await agent.routes.apply(new.routes)
    except ApiError as exc:
        log.error("reload_refused", problems=[str(exc)])
        return
    restart = sorted(f.name for f in dataclasses.fields(Config)
                     if f.name not in RELOADABLE and getattr(old, f.name) != getattr(new, f.name))
    if restart:
        log.warning("reload_needs_restart", settings=restart, why="these settings take effect at the next start")
    agent.config = dataclasses.replace(new, **{name: getattr(old, name) for name in restart})
    agent.routes.config = dataclasses.replace(agent.routes.config, routes=new.routes)
    if (new.log_level, new.log_format) != (old.log_level, old.log_format):
        configure_logging(new.log_level, new.log_format)
    log.info("reloaded", **{k: v for k, v in done.items() if v})


async def serve(config: Config, load: Callable[[], Config] | None = None) -> None:
    agent = build(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def hangup() -> None:
        if load is None:
            log.warning("reload_unavailable", why="the agent was not started from the command line")
            return
        task = loop.create_task(reload(agent, load), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    supervisor = Supervisor(stop)
    tasks: list[asyncio.Task[None]] = []

    def spawned(new: list[asyncio.Task[None]]) -> None:  # a route's tasks, or the log pipeline's
        tune_interpreter_for_logs()
        supervisor.watch(new)
        tasks.extend(new)

    routes = agent.routes
    routes.spawned = spawned
    # The routes ship first: the HTTP server's imports (aiohttp, ~0.1 s of a start-up of ~0.3 s) run in a thread
    # meanwhile, so after a restart the backlog starts moving at once.
    routes.load()
    routes.started = True
    if routes.pipeline is not None:
        spawned(routes.pipeline.tasks())
        log.info("log_routes", routes=[r.label for r in routes.runners()])
    web, make_app, runner_class = await asyncio.to_thread(_import_web)
    wake = asyncio.Event()
    agent.docker._on_change = wake.set
    facts = {"hostname": routes.host, "version": __version__, "host_root": str(config.host_root),
             "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    live = LiveSurface(problems=agent.problems, routes=routes.listing, rates=lambda: agent.rates.rates,
                       control=routes, stream=LazyHub(routes), token=lambda: agent.config.api_token,
                       host=lambda: facts)
    # The listener's limits on connections, idle time and header sizes: exporters/web/guard.py.
    runner = runner_class(make_app(agent.exposition, live), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        tls = server_ssl_context(config)
    except ConfigError as exc:
        log.error("tls_failed", error=str(exc))
        print(f"lookout: {exc}", file=sys.stderr)
        await runner.cleanup()
        raise SystemExit(2) from None
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        from agent.config import listen_failure  # which flag moves the listener; said in the log and on stderr

        message = listen_failure(config, exc)
        log.error("listen_failed", address=f"{config.listen_host}:{config.listen_port}", error=message)
        print(f"lookout: {message}", file=sys.stderr)
        supervisor.failed.append("listen")
        stop.set()
    else:
        log.info("started", listen=f"{config.listen_host}:{config.listen_port}", host_root=str(config.host_root),
                 docker_socket=config.docker_socket or None, interval=config.housekeeping_interval)
        metrics_tasks = [
            asyncio.create_task(housekeeping(agent, wake), name="housekeeping"),
            asyncio.create_task(agent.docker.run(), name="docker"),
            asyncio.create_task(fs_usage_loop(agent), name="fs_usage"),
        ]
        supervisor.watch(metrics_tasks)
        tasks += metrics_tasks
    await stop.wait()
    log.info("stopping")
    loop.remove_signal_handler(signal.SIGHUP)
    for task in list(reloads):
        await asyncio.gather(task, return_exceptions=True)
    routes.end_streams()  # else the web server's shutdown waits for /logs clients (up to a minute)
    pipeline = routes.pipeline
    if pipeline is not None:
        await pipeline.drain(DRAIN_TIMEOUT)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if pipeline is not None:
        await pipeline.close()  # acknowledged offsets are written; unacknowledged batches are re-read
    await runner.cleanup()
    if supervisor.failed == ["listen"]:
        raise SystemExit(1)
    if supervisor.failed:
        log.error("stopped_after_failure", tasks=supervisor.failed)
        raise SystemExit(1)
    log.info("stopped")


class LazyHub:
    """The live stream's hub, built (with the log pipeline, if there is none yet) by the first /logs client."""

    def __init__(self, routes: RouteTable) -> None:
        self.routes = routes

    async def subscribe(self, params: dict[str, str], tail: int, size: int) -> Subscription:
        return await self.routes.hub().subscribe(params, tail, size)


@functools.cache
def _libc() -> ctypes.CDLL:
    """glibc, loaded once: every ``ctypes.CDLL`` makes a new function-pointer class with reference cycles, which
    the once-a-minute trim left for the (rare, threshold 50,000) garbage collector: 9 of each in a 10-minute soak
    census. Raises OSError where there is no glibc."""
    return ctypes.CDLL("libc.so.6")


def limit_malloc_arenas(arenas: int = 1) -> None:
    """Cap glibc's per-thread malloc arenas before worker threads start, and keep big blocks in the heap.

    Every worker thread otherwise gets its own arena, and batches allocated in one thread and
    freed in another leave each arena's high-water mark resident: measured on the 1M-line log
    benchmark, RSS peaked at 154 MB with the default, 112 MB with 2 arenas and 89 MB with 1,
    at the same throughput.

    Log batches are megabytes (a 1 MiB read, its split lines, a 3-4 MiB payload). With glibc's
    defaults such blocks were mmap'ed fresh and the heap's top trimmed back to the kernel batch
    after batch, so every batch faulted its pages in again: on the same benchmark 110,000-360,000
    minor faults and 0.5-1.1 s of system time per million lines. Served from the heap
    (``MMAP_THRESHOLD``) and with up to ``TRIM_THRESHOLD`` of free heap kept: ~19,000 faults,
    0.13-0.23 s of system time, the same peak RSS (80-86 MiB).
    """
    try:
        libc = _libc()
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def trim_heap() -> bool:
    """Give the free pages inside the heap back to the kernel (glibc's ``malloc_trim(0)``); True if any were.

    ``limit_malloc_arenas`` keeps freed batches in the heap, so the heap's free holes stay resident: over the
    one-hour soak (BENCHMARKS, section 18) RSS crept up ~10 MiB an hour while what Python held stayed flat, and
    ``malloc_trim(0)`` took a 74 MiB agent back to 64 MiB. Once a minute (``housekeeping``) it costs a pass over the
    free lists and, at most, the page faults of one batch's memory being touched again."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False  # not glibc


def run_agent(config: Config, load: Callable[[], Config] | None = None) -> int:
    """Run until SIGTERM or SIGINT; ``load`` reads the configuration again on SIGHUP."""
    limit_malloc_arenas()
    configure_logging(config.log_level, config.log_format)
    asyncio.run(serve(config, load))
    return 0

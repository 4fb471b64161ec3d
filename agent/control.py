"""The running agent's routes, as the API and a reload change them.

``RouteTable`` owns every route: those of the configuration (``--route``, the TOML file, ``LOOKOUT_ROUTE``) and those
added over the API, which are kept in ``<state-dir>/routes.json`` (agent.saved_routes) and come back after a restart.
The log pipeline (agent.logs.pipeline) and its shared parts are built on first use: an agent without routes and
without live-stream clients never loads them. A route added at run time is checked exactly as ``--route`` is; a route
replaced by a reload (same id, new URI) goes on from its checkpoints; a route removed forgets them.

The rates the API and the status page show are agent.rates (``ContainerRates``).
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent.config import Config
from agent.logs.routes import LogOptions, Route, check_route, make_sink, parse_route, route_options
from agent.model import ApiError
from agent.params import redact_uri
from agent.saved_routes import ROUTES_FILE, read_saved, write_saved

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from agent.logs.live import LogHub, TapSink
    from agent.logs.metrics import LogMetrics
    from agent.logs.offload import ChunkWorkers
    from agent.logs.pipeline import LogPipeline
    from agent.logs.runner import RouteRunner
    from collectors.docker import DockerMetadata
    from collectors.logs.checkpoints import CheckpointStore
    from collectors.logs.journal import JournalSpool
    from collectors.logs.metadata import LogMetadata

log = structlog.get_logger("lookout.control")

ROUTE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/=-]{0,127}\Z")
TAP_LABEL = "lookout:/logs"  # the live stream's route, in the self-metrics


@dataclass
class RouteEntry:
    route_id: str
    uri: str
    origin: str  # "config" or "api"
    runner: RouteRunner | None  # None: the route could not be built (``error`` says why)
    error: str = ""


class RouteTable:
    """Every route of the agent, and the pipeline that runs them."""

    def __init__(self, config: Config, docker: DockerMetadata, registry: CollectorRegistry, host: str) -> None:
        self.config = config
        self.docker = docker
        self.registry = registry
        self.host = host
        self.entries: dict[str, RouteEntry] = {}
        self.spawned: Callable[[list[asyncio.Task[None]]], None] = lambda tasks: None  # the supervisor
        self.started = False
        self._pipeline: LogPipeline | None = None
        self._store: CheckpointStore | None = None
        self._metrics: LogMetrics | None = None
        self._lookup: LogMetadata | None = None
        self._workers: ChunkWorkers | None = None
        self._hub: LogHub | None = None
        self._graph_root: Path | None = None
        self._journal: JournalSpool | None = None  # the journal spool's reader, once the pipeline exists
        self._journal_scanned = False
        self._journal_note = ""  # why the journal is not read
        self._lock = asyncio.Lock()
        self._options = LogOptions(read_from=config.read_from, max_line_bytes=config.max_line_bytes, host=host,
                                   rate_limit=config.log_rate_limit, multiline_timeout=config.multiline_timeout)

    # --- building ---

    @property
    def pipeline(self) -> LogPipeline | None:
        return self._pipeline

    def ensure_pipeline(self) -> LogPipeline:
        """The log pipeline and its shared parts, built on first use (started at once if the agent runs)."""
        if self._pipeline is None:
            from agent.logs.metrics import LogMetrics
            from agent.logs.pipeline import LogPipeline
            from collectors.logs.checkpoints import CheckpointStore
            from collectors.logs.metadata import LogMetadata

            self._store = CheckpointStore(self.config.state_dir)
            self._metrics = LogMetrics(self.registry)
            self._lookup = LogMetadata(self.docker, self.config.env_metadata_allowlist, self.config.host_root)
            self._make_journal()
            self._pipeline = LogPipeline([], self._store, self._scan, self._parents, None, self._spawn, self._metrics)
            self._pipeline.services.append(self._journal_service)
            if self.started:
                self._spawn(self._pipeline.tasks())
        return self._pipeline

    def _scan(self) -> dict[str, Any]:
        from collectors.logs.sources import scan

        specs = scan(self.config.docker_root, self.config.host_path("/var/log/pods"), self._podman_root(),
                     self._journal_root())
        if self._journal is not None and not self._journal_scanned:
            # Started after the first scan: its files are new sources to every route, read from their head (the
            # spool itself starts where --read-from says).
            self._journal_scanned = True
        return specs

    def _parents(self) -> list[str]:
        from collectors.logs.sources import parents

        return parents(self.config.docker_root, self.config.host_path("/var/log/pods"), self._podman_root(),
                       self._journal_root())

    def _journal_root(self) -> Path | None:
        return self.config.state_dir / "journal" if self._journal is not None else None

    def _make_journal(self) -> None:
        """The journal spool, if the host keeps a journal and journalctl is installed (else logged once)."""
        import shutil

        from collectors.logs.journal import JournalSpool, journal_present, read_by_routes

        if self.config.journal == "off":
            self._journal_note = "--journal off"
            return
        if not journal_present(self.config.host_root):
            self._journal_note = "no journal files under /var/log/journal or /run/log/journal"
            return
        journalctl = shutil.which("journalctl")
        if journalctl is None:
            self._journal_note = "journalctl is not installed"
            return
        assert self._metrics is not None and self._store is not None
        metrics, store = self._metrics, self._store
        self._journal = JournalSpool(self.config.state_dir / "journal", self.config.host_root,
                                     self.config.journal_units, self.config.read_from,
                                     docker_root=self.config.docker_root, journalctl=journalctl,
                                     on_restart=metrics.journal_restarts.inc, on_skipped=metrics.journal_skipped.inc,
                                     finished=lambda path, sid: read_by_routes(store.routes(), path, sid))

    async def _journal_service(self) -> None:
        """The journal spool's reader thread, from the pipeline's first scan on until the pipeline stops."""
        import threading

        if self._journal is None:
            return
        while not self._journal_scanned:  # set by the first scan, in discovery's thread
            await asyncio.sleep(0.05)
        spool = self._journal
        thread = threading.Thread(target=spool.run, name="journal-spool", daemon=True)
        thread.start()
        log.info("journal_reading", units=list(self.config.journal_units), cursor=bool(spool.cursor))
        try:
            while thread.is_alive():
                await asyncio.sleep(1.0)
            # run() returns only when stopped: an exception in it is a bug, and the supervisor stops the agent
            raise RuntimeError("the journal reader's thread ended")
        finally:
            spool.stop()
            await asyncio.to_thread(thread.join, 10)

    def _podman_root(self) -> Path:
        """containers/storage's graph root (Podman's k8s-file logs), from storage.conf once."""
        if self._graph_root is None:
            from collectors.podman import graph_root

            self._graph_root = graph_root(self.config.host_root)
        return self._graph_root

    def _spawn(self, tasks: list[asyncio.Task[None]]) -> None:
        self.spawned(tasks)

    def _chunk_workers(self) -> ChunkWorkers | None:
        if self._workers is None:
            from agent.logs.offload import ChunkWorkers, default_workers
            from collectors.cgroups.quota import usable_cpus

            # One pool of chunk workers for every route that can use them, sized by the CPUs this process may use.
            count = self.config.log_workers if self.config.log_workers >= 0 else default_workers(usable_cpus())
            if count <= 0:
                return None
            self._workers = ChunkWorkers(count, None, self.config.max_line_bytes,
                                         lambda why: log.error("log_chunk_worker_failed", error=why))
            assert self._pipeline is not None
            self._pipeline.workers = self._workers
        return self._workers

    def _runner(self, route: Route) -> RouteRunner:
        from agent.logs.codec import offload_spec
        from agent.logs.runner import RouteRunner

        self.ensure_pipeline()
        assert self._store is not None and self._metrics is not None and self._lookup is not None
        sink = make_sink(route, self.config.state_dir)
        workers = self._chunk_workers() if offload_spec(sink) is not None else None
        runner = RouteRunner(route, sink, self._store, self._metrics, route_options(route, self._options),
                             self._lookup, fresh_start=not self._store.existed, workers=workers)
        return runner

    def load(self) -> None:
        """The routes at start: the configuration's, then those added over the API before (routes.json)."""
        for uri in self.config.routes:
            route = parse_route(uri)
            self._start(RouteEntry(route.id, uri, "config", None), route)
        for item in read_saved(self.routes_file):
            route_id, uri = item["id"], item["uri"]
            if route_id in self.entries:
                log.error("api_route_shadowed", route=route_id, why="a configured route has the same id; kept in "
                          f"{self.routes_file} and not started")
                continue
            problem = check_route(uri, self.config.state_dir)
            entry = RouteEntry(route_id, uri, "api", None, problem or "")
            if problem:
                log.error("api_route_invalid", route=route_id, error=problem)
                self.entries[route_id] = entry
                continue
            self._start(entry, self._api_route(uri, route_id))

    def _start(self, entry: RouteEntry, route: Route) -> None:
        self.entries[entry.route_id] = entry
        try:
            entry.runner = self._runner(route)
        except (ValueError, OSError) as exc:
            entry.error = f"cannot start: {exc}"
            log.error("route_not_started", route=redact_uri(entry.uri), error=str(exc))
            return
        self.ensure_pipeline().add(entry.runner)

    @staticmethod
    def _api_route(uri: str, route_id: str) -> Route:
        route = parse_route(uri)
        return dataclasses.replace(route, params={**route.params, "name": route_id})

    # --- the live stream ---

    def hub(self) -> LogHub:
        if self._hub is None:
            from agent.logs.live import LogHub

            self.ensure_pipeline()
            assert self._lookup is not None
            self._hub = LogHub(self.ensure_pipeline, self._make_tap, TAP_LABEL, self._scan, self._lookup,
                               self.registry, self.host, self.config.max_line_bytes)
        return self._hub

    def _make_tap(self, sink: TapSink, store: CheckpointStore) -> RouteRunner:
        """The live stream's route: every container, from the offsets in ``store`` (files not in it from their
        head), checkpoints in memory only."""
        from agent.logs.runner import RouteRunner

        assert self._metrics is not None and self._lookup is not None
        route = Route(TAP_LABEL, "lookout", "", None, "/logs", {"name": TAP_LABEL})
        options = dataclasses.replace(self._options, read_from="head", batch_records=1000, batch_bytes=1 << 20,
                                      flush_interval=0.0)
        return RouteRunner(route, sink, store, self._metrics, options, self._lookup, fresh_start=False,
                           processing=False)

    def end_streams(self) -> None:
        """The agent stops: end the live streams."""
        if self._hub is not None:
            self._hub.end()

    # --- the API ---

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(entry) for entry in self.entries.values()]

    def describe(self, entry: RouteEntry) -> dict[str, Any]:
        runner = entry.runner
        out: dict[str, Any] = {"id": entry.route_id, "uri": redact_uri(entry.uri), "origin": entry.origin}
        if runner is None:
            return {**out, "state": "failed", "error": entry.error, "files": 0, "lag_bytes": 0, "lag_seconds": 0.0,
                    "records_per_second": 0.0, "bytes_per_second": 0.0, "records_total": 0, "retries_total": 0,
                    "dead_lettered_total": 0, "dropped_total": 0}
        stats = runner.delivery.stats
        now = time.time()
        records_rate, bytes_rate = stats.rates(time.monotonic())
        return {**out, "state": runner.state, "error": runner.error, "files": runner.files_open,
                "lag_bytes": runner.lag_bytes,
                "lag_seconds": round(self._lag_seconds(runner, now), 3),
                "records_per_second": round(records_rate, 3), "bytes_per_second": round(bytes_rate, 3),
                "records_total": stats.delivered, "retries_total": stats.retries,
                "dead_lettered_total": stats.dead_lettered, "dropped_total": stats.dropped}

    @staticmethod
    def _lag_seconds(runner: RouteRunner, now: float) -> float:
        """How old the oldest undelivered line is, roughly: the time of the last record delivered (or of the last
        delivery, or the route's start) while bytes are behind."""
        if not runner.lag_bytes:
            return 0.0
        front = record_time(runner.last_record_time) or runner.delivery.stats.delivered_at or runner.started_at
        return max(0.0, now - front)

    async def add(self, uri: str, route_id: str | None) -> dict[str, Any]:
        async with self._lock:
            problem = check_route(uri, self.config.state_dir)
            if problem:
                raise ApiError(400, problem)
            route = parse_route(uri)
            if route_id is None:
                route_id = route.params.get("name") or secrets.token_hex(6)
            elif route.params.get("name", route_id) != route_id:
                raise ApiError(400, f"the id {route_id!r} and the route's name= {route.params['name']!r} differ")
            if not ROUTE_ID.match(route_id):
                raise ApiError(400, f"a route id is 1-128 letters, digits and ._:@+/=- (starting with a letter or "
                               f"digit), not {route_id!r}")
            if route_id in self.entries:
                raise ApiError(409, f"a route with id {route_id!r} exists ({self.entries[route_id].origin})")
            label = redact_uri(uri)
            same = [e.route_id for e in self.entries.values() if redact_uri(e.uri) == label]
            if same:
                raise ApiError(409, f"route {same[0]!r} already ships to {label}")
            entry = RouteEntry(route_id, uri, "api", None)
            self._start(entry, self._api_route(uri, route_id))
            if entry.runner is None:
                del self.entries[route_id]
                raise ApiError(400, entry.error)
            try:
                await asyncio.to_thread(self._save)
            except OSError as exc:
                await self._remove(entry, forget=True)
                raise ApiError(500, f"the route cannot be kept in {self.routes_file}: {exc}") from exc
            log.info("route_added", route=route_id, uri=label)
            return self.describe(entry)

    async def remove(self, route_id: str) -> None:
        async with self._lock:
            entry = self.entries.get(route_id)
            if entry is None:
                raise ApiError(404, f"no route {route_id!r} (GET /routes lists them)")
            if entry.origin == "config":
                raise ApiError(409, f"route {route_id!r} comes from the configuration: remove it there and reload "
                               "(SIGHUP)")
            await self._remove(entry, forget=True)
            await asyncio.to_thread(self._save)
            log.info("route_removed", route=route_id)

    async def _remove(self, entry: RouteEntry, forget: bool) -> None:
        self.entries.pop(entry.route_id, None)
        runner = entry.runner
        if runner is not None and self._pipeline is not None:
            await self._pipeline.remove(runner, forget)
            if forget:
                assert self._metrics is not None
                self._metrics.forget(runner.label)

    # --- reload ---

    async def apply(self, routes: Sequence[str]) -> dict[str, list[str]]:
        """Make the configured routes ``routes`` (a reload): added, replaced when their URI changed (keeping their
        checkpoints), removed (forgetting them). API routes are untouched; a configured route that takes an API
        route's id is refused (ApiError), and nothing changes."""
        async with self._lock:
            wanted: dict[str, str] = {}
            for uri in routes:
                wanted[parse_route(uri).id] = uri
            clash = [i for i in wanted if i in self.entries and self.entries[i].origin == "api"]
            if clash:
                raise ApiError(409, f"configured route id(s) {', '.join(clash)} are taken by API routes")
            done: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
            for route_id, entry in list(self.entries.items()):
                if entry.origin != "config":
                    continue
                if route_id not in wanted:
                    await self._remove(entry, forget=True)
                    done["removed"].append(route_id)
                elif wanted[route_id] != entry.uri:
                    await self._remove(entry, forget=False)
                    self._start(RouteEntry(route_id, wanted[route_id], "config", None), parse_route(wanted[route_id]))
                    done["changed"].append(route_id)
            for route_id, uri in wanted.items():
                if route_id not in self.entries:
                    self._start(RouteEntry(route_id, uri, "config", None), parse_route(uri))
                    done["added"].append(route_id)
            return done

    # --- persistence of API routes ---

    @property
    def routes_file(self) -> Path:
        return self.config.state_dir / ROUTES_FILE

    def _save(self) -> None:
        """routes.json (agent.saved_routes): the routes added over the API."""
        write_saved(self.routes_file, [{"id": e.route_id, "uri": e.uri} for e in self.entries.values()
                                       if e.origin == "api"])

    # --- what other parts read ---

    def runners(self) -> list[RouteRunner]:
        return [e.runner for e in self.entries.values() if e.runner is not None]

    def failed(self) -> dict[str, str]:
        out = {f"route {e.route_id}": e.error for e in self.entries.values() if e.runner is None}
        out.update({f"route {r.label}": r.failed for r in self.runners() if r.failed})
        return out

    def lines(self) -> dict[str, int]:
        """Records delivered per container id, by the first route that ships each container."""
        out: dict[str, int] = {}
        for runner in self.runners():
            runner.forget_gone_lines()
            for container_id, count in runner.lines.items():
                out.setdefault(container_id, count)
            for container_id in runner.shipped():  # read, and silent so far: 0 lines, not unknown
                out.setdefault(container_id, 0)
        return out


def record_time(text: str) -> float:
    """A record's RFC 3339 UTC time as a Unix time (0.0 when it is not one)."""
    if len(text) < 20:
        return 0.0
    try:
        whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    frac = text[19:].rstrip("Z")
    return whole + (float(frac) if frac.startswith(".") and frac[1:].isdigit() else 0.0)

"""Builds the agent's parts from a ``Config``: the only module that imports collectors and exporters."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import structlog

from agent import __version__
from agent.config import Config
from agent.model import ContainerInfo, Runtime, Snapshot
from agent.params import parse_duration, parse_size, redact_uri
from agent.routes import FILTER_KEYS, Route, parse_route
from agent.telemetry import Telemetry
from collectors.cgroups.mounts import CgroupLayout, NoCgroupsError, discover_layout
from collectors.cgroups.reader import Wanted, make_reader
from collectors.cri import CriMetadata
from collectors.discovery import CgroupRef
from collectors.docker import DockerMetadata, info_from_inspect
from collectors.host import HostFilesystems
from collectors.manager import CollectOptions, Collector, FsUsage
from exporters.prometheus.exposition import Exposition
from exporters.prometheus.render import LabelPolicy, Renderer, enabled_families

if TYPE_CHECKING:
    from agent.pipeline import LogOptions, LogPipeline, Sink
    from collectors.logs.sources import SourceSpec

# The log pipeline and its sinks (watchdog, the syslog and HTTP encoders) are imported only where routes are
# built: an agent without --route never loads them (~2 MB of RSS).

log = structlog.get_logger("lookout.wiring")


@dataclass
class Agent:
    config: Config
    docker: DockerMetadata
    collector: Collector | None
    renderer: Renderer
    exposition: Exposition
    telemetry: Telemetry
    fs_usage: FsUsage | None
    logs: LogPipeline | None = None

    def build_collector(self) -> Collector | None:
        """(Re)try finding the cgroup hierarchies; None while there are none."""
        if self.collector is None:
            self.collector = make_collector(self.config, self.docker, self.fs_usage)
        return self.collector

    def cycle(self) -> Snapshot | None:
        """One housekeeping cycle in a worker thread: collect, render, publish."""
        collector = self.build_collector()
        if collector is None:
            return None
        with self.exposition.exclusive(), self.telemetry.collection_duration.time():
            snapshot = collector.collect()
            with self.telemetry.render_duration.time():
                self.exposition.publish(snapshot, self.renderer.chunks)
        return snapshot

    def containers_by_runtime(self) -> Counter[str]:
        snap = self.exposition.snapshot
        return Counter(str(s.info.runtime) for s in snap.containers) if snap else Counter()


def wanted(config: Config) -> Wanted:
    on = config.metric_enabled
    return Wanted(cpu=on("cpu"), percpu=on("percpu"), memory=on("memory"), disk_io=on("diskIO"),
                  pressure=on("pressure"), process=on("process"), oom=on("oom_event"))


def make_collector(config: Config, docker: DockerMetadata, fs_usage: FsUsage | None) -> Collector | None:
    try:
        layout: CgroupLayout = discover_layout(config.host_root)
    except NoCgroupsError as exc:
        log.error("cgroups_not_found", error=str(exc))
        return None
    log.info("cgroups_found", version=layout.version, roots=layout.hierarchy_roots())
    reader = make_reader(layout, config.host_root, wanted(config))
    options = CollectOptions(network=config.metric_enabled("network"), disk=config.metric_enabled("disk"),
                             process=config.metric_enabled("process"))
    return Collector(config.host_root, layout, reader, docker, CriMetadata(config.host_root), options, fs_usage)


def host_name(config: Config) -> str:
    if config.host_root != Path("/"):
        try:
            name = (config.host_root / "etc/hostname").read_text().strip()
            if name:
                return name
        except OSError:
            pass
    return socket.gethostname()


CRI_METADATA_TTL = 30.0


class LogMetadata:
    """Container metadata for a log source: the Docker API cache, else config.v2.json; for CRI files the
    runtime's bundle annotations (via the /var/log/containers link naming the container id), else the path."""

    def __init__(self, docker: DockerMetadata, env_prefixes: tuple[str, ...], host_root: Path) -> None:
        self.docker = docker
        self.env_prefixes = env_prefixes
        self.links_dir = host_root / "var/log/containers"
        self.cri = CriMetadata(host_root)
        self._disk: dict[str, ContainerInfo] = {}
        self._cri_cache: dict[str, tuple[float, ContainerInfo]] = {}

    def _cri_id(self, spec: SourceSpec) -> str:
        """The id of the newest container writing into ``spec.directory`` (kubelet's legacy symlinks)."""
        newest, best = "", -1.0
        try:
            names = os.listdir(self.links_dir)
        except OSError:
            return ""
        suffix_len = len("-") + 64 + len(".log")
        for name in names:
            if not name.startswith(f"{spec.pod}_{spec.namespace}_{spec.container}-") or len(name) < suffix_len:
                continue
            link = self.links_dir / name
            try:
                if os.path.dirname(os.readlink(link)).rstrip("/").endswith(spec.directory.split("/var/log/pods/")[-1]):
                    mtime = link.lstat().st_mtime
                    if mtime > best:
                        newest, best = name[-suffix_len + 1 : -4], mtime
            except OSError:
                continue
        return newest

    def __call__(self, spec: SourceSpec) -> ContainerInfo | None:
        if spec.format == "json-file":
            info = self.docker.get(spec.container_id)
            if info is not None:
                return info
            cached = self._disk.get(spec.container_id)
            if cached is None:
                base = Path(spec.directory)
                try:
                    doc = orjson.loads((base / "config.v2.json").read_bytes())
                    host = orjson.loads((base / "hostconfig.json").read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    return None
                cached = info_from_inspect(doc, self.env_prefixes, network_mode=host.get("NetworkMode", ""))
                if len(self._disk) > 10_000:
                    self._disk.clear()
                self._disk[spec.container_id] = cached
            return cached
        entry = self._cri_cache.get(spec.directory)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        info = self._cri_info(spec)
        if len(self._cri_cache) > 10_000:
            self._cri_cache.clear()
        # Same object until it expires: a restart's new container id is picked up within 30 s.
        self._cri_cache[spec.directory] = (now + CRI_METADATA_TTL, info)
        return info

    def _cri_info(self, spec: SourceSpec) -> ContainerInfo:
        cid = self._cri_id(spec)
        if cid:
            self.cri.refresh()
            info = self.cri.get(CgroupRef("", Runtime.CONTAINERD, cid, spec.pod_uid))
            if info is not None and info.pod:
                return info
        labels = {"io.kubernetes.pod.name": spec.pod, "io.kubernetes.pod.namespace": spec.namespace,
                  "io.kubernetes.pod.uid": spec.pod_uid, "io.kubernetes.container.name": spec.container}
        return ContainerInfo(cgroup="", runtime=Runtime.CONTAINERD, container_id=cid, name=cid or spec.container,
                             labels=labels, pod=spec.pod, namespace=spec.namespace, container=spec.container)


# What every route takes: the filters, a stable checkpoint name, and the batch limits.
COMMON_PARAMS = frozenset({*FILTER_KEYS, "name", "batch", "batch_bytes", "flush"})
SYSLOG_PARAMS = COMMON_PARAMS | {"format", "framing", "facility", "hostname", "tag", "max_message_bytes",
                                 "ca", "cert", "key", "verify", "server_name", "tls"}


@dataclass(frozen=True)
class RouteKind:
    records: int  # records per batch
    size: int  # bytes per batch
    flush: float  # seconds a partial batch may wait
    params: frozenset[str] | None  # the query parameters it takes; None: the rest goes to the receiver


ROUTE_KINDS = {
    "file": RouteKind(10_000, 1 << 20, 0.0, COMMON_PARAMS),
    "stdout": RouteKind(10_000, 1 << 20, 0.0, COMMON_PARAMS),
    "syslog": RouteKind(10_000, 1 << 20, 0.0, SYSLOG_PARAMS),
    "http": RouteKind(1000, 5 << 20, 1.0, None),
    "elasticsearch": RouteKind(1000, 5 << 20, 1.0, None),
}


def route_kind(route: Route) -> RouteKind:
    """``syslog+tcp`` -> syslog, ``https`` -> http, ``elasticsearch+https`` -> elasticsearch."""
    prefix = route.scheme.split("+")[0]
    kind = ROUTE_KINDS.get("http" if prefix == "https" else prefix)
    if kind is None:
        raise ValueError(f"route scheme {route.scheme!r} is not available")
    return kind


def make_sink(route: Route, state_dir: Path) -> Sink:
    """The sink for a route; raises ValueError naming what is wrong with the route's options."""
    # Each sink's module only when a route uses it: the HTTP sinks import aiohttp (~0.1 s), and a syslog or
    # file route ships before the agent imports it for its own HTTP server (see agent.runtime.serve).
    scheme = route.scheme
    kind = route_kind(route)
    if kind.params is not None:
        unknown = sorted(set(route.params) - kind.params)
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(unknown)} for {scheme}:// "
                             f"(it takes {', '.join(sorted(kind.params))})")
    if scheme == "file":
        if route.host or not route.path.startswith("/") or route.path.endswith("/"):
            raise ValueError("needs an absolute file path: file:///path/to/out.ndjson")
        from exporters.logs.file import FileSink

        return FileSink(route.path)
    if scheme == "stdout":
        from exporters.logs.file import StdoutSink

        return StdoutSink()
    if scheme.startswith("syslog+"):
        from exporters.syslog.sink import SyslogSink

        if not route.host:
            raise ValueError("needs a host: syslog+tcp://HOST:PORT")
        try:
            return SyslogSink(scheme, route.host, route.port, route.params)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS files: {exc}") from exc
    if scheme in ("http", "https", "elasticsearch+http", "elasticsearch+https"):
        from exporters.http.elasticsearch import ElasticsearchSink
        from exporters.http.sink import HttpSink

        try:
            if scheme.startswith("elasticsearch+"):
                return ElasticsearchSink(route.uri, scheme.split("+")[1], state_dir, route.id)
            return HttpSink(route.uri, scheme, state_dir, route.id)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS files: {exc}") from exc
    raise ValueError(f"route scheme {scheme!r} is not available")


def route_options(route: Route, base: LogOptions) -> LogOptions:
    kind = route_kind(route)
    records, size, flush = kind.records, kind.size, kind.flush
    params = route.params
    try:
        records = int(params.get("batch", records))
        size = parse_size(params["batch_bytes"]) if "batch_bytes" in params else size
        flush = parse_duration(params["flush"]) if "flush" in params else flush
    except ValueError as exc:
        raise ValueError(f"batch/batch_bytes/flush: {exc}") from exc
    if records < 1:
        raise ValueError("batch must be at least 1")
    return dataclasses.replace(base, batch_records=records, batch_bytes=size, flush_interval=flush)


def check_route(uri: str, state_dir: Path) -> str | None:
    """The problem with a route's options, found by building (not connecting) its sink; None when fine."""
    from agent.pipeline import LogOptions

    try:
        route = parse_route(uri)
        make_sink(route, state_dir)
        route_options(route, LogOptions())
    except ValueError as exc:
        return f"--route {redact_uri(uri)!r}: {exc}"
    return None


def make_logs(config: Config, docker: DockerMetadata, telemetry: Telemetry) -> LogPipeline | None:
    if not config.routes:
        return None
    from agent.pipeline import LogMetrics, LogOptions, LogPipeline, RouteRunner
    from collectors.logs.checkpoints import CheckpointStore
    from collectors.logs.sources import scan

    store = CheckpointStore(config.state_dir)
    metrics = LogMetrics(telemetry.registry)
    from agent.offload import default_workers

    options = LogOptions(read_from=config.read_from, max_line_bytes=config.max_line_bytes,
                         host=host_name(config),
                         workers=config.log_workers if config.log_workers >= 0 else default_workers())
    lookup = LogMetadata(docker, config.env_metadata_allowlist, config.host_root)
    runners = []
    for uri in config.routes:
        route = parse_route(uri)
        runners.append(RouteRunner(route, make_sink(route, config.state_dir), store, metrics,
                                   route_options(route, options), lookup, fresh_start=not store.existed))
    pods_root = config.host_path("/var/log/pods")
    return LogPipeline(runners, store, lambda: scan(config.docker_root, pods_root),
                       [str(config.docker_root / "containers"), str(pods_root)])


def build(config: Config) -> Agent:
    telemetry = Telemetry()
    docker = DockerMetadata(config.docker_root, config.docker_socket, config.env_metadata_allowlist)
    fs_usage = (FsUsage(HostFilesystems(config.host_root), config.docker_root)
                if config.metric_enabled("disk") else None)
    policy = LabelPolicy(config.store_container_labels, frozenset(config.container_labels_allowlist))
    renderer = Renderer(enabled_families(config.disabled_metrics), policy, config.metrics_timestamps,
                        version=__version__)
    agent = Agent(config, docker, None, renderer, Exposition(telemetry.registry), telemetry, fs_usage,
                  make_logs(config, docker, telemetry))
    telemetry.watch(lambda: agent.collector.errors if agent.collector else Counter(),
                    agent.containers_by_runtime)
    return agent

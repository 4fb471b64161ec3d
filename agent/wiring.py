"""Builds the agent's parts from a ``Config``: the only module that imports collectors and exporters."""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from agent import __version__
from agent.config import Config
from agent.logs.routes import LogOptions, check_route, make_sink, parse_route, route_options
from agent.model import Snapshot
from agent.telemetry import Telemetry
from collectors.cgroups.mounts import CgroupLayout, NoCgroupsError, discover_layout
from collectors.cgroups.reader import Wanted, make_reader
from collectors.cri import CriMetadata
from collectors.docker import DockerMetadata
from collectors.host import HostFilesystems
from collectors.manager import CollectOptions, Collector, FsUsage
from exporters.prometheus.exposition import Exposition
from exporters.prometheus.render import LabelPolicy, Renderer, enabled_families

if TYPE_CHECKING:
    from agent.logs.pipeline import LogPipeline

__all__ = ["Agent", "build", "check_route"]

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


def make_logs(config: Config, docker: DockerMetadata, telemetry: Telemetry) -> LogPipeline | None:
    if not config.routes:
        return None
    from agent.logs.codec import offload_spec
    from agent.logs.metrics import LogMetrics
    from agent.logs.offload import ChunkWorkers, default_workers
    from agent.logs.pipeline import LogPipeline
    from agent.logs.runner import RouteRunner
    from collectors.cgroups.quota import usable_cpus
    from collectors.logs.checkpoints import CheckpointStore
    from collectors.logs.metadata import LogMetadata
    from collectors.logs.sources import parents, scan

    store = CheckpointStore(config.state_dir)
    metrics = LogMetrics(telemetry.registry)
    options = LogOptions(read_from=config.read_from, max_line_bytes=config.max_line_bytes, host=host_name(config))
    lookup = LogMetadata(docker, config.env_metadata_allowlist, config.host_root)
    routes = [parse_route(uri) for uri in config.routes]
    sinks = [make_sink(route, config.state_dir) for route in routes]
    # One pool of chunk workers for every route that can use them, sized by the CPUs this process may use.
    workers = None
    count = config.log_workers if config.log_workers >= 0 else default_workers(usable_cpus())
    if count > 0 and any(offload_spec(sink) is not None for sink in sinks):
        workers = ChunkWorkers(count, None, config.max_line_bytes,
                               lambda why: log.error("log_chunk_worker_failed", error=why))
    runners = [RouteRunner(route, sink, store, metrics, route_options(route, options), lookup,
                           fresh_start=not store.existed, workers=workers)
               for route, sink in zip(routes, sinks, strict=True)]
    pods_root = config.host_path("/var/log/pods")
    return LogPipeline(runners, store, lambda: scan(config.docker_root, pods_root),
                       lambda: parents(config.docker_root, pods_root), workers)


def build(config: Config) -> Agent:
    if config.state_dir_note:  # the default state directory could not be written: say where the state is
        log.warning("state_dir_fallback", state_dir=str(config.state_dir), why=config.state_dir_note)
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

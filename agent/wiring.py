"""Builds the agent's parts from a ``Config``: the only module that imports collectors and exporters."""

from __future__ import annotations

import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from agent import __version__
from agent.config import STORAGE_DURATION_NOTE, Config
from agent.control import RouteTable
from agent.logs.routes import check_route
from agent.model import MachineInfo, Snapshot
from agent.rates import ContainerRates
from agent.telemetry import Telemetry
from collectors.cgroups.mounts import CgroupLayout, NoCgroupsError, discover_layout
from collectors.cgroups.reader import Wanted
from collectors.cri import CriMetadata
from collectors.discovery import RawFilter
from collectors.docker import DockerMetadata
from collectors.host import HostFilesystems
from collectors.hostkinds import unfed_kinds as check_kinds
from collectors.manager import CollectOptions, Collector, FsUsage, make_reader
from collectors.procstats import ProcKindsWanted
from exporters.prometheus.exposition import Exposition
from exporters.prometheus.render import LabelPolicy, Renderer, enabled_families

if TYPE_CHECKING:
    from agent.logs.pipeline import LogPipeline

__all__ = ["Agent", "build", "check_kinds", "check_route", "make_logs"]

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
    routes: RouteTable
    rates: ContainerRates = field(default_factory=ContainerRates)
    cgroups_missing: str = ""  # why no cgroup hierarchy was found ("" once one is)
    collected: bool = False  # the first collection finished
    _errors: Counter[str] = field(default_factory=Counter)

    def build_collector(self) -> Collector | None:
        """(Re)try finding the cgroup hierarchies; None while there are none."""
        if self.collector is None:
            self.collector, missing = make_collector(self.config, self.docker, self.fs_usage)
            if missing and missing != self.cgroups_missing:  # logged once, not every cycle; counted every cycle
                log.error("cgroups_not_found", error=missing)
            self.cgroups_missing = missing
        return self.collector

    def cycle(self) -> Snapshot | None:
        """One housekeeping cycle in a worker thread: collect, render, publish. Without a cgroup hierarchy the cycle
        counts an error (``lookout_collector_errors_total{collector="cgroups"}``) and publishes an empty snapshot
        with ``container_scrape_error`` 1, so that /metrics says it rather than going quiet."""
        collector = self.build_collector()
        with self.exposition.exclusive(), self.telemetry.collection_duration.time():
            if collector is None:
                self._errors["cgroups"] += 1
                snapshot = Snapshot(time.time(), [], MachineInfo(), scrape_error=True, machine_error=True)
            else:
                snapshot = collector.collect()
            with self.telemetry.render_duration.time():
                self.exposition.publish(snapshot, self.renderer.chunks)
        self.collected = True
        return snapshot

    def errors(self) -> Counter[str]:
        errors = Counter(self._errors)
        if self.collector is not None:
            errors.update(self.collector.errors)
        return errors

    def problems(self) -> dict[str, str]:
        """Why the agent is not ready (/readyz): no cgroups, no collection yet, a route failed for good."""
        out = {}
        if self.cgroups_missing:
            out["cgroups"] = self.cgroups_missing
        elif not self.collected:
            out["collection"] = "the first collection has not finished"
        out.update(self.routes.failed())
        return out

    def containers_by_runtime(self) -> Counter[str]:
        snap = self.exposition.snapshot
        return Counter(str(s.info.runtime) for s in snap.containers) if snap else Counter()


def wanted(config: Config) -> Wanted:
    on = config.metric_enabled
    return Wanted(cpu=on("cpu"), percpu=on("percpu"), memory=on("memory"), disk_io=on("diskIO"),
                  pressure=on("pressure"), process=on("process"), oom=on("oom_event"),
                  hugetlb=on("hugetlb"), numa=on("memory_numa"), cpuset=on("cpuset"))


def make_collector(config: Config, docker: DockerMetadata,
                   fs_usage: FsUsage | None) -> tuple[Collector | None, str]:
    """The collector, or None and why no cgroup hierarchy was found."""
    try:
        layout: CgroupLayout = discover_layout(config.host_root)
    except NoCgroupsError as exc:
        return None, f"no cgroup hierarchy under --host-root {config.host_root}: {exc}"
    log.info("cgroups_found", version=layout.version, roots=layout.hierarchy_roots())
    reader = make_reader(layout, config.host_root, wanted(config))
    on = config.metric_enabled
    options = CollectOptions(network=config.metric_enabled("network"), disk=config.metric_enabled("disk"),
                             process=config.metric_enabled("process"),
                             cpu_topology=config.metric_enabled("cpu_topology"),
                             proc_kinds=ProcKindsWanted(tcp=on("tcp"), udp=on("udp"), advtcp=on("advtcp"),
                                                        sched=on("sched"), referenced=on("referenced_memory")),
                             resctrl=on("resctrl"),
                             raw=RawFilter(config.docker_only, config.raw_cgroup_prefix_allowlist),
                             root_stats=not config.disable_root_cgroup_stats)
    cri = CriMetadata(config.host_root, config.env_metadata_allowlist)
    return Collector(config.host_root, layout, reader, docker, cri, options, fs_usage), ""


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
    """The configured routes' log pipeline, not started (tests; the daemon goes through ``Agent.routes``)."""
    table = RouteTable(config, docker, telemetry.registry, host_name(config))
    table.load()
    return table.pipeline


def build(config: Config) -> Agent:
    if config.state_dir_note:  # the default state directory could not be written: say where the state is
        log.warning("state_dir_fallback", state_dir=str(config.state_dir), why=config.state_dir_note)
    if config.metrics_unfed:  # left on by --disable-metrics, but this host cannot feed them
        log.warning("metric_kinds_not_collected", kinds=dict(config.metrics_unfed))
    if config.storage_duration is not None:
        log.warning("storage_duration_ignored", why=STORAGE_DURATION_NOTE)
    telemetry = Telemetry()
    docker = DockerMetadata(config.docker_root, config.docker_socket, config.env_metadata_allowlist)
    fs_usage = (FsUsage(HostFilesystems(config.host_root), config.docker_root)
                if config.metric_enabled("disk") else None)
    policy = LabelPolicy(config.store_container_labels, frozenset(config.container_labels_allowlist))
    renderer = Renderer(enabled_families(config.disabled_metrics), policy, config.metrics_timestamps,
                        version=__version__)
    routes = RouteTable(config, docker, telemetry.registry, host_name(config))
    agent = Agent(config, docker, None, renderer, Exposition(telemetry.registry), telemetry, fs_usage, routes)
    telemetry.watch(agent.errors, agent.containers_by_runtime)
    return agent

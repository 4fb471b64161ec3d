"""One housekeeping cycle: discover cgroups, attach metadata, read stats, return a ``Snapshot``.

Runs in a worker thread. Errors are counted per collector (``errors``) and never escape: a
vanished container simply drops out of the snapshot, a missing controller leaves parts empty.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from pathlib import Path

import structlog

from agent.model import (
    ContainerInfo,
    ContainerSample,
    ContainerStats,
    FilesystemStats,
    MachineInfo,
    Runtime,
    Snapshot,
    Spec,
)
from collectors.cgroups.mounts import CgroupLayout
from collectors.cgroups.reader import DeviceNames, V1Reader, Wanted, hugepage_sizes
from collectors.cgroups.v2 import V2Reader
from collectors.cri import CriMetadata
from collectors.discovery import CgroupRef, RawFilter, reported, walk
from collectors.docker import DockerMetadata
from collectors.host import HostFilesystems, HostReader, disk_usage, read_machine_info
from collectors.procstats import ProcKinds, ProcKindsWanted
from collectors.resctrl import Resctrl

log = structlog.get_logger("lookout.collector")

MACHINE_INFO_INTERVAL = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class CollectOptions:
    network: bool = True
    disk: bool = True
    process: bool = True
    cpu_topology: bool = False  # machine info with the NUMA nodes, cores and caches
    # tcp, udp, advtcp, sched, referenced_memory: read from /proc per container
    proc_kinds: ProcKindsWanted = dataclasses.field(default_factory=ProcKindsWanted)
    resctrl: bool = False
    raw: RawFilter = dataclasses.field(default_factory=RawFilter)  # --docker-only, --raw-cgroup-prefix-allowlist
    root_stats: bool = True  # False: --disable-root-cgroup-stats, / keeps only its limits


class FsUsage:
    """Writable-layer usage per container (Docker, Podman, CRI-O), measured on its own slow interval and thread.

    ``get`` never blocks: collection serves the last measurement while a walk is running.
    """

    def __init__(self, host_fs: HostFilesystems, docker_root: Path) -> None:
        self.host_fs = host_fs
        self.docker_root = docker_root
        self._containers_dir = str(docker_root / "containers")  # a string: a Path per container interns its id
        # One dict, replaced whole by ``measure``: a reader sees the old or the new one, never a mix, and needs no
        # lock (``get`` runs for every container every cycle). id -> (bytes, inodes, device, device capacity).
        self._state: dict[str, tuple[int, int, str, int]] = {}

    def measure(self, containers: list[ContainerInfo]) -> None:
        docker_device = self.host_fs.device_of(self.docker_root)
        devices: dict[int, tuple[str, int]] = {}  # st_dev -> (device, capacity): one lookup per filesystem
        fresh = {}
        for info in containers:
            if info.runtime is Runtime.DOCKER:
                paths = [info.rw_layer, f"{self._containers_dir}/{info.container_id}"]
                device = docker_device
            elif info.rw_layer:
                # containers/storage: the layer and the container's own directory (cAdvisor's Podman handler).
                paths = [info.rw_layer, info.storage_dir]
                try:
                    st_dev = os.stat(info.rw_layer).st_dev
                except OSError:
                    continue  # removed since; measured again next time if it is back
                if st_dev not in devices:
                    devices[st_dev] = self.host_fs.device_of(info.rw_layer)
                device = devices[st_dev]
            else:
                continue
            fresh[info.container_id] = (*disk_usage(paths), *device)
        self._state = fresh

    def get(self, container_id: str) -> FilesystemStats | None:
        usage = self._state.get(container_id)
        if usage is None:
            return None
        used, inodes, device, capacity = usage
        # cAdvisor's Docker quirk kept for compatibility: inodes_total is the layer's inodes *used*.
        return FilesystemStats(device, used, capacity, inodes, 0)


def netns_pid(cgroup: str, info: ContainerInfo, pids: list[int]) -> int:
    """The process whose ``/proc/<pid>/net/*`` are the container's network namespace, or 0 for none: init for the
    root cgroup, a runtime container's first process when it owns its namespace (a container that shares another's
    gets no network series, nor do raw cgroups, as cAdvisor's ``RemoveNetMetrics``)."""
    if cgroup == "/":
        return 1
    if info.owns_network and info.runtime != Runtime.RAW and pids:
        return pids[0]
    return 0


class Collector:
    def __init__(self, host_root: Path, layout: CgroupLayout, reader: V1Reader | V2Reader,
                 docker: DockerMetadata, cri: CriMetadata, options: CollectOptions,
                 fs_usage: FsUsage | None) -> None:
        self.host_root = host_root
        self.layout = layout
        self.reader = reader
        self.docker = docker
        self.cri = cri
        self.options = options
        self.host = HostReader(host_root)
        self.host_fs = HostFilesystems(host_root)
        self.fs_usage = fs_usage
        self.proc_kinds = ProcKinds(host_root, options.proc_kinds) if options.proc_kinds.any() else None
        self.resctrl = Resctrl(host_root) if options.resctrl else None
        self.errors: Counter[str] = Counter()
        self.last_duration = 0.0
        self._infos: dict[str, tuple[object, ContainerInfo]] = {}
        self._created: dict[str, float] = {}
        self._machine = MachineInfo()
        self._machine_at = 0.0
        self._machine_error = False
        self._roots = layout.hierarchy_roots()

    def machine(self) -> MachineInfo:
        now = time.monotonic()
        if now - self._machine_at > MACHINE_INFO_INTERVAL or not self._machine.cpu_cores:
            try:
                self._machine = read_machine_info(self.host_root, self.options.cpu_topology)
                self._machine_error = False
            except (OSError, ValueError) as exc:
                self.errors["machine"] += 1
                self._machine_error = True
                log.warning("machine_info_failed", error=str(exc))
            self._machine_at = now
        return self._machine

    def docker_containers(self) -> list[ContainerInfo]:
        return [c for c in self.docker.containers.values() if c.running]

    def layered_containers(self) -> list[ContainerInfo]:
        """The containers whose writable layer ``FsUsage`` measures: Docker's running ones, and those of the last
        cycle with a layer in containers/storage (Podman, CRI-O)."""
        others = [info for _, info in list(self._infos.values())
                  if info.runtime is not Runtime.DOCKER and info.rw_layer and info.container_id]
        return self.docker_containers() + others

    def collect(self) -> Snapshot:
        started = time.perf_counter()
        scrape_error = False
        try:
            self.docker.refresh_from_disk()
        except Exception as exc:  # never let metadata stop metrics
            self.errors["docker"] += 1
            log.warning("docker_metadata_failed", error=str(exc))
        try:
            self.cri.refresh()
        except Exception as exc:
            self.errors["cri"] += 1
            log.warning("cri_metadata_failed", error=str(exc))

        self.host.begin_cycle()
        cgroups = walk(self._roots)
        if not cgroups - {"/"} and not os.path.isdir(self._roots[0]):
            scrape_error = True
            self.errors["cgroups"] += 1
        self.reader.specs.begin_cycle(cgroups)
        kinds = self.proc_kinds
        if kinds is not None:
            kinds.begin_cycle(cgroups)
        if self.resctrl is not None:
            self.resctrl.begin_cycle()
        docker_get = self.docker.get
        samples: list[ContainerSample] = []
        live_ids: set[str] = set()
        for ref in reported(cgroups, self.options.raw):
            cgroup = ref.cgroup
            if cgroup == "/" and not self.options.root_stats:
                samples.append(self._root_without_stats(ref))
                continue
            try:
                # A Docker container's limits are re-read when its template changes (an event, config.v2.json).
                result = self.reader.read(cgroup, docker_get(ref.container_id) if ref.container_id else None)
            except (OSError, ValueError) as exc:
                self.errors["cgroup_stats"] += 1
                log.debug("cgroup_read_failed", cgroup=cgroup, error=str(exc))
                continue
            if result is None:
                continue  # vanished between the walk and the read
            stats, pids = result
            info = self._info(ref)
            if ref.container_id:
                live_ids.add(ref.container_id)
            net_pid = netns_pid(cgroup, info, pids)
            if self.options.network and net_pid:
                stats.network = self.host.network(net_pid)
            if kinds is not None:
                if kinds.net and net_pid:
                    kinds.read_net(stats, net_pid)
                if kinds.wanted.sched:
                    all_pids = kinds.host_pids() if cgroup == "/" else self.reader.subtree_pids(cgroup, pids)
                    kinds.read_sched(stats, cgroup, all_pids)
                if kinds.wanted.referenced:
                    kinds.read_referenced(stats, pids)
            if self.resctrl is not None:
                stats.resctrl = self.resctrl.read(cgroup, self.reader.threads(cgroup))
            if self.options.process and stats.processes is not None and cgroup != "/":
                self.host.add_process_stats(stats.processes, pids)
            if self.options.disk:
                if cgroup == "/":
                    stats.filesystems = self.host_fs.stats()
                elif self.fs_usage is not None and info.container_id and (
                        info.runtime is Runtime.DOCKER or info.rw_layer):
                    fs = self.fs_usage.get(info.container_id)
                    stats.filesystems = [fs] if fs else None
            samples.append(ContainerSample(info, stats))

        self.cri.forget(live_ids)
        for gone in self._infos.keys() - cgroups:
            del self._infos[gone]
            self._created.pop(gone, None)
        machine = self.machine()
        self.last_duration = time.perf_counter() - started
        return Snapshot(time.time(), samples, machine, self.docker.version, scrape_error, self._machine_error)

    def _root_without_stats(self, ref: CgroupRef) -> ContainerSample:
        """``/`` under --disable-root-cgroup-stats: as cAdvisor's raw handler, no stats (no usage, network or
        filesystem files are read), but its spec (limits, creation time) stays."""
        try:
            spec = self.reader.read_spec("/")[0]
        except (OSError, ValueError) as exc:
            self.errors["cgroup_stats"] += 1
            log.debug("cgroup_read_failed", cgroup="/", error=str(exc))
            spec = Spec()
        return ContainerSample(self._info(ref), ContainerStats(time.time(), spec=spec))

    def _info(self, ref: CgroupRef) -> ContainerInfo:
        """Metadata for a cgroup, rebuilt only when its source object changes."""
        source: ContainerInfo | None = None
        if ref.container_id:
            source = self.docker.get(ref.container_id)
            if source is None and ref.runtime is not Runtime.DOCKER:
                source = self.cri.get(ref)
        cached = self._infos.get(ref.cgroup)
        if cached is not None and cached[0] is source:
            return cached[1]
        if source is not None:
            info = dataclasses.replace(source, cgroup=ref.cgroup)
        else:
            info = ContainerInfo(cgroup=ref.cgroup, runtime=ref.runtime, container_id=ref.container_id,
                                 owns_network=ref.cgroup == "/")
            if ref.pod_uid:
                info.namespace, info.pod = self.cri.pod_of(ref.pod_uid)
        if info.created_at is None:
            info.created_at = self._cgroup_created(ref.cgroup)
        if info.started_at is None:
            info.started_at = info.created_at
        self._infos[ref.cgroup] = (source, info)
        return info

    def _cgroup_created(self, cgroup: str) -> float | None:
        created = self._created.get(cgroup)
        if created is None:
            sub = "" if cgroup == "/" else cgroup
            times = []
            for root in self._roots:
                try:
                    times.append(os.stat(root + sub).st_mtime)
                except OSError:
                    continue
            created = min(times) if times else 0.0
            self._created[cgroup] = created
        return created or None


def make_reader(layout: CgroupLayout, host_root: Path, wanted: Wanted) -> V1Reader | V2Reader:
    devices = DeviceNames(host_root)
    sizes = hugepage_sizes(host_root) if wanted.hugetlb else ()
    reader = V1Reader if layout.version == 1 else V2Reader
    return reader(layout, devices, wanted, sizes)

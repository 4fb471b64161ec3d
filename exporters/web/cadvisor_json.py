"""cAdvisor's REST API answers as JSON: pure functions from a ``Snapshot`` to the dicts cAdvisor's Go structs marshal
to (``lib/model/container.go`` and ``machine.go``, which ``info/v1`` aliases; ``info/v2/container.go`` for v2.0), in
the structs' field order, with Go's ``encoding/json`` rules: an ``omitempty`` number, string, list or map is left out
when empty, times are RFC 3339 with up to nine fraction digits (``0001-01-01T00:00:00Z`` for Go's zero time).
Selection and HTTP are in exporters.web.cadvisor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.model import (
    BlkioDevice,
    ContainerInfo,
    ContainerSample,
    ContainerStats,
    CpuStats,
    FilesystemStats,
    InterfaceStats,
    MachineInfo,
    MemoryStats,
    ProcessStats,
    Runtime,
    Snapshot,
)

UINT64_MAX = (1 << 64) - 1  # what cAdvisor reads for a limit of "max" (lib/container/common/helpers.go readUInt64)
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time: a struct, so never left out by omitempty

# ContainerReference.Namespace per runtime (container/docker/factory.go, container/podman/podman.go,
# lib/container/containerd/factory.go, lib/container/crio/factory.go); raw cgroups have none.
NAMESPACES = {Runtime.DOCKER: "docker", Runtime.PODMAN: "podman", Runtime.CONTAINERD: "containerd",
              Runtime.CRIO: "crio"}


# --- values --------------------------------------------------------------------------------------------------------


def go_time(ts: float | None) -> str:
    """A Unix time as Go's ``time.Time`` marshals (RFC 3339, UTC, trailing fraction zeros trimmed). Lookout's times
    are floats, good to the microsecond; None or 0 (unknown) is Go's zero time, as cAdvisor writes an unset time."""
    if not ts or ts <= 0:
        return ZERO_TIME
    micros = round(ts * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:06d}".rstrip("0")
    return text + "Z"


def _sorted(mapping: dict[str, Any]) -> dict[str, Any]:
    """Go writes map keys sorted."""
    return {k: mapping[k] for k in sorted(mapping)}


@dataclass(frozen=True, slots=True)
class Has:
    """Which parts Lookout serves for a container: the spec's and the v2.0 stats' ``has_*`` flags."""

    cpu: bool
    memory: bool
    network: bool
    processes: bool
    filesystem: bool
    diskio: bool

    @staticmethod
    def of(stats: ContainerStats) -> Has:
        return Has(cpu=stats.spec.has_cpu or stats.cpu is not None,
                   memory=stats.spec.has_memory or stats.memory is not None,
                   network=stats.network is not None,
                   processes=stats.processes is not None,
                   filesystem=stats.filesystems is not None,
                   diskio=stats.blkio is not None)


# --- ContainerReference and ContainerSpec ---------------------------------------------------------------------------


def aliases(info: ContainerInfo) -> list[str]:
    """cAdvisor's aliases: Docker, Podman and CRI-O ``[name, id]``, containerd ``[id, name]`` (its name being the
    cgroup); none for raw cgroups."""
    if info.runtime is Runtime.RAW or not info.container_id:
        return []
    if info.runtime is Runtime.CONTAINERD:
        return [info.container_id, info.cgroup]
    return [info.name, info.container_id] if info.name else [info.container_id]


def reference(info: ContainerInfo) -> dict[str, Any]:
    """``ContainerReference``: id, name, aliases, namespace (all but name omitempty)."""
    out: dict[str, Any] = {}
    if info.container_id and info.runtime is not Runtime.RAW:
        out["id"] = info.container_id
    out["name"] = info.cgroup
    names = aliases(info)
    if names:
        out["aliases"] = names
    namespace = NAMESPACES.get(info.runtime, "") if info.container_id else ""
    if namespace:
        out["namespace"] = namespace
    return out


def _times(info: ContainerInfo) -> dict[str, str]:
    # A raw cgroup has no start time in cAdvisor (only the runtimes' handlers set StartTime); Lookout's fallback
    # (the creation time) is not written as one.
    started = info.started_at if info.runtime is not Runtime.RAW else None
    return {"creation_time": go_time(info.created_at), "start_time": go_time(started)}


def _metadata(info: ContainerInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if info.labels:
        out["labels"] = _sorted(info.labels)
    if info.env:
        # cAdvisor keeps the allowlisted variables under their lower-cased names (container/docker/handler.go).
        out["envs"] = _sorted({k.lower(): v for k, v in info.env.items()})
    return out


def cpu_spec(stats: ContainerStats) -> dict[str, Any]:
    """``CpuSpec``: limit (cpu.shares, or cpu.weight converted to shares as cAdvisor does), max_limit (never set by
    cAdvisor: 0), quota and period in µs (omitempty; 0 quota = none). ``mask`` (the cpuset) is not read."""
    spec = stats.spec
    out: dict[str, Any] = {"limit": spec.cpu_shares, "max_limit": 0}
    if spec.cpu_quota:
        out["quota"] = spec.cpu_quota
    if spec.cpu_period:
        out["period"] = spec.cpu_period
    return out


def memory_spec(sample: ContainerSample, machine: MachineInfo) -> dict[str, Any]:
    """``MemorySpec`` in bytes (all omitempty). Lookout's model holds "unlimited" as 0: an unlimited limit is written
    as cAdvisor's reading of ``max``; a reservation or swap limit of 0 is left out (unlimited or zero, as told). The
    root cgroup's are the machine's memory and swap, as in cAdvisor (lib/container/raw/handler.go)."""
    if sample.info.cgroup == "/" and machine.memory_bytes:
        root: dict[str, Any] = {"limit": machine.memory_bytes}
        if machine.swap_bytes:
            root["swap_limit"] = machine.swap_bytes
        return root
    spec = sample.stats.spec
    if not spec.has_memory:
        return {}
    out: dict[str, Any] = {"limit": spec.memory_limit or UINT64_MAX}
    if spec.memory_reservation:
        out["reservation"] = spec.memory_reservation
    if spec.memory_swap_limit:
        out["swap_limit"] = spec.memory_swap_limit
    return out


def process_spec(stats: ContainerStats) -> dict[str, Any]:
    """``ProcessSpec``: limit (pids.max) when Lookout read a number (it holds ``max`` and "no file" both as 0)."""
    proc = stats.processes
    return {"limit": proc.threads_max} if proc is not None and proc.threads_max > 0 else {}


def spec_v1(sample: ContainerSample, machine: MachineInfo) -> dict[str, Any]:
    """``ContainerSpec`` (lib/model/container.go), as /api/v1.x serves it."""
    info, stats = sample.info, sample.stats
    has = Has.of(stats)
    out: dict[str, Any] = _times(info)
    out.update(_metadata(info))
    out.update({
        "has_cpu": has.cpu, "cpu": cpu_spec(stats),
        "has_memory": has.memory, "memory": memory_spec(sample, machine),
        "has_hugetlb": False, "has_network": has.network,
        "has_processes": has.processes, "processes": process_spec(stats),
        "has_filesystem": has.filesystem, "has_diskio": has.diskio, "has_custom_metrics": False,
    })
    if info.image:
        out["image"] = info.image
    return out


def spec_v2(sample: ContainerSample, machine: MachineInfo) -> dict[str, Any]:
    """``v2.ContainerSpec`` (info/v2/container.go), as /api/v2.0/spec serves it. cAdvisor's conversion
    (``ContainerSpecFromV1``) drops cpu quota/period and the process limit; Lookout keeps them (same field names)."""
    info, stats = sample.info, sample.stats
    has = Has.of(stats)
    out: dict[str, Any] = _times(info)
    ref = reference(info)
    for key in ("aliases", "namespace"):
        if key in ref:
            out[key] = ref[key]
    out.update(_metadata(info))
    out.update({
        "has_cpu": has.cpu, "cpu": cpu_spec(stats),
        "has_memory": has.memory, "memory": memory_spec(sample, machine),
        "has_hugetlb": False, "has_custom_metrics": False,
        "has_processes": has.processes, "processes": process_spec(stats),
        "has_network": has.network, "has_filesystem": has.filesystem, "has_diskio": has.diskio,
    })
    if info.image:
        out["image"] = info.image
    return out


# --- ContainerStats parts ---------------------------------------------------------------------------------------------


def _psi(total_full: int, total_some: int) -> dict[str, Any]:
    """``PSIStats``: the ``total`` counters in µs; Lookout does not read the avg10/avg60/avg300 averages."""
    return {"full": {"total": total_full}, "some": {"total": total_some}}


def cpu_stats(stats: ContainerStats, cpu: CpuStats) -> dict[str, Any]:
    """``CpuStats``: usage in ns (per_cpu_usage omitempty: cgroup v1 only), CFS counters (throttled and burst time
    in ns), PSI on cgroup v2. schedstat and the load averages (cAdvisor's sched and load-reader options) are not
    read."""
    usage: dict[str, Any] = {"total": cpu.usage_ns}
    if cpu.per_cpu_ns:
        usage["per_cpu_usage"] = cpu.per_cpu_ns
    usage["user"] = cpu.user_ns
    usage["system"] = cpu.system_ns
    out: dict[str, Any] = {
        "usage": usage,
        "cfs": {"periods": cpu.periods, "throttled_periods": cpu.throttled_periods, "throttled_time": cpu.throttled_ns,
                "bursts_periods": cpu.burst_periods, "burst_time": cpu.burst_ns},
    }
    if stats.pressure is not None:
        out["psi"] = _psi(stats.pressure.cpu_full, stats.pressure.cpu_some)
    return out


def _per_disk(devices: Iterable[BlkioDevice], table: Callable[[BlkioDevice], dict[str, int]]) -> list[dict[str, Any]]:
    return [{"device": d.device, "major": d.major, "minor": d.minor, "stats": _sorted(table(d))}
            for d in devices if table(d)]


def _cost_table(key: str) -> Callable[[BlkioDevice], dict[str, int]]:
    return lambda d: {"Count": d.cost[key]} if key in d.cost else {}


def diskio_stats(stats: ContainerStats, devices: list[BlkioDevice]) -> dict[str, Any]:
    """``DiskIoStats``: io_service_bytes and io_serviced (ops as the kernel names them), the iocost counters (µs,
    op ``Count``) where the controller is on, PSI on cgroup v2. The CFQ/BFQ tables (io_queued, sectors,
    io_service_time, io_wait_time, io_merged, io_time) are not read."""
    out: dict[str, Any] = {}
    for key, table in (("io_service_bytes", lambda d: d.service_bytes), ("io_serviced", lambda d: d.serviced)):
        rows = _per_disk(devices, table)
        if rows:
            out[key] = rows
    for cost in ("usage", "wait", "indebt", "indelay"):
        rows = _per_disk(devices, _cost_table(cost))
        if rows:
            out[f"io_cost_{cost}"] = rows
    if stats.pressure is not None:
        out["psi"] = _psi(stats.pressure.io_full, stats.pressure.io_some)
    return out


def memory_stats(stats: ContainerStats, mem: MemoryStats) -> dict[str, Any]:
    """``MemoryStats`` in bytes (page-fault and event counters as counts); NUMA tables are not read."""
    faults = {"pgfault": mem.pgfault, "pgmajfault": mem.pgmajfault}
    out: dict[str, Any] = {
        "usage": mem.usage, "max_usage": mem.max_usage, "cache": mem.cache, "rss": mem.rss, "swap": mem.swap,
        "mapped_file": mem.mapped_file, "working_set": mem.working_set, "total_active_file": mem.active_file,
        "total_inactive_file": mem.inactive_file, "file_dirty": mem.file_dirty, "file_writeback": mem.file_writeback,
        "pgscan": mem.pgscan, "pgsteal": mem.pgsteal, "workingset_refault_file": mem.refault_file,
        "workingset_refault_anon": mem.refault_anon, "failcnt": mem.failcnt, "kernel": mem.kernel,
        "container_data": dict(faults), "hierarchical_data": dict(faults),
    }
    if stats.pressure is not None:
        out["psi"] = _psi(stats.pressure.memory_full, stats.pressure.memory_some)
    out["events"] = {"high": mem.events_high, "max": mem.events_max}
    return out


def interface(i: InterfaceStats) -> dict[str, Any]:
    """``InterfaceStats`` (bytes, packets, errors, drops)."""
    return {"name": i.name, "rx_bytes": i.rx_bytes, "rx_packets": i.rx_packets, "rx_errors": i.rx_errors,
            "rx_dropped": i.rx_dropped, "tx_bytes": i.tx_bytes, "tx_packets": i.tx_packets, "tx_errors": i.tx_errors,
            "tx_dropped": i.tx_dropped}


def network_v1(interfaces: list[InterfaceStats]) -> dict[str, Any]:
    """v1 ``NetworkStats``: the first interface's counters inline ("for backwards compatibility", as cAdvisor's
    libcontainer handler does; its zero value when there is none) and every interface. The TCP/UDP socket tables
    (cAdvisor's tcp, udp and advtcp options) are not read."""
    rows = [interface(i) for i in interfaces]
    out = dict(rows[0]) if rows else interface(InterfaceStats("", 0, 0, 0, 0, 0, 0, 0, 0))
    if rows:
        out["interfaces"] = rows
    return out


def filesystem(fs: FilesystemStats, root: bool) -> dict[str, Any]:
    """``FsStats``: capacity and usage in bytes; the root's host filesystems have inode totals (statvfs) and the
    device's /proc/diskstats counters (times in ms); a Docker container's writable layer has, as in cAdvisor, the
    number of inodes it uses in ``inodes`` and ``has_inodes`` false. type, base_usage and available are not known."""
    out: dict[str, Any] = {"device": fs.device, "capacity": fs.limit, "usage": fs.usage, "has_inodes": root,
                           "inodes": fs.inodes_total, "inodes_free": fs.inodes_free}
    d = fs.disk
    if d is not None:
        out.update({"reads_completed": d.reads, "reads_merged": d.reads_merged, "sectors_read": d.sectors_read,
                    "read_time": d.read_ms, "writes_completed": d.writes, "writes_merged": d.writes_merged,
                    "sectors_written": d.sectors_written, "write_time": d.write_ms, "io_in_progress": d.in_progress,
                    "io_time": d.io_ms, "weighted_io_time": d.weighted_io_ms})
    return out


def process_stats(proc: ProcessStats) -> dict[str, Any]:
    """``ProcessStats``: processes, descriptors and sockets (not counted for the root cgroup), threads and their
    limit (omitempty). ``ulimits`` is left out: Lookout reads only the soft open-files limit."""
    out: dict[str, Any] = {"process_count": proc.processes}
    if proc.file_descriptors is not None:
        out["fd_count"] = proc.file_descriptors
    if proc.sockets is not None:
        out["socket_count"] = proc.sockets
    if proc.threads:
        out["threads_current"] = proc.threads
    if proc.threads_max:
        out["threads_max"] = proc.threads_max
    return out


def health(info: ContainerInfo) -> dict[str, Any]:
    """``Health``: Docker's status. Lookout holds "starting" and "unhealthy" as one value: then status is left out."""
    if info.health == 1:
        return {"status": "healthy"}
    if info.health == -1:
        return {"status": ""}  # no health check: what cAdvisor writes
    return {}


def stats_v1(sample: ContainerSample) -> dict[str, Any]:
    """``ContainerStats`` (lib/model/container.go), as /api/v1.x serves it (no cpu_inst there)."""
    info, stats = sample.info, sample.stats
    out: dict[str, Any] = {"timestamp": go_time(stats.timestamp)}
    if stats.cpu is not None:
        out["cpu"] = cpu_stats(stats, stats.cpu)
    if stats.blkio is not None:
        out["diskio"] = diskio_stats(stats, stats.blkio)
    if stats.memory is not None:
        out["memory"] = memory_stats(stats, stats.memory)
    if stats.network is not None:
        out["network"] = network_v1(stats.network)
    if stats.filesystems:
        out["filesystem"] = [filesystem(fs, info.cgroup == "/") for fs in stats.filesystems]
    if stats.processes is not None:
        out["processes"] = process_stats(stats.processes)
    if stats.oom_kills:
        out["oom_events"] = stats.oom_kills
    out["health"] = health(info)
    return out


def cpu_inst(rates: dict[str, float | None] | None) -> dict[str, Any] | None:
    """``CpuInstStats``: the CPU rate between Lookout's last two collections in nanocores (cores * 1e9); user,
    system and per-CPU rates are not kept."""
    cores = rates.get("cpu_cores") if rates else None
    if cores is None:
        return None
    return {"usage": {"total": round(cores * 1e9)}}


def stats_v2(sample: ContainerSample, rates: dict[str, float | None] | None) -> dict[str, Any]:
    """``v2.DeprecatedContainerStats`` (info/v2/container.go): what /api/v2.0/stats serves, the ``has_*`` flags beside
    each part. A part Lookout has no data for is left out (cAdvisor writes its zero value beside ``has_*`` false)."""
    info, stats = sample.info, sample.stats
    has = Has.of(stats)
    out: dict[str, Any] = {"timestamp": go_time(stats.timestamp), "has_cpu": has.cpu}
    if stats.cpu is not None:
        out["cpu"] = cpu_stats(stats, stats.cpu)
    inst = cpu_inst(rates) if stats.cpu is not None else None
    if inst is not None:
        out["cpu_inst"] = inst
    out["has_diskio"] = has.diskio
    if stats.blkio is not None:
        out["diskio"] = diskio_stats(stats, stats.blkio)
    out["has_memory"] = has.memory
    if stats.memory is not None:
        out["memory"] = memory_stats(stats, stats.memory)
    out["has_hugetlb"] = False
    out["has_network"] = has.network
    if stats.network is not None:
        # v2.NetworkStats: interfaces (omitempty); its tcp/udp tables are not read.
        out["network"] = {"interfaces": [interface(i) for i in stats.network]} if stats.network else {}
    out["has_processes"] = has.processes
    if stats.processes is not None:
        out["processes"] = process_stats(stats.processes)
    out["has_filesystem"] = has.filesystem
    if stats.filesystems:
        out["filesystem"] = [filesystem(fs, info.cgroup == "/") for fs in stats.filesystems]
    out["has_load"] = False
    out["has_custom_metrics"] = False
    return out


# --- whole answers --------------------------------------------------------------------------------------------------


def container_info_v1(sample: ContainerSample, snapshot: Snapshot, samples: int,
                      children: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """``ContainerInfo``: the reference, the subcontainers, the spec, and ``samples`` (0 or 1) samples.
    ``children``: ``subcontainers(snapshot)``, when the caller answers for many containers."""
    out = reference(sample.info)
    below = (children if children is not None else subcontainers(snapshot)).get(sample.info.cgroup)
    if below:
        out["subcontainers"] = [{"name": name} for name in below]
    out["spec"] = spec_v1(sample, snapshot.machine)
    if samples:
        out["stats"] = [stats_v1(sample)]
    return out


def machine_info(snapshot: Snapshot) -> dict[str, Any]:
    """``MachineInfo`` (lib/model/machine.go), what /api/v1.x/machine and /api/v2.0/machine serve. The host's
    filesystems are the root cgroup's (as cAdvisor's, both from the block-device mounts); the device's type is not
    known. CPU vendor and frequency, memory by type, NVM, huge pages, the disk map, network devices, the topology
    and the cloud provider are not read; nor when the facts were read (``timestamp``)."""
    m = snapshot.machine
    out: dict[str, Any] = {"num_cores": m.cpu_cores, "num_physical_cores": m.cpu_physical_cores,
                           "num_sockets": m.cpu_sockets, "memory_capacity": m.memory_bytes,
                           "swap_capacity": m.swap_bytes, "machine_id": m.machine_id, "system_uuid": m.system_uuid,
                           "boot_id": m.boot_id}
    root = next((s for s in snapshot.containers if s.info.cgroup == "/"), None)
    if root is not None and root.stats.filesystems is not None:
        out["filesystems"] = [{"device": fs.device, "capacity": fs.limit, "inodes": fs.inodes_total,
                               "has_inodes": True} for fs in root.stats.filesystems]
    return out


def subcontainers(snapshot: Snapshot) -> dict[str, list[str]]:
    """Each cgroup's child cgroups, as cAdvisor lists a container's child directories: those holding a container
    Lookout reports (a cgroup Lookout skips, such as a parent slice without controllers of its own, is listed when a
    container is below it). One pass over the snapshot (depth x containers), for answers about many containers."""
    children: dict[str, set[str]] = {}
    for sample in snapshot.containers:
        path = sample.info.cgroup
        while path != "/":
            parent = path.rpartition("/")[0] or "/"
            children.setdefault(parent, set()).add(path)
            path = parent
    return {name: sorted(names) for name, names in children.items()}

"""cAdvisor's container metric families as a declarative table.

Each ``Family`` has cAdvisor's name, type, help and metric kind (the ``--disable-metrics``
vocabulary) and a getter from one container's ``(info, stats)`` to ``(extra_labels, value)``
pairs; ``extra_labels`` is pre-rendered (``,cpu="total"``). A getter returns nothing when the
host cannot feed the value, so no fake zeros and no empty series. Kernel units are converted
to base units (ns -> s, µs -> s). The optional kinds' getters are ``optional_getters``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.model import ContainerInfo, ContainerStats
from exporters.prometheus.optional_getters import advtcp, hugetlb, migrate, numa, referenced, resctrl, sched, tcp, udp

Samples = Iterable[tuple[str, int | float]]
Getter = Callable[[ContainerInfo, ContainerStats], Samples]

NS = 1e9  # divisors: ns -> s
US = 1e6  # µs -> s


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    type: str  # counter | gauge
    help: str
    kind: str  # metric kind gating the family; "" = always on
    get: Getter
    timestamped: bool = True  # cAdvisor timestamps stats families, not spec/lifetime ones


def label_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _cpu(attr: str, divisor: float | None = None) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        cpu = s.cpu
        if cpu is None:
            return ()
        v = getattr(cpu, attr)
        return (("", v / divisor if divisor else v),)
    return get


def _quota_cpu(attr: str, divisor: float | None = None) -> Getter:
    # cAdvisor emits the CFS families only for containers with a CPU quota (issue #3154).
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        cpu = s.cpu
        if cpu is None or not s.spec.cpu_quota:
            return ()
        v = getattr(cpu, attr)
        return (("", v / divisor if divisor else v),)
    return get


def _cpu_usage(info: ContainerInfo, s: ContainerStats) -> Samples:
    cpu = s.cpu
    if cpu is None:
        return ()
    if cpu.per_cpu_ns:
        return [(f',cpu="cpu{i:02d}"', v / NS) for i, v in enumerate(cpu.per_cpu_ns) if v]
    return ((',cpu="total"', cpu.usage_ns / NS),) if cpu.usage_ns else ()


def _mem(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        mem = s.memory
        return () if mem is None else (("", getattr(mem, attr)),)
    return get


def _mem_failures(info: ContainerInfo, s: ContainerStats) -> Samples:
    mem = s.memory
    if mem is None:
        return ()
    # cAdvisor reports the same (non-hierarchical) value under both scopes.
    return [
        (',failure_type="pgfault",scope="container"', mem.pgfault),
        (',failure_type="pgmajfault",scope="container"', mem.pgmajfault),
        (',failure_type="pgfault",scope="hierarchy"', mem.pgfault),
        (',failure_type="pgmajfault",scope="hierarchy"', mem.pgmajfault),
    ]


def _spec(attr: str, gate: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        spec = s.spec
        if not getattr(spec, gate):
            return ()
        return (("", getattr(spec, attr)),)
    return get


def _net(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        net = s.network
        if not net:
            return ()
        return [(f',interface="{label_escape(i.name)}"', getattr(i, attr)) for i in net]
    return get


def _fs(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        fss = s.filesystems
        if not fss:
            return ()
        return [(f',device="{label_escape(f.device)}"', getattr(f, attr)) for f in fss]
    return get


def _blkio(table: str, op: str, disk: str = "") -> Getter:
    """A blkio table's ``op`` per device; with ``disk``, also that /proc/diskstats counter for each filesystem
    whose device the blkio rows do not name already (cAdvisor serves both for the root container)."""
    per_fs = _disk(disk) if disk else None

    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        devs = s.blkio
        out = []
        for d in devs or ():
            v = getattr(d, table).get(op)
            if v is not None:
                out.append((f',device="{label_escape(d.device)}"', v))
        if per_fs is not None and s.filesystems:
            named = {label for label, _ in out}
            out.extend(sample for sample in per_fs(info, s) if sample[0] not in named)
        return out
    return get


def _disk(attr: str, ms: bool = False) -> Getter:
    """A /proc/diskstats counter per filesystem (the root container's); ``ms``: milliseconds, served in seconds."""
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        fss = s.filesystems
        if not fss:
            return ()
        if ms:
            return [(f',device="{label_escape(f.device)}"', getattr(f.disk, attr) / 1000)
                    for f in fss if f.disk is not None]
        return [(f',device="{label_escape(f.device)}"', getattr(f.disk, attr)) for f in fss if f.disk is not None]
    return get


def _io_cost(key: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        devs = s.blkio
        if not devs:
            return ()
        return [(f',device="{label_escape(d.device)}"', d.cost[key] / 1e6) for d in devs if d.cost]
    return get


def _blkio_usage(info: ContainerInfo, s: ContainerStats) -> Samples:
    devs = s.blkio
    if not devs:
        return ()
    return [
        (f',device="{label_escape(d.device)}",major="{d.major}",minor="{d.minor}",operation="{op}"', v)
        for d in devs
        for op, v in d.service_bytes.items()
    ]


def _psi(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        psi = s.pressure
        return () if psi is None else (("", getattr(psi, attr) / US),)
    return get


def _proc(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        proc = s.processes
        if proc is None:
            return ()
        v = getattr(proc, attr)
        return () if v is None else (("", v),)
    return get


def _ulimit(info: ContainerInfo, s: ContainerStats) -> Samples:
    proc = s.processes
    if proc is None or proc.ulimit_nofile is None:
        return ()
    return ((',ulimit="max_open_files"', proc.ulimit_nofile),)


def _oom(info: ContainerInfo, s: ContainerStats) -> Samples:
    return () if s.oom_kills is None else (("", s.oom_kills),)


def _start(info: ContainerInfo, s: ContainerStats) -> Samples:
    return () if info.started_at is None else (("", info.started_at),)


def _created(info: ContainerInfo, s: ContainerStats) -> Samples:
    return () if info.created_at is None else (("", info.created_at),)


def _health(info: ContainerInfo, s: ContainerStats) -> Samples:
    return (("", info.health),)


C, G = "counter", "gauge"

FAMILIES: tuple[Family, ...] = (
    # Lifetime and spec: always on, never timestamped (as cAdvisor).
    Family("container_start_time_seconds", G, "Start time of the container since unix epoch in seconds.", "",
           _start, False),
    Family("container_creation_time_seconds", G, "Creation time of the container since unix epoch in seconds.",
           "", _created, False),
    Family("container_health_state", G, "The result of the container's health check: 1 healthy, 0 unhealthy "
           "or starting, -1 no health check.", "", _health),
    Family("container_spec_cpu_period", G, "CPU period of the container.", "", _spec("cpu_period", "has_cpu"),
           False),
    Family("container_spec_cpu_quota", G, "CPU quota of the container.", "", _spec("cpu_quota", "cpu_quota"),
           False),
    Family("container_spec_cpu_shares", G, "CPU share of the container.", "", _spec("cpu_shares", "has_cpu"),
           False),
    Family("container_spec_memory_limit_bytes", G, "Memory limit for the container.", "",
           _spec("memory_limit", "has_memory"), False),
    Family("container_spec_memory_swap_limit_bytes", G, "Memory swap limit for the container.", "",
           _spec("memory_swap_limit", "has_memory"), False),
    Family("container_spec_memory_reservation_limit_bytes", G, "Memory reservation limit for the container.",
           "", _spec("memory_reservation", "has_memory"), False),
    # CPU
    Family("container_cpu_user_seconds_total", C, "Cumulative user cpu time consumed in seconds.", "cpu",
           _cpu("user_ns", NS)),
    Family("container_cpu_system_seconds_total", C, "Cumulative system cpu time consumed in seconds.", "cpu",
           _cpu("system_ns", NS)),
    Family("container_cpu_usage_seconds_total", C, "Cumulative cpu time consumed in seconds.", "cpu",
           _cpu_usage),
    Family("container_cpu_cfs_periods_total", C, "Number of elapsed enforcement period intervals.", "cpu",
           _quota_cpu("periods")),
    Family("container_cpu_cfs_throttled_periods_total", C, "Number of throttled period intervals.", "cpu",
           _quota_cpu("throttled_periods")),
    Family("container_cpu_cfs_throttled_seconds_total", C, "Total time duration the container has been "
           "throttled.", "cpu", _quota_cpu("throttled_ns", NS)),
    Family("container_cpu_cfs_burst_periods_total", C, "Number of periods when burst occurs.", "cpu",
           _quota_cpu("burst_periods")),
    Family("container_cpu_cfs_burst_seconds_total", C, "Total time duration the container has been bursted.",
           "cpu", _quota_cpu("burst_ns", NS)),
    # Memory
    Family("container_memory_cache", G, "Number of bytes of page cache memory.", "memory", _mem("cache")),
    Family("container_memory_rss", G, "Size of RSS in bytes.", "memory", _mem("rss")),
    Family("container_memory_kernel_usage", G, "Size of kernel memory allocated in bytes.", "memory",
           _mem("kernel")),
    Family("container_memory_mapped_file", G, "Size of memory mapped files in bytes.", "memory",
           _mem("mapped_file")),
    Family("container_memory_swap", G, "Container swap usage in bytes.", "memory", _mem("swap")),
    Family("container_memory_failcnt", C, "Number of memory usage hits limits", "memory", _mem("failcnt")),
    Family("container_memory_usage_bytes", G, "Current memory usage in bytes, including all memory regardless "
           "of when it was accessed", "memory", _mem("usage")),
    Family("container_memory_max_usage_bytes", G, "Maximum memory usage recorded in bytes", "memory",
           _mem("max_usage")),
    Family("container_memory_working_set_bytes", G, "Current working set in bytes.", "memory",
           _mem("working_set")),
    Family("container_memory_total_active_file_bytes", G, "Current total active file in bytes.", "memory",
           _mem("active_file")),
    Family("container_memory_total_inactive_file_bytes", G, "Current total inactive file in bytes.", "memory",
           _mem("inactive_file")),
    Family("container_memory_failures_total", C, "Cumulative count of memory allocation failures.", "memory",
           _mem_failures),
    Family("container_memory_events_high_total", C, "Number of times processes of the cgroup were throttled "
           "and routed to perform direct memory reclaim because the high memory boundary was exceeded.",
           "memory", _mem("events_high")),
    Family("container_memory_events_max_total", C, "Number of times the cgroup's memory usage was about to go "
           "over the max boundary.", "memory", _mem("events_max")),
    Family("container_memory_file_dirty_bytes", G, "Bytes of file-backed memory that are dirty.", "memory",
           _mem("file_dirty")),
    Family("container_memory_file_writeback_bytes", G, "Bytes of file-backed memory under writeback.", "memory",
           _mem("file_writeback")),
    Family("container_memory_pgscan_total", C, "Number of pages scanned by memory reclaim.", "memory",
           _mem("pgscan")),
    Family("container_memory_pgsteal_total", C, "Number of pages reclaimed by memory reclaim.", "memory",
           _mem("pgsteal")),
    Family("container_memory_workingset_refault_file_total", C, "Number of refaults of previously evicted file "
           "pages.", "memory", _mem("refault_file")),
    Family("container_memory_workingset_refault_anon_total", C, "Number of refaults of previously evicted "
           "anonymous pages.", "memory", _mem("refault_anon")),
    Family("container_oom_events_total", C, "Count of out of memory events observed for the container",
           "oom_event", _oom),
    # Network
    Family("container_network_receive_bytes_total", C, "Cumulative count of bytes received", "network",
           _net("rx_bytes")),
    Family("container_network_receive_packets_total", C, "Cumulative count of packets received", "network",
           _net("rx_packets")),
    Family("container_network_receive_packets_dropped_total", C, "Cumulative count of packets dropped while "
           "receiving", "network", _net("rx_dropped")),
    Family("container_network_receive_errors_total", C, "Cumulative count of errors encountered while "
           "receiving", "network", _net("rx_errors")),
    Family("container_network_transmit_bytes_total", C, "Cumulative count of bytes transmitted", "network",
           _net("tx_bytes")),
    Family("container_network_transmit_packets_total", C, "Cumulative count of packets transmitted", "network",
           _net("tx_packets")),
    Family("container_network_transmit_packets_dropped_total", C, "Cumulative count of packets dropped while "
           "transmitting", "network", _net("tx_dropped")),
    Family("container_network_transmit_errors_total", C, "Cumulative count of errors encountered while "
           "transmitting", "network", _net("tx_errors")),
    # Filesystem usage
    Family("container_fs_inodes_free", G, "Number of available Inodes", "disk", _fs("inodes_free")),
    Family("container_fs_inodes_total", G, "Number of Inodes", "disk", _fs("inodes_total")),
    Family("container_fs_limit_bytes", G, "Number of bytes that can be consumed by the container on this "
           "filesystem.", "disk", _fs("limit")),
    Family("container_fs_usage_bytes", G, "Number of bytes that are consumed by the container on this "
           "filesystem.", "disk", _fs("usage")),
    # Block IO
    Family("container_fs_reads_bytes_total", C, "Cumulative count of bytes read", "diskIO",
           _blkio("service_bytes", "Read")),
    Family("container_fs_writes_bytes_total", C, "Cumulative count of bytes written", "diskIO",
           _blkio("service_bytes", "Write")),
    Family("container_fs_reads_total", C, "Cumulative count of reads completed", "diskIO",
           _blkio("serviced", "Read", disk="reads")),
    Family("container_fs_writes_total", C, "Cumulative count of writes completed", "diskIO",
           _blkio("serviced", "Write", disk="writes")),
    Family("container_fs_reads_merged_total", C, "Cumulative count of reads merged", "diskIO",
           _disk("reads_merged")),
    Family("container_fs_writes_merged_total", C, "Cumulative count of writes merged", "diskIO",
           _disk("writes_merged")),
    Family("container_fs_sector_reads_total", C, "Cumulative count of sector reads completed", "diskIO",
           _disk("sectors_read")),
    Family("container_fs_sector_writes_total", C, "Cumulative count of sector writes completed", "diskIO",
           _disk("sectors_written")),
    Family("container_fs_read_seconds_total", C, "Cumulative count of seconds spent reading", "diskIO",
           _disk("read_ms", ms=True)),
    Family("container_fs_write_seconds_total", C, "Cumulative count of seconds spent writing", "diskIO",
           _disk("write_ms", ms=True)),
    Family("container_fs_io_current", G, "Number of I/Os currently in progress", "diskIO", _disk("in_progress")),
    Family("container_fs_io_time_seconds_total", C, "Cumulative count of seconds spent doing I/Os", "diskIO",
           _disk("io_ms", ms=True)),
    Family("container_fs_io_time_weighted_seconds_total", C, "Cumulative weighted I/O time in seconds", "diskIO",
           _disk("weighted_io_ms", ms=True)),
    Family("container_blkio_device_usage_total", C, "Blkio Device bytes usage", "diskIO", _blkio_usage),
    Family("container_fs_io_cost_usage_seconds_total", C, "Cumulative IOCost usage in seconds", "diskIO",
           _io_cost("usage")),
    Family("container_fs_io_cost_wait_seconds_total", C, "Cumulative IOCost wait in seconds", "diskIO",
           _io_cost("wait")),
    Family("container_fs_io_cost_indebt_seconds_total", C, "Cumulative IOCost debt in seconds", "diskIO",
           _io_cost("indebt")),
    Family("container_fs_io_cost_indelay_seconds_total", C, "Cumulative IOCost delay in seconds", "diskIO",
           _io_cost("indelay")),
    # Pressure (cgroup v2)
    Family("container_pressure_cpu_waiting_seconds_total", C, "Total time duration tasks in the container have "
           "waited due to CPU congestion.", "pressure", _psi("cpu_some")),
    Family("container_pressure_cpu_stalled_seconds_total", C, "Total time duration no tasks in the container "
           "could make progress due to CPU congestion.", "pressure", _psi("cpu_full")),
    Family("container_pressure_memory_waiting_seconds_total", C, "Total time duration tasks in the container "
           "have waited due to memory congestion.", "pressure", _psi("memory_some")),
    Family("container_pressure_memory_stalled_seconds_total", C, "Total time duration no tasks in the container "
           "could make progress due to memory congestion.", "pressure", _psi("memory_full")),
    Family("container_pressure_io_waiting_seconds_total", C, "Total time duration tasks in the container have "
           "waited due to IO congestion.", "pressure", _psi("io_some")),
    Family("container_pressure_io_stalled_seconds_total", C, "Total time duration no tasks in the container "
           "could make progress due to IO congestion.", "pressure", _psi("io_full")),
    # Processes
    Family("container_processes", G, "Number of processes running inside the container.", "process",
           _proc("processes")),
    Family("container_threads", G, "Number of threads running inside the container", "process",
           _proc("threads")),
    Family("container_threads_max", G, "Maximum number of threads allowed inside the container, infinity if "
           "value is zero", "process", _proc("threads_max")),
    Family("container_file_descriptors", G, "Number of open file descriptors for the container.", "process",
           _proc("file_descriptors")),
    Family("container_sockets", G, "Number of open sockets for the container.", "process", _proc("sockets")),
    Family("container_ulimits_soft", G, "Soft ulimit values for the container root process. Unlimited if -1, "
           "except priority and nice", "process", _ulimit),
    # sched: /proc/<pid>/schedstat summed over the container's processes
    Family("container_cpu_schedstat_run_seconds_total", C, "Time duration the processes of the container have run "
           "on the CPU.", "sched", sched("run_ns", NS)),
    Family("container_cpu_schedstat_runqueue_seconds_total", C, "Time duration processes of the container have been "
           "waiting on a runqueue.", "sched", sched("runqueue_ns", NS)),
    Family("container_cpu_schedstat_run_periods_total", C, "Number of times processes of the cgroup have run on the "
           "cpu", "sched", sched("run_periods")),
    # hugetlb, cpuset, memory_numa: cgroup files
    Family("container_hugetlb_failcnt", C, "Number of hugepage usage hits limits", "hugetlb", hugetlb("failcnt")),
    Family("container_hugetlb_usage_bytes", G, "Current hugepage usage in bytes", "hugetlb", hugetlb("usage")),
    Family("container_hugetlb_max_usage_bytes", G, "Maximum hugepage usage recorded in bytes", "hugetlb",
           hugetlb("max_usage")),
    Family("container_memory_migrate", G, "Memory migrate status.", "cpuset", migrate),
    Family("container_memory_numa_pages", G, "Number of used pages per NUMA node", "memory_numa", numa),
    # tcp, udp, advtcp: the container's network namespace (gauges despite the _total, as cAdvisor)
    Family("container_network_tcp_usage_total", G, "tcp connection usage statistic for container", "tcp",
           tcp("tcp")),
    Family("container_network_tcp6_usage_total", G, "tcp6 connection usage statistic for container", "tcp",
           tcp("tcp6")),
    Family("container_network_udp_usage_total", G, "udp connection usage statistic for container", "udp",
           udp("udp")),
    Family("container_network_udp6_usage_total", G, "udp6 connection usage statistic for container", "udp",
           udp("udp6")),
    Family("container_network_advance_tcp_stats_total", G, "advance tcp connections statistic for container",
           "advtcp", advtcp),
    # referenced_memory, resctrl
    Family("container_referenced_bytes", G, "Container referenced bytes during last measurements cycle",
           "referenced_memory", referenced),
    Family("container_memory_bandwidth_bytes", G, "Total memory bandwidth usage statistics for container counted "
           "with RDT Memory Bandwidth Monitoring (MBM).", "resctrl", resctrl("memory_bandwidth", 0)),
    Family("container_memory_bandwidth_local_bytes", G, "Local memory bandwidth usage statistics for container "
           "counted with RDT Memory Bandwidth Monitoring (MBM).", "resctrl", resctrl("memory_bandwidth", 1)),
    Family("container_llc_occupancy_bytes", G, "Last level cache usage statistics for container counted with RDT "
           "Memory Bandwidth Monitoring (MBM).", "resctrl", resctrl("llc_occupancy")),
)

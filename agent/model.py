"""The one normalized data model shared by collectors and exporters (standard library only).

Collectors produce these objects, exporters consume them, and neither imports the other.
Every stats part is optional: ``None`` means "this host or cgroup cannot feed it", which
exporters render as *no series*, never as a fake zero.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class Runtime(StrEnum):
    DOCKER = "docker"
    CONTAINERD = "containerd"
    CRIO = "crio"
    PODMAN = "podman"
    RAW = "raw"


@dataclass(slots=True)
class ContainerInfo:
    """Identity and metadata of one container (or raw cgroup).

    ``cgroup`` is cAdvisor's container name and the value of the ``id`` label:
    the cgroup path relative to the hierarchy root, ``/`` for the root cgroup.
    """

    cgroup: str
    runtime: Runtime = Runtime.RAW
    container_id: str = ""
    name: str = ""
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    pod: str = ""
    namespace: str = ""
    container: str = ""
    # Docker health: 1 healthy, 0 starting/unhealthy, -1 no health check (cAdvisor's encoding).
    health: int = -1
    started_at: float | None = None
    created_at: float | None = None
    # False when the container shares another container's network namespace (Docker
    # ``container:<x>`` mode, non-sandbox Kubernetes containers): no network series, as cAdvisor.
    owns_network: bool = True
    # Docker's writable layer directory, for filesystem usage; empty when unknown.
    rw_layer: str = ""
    # The runtime's own directory for the container besides its layer (containers/storage's
    # ``<driver>-containers/<id>``), counted in its filesystem usage as cAdvisor does; empty when none.
    storage_dir: str = ""
    pid: int = 0
    log_path: str = ""
    running: bool = True
    # False for containers labelled lookout.logs=false or with env LOGSPOUT=ignore: never shipped.
    ship_logs: bool = True


@dataclass(slots=True)
class CpuStats:
    usage_ns: int = 0
    per_cpu_ns: list[int] | None = None
    user_ns: int = 0
    system_ns: int = 0
    periods: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0
    burst_periods: int = 0
    burst_ns: int = 0


@dataclass(slots=True)
class MemoryStats:
    usage: int = 0
    max_usage: int = 0
    working_set: int = 0
    cache: int = 0
    rss: int = 0
    mapped_file: int = 0
    swap: int = 0
    kernel: int = 0
    failcnt: int = 0
    pgfault: int = 0
    pgmajfault: int = 0
    active_file: int = 0
    inactive_file: int = 0
    events_high: int = 0
    events_max: int = 0
    file_dirty: int = 0
    file_writeback: int = 0
    pgscan: int = 0
    pgsteal: int = 0
    refault_file: int = 0
    refault_anon: int = 0


@dataclass(slots=True)
class Spec:
    """Resource limits. Unlimited memory values are already normalized to 0, as cAdvisor exports them."""

    has_cpu: bool = False
    cpu_period: int = 0
    cpu_quota: int = 0  # 0 = no quota
    cpu_shares: int = 0
    has_memory: bool = False
    memory_limit: int = 0
    memory_swap_limit: int = 0
    memory_reservation: int = 0


@dataclass(slots=True)
class BlkioDevice:
    major: int
    minor: int
    device: str  # "/dev/sda", or "" when the device node is unknown
    # op -> value, ops as the kernel names them: Read, Write, Sync, Async, Discard, Total
    service_bytes: dict[str, int] = field(default_factory=dict)
    serviced: dict[str, int] = field(default_factory=dict)
    # v2 io.stat with the iocost controller on: usage, wait, indebt, indelay (microseconds)
    cost: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


@dataclass(frozen=True, slots=True)
class DiskStats:
    """One block device's line of /proc/diskstats (Documentation/admin-guide/iostats.rst)."""

    reads: int
    reads_merged: int
    sectors_read: int
    read_ms: int
    writes: int
    writes_merged: int
    sectors_written: int
    write_ms: int
    in_progress: int
    io_ms: int
    weighted_io_ms: int


@dataclass(slots=True)
class FilesystemStats:
    device: str
    usage: int
    limit: int
    inodes_total: int
    inodes_free: int
    # The backing device's /proc/diskstats counters (the root container's filesystems only, as cAdvisor)
    disk: DiskStats | None = None


@dataclass(slots=True)
class PressureStats:
    """PSI ``total=`` counters in microseconds (cgroup v2 only)."""

    cpu_some: int = 0
    cpu_full: int = 0
    memory_some: int = 0
    memory_full: int = 0
    io_some: int = 0
    io_full: int = 0


@dataclass(slots=True)
class ProcessStats:
    processes: int = 0
    threads: int = 0
    threads_max: int = 0
    file_descriptors: int | None = None
    sockets: int | None = None
    ulimit_nofile: int | None = None


@dataclass(slots=True)
class HugetlbStats:
    """One huge page size of a cgroup (``hugetlb`` kind), in bytes; ``max_usage`` is None on cgroup v2 (no file)."""

    usage: int
    failcnt: int
    max_usage: int | None = None


@dataclass(slots=True)
class NumaPages:
    """``memory.numa_stat`` pages by type (``file``, ``anon``, ``unevictable``) and NUMA node (``memory_numa``).
    ``container`` is the cgroup's own (cgroup v1 only), ``hierarchy`` includes its descendants."""

    container: dict[str, dict[int, int]] | None
    hierarchy: dict[str, dict[int, int]]


@dataclass(slots=True)
class UdpStats:
    """One ``/proc/<pid>/net/udp[6]`` table (``udp`` kind): sockets, drops and queued bytes summed over them."""

    listen: int = 0
    dropped: int = 0
    rx_queued: int = 0
    tx_queued: int = 0


@dataclass(slots=True)
class SchedStats:
    """``/proc/<pid>/schedstat`` summed over the container's processes (``sched`` kind); exited ones keep counting."""

    run_ns: int = 0
    runqueue_ns: int = 0
    run_periods: int = 0


@dataclass(slots=True)
class ResctrlStats:
    """resctrl monitoring (``resctrl`` kind), one entry per ``mon_data`` domain (``mon_L3_<id>``), in bytes."""

    memory_bandwidth: list[tuple[int, int]]  # (mbm_total_bytes, mbm_local_bytes)
    llc_occupancy: list[int]


@dataclass(slots=True)
class ContainerStats:
    timestamp: float
    cpu: CpuStats | None = None
    memory: MemoryStats | None = None
    spec: Spec = field(default_factory=Spec)
    blkio: list[BlkioDevice] | None = None
    network: list[InterfaceStats] | None = None
    filesystems: list[FilesystemStats] | None = None
    pressure: PressureStats | None = None
    processes: ProcessStats | None = None
    oom_kills: int | None = None
    # The optional kinds: None unless the kind is enabled and this container's files feed it.
    hugetlb: dict[str, HugetlbStats] | None = None  # by page size as cAdvisor names it: "2MB", "1GB"
    numa: NumaPages | None = None
    memory_migrate: int | None = None  # cpuset.memory_migrate (cgroup v1)
    tcp: dict[str, int] | None = None  # sockets by cAdvisor's tcp_state name, /proc/<pid>/net/tcp
    tcp6: dict[str, int] | None = None
    udp: UdpStats | None = None
    udp6: UdpStats | None = None
    tcp_advanced: dict[str, int] | None = None  # /proc/<pid>/net/netstat TcpExt and net/snmp Tcp, by lower-case key
    sched: SchedStats | None = None
    referenced_bytes: int | None = None
    resctrl: ResctrlStats | None = None


@dataclass(slots=True)
class CpuCache:
    level: int
    type: str  # Data, Instruction, Unified
    size: int  # bytes


@dataclass(slots=True)
class CpuCore:
    id: int
    threads: list[int]  # logical CPU numbers
    caches: list[CpuCache] = field(default_factory=list)  # its own, and those shared with only part of its node


@dataclass(slots=True)
class NumaNode:
    """One NUMA node of the host's topology (``cpu_topology`` kind), as cAdvisor builds it from sysfs."""

    id: int
    cores: list[CpuCore] = field(default_factory=list)
    caches: list[CpuCache] = field(default_factory=list)  # shared by every CPU of the node
    memory: int | None = None  # bytes (node meminfo MemTotal); None without the file
    hugepages: dict[int, int] = field(default_factory=dict)  # page size in kB -> pages
    distances: list[int] = field(default_factory=list)  # to node 0, 1, ...


@dataclass(slots=True)
class MachineInfo:
    cpu_cores: int = 0
    cpu_physical_cores: int = 0
    cpu_sockets: int = 0
    memory_bytes: int = 0
    swap_bytes: int = 0
    boot_id: str = ""
    machine_id: str = ""
    system_uuid: str = ""
    kernel_version: str = ""
    os_version: str = ""
    cpu_books: int = 0  # s390x only; 0: none, no series
    cpu_drawers: int = 0
    # DIMMs by type from the EDAC memory controllers: type -> (count, capacity in bytes); None: no EDAC data
    dimms: dict[str, tuple[int, int]] | None = None
    topology: list[NumaNode] | None = None  # cpu_topology only


@dataclass(slots=True)
class ContainerSample:
    info: ContainerInfo
    stats: ContainerStats


@dataclass(slots=True)
class Snapshot:
    """One housekeeping cycle's result: what /metrics and /api/v1/containers serve until the next one."""

    timestamp: float
    containers: list[ContainerSample]
    machine: MachineInfo
    docker_version: str = "Unknown"
    scrape_error: bool = False
    machine_error: bool = False


# One log line as the container wrote it, joined from the runtime's partial chunks:
# (time, stream, message, offset, truncated). ``time`` is the runtime's RFC 3339 timestamp in UTC
# (``...Z``, up to ns digits), ``stream`` is "stdout" or "stderr", ``message`` has no trailing
# newline, ``offset`` is the byte offset of the record's first line in its file. A plain tuple, not
# an object: millions are built per minute on the hot path, and a tuple costs a tenth of a class.
LogRecord = tuple[str, str, str, int, bool]

# What a record's ``time`` should match: a damaged file can hold anything there, and sinks that need a
# real timestamp check it before use (match, then the time is safe to slice by position).
RFC3339_UTC = re.compile(r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)"
                         r"(?:\.\d+)?Z\Z", re.ASCII)


def utc_now_rfc3339() -> str:
    """The current time in a record's ``time`` form (microseconds): what sinks put in place of a damaged one."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class LogSource:
    """The file a batch of records came from, with its container's metadata and a stable identity."""

    path: str
    file_key: str  # "<dev>:<inode>:<fingerprint>", stable across renames
    container: ContainerInfo
    host: str = ""


# What a route's processing (agent.logs.process) found in one record: (level as written, its syslog severity or -1
# when unknown or absent, the other fields). Encoders put the level where their format has one (``log.level``, the
# syslog PRI) and the fields under the route's fields key (NDJSON, Elasticsearch) or in an SD element (RFC 5424).
Fields = tuple[str, int, dict[str, Any]]


@dataclass(slots=True)
class Segment:
    """Consecutive records of one file: the unit batches are made of and encoders iterate. ``fields`` is None unless
    the route processes records: then one entry per record (None for a record with nothing parsed or added)."""

    source: LogSource
    records: list[LogRecord]
    fields: list[Fields | None] | None = None


# --- the delivery contract between the pipeline and a sink ------------------------------------------------------
#
# A sink is ``encode(segments) -> Payload`` (pure, on the reader's thread) and ``async send(payload) ->
# DeliveryResult`` (on the event loop). Every record of a payload gets one outcome per send: delivered, to be
# retried, dead-lettered or dropped with a reason. A send that fails as a whole raises: ``RetryableError`` or an
# ``OSError`` (network, timeouts) is retried with backoff; any other exception is a bug in the sink, which stops
# its route (and only it) instead of retrying forever.


@dataclass(slots=True)
class Payload:
    """A batch as its sink encoded it. ``data`` is one buffer written whole (a stream, a request body) or one entry
    per record (datagrams, RELP frames, ``_bulk`` items); ``count`` records, ``truncated`` of them cut to the sink's
    maximum message size. ``done`` marks the entries delivered so far, kept across retries, for sinks that resend
    only what was not answered (RELP, Elasticsearch); None where a retry resends the whole payload."""

    data: bytes | list[bytes]
    count: int
    truncated: int = 0
    done: list[bool] | None = None

    def pending(self) -> list[int]:
        """Indexes of the entries not delivered yet (all of them without ``done``)."""
        if self.done is None:
            return list(range(len(self.data))) if isinstance(self.data, list) else [0]
        return [i for i, ok in enumerate(self.done) if not ok]


@dataclass(slots=True)
class DeliveryResult:
    """The outcome of one send, in records: ``delivered`` (acknowledged), ``retry`` (answered "later": sent again
    after a backoff, at least ``retry_after`` seconds if the receiver said so; ``error`` says why),
    ``dead_lettered`` (refused for good and kept in the route's dead-letter file) and ``dropped`` (refused for good
    and not kept, by reason)."""

    delivered: int = 0
    retry: int = 0
    retry_after: float | None = None
    error: str = ""
    dead_lettered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def final(self) -> int:
        """Records with a final outcome in this send."""
        return self.delivered + self.dead_lettered + sum(self.dropped.values())


class RetryableError(Exception):
    """A whole send failed in a way worth retrying (a 429 or 5xx answer, a receiver restarting); ``retry_after``
    (seconds) is the receiver's own hint, if it gave one. Network errors are ``OSError`` and are retried too."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- the live surface: what the HTTP API and the status page read from (and change in) the running agent ---------


class ApiError(Exception):
    """A request the agent refuses: ``status`` is the HTTP status (400 bad input, 404 unknown, 409 conflict) and the
    message the one line the client is told."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RouteControl(Protocol):
    """The routes of a running agent (agent.control): added and removed over the API."""

    async def add(self, uri: str, route_id: str | None) -> dict[str, Any]: ...

    async def remove(self, route_id: str) -> None: ...


class LogStream(Protocol):
    """Live records for ``/logs`` (agent.logs.live): a subscription gets the records of matching containers from now
    on, and the last ``tail`` records of each from its files first."""

    async def subscribe(self, params: dict[str, str], tail: int, size: int) -> Subscription: ...


class Subscription(Protocol):
    """One client's bounded buffer of segments: ``ready`` is set while ``take()`` has something (records, or a count
    of records ``missed`` because the buffer was full)."""

    ready: asyncio.Event
    ended: bool  # the agent is stopping: end the stream after what take() gives

    def take(self) -> tuple[list[Segment], int]: ...

    def close(self) -> None: ...


@dataclass
class LiveSurface:
    """Providers handed to the web app by the wiring (exporters import only this module)."""

    problems: Callable[[], dict[str, str]] = dict  # readiness: part -> why it is not ready
    routes: Callable[[], list[dict[str, Any]]] = list  # GET /routes, the status page
    rates: Callable[[], dict[str, dict[str, float | None]]] = dict  # by cgroup name: cpu_cores, ..., docs/API.md
    control: RouteControl | None = None  # POST/DELETE /routes
    stream: LogStream | None = None  # GET /logs
    token: Callable[[], str | None] = lambda: None  # the API token (re-read on reload); None: API disabled
    host: Callable[[], dict[str, Any]] = dict  # the status page's host facts (name, version, problems...)

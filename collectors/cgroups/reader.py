"""Stats readers: one interface, a v1 (here) and a v2 implementation (collectors.cgroups.v2), chosen once from the
layout; the file reading, limit-file cache and device names they share.

``read(cgroup)`` returns ``(stats, pids)`` for a cgroup path such as ``/docker/<id>``, or
``None`` when the cgroup vanished. A single missing or unreadable file leaves its part empty
(``None``) instead of failing the container: containers come and go mid-read all the time.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Set
from dataclasses import dataclass
from pathlib import Path

from agent.model import (
    BlkioDevice,
    ContainerStats,
    CpuStats,
    HugetlbStats,
    MemoryStats,
    ProcessStats,
    Spec,
)
from collectors.cgroups import parsers as p
from collectors.cgroups.mounts import CgroupLayout

_CHUNK = 16384


def read_file(path: str) -> bytes | None:
    """The whole file, or None if it is missing or unreadable (vanished cgroup, absent controller)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Wanted:
    """Which metric kinds to read; the rest is never touched."""

    cpu: bool = True
    percpu: bool = True
    memory: bool = True
    disk_io: bool = True
    pressure: bool = True
    process: bool = True
    oom: bool = True
    # The optional kinds read from cgroup files: off unless enabled (the defaults read nothing more).
    hugetlb: bool = False
    numa: bool = False
    cpuset: bool = False


def hugepage_sizes(host_root: Path) -> tuple[str, ...]:
    """The host's huge page sizes as the hugetlb controller names them (``2MB``, ``1GB``), from
    ``/sys/kernel/mm/hugepages`` (opencontainers/cgroups ``HugePageSizes``)."""
    try:
        names = os.listdir(host_root / "sys/kernel/mm/hugepages")
    except OSError:
        return ()
    sizes = (p.hugepage_size_name(name) for name in sorted(names))
    return tuple(size for size in sizes if size)


def descendant_pids(base: str) -> list[int]:
    """The processes of every cgroup below ``base`` (not ``base``'s own): the ``sched`` kind sums a container's
    whole subtree, as cAdvisor's ``GetAllPids``. Most containers have no child cgroup: one directory scan."""
    out: list[int] = []
    stack = [base]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        procs = read_file(entry.path + "/cgroup.procs")
                        if procs:
                            out.extend(p.parse_pids(procs))
        except OSError:
            continue
    return out


def _hugetlb_v1(d: str, sizes: tuple[str, ...]) -> dict[str, HugetlbStats] | None:
    """``hugetlb.<size>.{usage,max_usage}_in_bytes`` and ``.failcnt``, the reservation (``.rsvd.``) files where the
    kernel has them (5.7+), as opencontainers/cgroups reads them for cAdvisor."""
    out = {}
    for size in sizes:
        prefix = f"{d}/hugetlb.{size}.rsvd"
        usage = read_file(prefix + ".usage_in_bytes")
        if usage is None:
            prefix = f"{d}/hugetlb.{size}"
            usage = read_file(prefix + ".usage_in_bytes")
            if usage is None:
                continue
        max_usage = read_file(prefix + ".max_usage_in_bytes")
        failcnt = read_file(prefix + ".failcnt")
        out[size] = HugetlbStats(int(usage), int(failcnt) if failcnt else 0, int(max_usage) if max_usage else 0)
    return out or None


def _hugetlb_v2(d: str, sizes: tuple[str, ...]) -> dict[str, HugetlbStats] | None:
    """``hugetlb.<size>.rsvd.current`` (or ``.current``) and the ``max`` count of ``hugetlb.<size>.events``; v2 keeps
    no maximum usage."""
    out = {}
    for size in sizes:
        prefix = f"{d}/hugetlb.{size}"
        usage = read_file(prefix + ".rsvd.current")
        if usage is None:
            usage = read_file(prefix + ".current")
            if usage is None:
                continue
        events = read_file(prefix + ".events")
        out[size] = HugetlbStats(int(usage), p.parse_flat(events).get("max", 0) if events else 0)
    return out or None


class DeviceNames:
    """major:minor to ``/dev/<name>`` via ``<host-root>/sys/dev/block``, cached."""

    def __init__(self, host_root: Path) -> None:
        self._base = str(host_root / "sys/dev/block")
        self._cache: dict[tuple[int, int], str] = {}

    def name(self, major: int, minor: int) -> str:
        key = (major, minor)
        name = self._cache.get(key)
        if name is None:
            try:
                name = "/dev/" + os.path.basename(os.readlink(f"{self._base}/{major}:{minor}"))
            except OSError:
                name = ""
            self._cache[key] = name
        return name


IO_COST_KEYS = ("usage", "wait", "indebt", "indelay")

# A cgroup's limit files are re-read every SPEC_REFRESH_CYCLES cycles (staggered by cgroup), and at least every
# SPEC_MAX_AGE seconds. At the default 10 s housekeeping both mean every 30 s; at 1 s every 3 s (cAdvisor
# re-reads a container's spec at most every 5 s, when its info is asked for); from 15 s housekeeping on the age
# comes first. A Docker container's limits are re-read at once when its metadata changes (below).
SPEC_REFRESH_CYCLES = 3
SPEC_MAX_AGE = 30.0


class SpecCache:
    """Each cgroup's limits (``Spec`` and ``pids.max``) between cycles.

    The limit files (6-7 of the ~20 files read per container) change only when someone changes a limit, so they
    are re-read only when a cgroup is new, when its entry is due (every ``SPEC_REFRESH_CYCLES`` cycles,
    staggered by a hash of the cgroup path so that each cycle re-reads about the same share, like the socket
    counts in ``collectors.host``; or when it is ``SPEC_MAX_AGE`` seconds old), and when the metadata object it
    was read under (``source``: the container's Docker template) is no longer the same object. Docker's event
    stream replaces that template on every event of the container (``update``, ``start``, ``restart``...),
    and the disk fallback when ``config.v2.json`` is rewritten, which ``docker update`` does. So a
    ``docker update`` shows at the next cycle, as before; a limit changed behind the runtime's back (or a
    CRI container's or a systemd unit's) shows within ``SPEC_REFRESH_CYCLES`` cycles or ``SPEC_MAX_AGE``
    seconds plus one cycle, whichever comes first.

    Cached ``Spec`` objects are shared by the snapshots that use them: nothing may modify them.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # cgroup -> (spec, threads_max, source, read at (clock), stagger phase)
        self._entries: dict[str, tuple[Spec, int, object, float, int]] = {}
        self._clock = clock
        self._cycle = 0
        self._now = clock()

    def begin_cycle(self, live: Set[str]) -> None:
        """Called once per housekeeping cycle with the cgroups found: forget the others."""
        self._cycle += 1
        self._now = self._clock()
        for gone in self._entries.keys() - live:
            del self._entries[gone]

    def get(self, cgroup: str, source: object) -> tuple[Spec, int] | None:
        """The cached limits, or None when they are to be read (new, due, or the metadata changed)."""
        entry = self._entries.get(cgroup)
        if (entry is None or entry[2] is not source or (self._cycle + entry[4]) % SPEC_REFRESH_CYCLES == 0
                or self._now - entry[3] >= SPEC_MAX_AGE):
            return None
        return entry[0], entry[1]

    def put(self, cgroup: str, source: object, spec: Spec, threads_max: int) -> None:
        old = self._entries.get(cgroup)
        phase = old[4] if old is not None else zlib.crc32(cgroup.encode())
        self._entries[cgroup] = (spec, threads_max, source, self._now, phase)

    def drop(self, cgroup: str) -> None:
        self._entries.pop(cgroup, None)

    def __contains__(self, cgroup: object) -> bool:
        return cgroup in self._entries


def _blkio(service_bytes: dict[tuple[int, int], dict[str, int]],
           serviced: dict[tuple[int, int], dict[str, int]], devices: DeviceNames) -> list[BlkioDevice]:
    out = []
    for key in sorted(service_bytes.keys() | serviced.keys()):
        out.append(BlkioDevice(key[0], key[1], devices.name(*key),
                               service_bytes.get(key, {}), serviced.get(key, {})))
    return out


class V1Reader:
    """cgroup v1: one directory per controller; comounted controllers share a directory."""

    version = 1

    def __init__(self, layout: CgroupLayout, devices: DeviceNames, wanted: Wanted,
                 hugepage_sizes: tuple[str, ...] = ()) -> None:
        v1 = layout.v1
        self.cpu = v1.get("cpu", "")
        self.cpuacct = v1.get("cpuacct", "")
        self.memory = v1.get("memory", "")
        self.blkio = v1.get("blkio", "")
        self.pids = v1.get("pids", "")
        self.cpuset = v1.get("cpuset", "")
        self.hugetlb = v1.get("hugetlb", "")
        self.hugepage_sizes = hugepage_sizes
        self.procs_root = self.cpu or self.cpuacct or self.memory
        self.devices = devices
        self.wanted = wanted
        self.ns_per_tick = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
        self.specs = SpecCache()

    def threads(self, cgroup: str) -> list[int]:
        """The cgroup's thread ids (``tasks``), for the ``resctrl`` kind."""
        data = read_file(self.procs_root + cgroup + "/tasks") if self.procs_root and cgroup != "/" else None
        return p.parse_pids(data) if data else []

    def subtree_pids(self, cgroup: str, pids: list[int]) -> list[int]:
        """``pids`` (the cgroup's own) and those of its descendants, each once."""
        below = descendant_pids(self.procs_root + ("" if cgroup == "/" else cgroup)) if self.procs_root else []
        return list(dict.fromkeys(pids + below)) if below else pids

    def read_spec(self, cgroup: str) -> tuple[Spec, int, bool]:
        """The limit files: (spec, threads_max from pids.max, whether any of them was there)."""
        sub = "" if cgroup == "/" else cgroup
        spec = Spec()
        alive = False
        if self.cpu:
            d = self.cpu + sub
            shares = read_file(d + "/cpu.shares")
            if shares is not None:
                alive = spec.has_cpu = True
                spec.cpu_shares = int(shares)
                quota = read_file(d + "/cpu.cfs_quota_us")
                period = read_file(d + "/cpu.cfs_period_us")
                spec.cpu_period = int(period) if period else 0
                q = int(quota) if quota else -1
                spec.cpu_quota = q if q > 0 else 0
        if self.memory:
            d = self.memory + sub
            limit = read_file(d + "/memory.limit_in_bytes")
            if limit is not None:
                alive = spec.has_memory = True
                spec.memory_limit = p.memory_limit(int(limit))
                memsw = read_file(d + "/memory.memsw.limit_in_bytes")
                spec.memory_swap_limit = p.memory_limit(int(memsw)) if memsw else 0
                soft = read_file(d + "/memory.soft_limit_in_bytes")
                spec.memory_reservation = p.memory_limit(int(soft)) if soft else 0
        threads_max = 0
        if self.wanted.process and self.pids and cgroup != "/":
            maximum = read_file(self.pids + sub + "/pids.max")
            threads_max = max(p.parse_int(maximum), 0) if maximum else 0
        return spec, threads_max, alive

    def read(self, cgroup: str, source: object = None) -> tuple[ContainerStats, list[int]] | None:
        """``source``: the container's metadata object (see ``SpecCache``); a different one re-reads the limits."""
        sub = "" if cgroup == "/" else cgroup
        w = self.wanted
        timestamp = time.time()
        cached = self.specs.get(cgroup, source)
        if cached is None:
            spec, threads_max, alive = self.read_spec(cgroup)
            self.specs.put(cgroup, source, spec, threads_max)
        else:
            (spec, threads_max), alive = cached, False
        stats = ContainerStats(timestamp=timestamp, spec=spec)

        if w.cpu and self.cpuacct:
            d = self.cpuacct + sub
            percpu = read_file(d + "/cpuacct.usage_percpu") if w.percpu else None
            per_cpu = p.parse_percpu(percpu) if percpu else []
            usage_ns: int | None
            if per_cpu:
                # The kernel's cpuacct.usage is this same sum (cpuusage_read adds cpuacct_cpuusage_read of
                # every possible CPU, as usage_percpu prints them): one read fewer per container.
                usage_ns = sum(per_cpu)
            else:
                usage = read_file(d + "/cpuacct.usage")
                usage_ns = int(usage) if usage is not None else None
            if usage_ns is not None:
                alive = True
                cpu = CpuStats(usage_ns=usage_ns)
                if per_cpu:
                    cpu.per_cpu_ns = per_cpu
                acct = read_file(d + "/cpuacct.stat")
                if acct:
                    ticks = p.parse_flat(acct)
                    cpu.user_ns = ticks.get("user", 0) * self.ns_per_tick
                    cpu.system_ns = ticks.get("system", 0) * self.ns_per_tick
                cpu_stat = read_file(self.cpu + sub + "/cpu.stat") if self.cpu else None
                if cpu_stat:
                    s = p.parse_flat(cpu_stat)
                    cpu.periods = s.get("nr_periods", 0)
                    cpu.throttled_periods = s.get("nr_throttled", 0)
                    cpu.throttled_ns = s.get("throttled_time", 0)
                    # Kernels >= 5.14 report bursts on v1 too; cAdvisor leaves them at 0, Lookout reads them.
                    cpu.burst_periods = s.get("nr_bursts", 0)
                    cpu.burst_ns = s.get("burst_time", 0)
                stats.cpu = cpu

        if self.memory:
            d = self.memory + sub
            if w.memory:
                usage = read_file(d + "/memory.usage_in_bytes")
                stat = read_file(d + "/memory.stat")
                if usage is not None and stat is not None:
                    stats.memory = self._memory(d, int(usage), p.parse_flat(stat))
            if w.oom:
                oom = read_file(d + "/memory.oom_control")
                if oom:
                    stats.oom_kills = p.parse_flat(oom).get("oom_kill", 0)
            if w.numa:
                numa = read_file(d + "/memory.numa_stat")
                if numa:
                    stats.numa = p.parse_numa_stat_v1(numa)
        if w.cpuset and self.cpuset:
            migrate = read_file(self.cpuset + sub + "/cpuset.memory_migrate")
            if migrate:
                stats.memory_migrate = int(migrate)
        if w.hugetlb and self.hugetlb:
            stats.hugetlb = _hugetlb_v1(self.hugetlb + sub, self.hugepage_sizes)

        if w.disk_io and self.blkio:
            d = self.blkio + sub
            sb = read_file(d + "/blkio.throttle.io_service_bytes_recursive")
            if sb is None:
                sb = read_file(d + "/blkio.throttle.io_service_bytes")
                sv = read_file(d + "/blkio.throttle.io_serviced")
            else:
                sv = read_file(d + "/blkio.throttle.io_serviced_recursive")
            if sb is not None:
                stats.blkio = _blkio(p.parse_blkio(sb), p.parse_blkio(sv or b""), self.devices)

        procs = read_file(self.procs_root + sub + "/cgroup.procs") if self.procs_root else None
        pids = p.parse_pids(procs) if procs else []
        if not alive and procs is None and cached is not None:
            # Only the limit files can tell whether the cgroup is still there (e.g. in the memory hierarchy
            # alone): read them, as an uncached cycle would have.
            spec, threads_max, alive = self.read_spec(cgroup)
            self.specs.put(cgroup, source, spec, threads_max)
            stats.spec = spec
        if not alive and procs is None:
            self.specs.drop(cgroup)
            return None
        if w.process:
            proc = ProcessStats(processes=len(pids))
            if self.pids and cgroup != "/":
                current = read_file(self.pids + sub + "/pids.current")
                proc.threads = int(current) if current else 0
                proc.threads_max = threads_max
            stats.processes = proc
        return stats, pids

    @staticmethod
    def _memory(d: str, usage: int, s: dict[str, int]) -> MemoryStats:
        # Hierarchical totals (total_*) as cAdvisor with use_hierarchy=1, the only mode on current kernels.
        def g(key: str) -> int:
            v = s.get("total_" + key)
            return s.get(key, 0) if v is None else v

        max_usage = read_file(d + "/memory.max_usage_in_bytes")
        failcnt = read_file(d + "/memory.failcnt")
        kmem = read_file(d + "/memory.kmem.usage_in_bytes")
        inactive_file = g("inactive_file")
        return MemoryStats(
            usage=usage,
            max_usage=int(max_usage) if max_usage else 0,
            working_set=max(usage - inactive_file, 0),
            cache=g("cache"),
            rss=g("rss"),
            mapped_file=g("mapped_file"),
            swap=g("swap"),
            kernel=int(kmem) if kmem else 0,
            failcnt=int(failcnt) if failcnt else 0,
            pgfault=s.get("pgfault", 0),
            pgmajfault=s.get("pgmajfault", 0),
            active_file=g("active_file"),
            inactive_file=inactive_file,
            # cAdvisor leaves these at 0 on v1 although v1's memory.stat has them: Lookout reports them.
            # pgscan/pgsteal have no v1 source and stay 0, as in cAdvisor.
            file_dirty=g("dirty"),
            file_writeback=g("writeback"),
            refault_file=g("workingset_refault_file"),
            refault_anon=g("workingset_refault_anon"),
        )

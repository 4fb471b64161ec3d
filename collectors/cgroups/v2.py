"""The cgroup v2 stats reader (the unified hierarchy), beside collectors.cgroups.reader's v1 one: the same interface,
``read(cgroup)`` -> ``(stats, pids)`` or None when the cgroup vanished, and the same helpers."""

from __future__ import annotations

import os
import time

from agent.model import (
    ContainerStats,
    CpuStats,
    MemoryStats,
    PressureStats,
    ProcessStats,
    Spec,
)
from collectors.cgroups import parsers as p
from collectors.cgroups.mounts import CgroupLayout
from collectors.cgroups.reader import (
    IO_COST_KEYS,
    DeviceNames,
    SpecCache,
    Wanted,
    _blkio,
    _hugetlb_v2,
    descendant_pids,
    read_file,
)


class V2Reader:
    """cgroup v2: one unified directory per cgroup."""

    version = 2

    def __init__(self, layout: CgroupLayout, devices: DeviceNames, wanted: Wanted,
                 hugepage_sizes: tuple[str, ...] = ()) -> None:
        self.root = layout.unified
        self.devices = devices
        self.wanted = wanted
        self.specs = SpecCache()
        self.hugepage_sizes = hugepage_sizes
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def threads(self, cgroup: str) -> list[int]:
        """The cgroup's thread ids (``cgroup.threads``; Podman's nested ``container`` child's when it has none)."""
        if cgroup == "/":
            return []
        data = read_file(self.root + cgroup + "/cgroup.threads")
        if not data:
            data = read_file(self.root + cgroup + "/container/cgroup.threads")
        return p.parse_pids(data) if data else []

    def subtree_pids(self, cgroup: str, pids: list[int]) -> list[int]:
        """``pids`` (the cgroup's own, or its nested ``container`` child's) and those of its descendants, each once."""
        below = descendant_pids(self.root + ("" if cgroup == "/" else cgroup))
        return list(dict.fromkeys(pids + below)) if below else pids

    def read_spec(self, cgroup: str) -> tuple[Spec, int]:
        """The limit files: (spec, threads_max from pids.max)."""
        d = self.root + ("" if cgroup == "/" else cgroup)
        spec = Spec()
        cpu_max = read_file(d + "/cpu.max")
        weight = read_file(d + "/cpu.weight")
        if cpu_max is not None or weight is not None:
            spec.has_cpu = True
            if cpu_max:
                spec.cpu_quota, spec.cpu_period = p.parse_cpu_max(cpu_max)
            spec.cpu_shares = p.weight_to_shares(int(weight)) if weight else 0
        mem_max = read_file(d + "/memory.max")
        if mem_max is not None:
            spec.has_memory = True
            spec.memory_limit = p.memory_limit(p.parse_int(mem_max))
            swap_max = read_file(d + "/memory.swap.max")
            spec.memory_swap_limit = p.memory_limit(p.parse_int(swap_max)) if swap_max else 0
            mem_min = read_file(d + "/memory.min")
            spec.memory_reservation = p.memory_limit(p.parse_int(mem_min)) if mem_min else 0
        threads_max = 0
        if self.wanted.process:
            maximum = read_file(d + "/pids.max")
            threads_max = max(p.parse_int(maximum), 0) if maximum else 0
        return spec, threads_max

    def read(self, cgroup: str, source: object = None) -> tuple[ContainerStats, list[int]] | None:
        """``source``: the container's metadata object (see ``SpecCache``); a different one re-reads the limits."""
        is_root = cgroup == "/"
        d = self.root + ("" if is_root else cgroup)
        w = self.wanted
        timestamp = time.time()

        procs = read_file(d + "/cgroup.procs")
        if procs is None:
            self.specs.drop(cgroup)
            return None  # every v2 cgroup has cgroup.procs: the cgroup is gone
        pids = p.parse_pids(procs)
        if not pids and not is_root:
            # Podman's libpod-<id>.scope keeps its processes in a nested "container" cgroup (a v2
            # inner node holds none): its pids give the container's network namespace and fds.
            nested = read_file(d + "/container/cgroup.procs")
            pids = p.parse_pids(nested) if nested else pids

        cached = self.specs.get(cgroup, source)
        if cached is None:
            spec, threads_max = self.read_spec(cgroup)
            self.specs.put(cgroup, source, spec, threads_max)
        else:
            spec, threads_max = cached
        stats = ContainerStats(timestamp=timestamp, spec=spec)
        if w.cpu:
            cpu_stat = read_file(d + "/cpu.stat")
            if cpu_stat:
                s = p.parse_flat(cpu_stat)
                stats.cpu = CpuStats(
                    usage_ns=s.get("usage_usec", 0) * 1000,
                    user_ns=s.get("user_usec", 0) * 1000,
                    system_ns=s.get("system_usec", 0) * 1000,
                    periods=s.get("nr_periods", 0),
                    throttled_periods=s.get("nr_throttled", 0),
                    throttled_ns=s.get("throttled_usec", 0) * 1000,
                    burst_periods=s.get("nr_bursts", 0),
                    burst_ns=s.get("burst_usec", 0) * 1000,
                )

        events = None
        if w.memory or w.oom:
            raw_events = read_file(d + "/memory.events")
            events = p.parse_flat(raw_events) if raw_events else None
        if w.memory:
            stat = read_file(d + "/memory.stat")
            if stat is not None:
                stats.memory = self._memory(d, is_root, p.parse_flat(stat), events)
        if w.oom and events is not None:
            stats.oom_kills = events.get("oom_kill", 0)
        if w.numa and not is_root:
            numa = read_file(d + "/memory.numa_stat")
            if numa:
                stats.numa = p.parse_numa_stat_v2(numa, self.page_size)
        if w.hugetlb:
            stats.hugetlb = _hugetlb_v2(d, self.hugepage_sizes)

        if w.disk_io:
            io = read_file(d + "/io.stat")
            if io is not None:
                parsed = p.parse_io_stat(io)
                sb = {k: {"Read": v.get("rbytes", 0), "Write": v.get("wbytes", 0)} for k, v in parsed.items()}
                sv = {k: {"Read": v.get("rios", 0), "Write": v.get("wios", 0)} for k, v in parsed.items()}
                stats.blkio = _blkio(sb, sv, self.devices)
                for dev in stats.blkio:  # iocost: only where the controller is enabled for the device
                    row = parsed.get((dev.major, dev.minor), {})
                    if "cost.usage" in row:
                        dev.cost = {k: row.get(f"cost.{k}", 0) for k in IO_COST_KEYS}

        if w.pressure:
            psi = [read_file(f"{d}/{res}.pressure") for res in ("cpu", "memory", "io")]
            if any(x is not None for x in psi):
                cpu_p, mem_p, io_p = (p.parse_psi(x) if x else (0, 0) for x in psi)
                stats.pressure = PressureStats(cpu_p[0], cpu_p[1], mem_p[0], mem_p[1], io_p[0], io_p[1])

        if w.process:
            proc = ProcessStats(processes=len(pids))
            current = read_file(d + "/pids.current")
            if current is not None:
                proc.threads = int(current)
            else:
                threads = read_file(d + "/cgroup.threads")
                proc.threads = len(threads.split()) if threads else len(pids)
            proc.threads_max = threads_max
            stats.processes = proc
        return stats, pids

    @staticmethod
    def _memory(d: str, is_root: bool, s: dict[str, int], events: dict[str, int] | None) -> MemoryStats:
        current = None if is_root else read_file(d + "/memory.current")
        # The v2 root has no memory.current; cAdvisor uses anon + file from its memory.stat.
        usage = int(current) if current else s.get("anon", 0) + s.get("file", 0)
        peak = read_file(d + "/memory.peak")
        swap = read_file(d + "/memory.swap.current")
        inactive_file = s.get("inactive_file", 0)
        events = events or {}
        return MemoryStats(
            usage=usage,
            max_usage=int(peak) if peak else 0,
            working_set=max(usage - inactive_file, 0),
            cache=s.get("file", 0),
            rss=s.get("anon", 0),
            mapped_file=s.get("file_mapped", 0),
            swap=int(swap) if swap else 0,
            kernel=s.get("kernel", 0),  # memory.stat "kernel" (5.18+); cAdvisor reports 0 on v2
            failcnt=0,
            pgfault=s.get("pgfault", 0),
            pgmajfault=s.get("pgmajfault", 0),
            active_file=s.get("active_file", 0),
            inactive_file=inactive_file,
            events_high=events.get("high", 0),
            events_max=events.get("max", 0),
            file_dirty=s.get("file_dirty", 0),
            file_writeback=s.get("file_writeback", 0),
            pgscan=s.get("pgscan", 0),
            pgsteal=s.get("pgsteal", 0),
            refault_file=s.get("workingset_refault_file", s.get("workingset_refault", 0)),
            refault_anon=s.get("workingset_refault_anon", 0),
        )

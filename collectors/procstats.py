"""The optional kinds read per container from ``<host-root>/proc``, as cAdvisor's libcontainer handler reads them.

- ``tcp``, ``udp``, ``advtcp``: the socket tables (``net/tcp``, ``tcp6``, ``udp``, ``udp6``) and the TCP MIB
  counters (``net/netstat`` TcpExt, ``net/snmp`` Tcp) of the container's network namespace, through one of its
  processes (the same one the ``network`` kind reads ``net/dev`` through);
- ``sched``: ``/proc/<pid>/schedstat`` summed over every process of the cgroup and its descendants; a process
  that exits keeps its last counts in the container's total, so the counters only grow (cAdvisor's
  ``pidMetricsSaved``);
- ``referenced_memory``: the ``Referenced:`` kB of each process's ``smaps_rollup`` (or ``smaps`` on kernels before
  4.14, whose lines sum to the same), in bytes. Lookout never writes ``clear_refs`` (cAdvisor does only with
  ``--referenced_reset_interval``, off by default).

Nothing here runs unless its kind is enabled. A missing file (an exited process, a kernel without IPv6) leaves its
part None: no series, never a zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.model import ContainerStats, SchedStats
from collectors.cgroups import parsers as p
from collectors.cgroups.reader import read_file


@dataclass(frozen=True, slots=True)
class ProcKindsWanted:
    tcp: bool = False
    udp: bool = False
    advtcp: bool = False
    sched: bool = False
    referenced: bool = False

    def any(self) -> bool:
        return self.tcp or self.udp or self.advtcp or self.sched or self.referenced


class ProcKinds:
    def __init__(self, host_root: Path, wanted: ProcKindsWanted) -> None:
        self.proc = str(host_root / "proc")
        self.wanted = wanted
        self.net = wanted.tcp or wanted.udp or wanted.advtcp
        # cgroup -> (pid -> its last schedstat, the summed counts of the cgroup's processes that exited)
        self._sched: dict[str, tuple[dict[int, tuple[int, int, int]], tuple[int, int, int]]] = {}
        self._maps = ""  # "smaps_rollup", or "smaps" on kernels before 4.14: decided by the first process read

    def begin_cycle(self, live: set[str]) -> None:
        """Called once per housekeeping cycle with the cgroups found: forget the others' scheduler counts."""
        for gone in self._sched.keys() - live:
            del self._sched[gone]

    def read_net(self, stats: ContainerStats, pid: int) -> None:
        base = f"{self.proc}/{pid}/net/"
        w = self.wanted
        if w.tcp:
            for name in ("tcp", "tcp6"):
                data = read_file(base + name)
                if data is not None:
                    setattr(stats, name, p.parse_tcp(data))
        if w.udp:
            for name in ("udp", "udp6"):
                data = read_file(base + name)
                if data is not None:
                    setattr(stats, name, p.parse_udp(data))
        if w.advtcp:
            counters: dict[str, int] = {}
            found = False
            for name in ("netstat", "snmp"):
                data = read_file(base + name)
                if data is not None:
                    found = True
                    p.parse_mib(data, counters)
            if found:
                stats.tcp_advanced = counters

    def read_sched(self, stats: ContainerStats, cgroup: str, pids: list[int]) -> None:
        last, saved = self._sched.get(cgroup, ({}, (0, 0, 0)))
        now: dict[int, tuple[int, int, int]] = {}
        for pid in pids:
            data = read_file(f"{self.proc}/{pid}/schedstat")
            counts = p.parse_schedstat(data) if data is not None else None
            if counts is not None:
                now[pid] = counts
        if not now and not last:
            return  # no process could be read (none yet, or no schedstat): no series
        run, wait, periods = saved
        for pid, (r, w, n) in last.items():
            if pid not in now:  # exited since the last cycle: its last counts stay in the total
                run, wait, periods = run + r, wait + w, periods + n
        saved = (run, wait, periods)
        for r, w, n in now.values():
            run, wait, periods = run + r, wait + w, periods + n
        self._sched[cgroup] = (now, saved)
        stats.sched = SchedStats(run, wait, periods)

    def read_referenced(self, stats: ContainerStats, pids: list[int]) -> None:
        total, found = 0, False
        for pid in pids:
            if not self._maps:
                data = read_file(f"{self.proc}/{pid}/smaps_rollup")
                if data is not None:
                    self._maps = "smaps_rollup"
                else:
                    data = read_file(f"{self.proc}/{pid}/smaps")
                    if data is not None:
                        self._maps = "smaps"
            else:
                data = read_file(f"{self.proc}/{pid}/{self._maps}")
            if data is not None:
                found = True
                total += p.parse_referenced_kb(data)
        if found:
            stats.referenced_bytes = total * 1024

    def host_pids(self) -> list[int]:
        """Every process of the host: the root cgroup's processes and its descendants'."""
        try:
            return [int(name) for name in os.listdir(self.proc) if name.isdigit()]
        except OSError:
            return []

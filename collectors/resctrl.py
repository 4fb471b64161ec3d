"""resctrl monitoring (the ``resctrl`` kind): LLC occupancy and memory bandwidth from ``/sys/fs/resctrl``.

Lookout only reads. cAdvisor creates a monitoring group per container (``mon_groups/cadvisor-<name>``) and writes
every thread id of the container into it; Lookout runs read-only (its host root is mounted read-only) and never
does. A container is therefore served when an existing group holds exactly its threads: a control group (the
runtime's, e.g. OCI ``linux.intelRdt.closID``) or a monitoring group (``mon_groups/<name>``, at the root or under a
control group). The root cgroup (``/``) is the resctrl root's own ``mon_data``. Each ``mon_data/mon_L3_<id>``
domain is one ``node_id`` (its index, as cAdvisor numbers them).
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.model import ResctrlStats
from collectors.cgroups.reader import read_file

_NOT_GROUPS = frozenset({"info", "mon_groups", "mon_data"})


def _ints(data: bytes | None) -> set[int]:
    return {int(x) for x in data.split()} if data else set()


class Resctrl:
    def __init__(self, host_root: Path) -> None:
        self.base = str(host_root / "sys/fs/resctrl")
        self._groups: dict[str, frozenset[int]] = {}  # group dir -> its task (thread) ids
        self._by_task: dict[int, str] = {}

    def begin_cycle(self) -> None:
        """Read every group's ``tasks`` once per housekeeping cycle."""
        groups: dict[str, frozenset[int]] = {}
        controls = [d for d in self._dirs(self.base) if os.path.basename(d) not in _NOT_GROUPS]
        for control in controls:
            groups[control] = frozenset(_ints(read_file(control + "/tasks")))
        for parent in (self.base, *controls):
            for mon in self._dirs(parent + "/mon_groups"):
                groups[mon] = frozenset(_ints(read_file(mon + "/tasks")))
        by_task: dict[int, str] = {}
        for group, tasks in groups.items():  # a monitoring group wins over its control group
            for task in tasks:
                if task not in by_task or "/mon_groups/" in group:
                    by_task[task] = group
        self._groups, self._by_task = groups, by_task

    @staticmethod
    def _dirs(path: str) -> list[str]:
        try:
            with os.scandir(path) as it:
                return sorted(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            return []

    def group_of(self, threads: list[int]) -> str | None:
        """The group holding exactly these threads, if one does."""
        if not threads:
            return None
        group = self._by_task.get(threads[0])
        if group is None or self._groups.get(group) != frozenset(threads):
            return None
        return group

    def read(self, cgroup: str, threads: list[int]) -> ResctrlStats | None:
        group = self.base if cgroup == "/" else self.group_of(threads)
        return None if group is None else self.mon_data(group)

    @staticmethod
    def mon_data(group: str) -> ResctrlStats | None:
        """Every ``mon_data/mon_L3_*`` domain's counters; None when a value is "Unavailable" or none is there."""
        bandwidth: list[tuple[int, int]] = []
        occupancy: list[int] = []
        for domain in Resctrl._dirs(group + "/mon_data"):
            total, local, llc = (read_file(f"{domain}/{name}")
                                 for name in ("mbm_total_bytes", "mbm_local_bytes", "llc_occupancy"))
            try:
                if total is not None and local is not None:
                    bandwidth.append((int(total), int(local)))
                if llc is not None:
                    occupancy.append(int(llc))
            except ValueError:  # "Unavailable": the hardware lost the counter (cAdvisor fails the read too)
                return None
        if not bandwidth and not occupancy:
            return None
        return ResctrlStats(bandwidth, occupancy)

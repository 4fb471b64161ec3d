"""The CPU quota of the agent's own cgroup, in CPUs: how many CPUs' worth of work it may do at most."""

from __future__ import annotations

import os
from collections.abc import Callable

from collectors.cgroups import parsers as p
from collectors.cgroups.reader import read_file


def own_cpu_limit(root: str = "/") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``cpu.max`` on v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    on v1; the smallest along the path up to the mount's root), or None when there is none or it cannot be read."""
    data = read_file(os.path.join(root, "proc/self/cgroup"))
    if data is None:
        return None
    base = os.path.join(root, "sys/fs/cgroup")
    v1 = v2 = None
    for line in data.decode(errors="replace").splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "cpu" in controllers.split(","):
            v1 = path
        elif hid == "0" and not controllers:
            v2 = path
    if v1 is not None:  # a hybrid host keeps the cpu controller on v1
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            if os.path.isdir(os.path.join(base, name)):
                return _smallest(os.path.join(base, name), v1, _v1_quota)
        return None
    if v2 is not None:
        return _smallest(base, v2, _v2_quota)
    return None


def _smallest(mount: str, path: str, read: Callable[[str], float | None]) -> float | None:
    """The smallest quota from the cgroup's directory up to the mount's root. Inside a container the mount's root
    is often the container's own cgroup, and the host path from /proc/self/cgroup does not exist below it."""
    found = None
    directory = os.path.normpath(os.path.join(mount, path.lstrip("/")))
    while True:
        quota = read(directory)
        if quota is not None and (found is None or quota < found):
            found = quota
        if len(directory) <= len(mount):
            return found
        directory = os.path.dirname(directory)


def _v2_quota(directory: str) -> float | None:
    data = read_file(directory + "/cpu.max")
    try:
        quota, period = p.parse_cpu_max(data) if data else (0, 0)
        return quota / period if quota else None
    except (ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: str) -> float | None:
    quota, period = read_file(directory + "/cpu.cfs_quota_us"), read_file(directory + "/cpu.cfs_period_us")
    try:
        q = p.parse_int(quota) if quota else 0
        return q / p.parse_int(period) if q > 0 and period else None
    except (ValueError, ZeroDivisionError):
        return None


def usable_cpus(root: str = "/") -> float:
    """The CPUs this process may use: its affinity, capped by its cgroup's CPU quota."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = own_cpu_limit(root)
    return cpus if quota is None else min(cpus, quota)

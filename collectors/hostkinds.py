"""Which optional metric kinds the host under ``--host-root`` can feed, decided from its files at config time.

``unfed_kinds(host_root, kinds)`` answers, for each kind it knows that the host cannot feed, one line saying why;
``check-config`` and ``run`` refuse such a kind when it was asked for by name (``agent.config.load_config``).
The checks look at what the readers need and nothing more: the cgroup controller mounted (hugetlb, cpuset), the
kernel files present (``memory.numa_stat``, ``/proc/<pid>/schedstat``, ``net/tcp``...), ``smaps`` readable
(permissions), sysfs topology, a mounted resctrl filesystem with monitoring. Kinds not listed here always pass.
"""

from __future__ import annotations

import os
from pathlib import Path

from collectors.cgroups.mounts import CgroupLayout, NoCgroupsError, discover_layout

# Files of init (pid 1) in the host's /proc that the per-container /proc readers need, by kind.
_PROC_FILES = {
    "tcp": ("net/tcp",),
    "udp": ("net/udp",),
    "advtcp": ("net/netstat", "net/snmp"),
}


def _layout(host_root: Path) -> CgroupLayout | str:
    try:
        return discover_layout(host_root)
    except NoCgroupsError as exc:
        return f"no cgroup hierarchy under --host-root {host_root}: {exc}"


def _controllers(layout: CgroupLayout) -> set[str]:
    """The v2 hierarchy's available controllers (its root's ``cgroup.controllers``)."""
    try:
        return set(Path(layout.unified, "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _hugetlb(host_root: Path, layout: CgroupLayout) -> str | None:
    if layout.version == 1 and "hugetlb" not in layout.v1:
        return ("no cgroup v1 hugetlb hierarchy is mounted (no cgroup mount with the hugetlb option in "
                f"{host_root / 'proc/1/mountinfo'})")
    if layout.version == 2 and "hugetlb" not in _controllers(layout):
        return f"the cgroup v2 hierarchy has no hugetlb controller ({layout.unified}/cgroup.controllers)"
    sizes = host_root / "sys/kernel/mm/hugepages"
    try:
        if not any(name.startswith("hugepages-") for name in os.listdir(sizes)):
            return f"the kernel has no huge page sizes ({sizes} is empty)"
    except OSError:
        return f"the kernel has no huge page sizes ({sizes} is missing)"
    return None


def _memory_numa(host_root: Path, layout: CgroupLayout) -> str | None:
    if layout.version == 1:
        memory = layout.v1.get("memory")
        if not memory:
            return "no cgroup v1 memory hierarchy is mounted"
        if not os.path.exists(f"{memory}/memory.numa_stat"):
            return f"the kernel keeps no per-cgroup NUMA statistics ({memory}/memory.numa_stat is missing)"
        return None
    if "memory" not in _controllers(layout):
        return f"the cgroup v2 hierarchy has no memory controller ({layout.unified}/cgroup.controllers)"
    node0 = host_root / "sys/devices/system/node/node0"
    if not node0.is_dir():
        return f"the kernel has no NUMA support ({node0} is missing), so cgroups have no memory.numa_stat"
    return None


def _cpuset(layout: CgroupLayout) -> str | None:
    if layout.version == 2:
        return ("its one family, container_memory_migrate, is cgroup v1's cpuset.memory_migrate, which cgroup v2 "
                "does not have")
    if "cpuset" not in layout.v1:
        return "no cgroup v1 cpuset hierarchy is mounted"
    return None


def _maps_readable(proc: Path, pid: str) -> bool | None:
    """Whether another process's ``smaps_rollup`` (or ``smaps``) can be read: True, False (permission denied) or None
    (not a user process: gone, a kernel thread, whose maps read empty whatever the permissions, or no maps file)."""
    try:
        if not (proc / pid / "cmdline").read_bytes():
            return None
    except FileNotFoundError:
        pass  # a gone process fails below; a tree that lays out only some /proc files has none
    except OSError:
        return None
    try:
        name = "smaps_rollup" if (proc / pid / "smaps_rollup").exists() else "smaps"
        with open(proc / pid / name, "rb") as fh:
            fh.read(1)
    except PermissionError:
        return False
    except OSError:
        return None
    return True


def _referenced(host_root: Path) -> str | None:
    """Some process other than Lookout's own has maps that can be read: pid 1 first, then up to 64 others (pid 1 can
    be off limits where others are not: a VM's init, a container's pid 1 with more capabilities). Processes of the
    user Lookout runs as (unless root) are skipped: those are readable anyway."""
    proc = host_root / "proc"
    uid, own = os.getuid(), str(os.getpid())
    try:
        others = sorted((e for e in os.listdir(proc) if e.isdigit() and e not in ("1", own)), key=int)
    except OSError:
        return f"{proc} cannot be listed"
    denied = 0
    for pid in ["1", *others]:
        if uid != 0 and pid != "1":
            try:
                if (proc / pid).stat().st_uid == uid:
                    continue
            except OSError:
                continue
        readable = _maps_readable(proc, pid)
        if readable:
            return None
        if readable is False:
            denied += 1
            if denied >= 64:
                break
    if not denied:
        return f"the kernel has no /proc/<pid>/smaps (no process under {proc} has smaps_rollup or smaps)"
    return (f"{proc}/<pid>/smaps_rollup of other processes cannot be read (permission denied: reading another "
            "process's memory maps needs root with CAP_SYS_PTRACE)")


def _resctrl(host_root: Path) -> str | None:
    base = host_root / "sys/fs/resctrl"
    if not (base / "info").is_dir():
        return (f"no resctrl filesystem is mounted at {base} (it needs Intel RDT or AMD PQoS and "
                "mount -t resctrl resctrl /sys/fs/resctrl)")
    if not (base / "mon_data").is_dir():
        return f"resctrl at {base} has no monitoring (no mon_data: the CPU has no CMT/MBM)"
    return None


def unfed_kinds(host_root: Path, kinds: frozenset[str]) -> dict[str, str]:
    """For each of ``kinds`` that this host cannot feed, why (one line). Kinds without a check are not listed."""
    out: dict[str, str] = {}
    proc1 = host_root / "proc/1"
    for kind, files in _PROC_FILES.items():
        if kind in kinds:
            missing = [str(proc1 / f) for f in files if not (proc1 / f).exists()]
            if missing:
                out[kind] = f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    if "sched" in kinds and not (proc1 / "schedstat").exists():
        out["sched"] = (f"the kernel keeps no per-task scheduler statistics ({proc1 / 'schedstat'} is missing: "
                        "CONFIG_SCHED_INFO is off)")
    if "referenced_memory" in kinds:
        why = _referenced(host_root)
        if why:
            out["referenced_memory"] = why
    if "cpu_topology" in kinds:
        core = host_root / "sys/devices/system/cpu/cpu0/topology/core_id"
        if not core.exists():
            out["cpu_topology"] = f"sysfs has no CPU topology ({core} is missing)"
    if "resctrl" in kinds:
        why = _resctrl(host_root)
        if why:
            out["resctrl"] = why
    cgroup_kinds = kinds & {"hugetlb", "memory_numa", "cpuset"}
    if cgroup_kinds:
        layout = _layout(host_root)
        for kind in sorted(cgroup_kinds):
            if isinstance(layout, str):
                problem: str | None = layout
            elif kind == "hugetlb":
                problem = _hugetlb(host_root, layout)
            elif kind == "memory_numa":
                problem = _memory_numa(host_root, layout)
            else:
                problem = _cpuset(layout)
            if problem:
                out[kind] = problem
    return out

"""The machine's CPU and memory layout from sysfs under ``--host-root``, as cAdvisor reads it.

- ``read_topology``: NUMA nodes (``/sys/devices/system/node/node<N>``) with their cores (logical CPUs grouped by
  ``core_id`` and ``physical_package_id``), caches (``cpu<N>/cache/index*``), memory, huge pages and distances;
  without NUMA nodes in sysfs, one node per physical package (``cpu_topology`` kind).
- ``read_dimms``: DIMMs by type from the EDAC memory controllers (``/sys/devices/system/edac/mc``).
- ``count_ids``: how many distinct values a per-CPU topology file has (sockets, cores, books, drawers).

Caches follow cAdvisor (``utils/sysinfo``): a level 1-2 cache is the core's when shared by exactly that core's
threads; a level 3+ cache is the node's when shared by every thread of the node, else the core's ("uncore").
"""

from __future__ import annotations

import os
import re

from agent.model import CpuCache, CpuCore, NumaNode
from collectors.cgroups.reader import read_file

_NODE = re.compile(r"node(\d+)$")
_CPU = re.compile(r"cpu(\d+)$")
_MEMTOTAL = re.compile(rb"MemTotal:\s*(\d+) kB")
_MC = re.compile(r"mc[0-9]+")
_DIMM = re.compile(r"dimm[0-9]+")


def _text(path: str) -> str | None:
    data = read_file(path)
    return None if data is None else data.decode(errors="replace").strip()


def _int(path: str) -> int | None:
    text = _text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


MAX_CPUS = 1 << 16  # the kernel's NR_CPUS is at most 8192; a list beyond this is damaged, not big


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list (``0-3,8,10-11``) as a set of CPU numbers; ``ValueError`` for a damaged one (a range past
    ``MAX_CPUS`` too, rather than a set of billions)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high >= MAX_CPUS or low < 0:
            raise ValueError(f"CPU list out of range: {part[:40]!r}")
        out.update(range(low, high + 1))
    return out


def _entries(path: str, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    """(number, name) of the directory entries named like ``pattern``, in numeric order."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := pattern.match(name))]
    return sorted(found)


def _cache(path: str) -> tuple[int, int, str, int, int] | None:
    """(id, level, type, size in bytes, CPUs sharing it) of one ``cache/index<N>`` directory."""
    size, level, kind, shared = (_text(f"{path}/{n}") for n in ("size", "level", "type", "shared_cpu_map"))
    if not size or not level or not kind or shared is None or not size.endswith("K"):
        return None
    try:
        cpus = sum(bin(int(word, 16)).count("1") for word in shared.split(","))
        return _int(f"{path}/id") or 0, int(level), kind, int(size[:-1]) * 1024, cpus
    except ValueError:
        return None


def _cores(cpu_root: str, cpus: list[int], online: set[int] | None) -> list[CpuCore]:
    cores: dict[tuple[int, int], CpuCore] = {}
    for cpu in cpus:
        if online is not None and cpu not in online:
            continue
        topo = f"{cpu_root}/cpu{cpu}/topology"
        core_id, package = _int(f"{topo}/core_id"), _int(f"{topo}/physical_package_id")
        if core_id is None or package is None:
            continue
        core = cores.get((core_id, package))
        if core is None:
            core = cores[(core_id, package)] = CpuCore(core_id, [])
        core.threads.append(cpu)
    return list(cores.values())


def _add_caches(cpu_root: str, node: NumaNode) -> None:
    node_keys: list[tuple[int, int, str, int]] = []
    for core in node.cores:
        per_core = len(core.threads)
        per_node = len(node.cores) * per_core
        keys: list[tuple[int, int, str, int]] = []
        base = f"{cpu_root}/cpu{core.threads[0]}/cache"
        for _, name in _entries(base, re.compile(r"index(\d+)$")):
            found = _cache(f"{base}/{name}")
            if found is None:
                continue
            cache_id, level, kind, size, cpus = found
            key = (cache_id, level, kind, size)
            if level > 2:
                if cpus == per_node:
                    if key not in node_keys:
                        node_keys.append(key)
                        node.caches.append(CpuCache(level, kind, size))
                elif key not in keys:
                    keys.append(key)
                    core.caches.append(CpuCache(level, kind, size))
            elif cpus == per_core:
                core.caches.append(CpuCache(level, kind, size))


def read_topology(host_root: str) -> list[NumaNode] | None:
    """The NUMA nodes with their cores and caches, or None when sysfs has no CPU topology."""
    cpu_root = f"{host_root}/sys/devices/system/cpu"
    node_root = f"{host_root}/sys/devices/system/node"
    online_text = _text(f"{cpu_root}/online")
    online = parse_cpu_list(online_text) if online_text else None  # no file: CPU hotplug off, all online
    nodes: list[NumaNode] = []
    node_dirs = _entries(node_root, _NODE)
    if node_dirs:
        for node_id, name in node_dirs:
            d = f"{node_root}/{name}"
            node = NumaNode(node_id)
            node.cores = _cores(cpu_root, [n for n, _ in _entries(d, _CPU)], online)
            if node.cores:
                _add_caches(cpu_root, node)
            meminfo = read_file(f"{d}/meminfo")
            if meminfo and (m := _MEMTOTAL.search(meminfo)):
                node.memory = int(m.group(1)) * 1024
            hp = f"{d}/hugepages"
            for size_kb, hp_name in _entries(hp, re.compile(r"hugepages-(\d+)kB$")):
                pages = _int(f"{hp}/{hp_name}/nr_hugepages")
                if pages is not None:
                    node.hugepages[size_kb] = pages
            distance = _text(f"{d}/distance")
            node.distances = [int(x) for x in distance.split()] if distance else []
            nodes.append(node)
        return nodes
    # No NUMA nodes in sysfs: one node per physical package, as cAdvisor's getCPUTopology.
    cpus = _entries(cpu_root, _CPU)
    by_package: dict[int, list[int]] = {}
    for cpu, _ in cpus:
        package = _int(f"{cpu_root}/cpu{cpu}/topology/physical_package_id")
        if package is not None:
            by_package.setdefault(package, []).append(cpu)
    if not by_package:
        return None
    for package, members in sorted(by_package.items()):
        node = NumaNode(package, _cores(cpu_root, members, online))
        if node.cores:
            _add_caches(cpu_root, node)
        nodes.append(node)
    return nodes


def count_ids(host_root: str, name: str) -> int:
    """Distinct values of ``cpu<N>/topology/<name>`` over the CPUs (0 when no CPU has the file)."""
    cpu_root = f"{host_root}/sys/devices/system/cpu"
    values = {_text(f"{cpu_root}/cpu{cpu}/topology/{name}") for cpu, _ in _entries(cpu_root, _CPU)}
    values.discard(None)
    return len(values)


def read_dimms(host_root: str) -> dict[str, tuple[int, int]] | None:
    """DIMMs by type (``dimm_mem_type``): (count, capacity in bytes from ``size`` in MiB); None without EDAC."""
    base = f"{host_root}/sys/devices/system/edac/mc"
    try:
        controllers = sorted(os.listdir(base))
    except OSError:
        return None
    out: dict[str, tuple[int, int]] = {}
    for mc in controllers:
        if not _MC.search(mc):
            continue
        try:
            dimms = sorted(os.listdir(f"{base}/{mc}"))
        except OSError:
            continue
        for dimm in dimms:
            if not _DIMM.search(dimm):
                continue
            kind = _text(f"{base}/{mc}/{dimm}/dimm_mem_type")
            size = _int(f"{base}/{mc}/{dimm}/size")
            if kind is None or size is None:
                continue
            count, capacity = out.get(kind, (0, 0))
            out[kind] = (count + 1, capacity + size * 1024 * 1024)
    return out

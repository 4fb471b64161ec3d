"""Machine families beyond cAdvisor's always-on five, as a declarative table like the container one (``table``).

``render.Renderer._machine`` writes cAdvisor's five machine series itself; each family here is served only where the
host feeds it: books and drawers on s390x, DIMMs where EDAC reports them, the topology with the cpu_topology kind.
A getter returns ``(extra labels after the machine labels, value)`` pairs, nothing when there is no family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.model import MachineInfo
from exporters.prometheus.table import Samples, label_escape


@dataclass(frozen=True, slots=True)
class MachineFamily:
    name: str
    help: str
    get: Callable[[MachineInfo], Samples]  # (extra labels after the machine labels, value); nothing: no family


def _books(m: MachineInfo) -> Samples:
    return (("", m.cpu_books),) if m.cpu_books else ()


def _drawers(m: MachineInfo) -> Samples:
    return (("", m.cpu_drawers),) if m.cpu_drawers else ()


def _dimm(index: int) -> Callable[[MachineInfo], Samples]:
    def get(m: MachineInfo) -> Samples:
        return [(f',type="{label_escape(kind)}"', v[index]) for kind, v in sorted((m.dimms or {}).items())]
    return get


def _cache_capacity(m: MachineInfo) -> Samples:
    out: list[tuple[str, int | float]] = []
    for node in m.topology or ():
        for core in node.cores:
            out.extend((f',node_id="{node.id}",core_id="{core.id}",type="{label_escape(c.type)}",'
                        f'level="{c.level}"', c.size) for c in core.caches)
        out.extend((f',node_id="{node.id}",core_id="",type="{label_escape(c.type)}",level="{c.level}"', c.size)
                   for c in node.caches)
    return out


def _thread_siblings(m: MachineInfo) -> Samples:
    return [(f',node_id="{node.id}",core_id="{core.id}",thread_id="{thread}"', len(core.threads))
            for node in m.topology or () for core in node.cores for thread in core.threads]


def _node_memory(m: MachineInfo) -> Samples:
    return [(f',node_id="{node.id}"', node.memory) for node in m.topology or () if node.memory is not None]


def _node_hugepages(m: MachineInfo) -> Samples:
    return [(f',node_id="{node.id}",page_size="{size}"', pages)
            for node in m.topology or () for size, pages in node.hugepages.items()]


def _node_distance(m: MachineInfo) -> Samples:
    return [(f',node_id="{node.id}",target_node_id="{i}"', d)
            for node in m.topology or () for i, d in enumerate(node.distances)]


MACHINE_FAMILIES: tuple[MachineFamily, ...] = (
    MachineFamily("machine_cpu_books", "Number of CPU books.", _books),
    MachineFamily("machine_cpu_drawers", "Number of CPU drawers.", _drawers),
    MachineFamily("machine_dimm_count", "Number of RAM DIMM (all types memory modules) value labeled by dimm type.",
                  _dimm(0)),
    MachineFamily("machine_dimm_capacity_bytes", "Total RAM DIMM capacity (all types memory modules) value labeled "
                  "by dimm type.", _dimm(1)),
    # cpu_topology (read only when the kind is on)
    MachineFamily("machine_cpu_cache_capacity_bytes", "Cache size in bytes assigned to NUMA node and CPU core.",
                  _cache_capacity),
    MachineFamily("machine_thread_siblings_count", "Number of CPU thread siblings.", _thread_siblings),
    MachineFamily("machine_node_memory_capacity_bytes", "Amount of memory assigned to NUMA node.", _node_memory),
    MachineFamily("machine_node_hugepages_count", "Numer of hugepages assigned to NUMA node.", _node_hugepages),
    MachineFamily("machine_node_distance", "Distance between NUMA node and target NUMA node.", _node_distance),
)

"""The pure part of ``lookout top``: rows from the agent's JSON (docs/API.md), rates, sorting, formatting and the
plain tables of ``--once``. No terminal, no HTTP (agent.top)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.client import display_name

# A cgroup limit at or above this is "no limit" (cgroup v1 writes 2^63 rounded down to the page size).
_NO_LIMIT = 1 << 62


# --- the data -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One container, as the table shows it. A rate is None where it is unknown."""

    key: str  # the cgroup path: unique per container
    name: str
    namespace: str
    container_id: str
    runtime: str
    image: str
    cpu_cores: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    rx_bytes_per_second: float | None = None
    tx_bytes_per_second: float | None = None
    log_lines_per_second: float | None = None

    @property
    def net_bytes_per_second(self) -> float | None:
        if self.rx_bytes_per_second is None and self.tx_bytes_per_second is None:
            return None
        return (self.rx_bytes_per_second or 0.0) + (self.tx_bytes_per_second or 0.0)

    @property
    def memory_fraction(self) -> float | None:
        if self.memory_bytes is None or not self.memory_limit_bytes:
            return None
        return self.memory_bytes / self.memory_limit_bytes


@dataclass(frozen=True)
class Host:
    """The host line: the root cgroup's usage against the machine."""

    cpu_cores: float | None = None
    cpus: int | None = None
    memory_bytes: int | None = None
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class Route:
    id: str
    uri: str
    state: str
    error: str | None
    lag_bytes: int | None
    lag_seconds: float | None
    records_per_second: float | None
    retries_total: int | None
    dead_lettered_total: int | None
    dropped_total: int | None


@dataclass(frozen=True)
class Snapshot:
    """One answer of /api/v1/containers, made into rows (rates from the agent or from the previous snapshot)."""

    timestamp: float | None
    rows: tuple[Row, ...]
    host: Host
    rates_from_agent: bool


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def _limit(value: Any) -> int | None:
    limit = _int(value)
    return limit if limit is not None and 0 < limit < _NO_LIMIT else None


def needs_two_samples(doc: Mapping[str, Any]) -> bool:
    """True when the agent gives no container a CPU rate: it serves no ``rates`` (older than docs/API.md's), or
    has collected only once. CPU and network are then computed here from two snapshots of the counters."""
    return not any(_num((entry.get("rates") or {}).get("cpu_cores")) is not None
                   for entry in doc.get("containers") or ())


def _stats_time(entry: Mapping[str, Any]) -> float | None:
    return _num((entry.get("stats") or {}).get("timestamp"))


def _cpu_ns(entry: Mapping[str, Any]) -> float | None:
    return _num(((entry.get("stats") or {}).get("cpu") or {}).get("usage_ns"))


def _net_bytes(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    if not (entry.get("info") or {}).get("owns_network", True):
        return None  # shares the host's or another container's network: its counters are not its own
    interfaces = (entry.get("stats") or {}).get("network")
    if not interfaces:
        return None
    return (sum(_num(i.get("rx_bytes")) or 0.0 for i in interfaces),
            sum(_num(i.get("tx_bytes")) or 0.0 for i in interfaces))


def _per_second(now: float | None, before: float | None, seconds: float | None) -> float | None:
    if now is None or before is None or not seconds or seconds <= 0 or now < before:
        return None  # unknown, or a counter that went back (a restarted container)
    return (now - before) / seconds


def _computed_rates(entry: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, float | None]:
    """CPU cores and network bytes/s between two snapshots of the cumulative counters (no log rates)."""
    if previous is None:
        return {}
    now_t, before_t = _stats_time(entry), _stats_time(previous)
    seconds = now_t - before_t if now_t is not None and before_t is not None else None
    cpu = _per_second(_cpu_ns(entry), _cpu_ns(previous), seconds)
    rates: dict[str, float | None] = {"cpu_cores": cpu / 1e9 if cpu is not None else None}
    net_now, net_before = _net_bytes(entry), _net_bytes(previous)
    if net_now is not None and net_before is not None:
        rates["network_rx_bytes_per_second"] = _per_second(net_now[0], net_before[0], seconds)
        rates["network_tx_bytes_per_second"] = _per_second(net_now[1], net_before[1], seconds)
    return rates


def _memory(entry: Mapping[str, Any], rates: Mapping[str, Any]) -> tuple[int | None, int | None]:
    if _int(rates.get("memory_bytes")) is not None:
        return _int(rates.get("memory_bytes")), _limit(rates.get("memory_limit_bytes"))
    stats = entry.get("stats") or {}
    usage = _int((stats.get("memory") or {}).get("working_set"))
    spec = stats.get("spec") or {}
    return usage, _limit(spec.get("memory_limit")) if spec.get("has_memory") else None


def snapshot(doc: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> Snapshot:
    """Rows for every container of one /api/v1/containers answer but the root cgroup (that is the host line).

    A container's rates are the agent's where it serves them (not null); otherwise CPU and network are computed
    against the same container (by cgroup) in ``previous``, an earlier answer, when one is given.
    """
    before = {(e.get("info") or {}).get("cgroup"): e for e in (previous or {}).get("containers") or ()}
    rows: list[Row] = []
    host = Host()
    for entry in doc.get("containers") or ():
        info = entry.get("info") or {}
        cgroup = str(info.get("cgroup") or "")
        served = {k: v for k, v in (entry.get("rates") or {}).items() if v is not None}
        rates = _computed_rates(entry, before.get(cgroup)) | served  # the agent's where it knows them
        memory, limit = _memory(entry, served)
        if cgroup == "/":
            machine = doc.get("machine") or {}
            host = Host(_num(rates.get("cpu_cores")), _int(machine.get("cpu_cores")), memory,
                        _int(machine.get("memory_bytes")))
            continue
        rows.append(Row(
            key=cgroup, name=display_name(info), namespace=str(info.get("namespace") or ""),
            container_id=str(info.get("container_id") or ""), runtime=str(info.get("runtime") or ""),
            image=str(info.get("image") or ""), cpu_cores=_num(rates.get("cpu_cores")),
            memory_bytes=memory, memory_limit_bytes=limit,
            rx_bytes_per_second=_num(rates.get("network_rx_bytes_per_second")),
            tx_bytes_per_second=_num(rates.get("network_tx_bytes_per_second")),
            log_lines_per_second=_num(rates.get("log_lines_per_second")),
        ))
    return Snapshot(_num(doc.get("timestamp")), tuple(rows), host, not needs_two_samples(doc))


def routes(doc: Mapping[str, Any]) -> tuple[Route, ...]:
    """The routes of one ``GET /routes`` answer."""
    return tuple(
        Route(id=str(r.get("id") or ""), uri=str(r.get("uri") or ""), state=str(r.get("state") or "?"),
              error=str(r["error"]) if r.get("error") else None, lag_bytes=_int(r.get("lag_bytes")),
              lag_seconds=_num(r.get("lag_seconds")), records_per_second=_num(r.get("records_per_second")),
              retries_total=_int(r.get("retries_total")), dead_lettered_total=_int(r.get("dead_lettered_total")),
              dropped_total=_int(r.get("dropped_total")))
        for r in doc.get("routes") or ()
    )


# --- sorting ----------------------------------------------------------------------------------------------------


class SortKey(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    NET = "net"
    LOGS = "logs"
    NAME = "name"


# Key pressed -> sort; shown in the footer in this order.
KEYS: dict[str, SortKey] = {"c": SortKey.CPU, "m": SortKey.MEMORY, "n": SortKey.NET, "l": SortKey.LOGS,
                            "a": SortKey.NAME}
_SORT_VALUE: dict[SortKey, Callable[[Row], float | None]] = {
    SortKey.CPU: lambda r: r.cpu_cores,
    SortKey.MEMORY: lambda r: None if r.memory_bytes is None else float(r.memory_bytes),
    SortKey.NET: lambda r: r.net_bytes_per_second,
    SortKey.LOGS: lambda r: r.log_lines_per_second,
}


def sort_rows(rows: Iterable[Row], key: SortKey, reverse: bool = False) -> list[Row]:
    """Biggest first (names A to Z); ``reverse`` flips that. Unknown values go last either way; ties by name."""
    by_name = sorted(rows, key=lambda r: (r.name, r.key))
    if key is SortKey.NAME:
        return by_name[::-1] if reverse else by_name
    value = _SORT_VALUE[key]
    known = [r for r in by_name if value(r) is not None]
    unknown = [r for r in by_name if value(r) is None]
    known.sort(key=lambda r: value(r) or 0.0, reverse=not reverse)  # stable: ties keep the name order
    return known + unknown


# --- formatting -------------------------------------------------------------------------------------------------

NONE = "-"


def fmt_cpu(cores: float | None) -> str:
    """CPU as ``docker stats`` shows it: percent of one core (``250.0%`` is two and a half cores)."""
    return NONE if cores is None else f"{cores * 100:.1f}%"


def fmt_bytes(value: float | None) -> str:
    """Binary units, as ``docker stats``: ``512B``, ``1.5KiB``, ``48.2MiB``, ``2GiB``."""
    if value is None:
        return NONE
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{value:.0f}B"
            return f"{value:.1f}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_rate(bytes_per_second: float | None) -> str:
    return NONE if bytes_per_second is None else fmt_bytes(bytes_per_second) + "/s"


def fmt_count_rate(per_second: float | None) -> str:
    if per_second is None:
        return NONE
    if per_second >= 10_000:
        return f"{per_second / 1000:.0f}k"
    return f"{per_second:.1f}" if per_second < 100 else f"{per_second:.0f}"


def fmt_percent(fraction: float | None) -> str:
    return NONE if fraction is None else f"{fraction * 100:.1f}%"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds / 3600:.0f}h{seconds % 3600 / 60:02.0f}m"


def fmt_count(value: int | None) -> str:
    return NONE if value is None else str(value)


# --- the tables -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    title: str
    cell: Callable[[Row], str]
    sort: SortKey | None = None
    numeric: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("NAME", lambda r: r.name, SortKey.NAME, numeric=False),
    Column("NAMESPACE", lambda r: r.namespace, numeric=False),
    Column("ID", lambda r: r.container_id[:12], numeric=False),
    Column("CPU %", lambda r: fmt_cpu(r.cpu_cores), SortKey.CPU),
    Column("MEM", lambda r: fmt_bytes(r.memory_bytes), SortKey.MEMORY),
    Column("LIMIT", lambda r: fmt_bytes(r.memory_limit_bytes)),
    Column("MEM %", lambda r: fmt_percent(r.memory_fraction)),
    Column("NET RX/s", lambda r: fmt_rate(r.rx_bytes_per_second), SortKey.NET),
    Column("NET TX/s", lambda r: fmt_rate(r.tx_bytes_per_second), SortKey.NET),
    Column("LOGS/s", lambda r: fmt_count_rate(r.log_lines_per_second), SortKey.LOGS),
    Column("IMAGE", lambda r: r.image, numeric=False),
)

ROUTE_COLUMNS: tuple[tuple[str, Callable[[Route], str], bool], ...] = (
    ("ROUTE", lambda r: r.id, False),
    ("STATE", lambda r: r.state, False),
    ("LAG", lambda r: fmt_bytes(r.lag_bytes), True),
    ("LAG s", lambda r: fmt_seconds(r.lag_seconds), True),
    ("REC/s", lambda r: fmt_count_rate(r.records_per_second), True),
    ("RETRIES", lambda r: fmt_count(r.retries_total), True),
    ("DEAD", lambda r: fmt_count(r.dead_lettered_total), True),
    ("DROPPED", lambda r: fmt_count(r.dropped_total), True),
    ("URI / ERROR", lambda r: r.uri + (f"  {r.error}" if r.error else ""), False),
)


def columns_for(rows: Sequence[Row]) -> tuple[Column, ...]:
    """Every column, less NAMESPACE when no container has one (a host without Kubernetes)."""
    if any(r.namespace for r in rows):
        return COLUMNS
    return tuple(c for c in COLUMNS if c.title != "NAMESPACE")


def container_cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    columns = columns_for(rows)
    return [c.title for c in columns], [[c.cell(r) for c in columns] for r in rows]


def route_cells(items: Sequence[Route]) -> tuple[list[str], list[list[str]]]:
    return [c[0] for c in ROUTE_COLUMNS], [[c[1](r) for c in ROUTE_COLUMNS] for r in items]


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Columns padded with spaces, two apart, the last one unpadded: ``docker stats --no-stream`` style."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    last = len(headers) - 1

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if i == last:
                out.append(cell)
            else:
                out.append(cell.rjust(widths[i]) if right[i] else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def host_line(host: Host) -> str:
    cpu = fmt_cpu(host.cpu_cores)
    if host.cpus:
        cpu += f" of {host.cpus} CPUs"
    memory = fmt_bytes(host.memory_bytes)
    if host.memory_total_bytes:
        memory += f" of {fmt_bytes(host.memory_total_bytes)}"
    return f"host: cpu {cpu}, memory {memory}"


ROUTES_NOT_AVAILABLE = "routes: not available"


def plain_report(snap: Snapshot, route_list: tuple[Route, ...] | None, key: SortKey = SortKey.CPU,
                 reverse: bool = False, routes_error: str | None = None) -> str:
    """``--once``: the host line, the containers table and the routes table (or why there is none), as text."""
    rows = sort_rows(snap.rows, key, reverse)
    headers, cells = container_cells(rows)
    right = [c.numeric for c in columns_for(rows)]
    parts = [host_line(snap.host), "", plain_table(headers, cells, right), ""]
    if routes_error:
        parts.append(f"routes: {routes_error}")
    elif route_list is None:
        parts.append(ROUTES_NOT_AVAILABLE)
    elif not route_list:
        parts.append("routes: none")
    else:
        headers, cells = route_cells(route_list)
        parts.append(plain_table(headers, cells, [c[2] for c in ROUTE_COLUMNS]))
    return "\n".join(parts) + "\n"

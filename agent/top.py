"""``lookout top``: a live view of a running agent, as ``docker stats`` or ``vector top``.

It polls ``GET /api/v1/containers`` and ``GET /routes`` (docs/API.md) every ``--interval`` and shows the
containers by CPU, memory, network and log lines per second, and the routes with their lag and errors. Keys
(read without echo) sort and quit; ``--once`` prints one plain table for scripts (also what happens when standard
output is not a terminal).

Rates come from the agent's ``rates`` where it serves them; where it does not (an agent older than docs/API.md, or
null: its first collection) CPU and network rates are computed here from two successive snapshots of the cumulative
counters (log rates then stay unknown).

The pure parts (rows from the JSON, sorting, formatting, the tables) are separate from the terminal loop, which is
three threads: the poller (blocking HTTP), the key reader (stdin in cbreak mode) and the main thread that redraws
on whatever either of them queued.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import select
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from http.client import HTTPException
from typing import Any, TextIO

import orjson

from agent import __version__
from agent.client import ClientError, display_name, refusal, ssl_context

# A cgroup limit at or above this is "no limit" (cgroup v1 writes 2^63 rounded down to the page size).
_NO_LIMIT = 1 << 62
# --once against an agent without ``rates``: how long to wait for a second, newer snapshot (the agent's default
# housekeeping interval is 10 s, so its snapshot may not change between two polls --interval apart).
_SECOND_SNAPSHOT_WAIT = 15.0
_TIMEOUT = 10.0  # per request


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


# --- HTTP -------------------------------------------------------------------------------------------------------


class NotAvailable(ClientError):
    """404: this agent has no such endpoint (older than docs/API.md)."""


@dataclass
class Api:
    """Blocking GETs of the agent's JSON endpoints (urllib; called from the poller thread or for --once)."""

    url: str
    insecure: bool = False
    cacert: str | None = None
    timeout: float = _TIMEOUT
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        context = ssl_context(self.url, self.insecure, self.cacert)
        # No proxies from the environment: the agent is on this host or this network (aiohttp's default too).
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str) -> Any:
        url = self.url + path
        request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                       "User-Agent": f"lookout-top/{__version__}"})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                text = refusal(exc.code, exc.reason, url, exc.read())
            raise (NotAvailable if exc.code == 404 else ClientError)(text) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach the agent at {self.url}: {exc.reason}") from None
        except (OSError, HTTPException) as exc:  # timeouts, resets, a peer that is not speaking HTTP
            raise ClientError(f"cannot reach the agent at {self.url}: {exc or type(exc).__name__}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ClientError(f"GET {url}: the answer is not JSON (is {self.url} a Lookout agent?)") from None

    def containers(self) -> dict[str, Any]:
        doc = self.get("/api/v1/containers")
        if not isinstance(doc, dict) or not isinstance(doc.get("containers"), list):
            raise ClientError(f"GET {self.url}/api/v1/containers: no container list (is it a Lookout agent?)")
        return doc

    def routes(self) -> tuple[Route, ...] | None:
        """The routes, or None when the agent has no /routes."""
        try:
            doc = self.get("/routes")
        except NotAvailable:
            return None
        if not isinstance(doc, dict):
            raise ClientError(f"GET {self.url}/routes: not a route list")
        return routes(doc)


@dataclass(frozen=True)
class Poll:
    """One round of requests: the containers answer and the routes, or what went wrong."""

    doc: dict[str, Any] | None
    routes: tuple[Route, ...] | None
    error: str | None = None
    routes_error: str | None = None
    at: float = field(default_factory=time.time)


def poll(api: Api) -> Poll:
    try:
        doc = api.containers()
    except ClientError as exc:
        return Poll(None, None, error=str(exc))
    try:
        return Poll(doc, api.routes())
    except ClientError as exc:
        return Poll(doc, None, routes_error=str(exc))


# --- --once -----------------------------------------------------------------------------------------------------


def once(api: Api, interval: float, out: TextIO, key: SortKey = SortKey.CPU, reverse: bool = False,
         sleep: Callable[[float], None] = time.sleep) -> int:
    first = poll(api)
    if first.error is not None or first.doc is None:
        raise ClientError(first.error or "no answer")
    result, previous = first, None
    if needs_two_samples(first.doc):
        # An agent without ``rates``: CPU and network need a second, newer snapshot of the counters.
        deadline = time.monotonic() + interval + _SECOND_SNAPSHOT_WAIT
        wait = interval
        while True:
            sleep(wait)
            second = poll(api)
            if second.error is not None or second.doc is None:
                raise ClientError(second.error or "no answer")
            if second.doc.get("timestamp") != first.doc.get("timestamp") or time.monotonic() >= deadline:
                result, previous = second, first.doc
                break
            wait = min(interval, 0.5)
    assert result.doc is not None
    out.write(plain_report(snapshot(result.doc, previous), result.routes, key, reverse, result.routes_error))
    out.flush()
    return 0


# --- the live view ----------------------------------------------------------------------------------------------


@dataclass
class View:
    """What the live screen shows; changed only by the main thread."""

    url: str
    key: SortKey = SortKey.CPU
    reverse: bool = False
    snap: Snapshot | None = None
    doc: dict[str, Any] | None = None  # the answer ``snap`` was made from
    routes: tuple[Route, ...] | None = None
    routes_error: str | None = None
    error: str | None = None
    updated: float | None = None

    def take(self, result: Poll) -> None:
        """A poll's result. Without the agent's rates, a snapshot replaces the shown one only once it is newer."""
        self.error = result.error
        if result.doc is None:
            return
        self.routes, self.routes_error = result.routes, result.routes_error
        self.updated = result.at
        if self.doc is not None and result.doc.get("timestamp") == self.doc.get("timestamp") \
                and needs_two_samples(result.doc):
            return  # the same snapshot again: computed rates would be 0/0
        self.snap = snapshot(result.doc, self.doc)
        self.doc = result.doc

    def press(self, char: str) -> bool:
        """A key; False to quit."""
        if char in ("q", "Q", "\x04"):  # q or Ctrl-D
            return False
        if char in KEYS:
            new = KEYS[char]
            if new is self.key:
                self.reverse = not self.reverse
            else:
                self.key, self.reverse = new, False
        elif char == "r":
            self.reverse = not self.reverse
        return True


FOOTER = "  ".join([*(f"{k} {v.value}" for k, v in KEYS.items()), "r reverse", "q quit"])


def render(view: View, height: int, unicode: bool = True) -> Any:
    """The screen, as rich renderables: header, containers (as many as fit), routes, footer."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    down, up = ("▼", "▲") if unicode else ("v", "^")
    header = Text()
    header.append("lookout top", style="bold")
    header.append(f"  {view.url}")
    if view.updated is not None:
        header.append(f"  {datetime.fromtimestamp(view.updated).strftime('%H:%M:%S')}", style="dim")
    if view.error:
        header.append(f"\n{view.error}", style="bold red")
    elif view.snap is not None:
        header.append("\n" + host_line(view.snap.host))
        if not view.snap.rates_from_agent:
            header.append("  (rates computed here: this agent serves no rates, so no log rates)", style="dim")

    route_table: Any
    route_lines = 1
    if view.routes_error:
        route_table = Text(f"routes: {view.routes_error}", style="red")
    elif view.routes is None:
        route_table = Text(ROUTES_NOT_AVAILABLE, style="dim")
    elif not view.routes:
        route_table = Text("routes: none", style="dim")
    else:
        table_of_routes = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
        headers, rows_text = route_cells(view.routes)
        last = len(headers) - 1
        for i, (title, _cell, numeric) in enumerate(ROUTE_COLUMNS):
            # Only the last column (the URI) gives way on a narrow terminal: the numbers keep their width.
            width = max(len(title), *(len(r[i]) for r in rows_text)) if i != last else None
            table_of_routes.add_column("URI" if i == last else title, justify="right" if numeric else "left",
                                       no_wrap=True, min_width=width, overflow="ellipsis")
        state_style = {"running": "green", "stalled": "yellow", "retrying": "yellow", "failed": "bold red"}
        for route, texts in zip(view.routes, rows_text, strict=True):
            cells: list[Any] = list(texts)
            cells[1] = Text(texts[1], style=state_style.get(route.state, ""))
            cells[last] = route.uri
            table_of_routes.add_row(*cells)
        # Errors below the table, whole and wrapped: a narrow terminal must not cut off what is wrong.
        errors = [Text(f"{r.id}: {r.error}", style="red") for r in view.routes if r.error]
        route_table = Group(table_of_routes, *errors)
        route_lines = len(view.routes) + len(errors) + 2

    rows = sort_rows(view.snap.rows, view.key, view.reverse) if view.snap else []
    columns = columns_for(rows)
    room = max(2, height - 3 - 3 - route_lines - 2)  # header, table header and rule, routes, footer
    hidden = 0
    if len(rows) > room:
        hidden = len(rows) - (room - 1)
        rows = rows[: room - 1]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        title = column.title
        if column.sort is view.key and title != "NET TX/s":
            title += " " + (up if view.reverse else down)
        table.add_column(title, justify="right" if column.numeric else "left", no_wrap=True,
                         header_style="bold reverse" if column.sort is view.key else "bold",
                         overflow="ellipsis", max_width=40 if column.title in ("NAME", "IMAGE") else None)
    for row in rows:
        table.add_row(*(c.cell(row) for c in columns))
    parts: list[Any] = [header, table]
    if hidden:
        parts.append(Text(f"… {hidden} more (make the terminal taller)", style="dim"))
    if view.snap is not None and not view.snap.rows:
        parts.append(Text("no containers", style="dim"))
    parts += [Text(""), route_table, Text(""), Text(FOOTER, style="reverse")]
    return Group(*parts)


class Keys:
    """Single key presses from a terminal on stdin, without echo (cbreak mode), queued as ``("key", char)``.

    Ctrl-C still interrupts (cbreak keeps signals). The terminal's mode is restored on exit.
    """

    def __init__(self, events: queue.Queue[tuple[str, Any]], stream: TextIO = sys.stdin) -> None:
        self.events = events
        self.stream = stream
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: Any = None

    def __enter__(self) -> Keys:
        try:
            fd = self.stream.fileno()
        except (OSError, ValueError):
            return self
        if not os.isatty(fd):
            return self  # no keys: Ctrl-C quits
        import termios
        import tty

        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._read, args=(fd,), name="lookout-top-keys", daemon=True)
        self._thread.start()
        return self

    def _read(self, fd: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 64)
            if not data:
                self.events.put(("key", "\x04"))  # end of input: as Ctrl-D
                return
            if data.startswith(b"\x1b"):
                continue  # arrows, function keys: escape sequences, not our keys
            for char in data.decode(errors="ignore"):
                self.events.put(("key", char))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)


def _poller(api: Api, interval: float, events: queue.Queue[tuple[str, Any]], stop: threading.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        events.put(("poll", poll(api)))
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def live(api: Api, interval: float, first: Poll, key: SortKey = SortKey.CPU, reverse: bool = False) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    view = View(api.url, key, reverse)
    view.take(first)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()
    poller = threading.Thread(target=_poller, args=(api, interval, events, stop), name="lookout-top-poll",
                              daemon=True)
    unicode = console.encoding.lower().startswith("utf")
    try:
        with Keys(events), Live(render(view, console.size.height, unicode), console=console, screen=True,
                                auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as screen:
            poller.start()
            while True:
                kind, value = events.get()
                if kind == "key":
                    if not view.press(value):
                        break
                else:
                    view.take(value)
                screen.update(render(view, console.size.height, unicode), refresh=True)
    finally:
        stop.set()
    return 0


# --- command line -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, url_type: Callable[[str], str],
                  interval_type: Callable[[str], float]) -> None:
    from agent.client import DEFAULT_URL

    parser.add_argument("--url", type=url_type, default=DEFAULT_URL,
                        help=f"the agent's address (default {DEFAULT_URL}; https://… for an agent with TLS)")
    parser.add_argument("--interval", type=interval_type, default=2.0, metavar="DURATION",
                        help="how often to ask the agent (default 2s)")
    parser.add_argument("--once", action="store_true",
                        help="print one plain table and exit (also when standard output is not a terminal)")
    parser.add_argument("--sort", choices=[k.value for k in SortKey], default=SortKey.CPU.value,
                        help="the column to sort by first (default cpu)")
    parser.add_argument("--insecure", action="store_true", help="https: do not verify the agent's certificate")
    parser.add_argument("--cacert", metavar="FILE", help="https: verify the agent's certificate against this CA")


def main(args: argparse.Namespace) -> int:
    key = SortKey(args.sort)
    try:
        api = Api(args.url, args.insecure, args.cacert)
        if args.once or not sys.stdout.isatty():
            return once(api, args.interval, sys.stdout, key)
        first = poll(api)
        if first.error is not None:
            raise ClientError(first.error)
        return live(api, args.interval, first, key)
    except ClientError as exc:
        print(f"lookout top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `lookout top --once | head -1`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


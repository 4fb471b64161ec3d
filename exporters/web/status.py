"""The status page at ``/``: the host, every container (CPU, memory against its limit, network, log rate), every
route (state, lag) and links to the endpoints, as one server-rendered HTML document.

No build step, no CDN, no framework: string templates with every value through ``html.escape``. The containers are
sorted on the server (``?sort=cpu|memory|net|logs|name&order=asc|desc``: the column headers are links, so it works
without JavaScript) and, where scripts run, in the browser by a few lines of inline script. ``?refresh=N`` reloads
the page every N seconds; ``?all=1`` lists raw cgroups (the root, systemd services) beside the containers. The
Content-Security-Policy admits only the page's own inline script and style (by hash): a value that escaped its
escaping still could not run (the style, the script and those headers are exporters.web.status_assets). Readiness
problems (``LiveSurface.problems``: a wrong ``--host-root``, a failed route) are a banner at the top. Unknown values
are "—", never a fake zero.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from isal import igzip

import agent
from agent.model import ContainerInfo, ContainerSample, Runtime, Snapshot
from exporters.prometheus.http import accepts
from exporters.web.keys import EXPOSITION, LIVE
from exporters.web.status_assets import HEADERS, SCRIPT, STYLE

# More containers than this and the page is rendered in a worker thread, off the event loop (1,000 take ~20 ms,
# ~630 KiB of HTML; gzipped there too, to ~40 KiB, when the client accepts it).
THREAD_ABOVE = 200
GZIP_ABOVE = 32 << 10
SORT_KEYS = ("name", "cpu", "memory", "net", "logs")
MAX_REFRESH = 3600
UNKNOWN = "—"

ENDPOINTS = (
    ("/metrics", "Prometheus metrics (cAdvisor names and labels)", False),
    ("/api/v1/containers", "every container: metadata, latest stats, rates (JSON)", False),
    ("/routes", "log routes: state, lag, rates, retries, dead letters (JSON)", False),
    ("/healthz", "liveness: 200 while the agent runs", False),
    ("/readyz", "readiness: 503 with a line per broken part", False),
    ("/logs", "live stream of every container's log records", True),
)


# --- the query ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class View:
    """What the query asks for; anything it cannot understand falls back to the default."""

    sort: str = "name"
    order: str = "asc"
    refresh: int = 0  # seconds; 0: no reload
    everything: bool = False  # raw cgroups too

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> View:
        sort = query.get("sort", "name")
        sort = sort if sort in SORT_KEYS else "name"
        order = query.get("order", "")
        order = order if order in ("asc", "desc") else default_order(sort)
        text = query.get("refresh", "")
        refresh = min(int(text), MAX_REFRESH) if text.isdigit() else 0
        everything = query.get("all", "") in ("1", "true", "yes")
        return cls(sort, order, refresh, everything)

    def href(self, **changes: Any) -> str:
        """A link to this page with ``changes``, carrying only what differs from the defaults."""
        view = replace(self, **changes)
        query: dict[str, str | int] = {}
        if view.sort != "name" or view.order != "asc":
            query.update(sort=view.sort, order=view.order)
        if view.refresh:
            query["refresh"] = view.refresh
        if view.everything:
            query["all"] = 1
        return "/?" + urlencode(query) if query else "/"


def default_order(sort: str) -> str:
    return "asc" if sort == "name" else "desc"


# --- one table row per container ------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    key: str  # what /api/v1/containers/{key} finds: the container id, or a raw cgroup's path
    name: str
    cgroup: str
    runtime: str
    image: str
    pod: str
    cpu: float | None  # cores
    memory: float | None  # bytes
    limit: float | None  # bytes; 0 or None: no limit
    rx: float | None  # bytes/s
    tx: float | None
    logs: float | None  # lines/s

    @property
    def net(self) -> float | None:
        if self.rx is None and self.tx is None:
            return None
        return (self.rx or 0.0) + (self.tx or 0.0)


def display_name(info: ContainerInfo) -> str:
    """Kubernetes' container name (the Pod column has the pod), else the runtime's name unless it is just the id
    (containerd names containers by id), else the short id, else the cgroup."""
    if info.container:
        return info.container
    if info.name and info.name != info.container_id:
        return info.name
    return info.container_id[:12] or info.cgroup


def make_row(sample: ContainerSample, rates: Mapping[str, float | None] | None) -> Row:
    info, stats = sample.info, sample.stats
    rate = rates or {}
    memory = rate.get("memory_bytes")
    if memory is None and stats.memory is not None:
        memory = stats.memory.working_set
    limit = rate.get("memory_limit_bytes")
    if limit is None and stats.spec.has_memory:
        limit = stats.spec.memory_limit
    pod = f"{info.namespace}/{info.pod}" if info.pod and info.namespace else info.pod
    return Row(key=info.container_id or info.cgroup, name=display_name(info),
               cgroup=info.cgroup, runtime=str(info.runtime), image=info.image, pod=pod,
               cpu=rate.get("cpu_cores"), memory=memory, limit=limit,
               rx=rate.get("network_rx_bytes_per_second"), tx=rate.get("network_tx_bytes_per_second"),
               logs=rate.get("log_lines_per_second"))


def sort_rows(rows: list[Row], sort: str, order: str) -> list[Row]:
    """By name (case-insensitive), or by a value with unknown values last in either order; ties by name."""
    by_name = sorted(rows, key=lambda r: (r.name.casefold(), r.key))
    if sort == "name":
        return by_name[::-1] if order == "desc" else by_name
    value = {"cpu": lambda r: r.cpu, "memory": lambda r: r.memory, "net": lambda r: r.net,
             "logs": lambda r: r.logs}[sort]
    known = [r for r in by_name if value(r) is not None]
    known.sort(key=value, reverse=order == "desc")  # stable: equal values stay in name order
    return known + [r for r in by_name if value(r) is None]


# --- units ----------------------------------------------------------------------------------------------------


def number(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def size(value: float | None) -> str:
    """Bytes in IEC units: ``512 B``, ``1.50 KiB``, ``12.3 MiB``, ``2.00 GiB``."""
    if value is None:
        return UNKNOWN
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{number(value)} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def per_second(value: float | None, bytes_: bool = True) -> str:
    if value is None:
        return UNKNOWN
    return f"{size(value)}/s" if bytes_ else f"{number(value)}/s"


def seconds(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    if value < 60:
        return f"{number(value)} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def percent(ratio: float) -> str:
    return "<1%" if 0 < ratio < 0.01 else f"{ratio:.0%}"


def when(timestamp: float, now: float) -> str:
    stamp = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({seconds(round(max(0.0, now - timestamp)))} ago)"


def _number_or(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- HTML -----------------------------------------------------------------------------------------------------


def cell(text: str, value: float | str | None = None, cls: str = "num", title: str = "") -> str:
    """A ``<td>`` whose ``data-v`` is what the in-page script sorts by (absent: unknown, sorted last)."""
    attrs = f' class="{cls}"' if cls else ""
    if value is not None:
        attrs += f' data-v="{escape(str(value))}"'
    if title:
        attrs += f' title="{escape(title)}"'
    return f"<td{attrs}>{text}</td>"


def _v(value: float | None) -> str:
    """The ``data-v`` attribute the in-page script sorts by (absent: unknown, sorted last)."""
    return "" if value is None else f' data-v="{value!r}"'


def container_row(row: Row) -> str:
    """One ``<tr>``. Only the container's own strings need escaping: the numbers and units are ours, and the link's
    path is percent-encoded. A row is built by one template: the page of 1,000 containers is mostly this."""
    memory = size(row.memory)
    if row.limit:
        share = "" if row.memory is None else f" ({percent(row.memory / row.limit)})"
        memory = f"{memory} / {size(row.limit)}{share}"
    elif row.memory is not None:
        memory = f"{memory} / {UNKNOWN}"
    net = UNKNOWN if row.net is None else f"{per_second(row.rx)} / {per_second(row.tx)}"
    cpu, cpu_title = UNKNOWN, ""
    if row.cpu is not None:
        cpu, cpu_title = f"{row.cpu * 100:.1f}%", f' title="{row.cpu:.3f} cores (100% = one core)"'
    image = escape(row.image)
    return (f'<tr><td class="name" data-v="{escape(row.name.casefold())}" title="{escape(row.cgroup)}">'
            f'<a href="/api/v1/containers/{quote(row.key, safe="")}">{escape(row.name)}</a></td>'
            f'<td>{escape(row.runtime)}</td><td class="image" title="{image}">{image or UNKNOWN}</td>'
            f'<td>{escape(row.pod)}</td><td class="num"{_v(row.cpu)}{cpu_title}>{cpu}</td>'
            f'<td class="num"{_v(row.memory)}>{memory}</td>'
            f'<td class="num"{_v(row.net)} title="received / sent">{net}</td>'
            f'<td class="num"{_v(row.logs)}>{per_second(row.logs, bytes_=False)}</td></tr>\n')


def sort_header(label: str, key: str, view: View, numeric: bool = True) -> str:
    if key == view.sort:
        order = "asc" if view.order == "desc" else "desc"
        aria = f' aria-sort="{"ascending" if view.order == "asc" else "descending"}"'
    else:
        order, aria = default_order(key), ""
    href = escape(view.href(sort=key, order=order))
    cls = ' class="num"' if numeric else ""
    return f'<th{cls}{aria}><a href="{href}" data-sort="{key}">{label}</a></th>'


def containers_section(rows: list[Row], view: View, snapshot: Snapshot | None, others: int) -> Iterable[str]:
    yield "<section id=\"containers\"><h2>Containers</h2>\n"
    if snapshot is None:
        yield '<p class="empty">Nothing collected yet: the first collection has not finished.</p></section>\n'
        return
    if not rows:
        yield '<p class="empty">No containers found on this host.'
        if others:
            yield (f' The agent sees {others} other cgroup{"s" if others != 1 else ""}'
                   f' (<a href="{escape(view.href(everything=True))}">list them</a>).')
        yield " If containers are running, check <code>--host-root</code> and <code>--docker-socket</code>.</p>"
        yield "</section>\n"
        return
    yield '<table class="containers sortable"><thead><tr>'
    yield sort_header("Name", "name", view, numeric=False)
    yield "<th>Runtime</th><th>Image</th><th>Pod</th>"
    yield sort_header("CPU", "cpu", view)
    yield sort_header("Memory used / limit", "memory", view)
    yield sort_header("Network rx / tx", "net", view)
    yield sort_header("Logs", "logs", view)
    yield "</tr></thead><tbody>\n"
    yield from map(container_row, rows)
    yield "</tbody></table>\n"
    if view.everything:
        hide = escape(view.href(everything=False))
        yield f'<p class="muted">Raw cgroups included (<a href="{hide}">hide them</a>).</p>'
    elif others:
        yield (f'<p class="muted">{others} other cgroup{"s" if others != 1 else ""} (the root, system services) '
               f'not shown (<a href="{escape(view.href(everything=True))}">show them</a>).</p>')
    yield "</section>\n"


STATES = {"running", "stalled", "retrying", "failed"}


def route_row(route: Mapping[str, Any]) -> str:
    def count(name: str) -> str:
        value = _number_or(route.get(name))
        return UNKNOWN if value is None else number(value)

    state = str(route.get("state") or UNKNOWN)
    state_cls = f"state-{state}" if state in STATES else ""
    lag_bytes = _number_or(route.get("lag_bytes"))
    lag = f"{size(lag_bytes)} / {seconds(_number_or(route.get('lag_seconds')))}"
    error = route.get("error")
    return "".join((
        "<tr>",
        cell(escape(str(route.get("id", UNKNOWN))), cls="wrap"),
        cell(escape(str(route.get("uri", UNKNOWN))), cls="wrap"),
        cell(escape(state), cls=state_cls),
        cell(escape(lag)),
        cell(per_second(_number_or(route.get("records_per_second")), bytes_=False)),
        cell(count("retries_total")),
        cell(count("dead_lettered_total")),
        cell(escape(str(error)) if error else "", cls="error"),
        "</tr>\n",
    ))


def routes_section(routes: list[dict[str, Any]]) -> Iterable[str]:
    yield '<section id="routes"><h2>Log routes</h2>\n'
    if not routes:
        yield '<p class="empty">No log routes: start the agent with <code>--route URI</code> to ship logs.</p>'
        yield "</section>\n"
        return
    yield ('<table class="routes"><thead><tr><th>Route</th><th>URI</th><th>State</th>'
           '<th class="num">Lag (bytes / age)</th><th class="num">Records</th><th class="num">Retries</th>'
           '<th class="num">Dead letters</th><th>Error</th></tr></thead><tbody>\n')
    yield from map(route_row, routes)
    yield "</tbody></table></section>\n"


def problems_banner(problems: Mapping[str, str], snapshot: Snapshot | None) -> Iterable[str]:
    if problems:
        yield '<div class="problems" role="alert"><strong>Not ready.</strong> <code>/readyz</code> answers 503:<ul>'
        for part, why in sorted(problems.items()):
            yield f"<li><strong>{escape(str(part))}</strong>: {escape(str(why))}</li>"
        yield "</ul></div>\n"
    if snapshot is not None and (snapshot.scrape_error or snapshot.machine_error):
        what = " and ".join(w for w, bad in (("containers", snapshot.scrape_error),
                                              ("the machine", snapshot.machine_error)) if bad)
        yield (f'<div class="notice">The last collection could not read everything about {what}: '
               "see the agent's log.</div>\n")


def host_name(host: Mapping[str, Any]) -> str:
    """The provider's host name; until it gives one, this process's own."""
    return str(host.get("hostname") or host.get("name") or socket.gethostname())


HOST_KEYS = {"hostname", "name", "version", "problems"}


def host_section(snapshot: Snapshot | None, host: Mapping[str, Any], containers: int, others: int,
                 now: float) -> Iterable[str]:
    machine = snapshot.machine if snapshot is not None else None
    facts: list[tuple[str, str]] = [
        ("Host", host_name(host)),
        ("Agent version", str(host.get("version") or agent.__version__)),
        ("Kernel", machine.kernel_version if machine and machine.kernel_version else UNKNOWN),
        ("OS", machine.os_version if machine and machine.os_version else UNKNOWN),
        ("CPU cores", str(machine.cpu_cores) if machine and machine.cpu_cores else UNKNOWN),
        ("Memory", size(machine.memory_bytes) if machine and machine.memory_bytes else UNKNOWN),
        ("Last collection", when(snapshot.timestamp, now) if snapshot is not None else "not yet"),
        ("Containers", f"{containers}" + (f" (and {others} other cgroups)" if others else "")),
    ]
    facts += [(str(k).replace("_", " ").capitalize(), str(v)) for k, v in sorted(host.items())
              if k not in HOST_KEYS and isinstance(v, str | int | float) and not isinstance(v, bool)]
    yield '<section id="host"><h2>Host</h2><dl class="host">'
    for name, value in facts:
        yield f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>"
    yield "</dl></section>\n"


def endpoints_section() -> Iterable[str]:
    yield '<section id="endpoints"><h2>Endpoints</h2><ul>'
    for path, what, token in ENDPOINTS:
        needs = ' <span class="muted">(needs the API token: <code>--api-token-file</code>)</span>' if token else ""
        yield f'<li><a href="{path}">{path}</a> — {escape(what)}{needs}</li>'
    yield "</ul></section>\n"


def refresh_links(view: View) -> str:
    links = []
    for secs in (0, 5, 10, 30):
        label = "off" if secs == 0 else f"{secs} s"
        if secs == view.refresh:
            links.append(f"<strong>{label}</strong>")
        else:
            links.append(f'<a href="{escape(view.href(refresh=secs))}">{label}</a>')
    return '<p class="muted">Auto-refresh: ' + " · ".join(links) + "</p>\n"


def render_page(snapshot: Snapshot | None, rates: Mapping[str, Mapping[str, float | None]],
                routes: list[dict[str, Any]], problems: Mapping[str, str], host: Mapping[str, Any], view: View,
                now: float | None = None) -> bytes:
    """The whole page as UTF-8 (pure: the handler runs it in a thread for a large snapshot)."""
    now = time.time() if now is None else now
    samples = snapshot.containers if snapshot is not None else []
    shown = [s for s in samples if view.everything or s.info.runtime != Runtime.RAW]
    containers = sum(1 for s in samples if s.info.runtime != Runtime.RAW)
    others = len(samples) - containers
    rows = sort_rows([make_row(s, rates.get(s.info.cgroup)) for s in shown], view.sort, view.order)
    reported = host.get("problems")
    if isinstance(reported, dict) and reported:
        problems = {**reported, **problems}
    name = host_name(host)
    refresh = f'<meta http-equiv="refresh" content="{view.refresh}">' if view.refresh else ""
    parts: list[str] = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', refresh,
        f"<title>Lookout — {escape(name)}</title>", f"<style>{STYLE}</style></head>\n<body>\n",
        f"<h1>Lookout on {escape(name)}</h1>\n",
    ]
    parts += problems_banner(problems, snapshot)
    parts += host_section(snapshot, host, containers, others, now)
    parts += containers_section(rows, view, snapshot, others)
    parts += routes_section(routes)
    parts += endpoints_section()
    parts.append(refresh_links(view))
    parts.append(f"<script>{SCRIPT}</script>\n</body></html>\n")
    return "".join(parts).encode()


def page_body(args: tuple[Any, ...], gzip: bool) -> tuple[bytes, bool]:
    """The page, gzipped when the client accepts it and it is large; (body, gzipped)."""
    body = render_page(*args)
    if gzip and len(body) > GZIP_ABOVE:
        return igzip.compress(body, 1), True
    return body, False


async def status(request: web.Request) -> web.Response:
    """The status page; open like /metrics (it shows no log lines)."""
    live = request.app[LIVE]
    snapshot = request.app[EXPOSITION].snapshot
    args = (snapshot, live.rates(), live.routes(), live.problems(), live.host(), View.from_query(request.query))
    gzip = accepts(request.headers.get("Accept-Encoding", ""), "gzip")
    if snapshot is not None and len(snapshot.containers) > THREAD_ABOVE:
        body, gzipped = await asyncio.to_thread(page_body, args, gzip)
    else:
        body, gzipped = page_body(args, gzip)
    headers = {**HEADERS, "Content-Encoding": "gzip"} if gzipped else HEADERS
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", status)

"""The status page at ``/`` through the real web app (aiohttp TestServer + make_app), on snapshots the real
collection pipeline made from the fixture trees (tests/fixtures/trees.py).

What it must do: escape everything a container can name itself, sort on the server by each column both ways (unknown
values last), say "—" for what is unknown, show an empty state and the readiness problems, and stay open without
the API token."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.model import ContainerInfo, ContainerSample, ContainerStats, LiveSurface, MachineInfo, Runtime, Snapshot
from exporters.prometheus.exposition import Exposition
from exporters.web import status, status_assets
from exporters.web.app import make_app
from tests.fixtures import trees
from tests.helpers.status_page import Page, read_page
from tests.unit.support import run_tree

EVIL = '<script>alert("name")</script>'
EVIL_IMAGE = '"><img src=x onerror=alert(1)>'
MiB = 1 << 20


@pytest.fixture
def fleet(make_tree: Callable[[str], trees.Tree], tmp_path: Path) -> Snapshot:
    """Docker (api, worker, the raw ssh.service and root) and Kubernetes (a pod's sandbox and nginx) from the
    fixture trees; ``api`` renamed to a script tag, ``worker``'s image to an attribute breakout."""
    docker = run_tree(make_tree("v2_docker_systemd"), tmp=tmp_path / "d").snapshot
    kube = run_tree(make_tree("v2_kubepods_containerd"), tmp=tmp_path / "k").snapshot
    samples = docker.containers + [s for s in kube.containers if s.info.runtime != Runtime.RAW]
    for s in samples:
        if s.info.name == "api":
            s.info.name = EVIL
        elif s.info.name == "worker":
            s.info.image = EVIL_IMAGE
    return replace(docker, containers=samples)


def cgroup_of(snapshot: Snapshot, name: str) -> str:
    found = [s.info.cgroup for s in snapshot.containers if name in (s.info.name, s.info.container)]
    assert len(found) == 1, name
    return found[0]


def rate(cpu: float | None, memory: float | None, limit: float | None, rx: float | None, tx: float | None,
         logs: float | None) -> dict[str, float | None]:
    return {"cpu_cores": cpu, "memory_bytes": memory, "memory_limit_bytes": limit,
            "network_rx_bytes_per_second": rx, "network_tx_bytes_per_second": tx, "log_lines_per_second": logs}


@pytest.fixture
def rates(fleet: Snapshot) -> dict[str, dict[str, float | None]]:
    """api: busiest CPU, least memory; worker: most memory and network; nginx: most logs; the sandbox: none."""
    return {
        cgroup_of(fleet, EVIL): rate(1.5, 10 * MiB, 256 * MiB, 100.0, 50.0, 2.0),
        cgroup_of(fleet, "worker"): rate(0.25, 300 * MiB, 0, 4096.0, 2048.0, 0.5),
        cgroup_of(fleet, "nginx"): rate(0.5, 20 * MiB, 64 * MiB, None, None, 800.0),
    }


class Site:
    def __init__(self, client: TestClient, exposition: Exposition, live: LiveSurface) -> None:
        self.client, self.exposition, self.live = client, exposition, live

    async def page(self, query: str = "") -> Page:
        resp = await self.client.get("/" + query)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/html" and resp.charset == "utf-8"
        return read_page(await resp.text())

    async def names(self, query: str) -> list[str]:
        return (await self.page(query)).names


@pytest.fixture
async def site(fleet: Snapshot, rates: dict[str, dict[str, float | None]]) -> AsyncIterator[Site]:
    exposition = Exposition(CollectorRegistry())
    exposition.publish(fleet, lambda snapshot, openmetrics: iter(()))
    live = LiveSurface(rates=lambda: rates)
    async with TestClient(TestServer(make_app(exposition, live))) as client:
        yield Site(client, exposition, live)


# --- escaping -------------------------------------------------------------------------------------------------


async def test_a_container_named_script_cannot_inject(site: Site) -> None:
    resp = await site.client.get("/")
    html = await resp.text()
    assert EVIL not in html and EVIL_IMAGE not in html
    assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in html
    page = read_page(html)
    assert EVIL in page.names  # shown as text, exactly as the container is named
    worker = page.containers[page.names.index("worker")]
    assert worker[2] == EVIL_IMAGE
    assert len(page.scripts) == 1 and page.scripts[0] == status_assets.SCRIPT  # only the page's own script
    # Defence in depth: only the page's own inline script and style may run, by their hashes.
    csp = resp.headers["Content-Security-Policy"]
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp


async def test_problems_banner_is_escaped_and_first(site: Site) -> None:
    site.live.problems = lambda: {"cgroups": "no cgroup hierarchy under /wrong", "route <b>x</b>": "Sink<Failed>"}
    html = await (await site.client.get("/")).text()
    page = read_page(html)
    assert page.problems == ["cgroups: no cgroup hierarchy under /wrong", "route <b>x</b>: Sink<Failed>"]
    assert "<b>x</b>" not in html and "Sink&lt;Failed&gt;" in html
    assert html.index('class="problems"') < html.index('id="host"')  # above everything else


async def test_no_banner_when_ready(site: Site) -> None:
    html = await (await site.client.get("/")).text()
    assert read_page(html).problems == [] and 'class="problems"' not in html


# --- sorting --------------------------------------------------------------------------------------------------

SANDBOX = trees.SANDBOX[:12]


@pytest.mark.parametrize(("query", "expected"), [
    ("", [SANDBOX, EVIL, "nginx", "worker"]),  # by name, case-insensitive, by code point: "4" < "<" < "n"
    ("?sort=name&order=desc", ["worker", "nginx", EVIL, SANDBOX]),
    ("?sort=cpu", [EVIL, "nginx", "worker", SANDBOX]),  # numbers: largest first by default
    ("?sort=cpu&order=asc", ["worker", "nginx", EVIL, SANDBOX]),  # unknown last either way
    ("?sort=memory&order=desc", ["worker", SANDBOX, "nginx", EVIL]),  # the sandbox's working set from its stats
    ("?sort=memory&order=asc", [EVIL, "nginx", SANDBOX, "worker"]),
    ("?sort=net&order=desc", ["worker", EVIL, SANDBOX, "nginx"]),  # the unknown ones by name
    ("?sort=net&order=asc", [EVIL, "worker", SANDBOX, "nginx"]),
    ("?sort=logs", ["nginx", EVIL, "worker", SANDBOX]),
    ("?sort=logs&order=asc", ["worker", EVIL, "nginx", SANDBOX]),
    ("?sort=bogus&order=sideways", [SANDBOX, EVIL, "nginx", "worker"]),  # not understood: the default
])
async def test_server_side_sorting(site: Site, query: str, expected: list[str]) -> None:
    assert await site.names(query) == expected


async def test_header_links_flip_the_current_column_and_keep_the_other_settings(site: Site) -> None:
    page = await site.page("?sort=cpu&order=desc&refresh=10")
    assert page.headers["cpu"] == "/?sort=cpu&order=asc&refresh=10"  # clicked again: the other way
    assert page.headers["memory"] == "/?sort=memory&order=desc&refresh=10"  # another column: largest first
    assert page.headers["name"] == "/?refresh=10"  # name ascending is the default
    assert page.aria_sort == {"cpu": "descending"}
    # Each sortable cell carries the value the in-page script sorts by; unknown values have none.
    cpu_col = 4
    assert [v.get(cpu_col) for v in page.sort_values] == ["1.5", "0.5", "0.25", None]


# --- values ---------------------------------------------------------------------------------------------------


async def test_values_in_human_units_and_unknown_as_a_dash(site: Site, fleet: Snapshot) -> None:
    page = await site.page()
    by_name = dict(zip(page.names, page.containers, strict=True))
    api, worker, nginx, sandbox = by_name[EVIL], by_name["worker"], by_name["nginx"], by_name[SANDBOX]
    assert api[1:] == ["docker", "registry.example.com/shop/api:2.3.1", "", "150.0%", "10 MiB / 256 MiB (4%)",
                       "100 B/s / 50 B/s", "2/s"]
    assert worker[4:] == ["25.0%", "300 MiB / —", "4 KiB/s / 2 KiB/s", "0.50/s"]  # limit 0: no limit
    assert nginx[1:] == ["containerd", "docker.io/library/nginx:1.25", "shop/web-7d4b9c8f5-x2x9q", "50.0%",
                         "20 MiB / 64 MiB (31%)", "—", "800/s"]
    # No rates yet: CPU, network and logs are unknown; memory comes from the snapshot's own working set.
    working_set = next(s.stats.memory for s in fleet.containers if s.info.container_id == trees.SANDBOX)
    assert working_set is not None
    assert sandbox[4:] == ["—", f"{status.size(working_set.working_set)} / —", "—", "—"]
    # Each name links to its entry in the API, which finds it.
    link = page.links[page.names.index(EVIL)]
    resp = await site.client.get(link)
    assert resp.status == 200 and (await resp.json())["info"]["name"] == EVIL


async def test_raw_cgroups_on_request_and_their_links_work(site: Site) -> None:
    page = await site.page()
    assert SANDBOX in page.names and "/" not in page.names
    everything = await site.page("?all=1")
    assert {"/", "/system.slice/ssh.service"} <= set(everything.names)
    link = everything.links[everything.names.index("/system.slice/ssh.service")]
    assert link == "/api/v1/containers/%2Fsystem.slice%2Fssh.service"
    resp = await site.client.get(link)
    assert resp.status == 200 and (await resp.json())["info"]["cgroup"] == "/system.slice/ssh.service"


def test_units() -> None:
    assert [status.size(v) for v in (0, 512, 1536, 10 * MiB, 3.5 * (1 << 30), None)] == [
        "0 B", "512 B", "1.50 KiB", "10 MiB", "3.50 GiB", "—"]
    assert [status.percent(v) for v in (0, 0.004, 0.3125, 1.5)] == ["0%", "<1%", "31%", "150%"]
    assert status.per_second(123456.0) == "121 KiB/s" and status.per_second(0.25, bytes_=False) == "0.25/s"
    assert [status.seconds(v) for v in (0, 2.5, 125, 7300, None)] == ["0 s", "2.50 s", "2 min 5 s", "2 h 1 min",
                                                                       "—"]


async def test_host_section(site: Site, fleet: Snapshot) -> None:
    html = await (await site.client.get("/")).text()
    assert "6.18.44-fc-v769" in html and "Debian GNU/Linux 12 (bookworm)" in html and "23.5 GiB" in html
    assert "<dt>Containers</dt><dd>4 (and 2 other cgroups)</dd>" in html
    site.live.host = lambda: {"hostname": "node-<7>", "version": "9.9.9", "uptime_seconds": 12}
    html = await (await site.client.get("/")).text()
    page = read_page(html)
    assert page.h1 == "Lookout on node-<7>" and "node-&lt;7&gt;" in html
    assert "<dd>9.9.9</dd>" in html and "<dt>Uptime seconds</dt><dd>12</dd>" in html


async def test_routes_table(site: Site) -> None:
    routes: list[dict[str, Any]] = [
        {"id": "es", "uri": "elasticsearch+https://u:xxxxx@es:9200/logs", "origin": "config", "state": "running",
         "error": None, "lag_bytes": 0, "lag_seconds": 0.0, "records_per_second": 812.4, "retries_total": 3,
         "dead_lettered_total": 0},
        {"id": "broken", "uri": "syslog+tcp://x:514", "state": "failed", "error": "TypeError: <bug>",
         "lag_bytes": 3 * MiB, "lag_seconds": 95.0, "records_per_second": 0.0, "retries_total": 0,
         "dead_lettered_total": 7},
        {"id": "new"},  # a provider that knows little yet
    ]
    site.live.routes = lambda: routes
    page = await site.page()
    assert page.routes == [
        ["es", "elasticsearch+https://u:xxxxx@es:9200/logs", "running", "0 B / 0 s", "812/s", "3", "0", ""],
        ["broken", "syslog+tcp://x:514", "failed", "3 MiB / 1 min 35 s", "0/s", "0", "7", "TypeError: <bug>"],
        ["new", "—", "—", "— / —", "—", "—", "—", ""],
    ]


# --- empty states, refresh, access ----------------------------------------------------------------------------


async def test_empty_state_without_containers(site: Site, fleet: Snapshot) -> None:
    site.exposition.snapshot = replace(fleet, containers=[s for s in fleet.containers if s.info.runtime == "raw"])
    html = await (await site.client.get("/")).text()
    page = read_page(html)
    assert page.containers == [] and 'class="containers' not in html
    assert page.empty[0].startswith("containers: No containers found on this host. The agent sees 2 other cgroups")
    assert "No log routes" in page.empty[1]


async def test_before_the_first_collection() -> None:
    async with TestClient(TestServer(make_app(Exposition(CollectorRegistry())))) as client:
        resp = await client.get("/")
        page = read_page(await resp.text())
    assert resp.status == 200 and page.containers == []
    assert page.empty[0] == "containers: Nothing collected yet: the first collection has not finished."


@pytest.mark.parametrize(("query", "meta"), [("?refresh=10", "10"), ("", None), ("?refresh=abc", None),
                                             ("?refresh=-5", None), ("?refresh=99999", str(status.MAX_REFRESH))])
async def test_auto_refresh(site: Site, query: str, meta: str | None) -> None:
    assert (await site.page(query)).meta_refresh == meta


async def test_open_without_the_token(site: Site) -> None:
    site.live.token = lambda: "s3cret"
    assert (await site.client.get("/")).status == 200
    assert (await site.client.get("/logs")).status == 401  # the page links to it; the stream stays guarded


# --- size -----------------------------------------------------------------------------------------------------


def synthetic(n: int) -> tuple[Snapshot, dict[str, dict[str, float | None]]]:
    samples, rates = [], {}
    for i in range(n):
        cid = f"{i:064x}"
        info = ContainerInfo(cgroup=f"/docker/{cid}", runtime=Runtime.DOCKER, container_id=cid, name=f"svc-{i:04d}",
                             image="registry.example.com/team/app:1.2.3", pod=f"app-{i}", namespace="prod")
        samples.append(ContainerSample(info, ContainerStats(timestamp=1.0)))
        rates[info.cgroup] = rate((i * 7919 % 1000) / 100, i * MiB, 1 << 30, i * 10.0, i * 5.0, i / 10)
    return Snapshot(time.time(), samples, MachineInfo(cpu_cores=64, memory_bytes=256 << 30)), rates


async def test_a_thousand_containers_render_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot, rates = synthetic(1000)
    exposition = Exposition(CollectorRegistry())
    exposition.publish(snapshot, lambda s, om: iter(()))
    threads: list[str] = []
    render = status.render_page

    def recording(*args: Any) -> bytes:
        import threading

        threads.append(threading.current_thread().name)
        return render(*args)

    monkeypatch.setattr(status, "render_page", recording)
    async with TestClient(TestServer(make_app(exposition, LiveSurface(rates=lambda: rates)))) as client:
        started = time.perf_counter()
        resp = await client.get("/?sort=cpu")
        html = await resp.text()
        took = time.perf_counter() - started
    page = read_page(html)
    assert len(page.containers) == 1000 and threads and threads[0] != "MainThread"
    assert resp.headers.get("Content-Encoding") == "gzip"  # ~630 KiB of HTML: compressed in the same thread
    cpus = [float(v[4]) for v in page.sort_values]
    assert cpus == sorted(cpus, reverse=True)
    print(f"1,000 containers: {took * 1000:.0f} ms for the request, {len(html) >> 10} KiB")

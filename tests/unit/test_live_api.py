"""The live surface in-process: the token guard, routes added and removed over the API (kept across a restart), the
live log stream (formats, filters, ?tail=, a slow client), a reload of the configured routes, and readiness.

The routes run for real on a fake Docker data root (json-file logs written by the test, as in test_log_pipeline);
the web app is the agent's own, served by aiohttp's test server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.cli import _parser
from agent.config import load_config
from agent.control import RouteTable
from agent.logs import live
from agent.logs.routes import check_route
from agent.model import LiveSurface
from agent.runtime import LazyHub
from collectors.docker import DockerMetadata
from exporters.prometheus.exposition import Exposition
from exporters.web import stream
from exporters.web.app import make_app
from tests.unit.test_log_pipeline import FakeContainer, messages, wait_for

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Live:
    """A RouteTable on a fake Docker root, started as the daemon starts it, behind the agent's web app."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.docker_root = tmp / "docker"
        (self.docker_root / "containers").mkdir(parents=True, exist_ok=True)
        self.state = tmp / "state"
        self.tasks: list[asyncio.Task[None]] = []
        self.count = 0
        self.table: RouteTable | None = None
        self.client: TestClient | None = None
        self.registry = CollectorRegistry()

    def container(self, name: str, labels: dict[str, str] | None = None) -> FakeContainer:
        self.count += 1
        return FakeContainer(self.docker_root, f"{self.count:064x}", name, labels or {}, [])

    def config(self, *routes: str):  # type: ignore[no-untyped-def]
        argv = ["run", "--host-root", str(self.tmp / "host"), "--docker-root", str(self.docker_root),
                "--docker-socket", "", "--state-dir", str(self.state)]
        for route in routes:
            argv += ["--route", route]
        args, unknown = _parser().parse_known_args(argv)
        return load_config(args, environ={}, unknown=unknown, check_route=check_route)

    async def start(self, *routes: str, token: str | None = TOKEN) -> TestClient:
        table = self.table = RouteTable(self.config(*routes), DockerMetadata(self.docker_root, "", ()),
                                        self.registry, "testhost")
        table._options.poll_interval = 0.02
        table._options.poll_max = 0.1
        table.spawned = self.tasks.extend
        table.load()
        table.started = True
        if table.pipeline is not None:
            table.pipeline.RESCAN_INTERVAL = 0.2  # type: ignore[misc]
            self.tasks += table.pipeline.tasks()
        surface = LiveSurface(problems=table.failed, routes=table.listing, control=table, stream=LazyHub(table),
                              token=lambda: token)
        self.client = TestClient(TestServer(make_app(Exposition(self.registry), surface)))
        await self.client.start_server()
        return self.client

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.table is not None and self.table.pipeline is not None:
            if self.table.pipeline.RESCAN_INTERVAL != 0.2:
                pass
            await self.table.pipeline.close()
        self.tasks, self.table, self.client = [], None, None
        self.registry = CollectorRegistry()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Live]:
    harness = Live(tmp_path)
    yield harness
    await harness.stop()


# --- the token ---------------------------------------------------------------------------------------------------


async def test_without_a_token_log_reading_and_route_changes_are_refused_with_how_to_enable_them(agent: Live):
    client = await agent.start(token=None)
    for method, path in (("GET", "/logs"), ("POST", "/routes"), ("DELETE", "/routes/x")):
        resp = await client.request(method, path, headers=AUTH)
        assert resp.status == 403, (method, path)
        assert "--api-token-file" in await resp.text()
    assert (await client.get("/routes")).status == 200  # the listing is as open as the status page
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/healthz")).status == 200


async def test_a_missing_or_wrong_token_is_401(agent: Live):
    client = await agent.start()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        resp = await client.post("/routes", json={"uri": f"file://{agent.tmp}/x.ndjson"}, headers=headers)
        assert resp.status == 401, headers
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in await resp.text()
    assert not agent.table or not agent.table.entries


# --- routes over the API ----------------------------------------------------------------------------------------


async def test_a_route_added_over_the_api_ships_is_listed_kept_and_comes_back_after_a_restart(agent: Live):
    c = agent.container("web")
    sent = c.write(40)
    out = agent.tmp / "api.ndjson"
    client = await agent.start()
    resp = await client.post("/routes", json={"uri": f"file://{out}?filter.name=web", "id": "web-logs"},
                             headers=AUTH)
    assert resp.status == 201, await resp.text()
    entry = await resp.json()
    assert entry["id"] == "web-logs" and entry["origin"] == "api" and entry["state"] == "running"
    await wait_for(lambda: messages(out) == sent)
    saved = agent.state / "routes.json"
    assert orjson.loads(saved.read_bytes())["routes"] == [{"id": "web-logs", "uri": f"file://{out}?filter.name=web"}]
    assert saved.stat().st_mode & 0o777 == 0o600
    await wait_for(lambda: (agent.state / "checkpoints.json").exists()
                   and "web-logs" in orjson.loads((agent.state / "checkpoints.json").read_bytes())["routes"])
    listing = (await (await client.get("/routes")).json())["routes"]
    assert [r["id"] for r in listing] == ["web-logs"] and listing[0]["records_total"] == 40

    await agent.stop()  # a restart: the route comes back from routes.json and goes on from its checkpoints
    sent += c.write(10)
    client = await agent.start()
    listing = (await (await client.get("/routes")).json())["routes"]
    assert [(r["id"], r["origin"]) for r in listing] == [("web-logs", "api")]
    await wait_for(lambda: messages(out) == sent)  # every line once: nothing resent from the head


async def test_a_bad_route_is_a_400_with_the_same_message_as_the_flag(agent: Live):
    client = await agent.start()
    uri = "syslog+tcp://127.0.0.1:514?framing=sometimes"
    resp = await client.post("/routes", json={"uri": uri}, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"] == check_route(uri, agent.state)
    for body in (b"not json", b'{"url": "file:///x"}', b'{"uri": 1}', b'{"uri": "file:///tmp/x", "id": 2}',
                 b'{"uri": "file:///tmp/x", "extra": 1}'):
        resp = await client.post("/routes", data=body, headers=AUTH)
        assert resp.status == 400, body
    resp = await client.post("/routes", json={"uri": "file:///tmp/x", "id": "has space"}, headers=AUTH)
    assert resp.status == 400
    assert not (agent.state / "routes.json").exists()


async def test_ids_and_destinations_in_use_are_409_and_configured_routes_cannot_be_deleted(agent: Live):
    configured = f"file://{agent.tmp}/config.ndjson"
    client = await agent.start(configured)
    [entry] = (await (await client.get("/routes")).json())["routes"]
    assert entry["origin"] == "config"
    resp = await client.post("/routes", json={"uri": configured}, headers=AUTH)
    assert resp.status == 409  # the same destination twice would write every line twice
    first = await client.post("/routes", json={"uri": f"file://{agent.tmp}/a.ndjson", "id": "a"}, headers=AUTH)
    assert first.status == 201
    resp = await client.post("/routes", json={"uri": f"file://{agent.tmp}/b.ndjson", "id": "a"}, headers=AUTH)
    assert resp.status == 409
    from urllib.parse import quote

    resp = await client.delete("/routes/" + quote(entry["id"], safe=""), headers=AUTH)
    assert resp.status == 409 and "configuration" in (await resp.json())["error"]
    assert (await client.delete("/routes/nope", headers=AUTH)).status == 404


async def test_a_deleted_route_stops_and_forgets_its_checkpoints(agent: Live):
    c = agent.container("svc")
    out = agent.tmp / "gone.ndjson"
    client = await agent.start()
    assert (await client.post("/routes", json={"uri": f"file://{out}", "id": "gone"}, headers=AUTH)).status == 201
    sent = c.write(20)
    await wait_for(lambda: messages(out) == sent)
    assert agent.table is not None and agent.table.pipeline is not None
    await wait_for(lambda: "gone" in agent.table.pipeline.store.routes())  # type: ignore[union-attr]
    resp = await client.delete("/routes/gone", headers=AUTH)
    assert resp.status == 204
    assert (await (await client.get("/routes")).json())["routes"] == []
    assert "gone" not in agent.table.pipeline.store.routes()
    assert orjson.loads((agent.state / "routes.json").read_bytes())["routes"] == []
    c.write(20)
    probe = agent.tmp / "probe.ndjson"  # a route added after the delete has read the new lines: the old one not
    assert (await client.post("/routes", json={"uri": f"file://{probe}"}, headers=AUTH)).status == 201
    await wait_for(lambda: len(messages(probe)) == 40)
    assert messages(out) == sent
    label = f"file://{out}"
    assert agent.registry.get_sample_value("lookout_route_records_sent_total", {"route": label}) is None


# --- reload ------------------------------------------------------------------------------------------------------


async def test_a_reload_adds_changes_and_removes_configured_routes_keeping_the_checkpoints_of_those_that_stay(
        agent: Live):
    c = agent.container("app")
    sent = c.write(30)
    kept, dropped, added = (agent.tmp / n for n in ("kept.ndjson", "dropped.ndjson", "added.ndjson"))
    await agent.start(f"file://{kept}?filter.name=app", f"file://{dropped}")
    await wait_for(lambda: messages(kept) == sent and messages(dropped) == sent)
    assert agent.table is not None
    table = agent.table
    await wait_for(lambda: table.pipeline is not None and f"file://{kept}" in table.pipeline.store.routes())
    done = await table.apply(agent.config(f"file://{kept}?filter.name=a*", f"file://{added}").routes)
    assert done == {"added": [f"file://{added}"], "changed": [f"file://{kept}"], "removed": [f"file://{dropped}"]}
    sent += c.write(10)
    await wait_for(lambda: messages(kept) == sent and messages(added) == sent)  # the changed route: no line twice
    assert messages(dropped) == sent[:30]
    assert f"file://{dropped}" not in table.pipeline.store.routes()  # type: ignore[union-attr]


# --- the live stream ---------------------------------------------------------------------------------------------


async def read_lines(resp, count: int, timeout: float = 10.0) -> list[bytes]:  # type: ignore[no-untyped-def]
    lines: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(lines) < count:
            line = await resp.content.readline()
            assert line, f"the stream ended after {lines}"
            if line.strip():
                lines.append(line.rstrip(b"\n"))
    return lines


async def test_the_stream_sends_new_lines_of_matching_containers_in_each_format(agent: Live):
    web, db = agent.container("web", {"tier": "front"}), agent.container("db", {"tier": "back"})
    web.write(5, prefix="old")  # before the client came: not streamed
    client = await agent.start()
    plain = await client.get("/logs", params={"filter.labels": "tier:front"}, headers=AUTH)
    assert plain.status == 200 and plain.headers["Content-Type"].startswith("text/plain")
    ndjson = await client.get("/logs", params={"filter.name": "db"},
                              headers={**AUTH, "Accept": "application/x-ndjson"})
    sse = await client.get("/logs", params={"format": "sse", "filter.sources": "stderr"}, headers=AUTH)
    assert sse.headers["Content-Type"] == "text/event-stream"
    hub = agent.table.hub()  # type: ignore[union-attr]
    await wait_for(lambda: len(hub.subscriptions) == 3)  # the tap began where the files ended at the first
    web_sent = web.write(3, prefix="new")
    db_sent = db.write(2, prefix="db")
    err_sent = db.write(1, stream="stderr", prefix="oops")
    assert await read_lines(plain, 3) == [f"web|{m}".encode() for m in web_sent]
    got = [orjson.loads(line) for line in await read_lines(ndjson, 3)]
    assert [r["message"] for r in got] == db_sent + err_sent
    assert {r["container_name"] for r in got} == {"db"} and got[0]["labels"] == {"tier": "back"}
    events = await read_lines(sse, 2)
    assert events[0] == b"event: log" and orjson.loads(events[1].removeprefix(b"data: "))["message"] == err_sent[0]


async def test_tail_sends_the_last_records_of_each_container_first(agent: Live):
    a, b = agent.container("a"), agent.container("b")
    a_sent, b_sent = a.write(50), b.write(2)
    client = await agent.start()
    resp = await client.get("/logs", params={"tail": "3", "format": "json"}, headers=AUTH)
    got = [orjson.loads(line) for line in await read_lines(resp, 5)]
    by_name: dict[str, list[str]] = {}
    for r in got:
        by_name.setdefault(r["container_name"], []).append(r["message"])
    assert by_name == {"a": a_sent[-3:], "b": b_sent}
    more = a.write(2)
    assert [orjson.loads(line)["message"] for line in await read_lines(resp, 2)] == more
    bad = await client.get("/logs", params={"tail": "-1"}, headers=AUTH)
    assert bad.status == 400
    bad = await client.get("/logs", params={"filter.nope": "x"}, headers=AUTH)
    assert bad.status == 400 and "filter.nope" in await bad.text()


async def test_the_number_of_clients_is_bounded(agent: Live, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(live, "MAX_CLIENTS", 2)
    client = await agent.start()
    first, second = [await client.get("/logs", headers=AUTH) for _ in range(2)]
    assert first.status == second.status == 200
    third = await client.get("/logs", headers=AUTH)
    assert third.status == 503 and "2 clients" in await third.text()
    first.close()
    hub = agent.table.hub()  # type: ignore[union-attr]
    await wait_for(lambda: len(hub.subscriptions) == 1)
    assert (await client.get("/logs", headers=AUTH)).status == 200


async def test_a_slow_client_misses_records_counted_and_told_and_nobody_waits_for_it(agent: Live,
                                                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stream, "BUFFER_RECORDS", 100)
    c = agent.container("noisy")
    out = agent.tmp / "route.ndjson"
    client = await agent.start(f"file://{out}")
    hub = agent.table.hub()  # type: ignore[union-attr]
    sub = await hub.subscribe({}, 0, 100)  # a client that never reads
    await wait_for(lambda: hub.tap is not None and bool(hub.tap.follower.states))
    sent = c.write(1000)
    await wait_for(lambda: messages(out) == sent)  # the route is not held up by the stuck client
    await wait_for(lambda: sub.records + sub.missed == 1000)
    segments, missed = sub.take()
    assert sum(len(s.records) for s in segments) == 100 and missed == 900
    assert agent.registry.get_sample_value("lookout_stream_records_dropped_total") == 900
    sub.close()
    # Told in the stream, after what was buffered: a real client with a small buffer, the lines written at once.
    resp = await client.get("/logs", headers=AUTH)
    await wait_for(lambda: len(hub.subscriptions) == 1)
    sub2 = next(iter(hub.subscriptions))
    sub2.max_records = 10
    c.write(50, prefix="burst")
    lines = await read_lines(resp, 11)
    assert lines[:10] == [f"noisy|burst {i}\t✓".encode() for i in range(1000, 1010)]
    assert lines[10].startswith(b"lookout|missed ") and lines[10].endswith(b" records (this client read too slowly)")


async def test_the_tap_stops_after_the_last_client_left(agent: Live, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(live, "LINGER", 0.05)
    agent.container("x").write(3)
    client = await agent.start()
    resp = await client.get("/logs", headers=AUTH)
    hub = agent.table.hub()  # type: ignore[union-attr]
    await wait_for(lambda: hub.tap is not None and bool(open_logs(agent.tmp)))
    tap = hub.tap
    resp.close()
    assert open_logs(agent.tmp)
    await wait_for(lambda: hub.tap is None and tap not in agent.table.pipeline.runners, timeout=15)  # type: ignore
    assert agent.registry.get_sample_value("lookout_stream_clients") == 0
    await wait_for(lambda: not open_logs(agent.tmp))  # its files are closed
    assert all(t.done() for t in tap.tasks)  # type: ignore[union-attr]


def open_logs(under: Path) -> list[str]:
    """The json-file logs under ``under`` this process holds open."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [p for p in paths if p.endswith("-json.log") and p.startswith(str(under))]

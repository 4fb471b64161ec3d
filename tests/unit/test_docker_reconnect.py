"""collectors.docker.DockerMetadata against an Engine API stand-in on a unix socket: an outage and the way back.

The stand-in answers what the agent asks (``/version``, ``/info``, ``/events``, ``/containers/json``, inspect) with
documents of the Engine API's shape. Issue #15: a daemon that stops cleanly just ends the event stream; that is an
outage like a failed connection (logged), the containers are listed and the events followed again once it answers
(logged, ``events="resubscribed"``), and the retries start from the shortest delay again after a connection that had
worked, whatever the previous outage's backoff had grown to.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from collectors import docker as docker_module
from collectors.docker import DockerMetadata
from tests.helpers.wait import until

CID = "ab" * 32
INSPECT = {"Id": CID, "Name": "/web", "Created": "2026-11-28T00:00:00Z", "LogPath": "",
           "Config": {"Image": "busybox:test", "Labels": {"team": "api"}, "Env": []},
           "State": {"Running": True, "Pid": 0, "StartedAt": "2026-11-28T00:00:01Z"},
           "HostConfig": {"NetworkMode": "default"}, "GraphDriver": {"Data": {}}}


class Engine:
    """The stand-in: ``/version`` fails ``failures`` times (an engine still starting), and the first event stream
    ends cleanly when ``end`` is set (the daemon stopping)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.subscribed: list[float] = []
        self.end = asyncio.Event()
        self.closing = asyncio.Event()  # the test is over: the second stream's handler returns

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/version", self.version)
        app.router.add_get("/info", self.info)
        app.router.add_get("/events", self.events)
        app.router.add_get("/containers/json", self.listing)
        app.router.add_get(f"/containers/{CID}/json", self.inspect)
        return app

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"Driver": "vfs"})

    async def listing(self, request: web.Request) -> web.Response:
        return web.json_response([{"Id": CID}])

    async def inspect(self, request: web.Request) -> web.Response:
        return web.json_response(INSPECT)

    async def version(self, request: web.Request) -> web.Response:
        if self.failures > 0:
            self.failures -= 1
            return web.json_response({"message": "starting"}, status=500)
        return web.json_response({"Version": "20.10.24"})

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.subscribed.append(time.monotonic())
        resp = web.StreamResponse()
        await resp.prepare(request)
        if len(self.subscribed) == 1:
            await self.end.wait()
            await resp.write_eof()  # a clean end: the chunked stream's terminator, no error
            return resp
        await self.closing.wait()
        return resp


async def test_an_event_stream_that_ends_is_an_outage_logged_then_listed_and_resubscribed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_module.random, "random", lambda: 0.5)  # no jitter: each wait is the delay itself
    engine = Engine(failures=2)  # waits of 0.5 s and 1 s: the delay has grown to 2 s by the first connection
    runner = web.AppRunner(engine.app())
    await runner.setup()
    sock = str(tmp_path / "docker.sock")
    await web.UnixSite(runner, sock).start()
    meta = DockerMetadata(tmp_path, sock, ())
    try:
        with capture_logs() as logs:
            task = asyncio.create_task(meta.run())
            await until(lambda: meta.api_ok and len(engine.subscribed) == 1)
            assert meta.containers[CID].name == "web"
            ended = time.monotonic()
            engine.end.set()
            await until(lambda: len(engine.subscribed) == 2 and meta.api_ok)
            back = engine.subscribed[1] - ended
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        engine.closing.set()
        await runner.cleanup()
    events = [(e["event"], e.get("error", "")[:22], e.get("events")) for e in logs]
    assert events == [
        ("docker_api_unavailable", "500, message='Internal", None),  # the engine starting: logged once
        ("docker_api_available", "", "resubscribed"),
        ("docker_api_unavailable", "the event stream ended", None),  # the daemon stopping cleanly
        ("docker_api_available", "", "resubscribed"),
    ], logs
    # From 0.5 s again after a connection that had worked, not the 2 s the start-up's outage had grown to.
    assert back < 1.25, back
    assert meta.containers[CID].name == "web" and meta.containers[CID].labels == {"team": "api"}

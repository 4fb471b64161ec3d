"""The HTTP listener's limits (exporters.web.guard) on a real loopback socket: the connection cap evicts the oldest
connection that has not sent a request head, a connection that sends none in time is closed, an oversized header is
refused, and a malformed request is logged as one line without a traceback, once a minute."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from exporters.web import guard
from tests.helpers.wait import until


async def serve(limit: int) -> tuple[guard.GuardedRunner, int]:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    runner = guard.GuardedRunner(app, access_log=None)
    await runner.setup()
    assert isinstance(runner.server, guard.GuardedServer)
    runner.server.limit = limit
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True


def server(runner: guard.GuardedRunner) -> guard.GuardedServer:
    assert isinstance(runner.server, guard.GuardedServer)
    return runner.server


async def get(port: int, head: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head + b"\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_over_the_cap_the_oldest_silent_connection_makes_room() -> None:
    runner, port = await serve(limit=3)
    try:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        silent[1][1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head begun, never finished
        await until(lambda: len(server(runner)._open) == 3)
        answer = await get(port)  # the fourth: the oldest silent one goes
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
        assert await closed(silent[0][0])
        silent.append(await asyncio.open_connection("127.0.0.1", port))  # at the cap again
        await until(lambda: len(server(runner)._open) == 3)
        answer = await get(port)
        assert answer.startswith(b"HTTP/1.1 200")
        assert await closed(silent[1][0]), "a head never finished is silent too"
        for _, writer in silent:
            writer.close()
    finally:
        await runner.cleanup()


async def test_when_every_connection_is_busy_the_newcomer_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    app = web.Application()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    app.router.add_get("/", slow)
    runner = guard.GuardedRunner(app, access_log=None)
    await runner.setup()
    assert isinstance(runner.server, guard.GuardedServer)
    runner.server.limit = 2
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        busy = [asyncio.create_task(get(port)) for _ in range(2)]
        await until(lambda: len(server(runner)._spoke) == 2)  # both requests in progress
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed(reader), "no room: the newcomer is closed, the requests in progress are kept"
        writer.close()
        release.set()
        assert all(a.endswith(b"done") for a in await asyncio.gather(*busy))
    finally:
        await runner.cleanup()


async def test_a_connection_without_a_request_head_in_time_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "IDLE_TIMEOUT", 0.3)
    runner, port = await serve(limit=100)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")
        started = asyncio.get_running_loop().time()
        assert await closed(reader, timeout=5)
        assert 0.25 <= asyncio.get_running_loop().time() - started < 3
        writer.close()
        assert (await get(port)).startswith(b"HTTP/1.1 200"), "a prompt client is served"
    finally:
        await runner.cleanup()


async def test_an_oversized_header_is_refused_and_logged_once_without_a_traceback(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    runner, port = await serve(limit=100)
    try:
        with caplog.at_level(logging.DEBUG, logger="lookout.web.server"):
            for _ in range(3):
                answer = await get(port, b"X-Big: " + b"a" * (guard.MAX_FIELD + 1) + b"\r\n")
                assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:80]
            many = b"".join(b"X-%d: 1\r\n" % i for i in range(guard.MAX_HEADERS + 1))
            assert (await get(port, many))[:12] in (b"HTTP/1.0 400", b"HTTP/1.1 400")
            assert (await get(port, b"X-Fine: " + b"a" * 4000 + b"\r\n")).startswith(b"HTTP/1.1 200")
    finally:
        await runner.cleanup()
    records = [r for r in caplog.records if r.name == "lookout.web.server"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].getMessage() == "http_bad_request" and records[0].exc_info is None
    assert records[0].levelname == "WARNING" and "LineTooLong" in records[0].__dict__["error"]

"""The HTTP listener's limits against hostile or broken clients (issue #15), on aiohttp's own server.

- Connections: at most ``MAX_CONNECTIONS`` at once. One more evicts the oldest connection that has not yet sent a
  whole request head (a slow-loris client, or one that never speaks); when every connection is serving a request
  (scrapes, ``/logs`` streams), the newcomer is closed instead. So file descriptors and memory stay bounded, and a
  scrape still gets in while slow clients hold the rest.
- Time: a connection must send its first request head within ``IDLE_TIMEOUT`` (a timer here: aiohttp before 3.14
  waits for ever), and an idle keep-alive connection its next one (aiohttp's ``keepalive_timeout``, an hour by
  default).
- Size: a request line or header field over ``MAX_FIELD`` bytes, or more than ``MAX_HEADERS`` headers, is answered
  400 and the connection closed (aiohttp stops reading there: a 10 MB header costs 8 KiB); request bodies are capped
  by the application's ``client_max_size``.
- Noise: aiohttp logs every malformed request with a traceback; such records are cut to one line without the
  traceback, and to one a minute, so a client cannot flood the agent's log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

MAX_CONNECTIONS = 256
IDLE_TIMEOUT = 15.0  # seconds for a request head, and between requests on a keep-alive connection
MAX_FIELD = 8190  # bytes of a request line or a header field (aiohttp's default)
MAX_HEADERS = 32
NOTICE_INTERVAL = 60.0  # seconds between two log lines about the limits or malformed requests

log = logging.getLogger("lookout.web.server")


class _BadRequestNoise(logging.Filter):
    """aiohttp's "Error handling request" records for malformed requests: one line, no traceback, one a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = time.monotonic()
        if now - self._last < NOTICE_INTERVAL:
            self._dropped += 1
            return False
        self._last = now
        record.msg = "http_bad_request"
        record.args = ()
        record.exc_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.__dict__["error"] = f"{type(exc).__name__}: {str(exc).strip()[:160]}"
        record.__dict__["since_last"] = self._dropped
        self._dropped = 0
        return True


log.addFilter(_BadRequestNoise())


class GuardedServer(web.Server):
    """aiohttp's server with the connection limit (see the module docstring)."""

    limit = MAX_CONNECTIONS

    def guard(self) -> GuardedServer:
        self._open: dict[RequestHandler, asyncio.Transport] = {}  # oldest first
        self._spoke: set[RequestHandler] = set()  # connections that sent a whole request head
        self._deadlines: dict[RequestHandler, asyncio.TimerHandle] = {}
        self._last_notice = 0.0
        self._limited = 0
        make_request = self.request_factory

        def request_factory(message: Any, payload: Any, protocol: RequestHandler, writer: Any,
                            task: asyncio.Task[None]) -> web.BaseRequest:
            self._spoke.add(protocol)
            deadline = self._deadlines.pop(protocol, None)
            if deadline is not None:
                deadline.cancel()
            return make_request(message, payload, protocol, writer, task)

        self.request_factory = request_factory
        return self

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._open[handler] = transport
        self._deadlines[handler] = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._head_due, handler)
        if len(self._open) <= self.limit:
            return
        victim = next((h for h in self._open if h not in self._spoke), handler)
        self._open[victim].abort()  # connection_lost follows and forgets it
        self._limited += 1
        now = time.monotonic()
        if now - self._last_notice >= NOTICE_INTERVAL:
            self._last_notice = now
            log.warning("http_connections_limited", extra={
                "limit": self.limit, "closed": self._limited,
                "which": "a connection without a request head" if victim is not handler else "the new connection"})
            self._limited = 0

    def _head_due(self, handler: RequestHandler) -> None:
        self._deadlines.pop(handler, None)
        transport = self._open.get(handler)
        if transport is not None and handler not in self._spoke:
            transport.abort()  # no whole request head within IDLE_TIMEOUT

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)
        self._spoke.discard(handler)
        deadline = self._deadlines.pop(handler, None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(handler, exc)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a ``GuardedServer`` with the time and size limits."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", IDLE_TIMEOUT)
        kwargs.setdefault("max_line_size", MAX_FIELD)
        kwargs.setdefault("max_field_size", MAX_FIELD)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        kwargs.setdefault("logger", log)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server itself (Application._make_handler); the subclass only adds the connection limit
        # to that very object.
        server.__class__ = GuardedServer
        assert isinstance(server, GuardedServer)
        return server.guard()

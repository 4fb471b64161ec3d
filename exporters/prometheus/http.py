"""HTTP surface: /metrics (text or OpenMetrics by Accept, gzip when asked), /healthz, /, /api/v1/containers.

The latest rendered snapshot is held by ``Exposition``; a scrape copies cached bytes (compressed
once per snapshot and format) and appends the agent's own small self-metrics.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable

import orjson
from aiohttp import web
from isal import igzip, isal_zlib
from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition

from agent.model import Snapshot

GZIP_WBITS = 16 + 15  # a gzip header and trailer around the deflate stream
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OM_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def compress_chunks(chunks: Iterable[str]) -> bytes:
    """One gzip member from text chunks, compressed as they come (ISA-L: ~6x zlib's speed at level 1)."""
    comp = isal_zlib.compressobj(1, isal_zlib.DEFLATED, GZIP_WBITS)
    parts = [comp.compress(chunk.encode()) for chunk in chunks]
    parts.append(comp.flush())
    return b"".join(parts)


class Exposition:
    """The latest snapshot and its rendered forms, swapped in whole by the housekeeping task.

    Only the gzip-compressed exposition is kept (a 1,000-container host's text is ~36 MB, its gzip ~4
    MB); Prometheus always asks for gzip, and other clients get it decompressed on the fly.
    OpenMetrics is rendered on its first request per snapshot and kept the same way.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.snapshot: Snapshot | None = None
        self._gzip: dict[bool, bytes] = {}
        self._render: Callable[[Snapshot, bool], Iterable[str]] | None = None
        self._lock = threading.Lock()

    def publish(self, snapshot: Snapshot, render: Callable[[Snapshot, bool], Iterable[str]]) -> None:
        """Render and compress the text exposition of ``snapshot`` (in the caller's thread), then swap."""
        body = compress_chunks(render(snapshot, False))
        with self._lock:
            self.snapshot = snapshot
            self._gzip = {False: body}
            self._render = render

    def _compressed(self, openmetrics: bool) -> bytes:
        with self._lock:
            body = self._gzip.get(openmetrics)
            if body is None:
                if self._render is None or self.snapshot is None:
                    return b""
                body = self._gzip[openmetrics] = compress_chunks(self._render(self.snapshot, openmetrics))
            return body

    def body(self, openmetrics: bool, compress: bool) -> bytes:
        """Container metrics (cached) + self metrics; gzip members concatenate into one valid stream."""
        cached = self._compressed(openmetrics)
        if openmetrics:
            own = om_exposition.generate_latest(self.registry)  # ends with "# EOF\n"
        else:
            own = text_exposition.generate_latest(self.registry)
        if compress:
            return cached + igzip.compress(own, 1)
        return (isal_zlib.decompress(cached, GZIP_WBITS) if cached else b"") + own


EXPOSITION = web.AppKey("exposition", Exposition)

LANDING = """<!doctype html>
<html><head><title>Lookout</title></head>
<body><h1>Lookout</h1><p>Container metrics and log shipping agent, version {version}.</p>
<ul>
<li><a href="/metrics">/metrics</a> &mdash; Prometheus metrics (cAdvisor names and labels)</li>
<li><a href="/api/v1/containers">/api/v1/containers</a> &mdash; containers with metadata and latest stats</li>
<li><a href="/healthz">/healthz</a> &mdash; health check</li>
</ul></body></html>
"""


def accepts(header: str, token: str) -> bool:
    """True if an Accept or Accept-Encoding header lists ``token`` with a non-zero quality."""
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if name.lower() != token:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


async def metrics(request: web.Request) -> web.Response:
    exposition = request.app[EXPOSITION]
    openmetrics = accepts(request.headers.get("Accept", ""), "application/openmetrics-text")
    compress = accepts(request.headers.get("Accept-Encoding", ""), "gzip")
    body = await asyncio.to_thread(exposition.body, openmetrics, compress)
    headers = {"Content-Type": OM_TYPE if openmetrics else TEXT_TYPE}
    if compress:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def landing(request: web.Request) -> web.Response:
    from agent import __version__

    return web.Response(text=LANDING.format(version=__version__), content_type="text/html")


def _containers_json(snapshot: Snapshot | None) -> bytes:
    if snapshot is None:
        return b'{"timestamp":null,"containers":[]}'
    containers = [{"info": s.info, "stats": s.stats} for s in snapshot.containers]
    return orjson.dumps({"timestamp": snapshot.timestamp, "machine": snapshot.machine, "containers": containers})


async def containers(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(_containers_json, request.app[EXPOSITION].snapshot)
    return web.Response(body=body, content_type="application/json")


def make_app(exposition: Exposition) -> web.Application:
    app = web.Application()
    app[EXPOSITION] = exposition
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", landing)
    app.router.add_get("/api/v1/containers", containers)
    return app

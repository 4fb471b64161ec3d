"""HTTP surface: /metrics (text or OpenMetrics by Accept, gzip when asked), /healthz (liveness), /readyz
(readiness), /, /api/v1/containers.

The latest rendered snapshot is held by ``Exposition`` (``exporters.prometheus.exposition``); a scrape copies
cached bytes and appends the agent's own small self-metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from aiohttp import web
from isal import igzip

from agent.model import Snapshot
from exporters.prometheus.exposition import (
    OM_TYPE,
    TEXT_TYPE,
    Compressed,
    Exposition,
    compress_chunks,
    decompress_pieces,
)

__all__ = ["Compressed", "Exposition", "compress_chunks", "decompress_pieces", "make_app"]

EXPOSITION = web.AppKey("exposition", Exposition)
# What is broken in the agent, by part: e.g. a route stopped by a bug in its sink -> why. Empty while healthy.
Problems = Callable[[], dict[str, str]]
PROBLEMS: web.AppKey[Problems] = web.AppKey("problems")
# The cached gzip body goes to the socket at most this much at a time: what the socket does not take at once is
# copied into the transport's buffer, so a write of a whole ~4 MB body could hold a second copy of it.
WRITE_PIECE = 1 << 18

LANDING = """<!doctype html>
<html><head><title>Lookout</title></head>
<body><h1>Lookout</h1><p>Container metrics and log shipping agent, version {version}.</p>
<ul>
<li><a href="/metrics">/metrics</a> &mdash; Prometheus metrics (cAdvisor names and labels)</li>
<li><a href="/api/v1/containers">/api/v1/containers</a> &mdash; containers with metadata and latest stats</li>
<li><a href="/healthz">/healthz</a> &mdash; liveness: the agent runs</li>
<li><a href="/readyz">/readyz</a> &mdash; readiness: 503 naming what is broken (a route stopped by a bug)</li>
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


async def metrics(request: web.Request) -> web.StreamResponse:
    """The cached gzip body and the self-metrics, written one after the other: a gzip scrape never
    joins them into a new 4 MB object, and a plain one is decompressed a megabyte at a time."""
    exposition = request.app[EXPOSITION]
    openmetrics = accepts(request.headers.get("Accept", ""), "application/openmetrics-text")
    compress = accepts(request.headers.get("Accept-Encoding", ""), "gzip")
    exposition.asked(openmetrics)
    cached = exposition.ready(openmetrics)
    if cached is None:  # being published, or a format not rendered ahead: wait or render in a thread
        cached = await asyncio.to_thread(exposition.compressed, openmetrics)
    own = exposition.own(openmetrics)
    headers = {"Content-Type": OM_TYPE if openmetrics else TEXT_TYPE}
    if compress:
        headers["Content-Encoding"] = "gzip"
        own = igzip.compress(own, 1)
        length = (cached.size if cached else 0) + len(own)
    else:
        length = (cached.text_bytes if cached else 0) + len(own)
    response = web.StreamResponse(headers=headers)
    response.content_length = length
    await response.prepare(request)
    if request.method != "HEAD":
        if cached is not None:
            if compress:
                for part in cached.parts:
                    view = memoryview(part)
                    for start in range(0, len(view), WRITE_PIECE):
                        await response.write(view[start:start + WRITE_PIECE])
            else:
                for piece in decompress_pieces(cached.parts):
                    await response.write(piece)
        await response.write(own)
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 ``ok`` while the agent runs (a task that dies of a bug stops it, agent.runtime)."""
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 ``ready``; 503 with a line per broken part (a route stopped by a bug in its sink)."""
    problems = request.app[PROBLEMS]()
    if not problems:
        return web.Response(text="ready")
    text = "".join(f"failed: {part}: {why}\n" for part, why in sorted(problems.items()))
    return web.Response(status=503, text=text)


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


def make_app(exposition: Exposition, problems: Problems = dict) -> web.Application:
    app = web.Application()
    app[EXPOSITION] = exposition
    app[PROBLEMS] = problems
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", landing)
    app.router.add_get("/api/v1/containers", containers)
    return app

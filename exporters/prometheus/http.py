"""/metrics (text or OpenMetrics by Accept, gzip when asked), /healthz (liveness) and /readyz (readiness); the
rest of the web app is exporters.web.

The latest rendered snapshot is held by ``Exposition`` (``exporters.prometheus.exposition``); a scrape copies
cached bytes and appends the agent's own small self-metrics.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from isal import igzip

from exporters.prometheus.exposition import (
    OM_TYPE,
    TEXT_TYPE,
    Compressed,
    Exposition,
    compress_chunks,
    decompress_pieces,
)
from exporters.web.keys import EXPOSITION, LIVE

__all__ = ["Compressed", "Exposition", "add_routes", "compress_chunks", "decompress_pieces"]

# The cached gzip body goes to the socket at most this much at a time: what the socket does not take at once is
# copied into the transport's buffer, so a write of a whole ~4 MB body could hold a second copy of it.
WRITE_PIECE = 1 << 18

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
    problems = request.app[LIVE].problems()
    if not problems:
        return web.Response(text="ready")
    text = "".join(f"failed: {part}: {why}\n" for part, why in sorted(problems.items()))
    return web.Response(status=503, text=text)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

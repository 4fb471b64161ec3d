"""The status page at ``/``."""

from __future__ import annotations

from aiohttp import web

LANDING = """<!doctype html>
<html><head><title>Lookout</title></head>
<body><h1>Lookout</h1><p>Container metrics and log shipping agent, version {version}.</p>
<ul>
<li><a href="/metrics">/metrics</a> &mdash; Prometheus metrics (cAdvisor names and labels)</li>
<li><a href="/api/v1/containers">/api/v1/containers</a> &mdash; containers with metadata and latest stats</li>
<li><a href="/routes">/routes</a> &mdash; log routes with their state and lag</li>
<li><a href="/healthz">/healthz</a> &mdash; liveness: the agent runs</li>
<li><a href="/readyz">/readyz</a> &mdash; readiness: 503 naming what is not ready</li>
</ul></body></html>
"""


async def landing(request: web.Request) -> web.Response:
    from agent import __version__

    return web.Response(text=LANDING.format(version=__version__), content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", landing)

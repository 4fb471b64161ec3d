"""The agent's one web application: /metrics, /healthz, /readyz (exporters.prometheus.http), the API
(exporters.web.api), cAdvisor's REST API (exporters.web.cadvisor), the live log stream (exporters.web.stream) and
the status page (exporters.web.status)."""

from __future__ import annotations

from aiohttp import web

from agent.model import LiveSurface
from exporters.prometheus import http as prometheus_http
from exporters.prometheus.exposition import Exposition
from exporters.web import api, cadvisor, status, stream
from exporters.web.keys import EXPOSITION, LIVE


def make_app(exposition: Exposition, live: LiveSurface | None = None) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[EXPOSITION] = exposition
    app[LIVE] = live or LiveSurface()
    prometheus_http.add_routes(app)
    api.add_routes(app)
    cadvisor.add_routes(app)
    stream.add_routes(app)
    status.add_routes(app)
    return app

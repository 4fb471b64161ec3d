"""The web app's shared state, by aiohttp application key."""

from __future__ import annotations

from aiohttp import web

from agent.model import LiveSurface
from exporters.prometheus.exposition import Exposition

EXPOSITION = web.AppKey("exposition", Exposition)
LIVE = web.AppKey("live", LiveSurface)

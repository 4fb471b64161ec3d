"""The JSON API: containers (open, like /metrics) and routes (listing open; changes need the token). docs/API.md."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from agent.model import ApiError, ContainerSample, Snapshot
from exporters.web.auth import guarded
from exporters.web.keys import EXPOSITION, LIVE

MAX_BODY = 64 << 10  # a route is one URI


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def container_entry(sample: ContainerSample, rates: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    return {"info": sample.info, "stats": sample.stats, "rates": rates.get(sample.info.cgroup)}


def _containers_json(snapshot: Snapshot | None, rates: dict[str, dict[str, float | None]]) -> bytes:
    if snapshot is None:
        return b'{"timestamp":null,"machine":null,"containers":[]}'
    containers = [container_entry(s, rates) for s in snapshot.containers]
    return orjson.dumps({"timestamp": snapshot.timestamp, "machine": snapshot.machine, "containers": containers})


async def containers(request: web.Request) -> web.Response:
    """Every container of the last collection: metadata, stats and rates."""
    rates = request.app[LIVE].rates()
    body = await asyncio.to_thread(_containers_json, request.app[EXPOSITION].snapshot, rates)
    return web.Response(body=body, content_type="application/json")


def find_container(snapshot: Snapshot | None, key: str) -> ContainerSample:
    """By full id, a unique id prefix of 4+ characters, a name, or a cgroup path; ApiError 404/409 otherwise."""
    if snapshot is None:
        raise ApiError(404, f"no container {key!r}: nothing collected yet")
    named = [s for s in snapshot.containers if key in (s.info.container_id, s.info.name, s.info.cgroup)]
    if not named and len(key) >= 4:
        named = [s for s in snapshot.containers if s.info.container_id.startswith(key)]
    if not named:
        raise ApiError(404, f"no container {key!r} (give its id, a unique id prefix of 4+ characters, or its name)")
    if len(named) > 1:
        ids = ", ".join(s.info.container_id[:12] or s.info.cgroup for s in named[:5])
        raise ApiError(409, f"{key!r} names {len(named)} containers ({ids}): give more of the id")
    return named[0]


async def container(request: web.Request) -> web.Response:
    """One container."""
    try:
        sample = find_container(request.app[EXPOSITION].snapshot, request.match_info["key"])
    except ApiError as exc:
        return error(exc.status, str(exc))
    return json_response(container_entry(sample, request.app[LIVE].rates()))


async def list_routes(request: web.Request) -> web.Response:
    """Every route with its state, lag, rates and counters."""
    return json_response({"routes": request.app[LIVE].routes()})


@guarded
async def add_route(request: web.Request) -> web.Response:
    """Add a route at run time: ``{"uri": ..., "id"?: ...}``."""
    control = request.app[LIVE].control
    if control is None:
        return error(503, "routes cannot be changed in this agent")
    if request.content_length is not None and request.content_length > MAX_BODY:
        return error(413, f"the body is over {MAX_BODY} bytes")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return error(400, f"the body is not JSON: {exc}")
    if not isinstance(body, dict) or not isinstance(body.get("uri"), str):
        return error(400, 'the body must be a JSON object with a "uri" string (and an optional "id" string)')
    route_id = body.get("id")
    if route_id is not None and not isinstance(route_id, str):
        return error(400, '"id" must be a string')
    unknown = sorted(set(body) - {"uri", "id"})
    if unknown:
        return error(400, f"unknown field(s) {', '.join(unknown)}: the body has \"uri\" and an optional \"id\"")
    try:
        entry = await control.add(body["uri"], route_id)
    except ApiError as exc:
        return error(exc.status, str(exc))
    return json_response(entry, 201)


@guarded
async def remove_route(request: web.Request) -> web.Response:
    """Remove a route added over the API."""
    control = request.app[LIVE].control
    if control is None:
        return error(503, "routes cannot be changed in this agent")
    try:
        await control.remove(request.match_info["id"])
    except ApiError as exc:
        return error(exc.status, str(exc))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/containers", containers)
    app.router.add_get("/api/v1/containers/{key:.+}", container)
    app.router.add_get("/routes", list_routes)
    app.router.add_post("/routes", add_route)
    app.router.add_delete("/routes/{id:.+}", remove_route)

"""cAdvisor's REST API, the parts tools use, with cAdvisor's JSON field names (docs/API.md "cAdvisor's REST API").

``/api/v1.{0-3}/containers/<name>``, ``/api/v1.{1-3}/subcontainers/<name>``, ``/api/v1.{2,3}/docker/<id or name>``,
``/api/v1.{0-3}/machine``, ``/api/v2.0/spec/<id>``, ``/api/v2.0/stats/<id>`` and ``/api/v2.0/machine``.

The answers are built by the pure functions of exporters.web.cadvisor_json (cAdvisor's Go structs as dicts, with
Go's ``encoding/json`` rules). Containers are selected as cAdvisor's manager does (``lib/manager/manager.go``:
``type=name|docker|podman``, ``recursive``, ``count``).

What Lookout does not measure is left out, never written as a made-up zero: the list is in docs/API.md. Lookout keeps
no history (cAdvisor's ``--storage_duration``): every container has at most one sample, the latest collection's.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from agent.model import (
    ApiError,
    ContainerSample,
    Runtime,
    Snapshot,
)
from exporters.web.cadvisor_json import NAMESPACES, container_info_v1, machine_info, spec_v2, stats_v2, subcontainers
from exporters.web.keys import EXPOSITION, LIVE

DEFAULT_COUNT = 64  # cmd/internal/api/versions.go GetRequestOptions
DEFAULT_NUM_STATS = 60  # info/v1 DefaultContainerInfoRequest

ID_TYPES = {"name": None, "docker": Runtime.DOCKER, "podman": Runtime.PODMAN}

Rates = dict[str, dict[str, float | None]]


# --- selection, as cAdvisor's manager ---------------------------------------------------------------------------------


def container_name(tail: str) -> str:
    """The container name in a request path, as cAdvisor's ``getContainerName`` (``path.Join("/", ...)``)."""
    return posixpath.normpath("/" + tail.strip("/"))


@dataclass(frozen=True, slots=True)
class Options:
    """``v2.RequestOptions`` from the query (cmd/internal/api/versions.go ``GetRequestOptions``)."""

    id_type: str = "name"
    count: int = DEFAULT_COUNT
    recursive: bool = False

    @staticmethod
    def parse(query: Mapping[str, str]) -> Options:
        id_type = query.get("type") or "name"
        if id_type not in ID_TYPES:
            raise ApiError(400, f"unknown 'type' {id_type!r}: name, docker or podman")
        count = DEFAULT_COUNT
        raw = query.get("count")
        if raw:
            try:
                count = int(raw)
            except ValueError:
                raise ApiError(400, f"failed to parse 'count' option: {raw!r}") from None
            if count < -1:
                raise ApiError(400, f"invalid 'count' option: only -1 and larger values allowed, not {count}")
        return Options(id_type, count, query.get("recursive") == "true")

    @property
    def samples(self) -> int:
        """How many samples each container gets: Lookout has one, the latest (count -1 means all)."""
        return 0 if self.count == 0 else 1


def _need(snapshot: Snapshot | None) -> Snapshot:
    if snapshot is None:
        raise ApiError(503, "nothing collected yet: ask again after the first housekeeping cycle")
    return snapshot


def by_name(snapshot: Snapshot, name: str, recursive: bool) -> list[ContainerSample]:
    """The container of that name, or with ``recursive`` it and every container below it."""
    if recursive:
        prefix = "/" if name == "/" else name + "/"
        found = [s for s in snapshot.containers if s.info.cgroup == name or s.info.cgroup.startswith(prefix)]
    else:
        found = [s for s in snapshot.containers if s.info.cgroup == name]
    if not found:
        raise ApiError(404, f"unknown container {name!r}")
    return found


def namespaced(snapshot: Snapshot, runtime: Runtime, name: str, recursive: bool) -> list[ContainerSample]:
    """Containers of one runtime (cAdvisor's namespace) by alias: the container name or id, exactly, else a unique
    prefix of either; with ``recursive`` (only for ``/``) all of them."""
    members = [s for s in snapshot.containers if s.info.runtime is runtime and s.info.container_id]
    namespace = NAMESPACES[runtime]
    if recursive:
        if name != "/":
            raise ApiError(400, f"invalid request for {namespace} container {name!r} with subcontainers: "
                                "recursive is for all of them (no name)")
        return members
    key = name.lstrip("/")
    exact = [s for s in members if key in (s.info.name, s.info.container_id)]
    if exact:
        return exact[:1]
    found = [s for s in members if s.info.name.startswith(key) or s.info.container_id.startswith(key)]
    if not found:
        raise ApiError(404, f"unable to find container {key!r} in {namespace!r} namespace")
    if len(found) > 1:
        raise ApiError(409, f"container {key!r} is not unique in {namespace!r} namespace ({len(found)} match)")
    return found


def select(snapshot: Snapshot, name: str, options: Options) -> list[ContainerSample]:
    runtime = ID_TYPES[options.id_type]
    if runtime is None:
        return by_name(snapshot, name, options.recursive)
    return namespaced(snapshot, runtime, name, options.recursive)


def v1_container(snapshot: Snapshot | None, name: str, samples: int) -> dict[str, Any]:
    """/api/v1.x/containers/<name>: one ``ContainerInfo``."""
    snap = _need(snapshot)
    return container_info_v1(by_name(snap, name, False)[0], snap, samples)


def v1_subcontainers(snapshot: Snapshot | None, name: str, samples: int) -> list[dict[str, Any]]:
    """/api/v1.1+/subcontainers/<name>: the container and all below it, a list of ``ContainerInfo``."""
    snap = _need(snapshot)
    children = subcontainers(snap)
    return [container_info_v1(s, snap, samples, children) for s in by_name(snap, name, True)]


def v1_docker(snapshot: Snapshot | None, key: str, samples: int) -> dict[str, Any]:
    """/api/v1.2+/docker/<id or name, or nothing for all>: ``ContainerInfo`` by container name."""
    snap = _need(snapshot)
    found = namespaced(snap, Runtime.DOCKER, "/", True) if key == "" else namespaced(snap, Runtime.DOCKER, key, False)
    children = subcontainers(snap)
    return {s.info.cgroup: container_info_v1(s, snap, samples, children)
            for s in sorted(found, key=lambda s: s.info.cgroup)}


def v2_stats(snapshot: Snapshot | None, rates: Rates, name: str, options: Options) -> dict[str, Any]:
    """/api/v2.0/stats/<id>: samples by container name."""
    found = select(_need(snapshot), name, options)
    return {s.info.cgroup: [stats_v2(s, rates.get(s.info.cgroup))] if options.samples else []
            for s in sorted(found, key=lambda s: s.info.cgroup)}


def v2_spec(snapshot: Snapshot | None, name: str, options: Options) -> dict[str, Any]:
    """/api/v2.0/spec/<id>: ``v2.ContainerSpec`` by container name."""
    snap = _need(snapshot)
    found = select(snap, name, options)
    return {s.info.cgroup: spec_v2(s, snap.machine) for s in sorted(found, key=lambda s: s.info.cgroup)}


# --- HTTP ---------------------------------------------------------------------------------------------------------


def _error(exc: ApiError) -> web.Response:
    # cAdvisor answers its API errors as plain text (http.Error); so does Lookout, with the status that fits.
    return web.Response(text=f"{exc}\n", status=exc.status, content_type="text/plain")


async def _answer(build: Callable[[], Any]) -> web.Response:
    """Build and serialize in a worker thread: an answer for every container of a large host is megabytes."""
    try:
        body = await asyncio.to_thread(lambda: orjson.dumps(build()))
    except ApiError as exc:
        return _error(exc)
    return web.Response(body=body, content_type="application/json")


async def _num_stats(request: web.Request) -> int:
    """v1's optional JSON body (``ContainerInfoRequest``): ``num_stats`` (default 60) is honoured as 0 or 1 sample;
    ``start``/``end`` select nothing more (Lookout has only the latest sample)."""
    if not request.can_read_body:
        return 1
    raw = await request.content.read(64 << 10)
    if not raw.strip():
        return 1
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"unable to decode the json value: {exc}") from None
    num = body.get("num_stats", DEFAULT_NUM_STATS) if isinstance(body, dict) else DEFAULT_NUM_STATS
    if not isinstance(num, int):
        raise ApiError(400, "num_stats must be a number")
    return 0 if num == 0 else 1


async def containers_v1(request: web.Request) -> web.Response:
    try:
        samples = await _num_stats(request)
    except ApiError as exc:
        return _error(exc)
    snapshot, name = request.app[EXPOSITION].snapshot, container_name(request.match_info["tail"])
    if request.match_info["what"] == "subcontainers":
        return await _answer(lambda: v1_subcontainers(snapshot, name, samples))
    return await _answer(lambda: v1_container(snapshot, name, samples))


async def docker_v1(request: web.Request) -> web.Response:
    try:
        samples = await _num_stats(request)
    except ApiError as exc:
        return _error(exc)
    parts = [p for p in request.match_info["tail"].split("/") if p]
    if len(parts) > 1:
        return _error(ApiError(400, f"unknown request for Docker container {parts}"))
    snapshot = request.app[EXPOSITION].snapshot
    return await _answer(lambda: v1_docker(snapshot, parts[0] if parts else "", samples))


async def machine(request: web.Request) -> web.Response:
    try:
        data = machine_info(_need(request.app[EXPOSITION].snapshot))
    except ApiError as exc:
        return _error(exc)
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def v2(request: web.Request) -> web.Response:
    try:
        options = Options.parse(request.query)
    except ApiError as exc:
        return _error(exc)
    snapshot, name = request.app[EXPOSITION].snapshot, container_name(request.match_info["tail"])
    if request.match_info["what"] == "stats":
        rates = request.app[LIVE].rates()
        return await _answer(lambda: v2_stats(snapshot, rates, name, options))
    return await _answer(lambda: v2_spec(snapshot, name, options))


SERVED = ("/api/v1.0-v1.3/containers/<name>, /api/v1.1-v1.3/subcontainers/<name>, /api/v1.2-v1.3/docker/<id>, "
          "/api/v1.0-v1.3/machine, /api/v2.0/spec/<id>, /api/v2.0/stats/<id>, /api/v2.0/machine")


async def not_served(request: web.Request) -> web.Response:
    return _error(ApiError(404, f"Lookout does not serve {request.path}; of cAdvisor's REST API it serves {SERVED} "
                                "(docs/API.md)"))


def add_routes(app: web.Application) -> None:
    tail = "{tail:(?:/.*)?}"
    app.router.add_get(r"/api/{version:v1\.[0-3]}/machine", machine)
    app.router.add_get(r"/api/v2.0/machine", machine)
    app.router.add_get(r"/api/{version:v1\.[0-3]}/{what:containers}" + tail, containers_v1)
    app.router.add_get(r"/api/{version:v1\.[1-3]}/{what:subcontainers}" + tail, containers_v1)
    app.router.add_get(r"/api/{version:v1\.[23]}/docker" + tail, docker_v1)
    app.router.add_get(r"/api/v2.0/{what:stats|spec}" + tail, v2)
    app.router.add_get(r"/api/{version:v[0-9]+\.[0-9]+}{tail:.*}", not_served)

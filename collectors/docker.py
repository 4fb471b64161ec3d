"""Docker metadata: the Engine API over its unix socket (with the event stream), else config.v2.json on disk.

The API path keeps ``containers`` current from ``/events``; when the socket is absent or the
daemon restarts (the event stream fails or just ends), the outage is logged once, the disk files take
over, and the API is retried with backoff (from its shortest again after a connection that had worked);
once it answers, the containers are listed again and the events followed again
(``docker_api_available``). Both paths produce the same ``ContainerInfo`` template (no cgroup) per
container id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from agent.model import ContainerInfo, Runtime

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger("lookout.docker")

_HEALTH = {"healthy": 1, "starting": 0, "unhealthy": 0}
# How long, and for how many containers at most, a removed container's metadata is kept for its last log lines.
REMOVED_KEEP = 300.0
REMOVED_MAX = 2000


def parse_time(text: str | None) -> float | None:
    """Docker's RFC 3339 with nanoseconds (``2026-11-28T04:14:51.685761325Z``); zero time is None."""
    if not text or text.startswith("0001-01-01"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    tz = ""
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, off = frac.partition(sign)
            tz = sign + off
    if not frac and len(main) > 19:
        main, tz = main[:19], main[19:]
    try:
        base = datetime.fromisoformat(main + (tz or "+00:00"))
    except ValueError:
        return None
    return base.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)


def filter_env(env: Sequence[str] | None, prefixes: Sequence[str]) -> dict[str, str]:
    if not env or not prefixes:
        return {}
    out = {}
    for item in env:
        key, _, value = item.partition("=")
        if key.startswith(tuple(prefixes)):
            out[key] = value
    return out


def ships_logs(labels: dict[str, str], env: Sequence[str] | None) -> bool:
    """False for a container labelled ``lookout.logs=false`` or with ``LOGSPOUT=ignore`` in its environment."""
    return str(labels.get("lookout.logs", "true")).lower() not in ("false", "0", "no") and not any(
        item.partition("=")[0] == "LOGSPOUT" and item.partition("=")[2].lower() == "ignore" for item in env or ()
    )


def network_mode(container_dir: str) -> str:
    """The ``NetworkMode`` of a container's ``hostconfig.json``; "" when the file is missing or damaged (only the
    network mode is lost then, never the rest of the container's metadata)."""
    try:
        with open(f"{container_dir}/hostconfig.json", "rb") as fh:
            host = orjson.loads(fh.read())
    except (OSError, orjson.JSONDecodeError):
        return ""
    mode = host.get("NetworkMode", "") if isinstance(host, dict) else ""
    return mode if isinstance(mode, str) else ""


def info_from_inspect(data: dict[str, Any], env_prefixes: Sequence[str], rw_layer: str = "",
                      network_mode: str | None = None) -> ContainerInfo:
    """A ``ContainerInfo`` template from an inspect document (API or config.v2.json: same shape)."""
    config = data.get("Config") or {}
    state = data.get("State") or {}
    labels = config.get("Labels") or {}
    if network_mode is None:
        network_mode = (data.get("HostConfig") or {}).get("NetworkMode", "")
    health = (state.get("Health") or {}).get("Status")
    ship_logs = ships_logs(labels, config.get("Env"))
    container = labels.get("io.kubernetes.container.name", "")
    # Kubernetes via Docker: only the sandbox ("POD") owns the pod's network namespace.
    owns_network = not (network_mode or "").startswith("container:") and (
        not container or container == "POD" or labels.get("io.kubernetes.docker.type") == "podsandbox"
    )
    return ContainerInfo(
        cgroup="",
        runtime=Runtime.DOCKER,
        container_id=data.get("Id") or data.get("ID") or "",
        name=(data.get("Name") or "").lstrip("/"),
        image=config.get("Image") or "",
        labels=dict(labels),
        env=filter_env(config.get("Env"), env_prefixes),
        pod=labels.get("io.kubernetes.pod.name", ""),
        namespace=labels.get("io.kubernetes.pod.namespace", ""),
        container=container,
        health=_HEALTH.get(health, -1) if health else -1,
        started_at=parse_time(state.get("StartedAt")),
        created_at=parse_time(data.get("Created")),
        owns_network=owns_network,
        rw_layer=rw_layer,
        pid=int(state.get("Pid") or 0),
        log_path=data.get("LogPath") or "",
        running=bool(state.get("Running")),
        ship_logs=ship_logs,
    )


def rw_layer_dir(docker_root: Path, container_id: str, driver: str, upper_dir: str = "") -> str:
    """The container's writable layer: GraphDriver's UpperDir, else the layerdb mount id."""
    if upper_dir:
        return upper_dir
    try:
        mount_id = (docker_root / "image" / driver / "layerdb/mounts" / container_id / "mount-id").read_text()
    except OSError:
        return ""
    sub = {"vfs": "vfs/dir", "overlay2": "overlay2", "fuse-overlayfs": "fuse-overlayfs"}.get(driver, driver)
    layer = docker_root / sub / mount_id.strip()
    if driver in ("overlay2", "fuse-overlayfs"):
        layer = layer / "diff"
    return str(layer)


class DockerMetadata:
    """Container id -> ``ContainerInfo`` template, from the API when reachable, else from disk."""

    def __init__(self, docker_root: Path, socket_path: str, env_prefixes: Sequence[str],
                 on_change: Callable[[], None] | None = None) -> None:
        self.docker_root = docker_root
        self.socket_path = socket_path
        self.env_prefixes = tuple(env_prefixes)
        self.containers: dict[str, ContainerInfo] = {}
        self.version = "Unknown"
        self.api_ok = False
        self._on_change = on_change
        self._disk_mtimes: dict[str, float] = {}
        self._warned = False
        self._removed: dict[str, tuple[float, ContainerInfo]] = {}  # id -> (when removed, its last metadata)

    def get(self, container_id: str) -> ContainerInfo | None:
        return self.containers.get(container_id)

    def removed(self, container_id: str) -> ContainerInfo | None:
        """The metadata of a container removed within ``REMOVED_KEEP`` seconds (for the log path: a container
        removed right after its last lines, before a route resolved it, still ships them under its name)."""
        entry = self._removed.get(container_id)
        return entry[1] if entry is not None else None

    def _remember_removed(self, container_id: str, info: ContainerInfo) -> None:
        now = time.monotonic()
        self._removed[container_id] = (now, info)
        while self._removed:  # oldest first (insertion order): forget what is past its time, or beyond the cap
            first, (when, _) = next(iter(self._removed.items()))
            if now - when < REMOVED_KEEP and len(self._removed) <= REMOVED_MAX:
                break
            del self._removed[first]

    # --- disk fallback (runs in the housekeeping thread) ---

    def refresh_from_disk(self) -> None:
        """Read ``<docker-root>/containers/*/config.v2.json``; only changed files are parsed again."""
        if self.api_ok:
            return
        base = f"{self.docker_root}/containers"
        try:
            ids = [e.name for e in os.scandir(base) if e.is_dir()]
        except OSError:
            if self.containers:
                self.containers = {}
            return
        fresh: dict[str, ContainerInfo] = {}
        for cid in ids:
            path = f"{base}/{cid}/config.v2.json"  # strings, not Paths: this runs for every container every cycle
            try:
                mtime = os.stat(path).st_mtime
                if self._disk_mtimes.get(cid) == mtime and cid in self.containers:
                    fresh[cid] = self.containers[cid]
                    continue
                with open(path, "rb") as fh:
                    data = orjson.loads(fh.read())
            except (OSError, orjson.JSONDecodeError):
                continue  # being written or removed right now; next cycle
            if not isinstance(data, dict):
                continue
            self._disk_mtimes[cid] = mtime
            layer = rw_layer_dir(self.docker_root, cid, data.get("Driver", ""))
            fresh[cid] = info_from_inspect(data, self.env_prefixes, layer, network_mode(f"{base}/{cid}"))
        self.containers = fresh
        self._disk_mtimes = {c: m for c, m in self._disk_mtimes.items() if c in fresh}

    # --- Engine API (runs on the event loop) ---

    async def run(self) -> None:
        """Follow the Engine API forever: resync, then apply events; back off while it is unreachable."""
        if not self.socket_path:
            return
        # Imported here, not with the module: the log routes are built and shipping before the agent pays for
        # aiohttp's import (~0.1 s, see agent.runtime.serve).
        import aiohttp

        delay = 0.5
        while True:
            try:
                await self._follow()
                error = "the event stream ended (the daemon stopped or restarts)"
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                error = str(exc)
            if not self._warned:
                # Once per outage; ``docker_api_available`` says when the API and its events are back.
                log.warning("docker_api_unavailable", socket=self.socket_path, error=error,
                            fallback=str(self.docker_root / "containers"))
                self._warned = True
            if self.api_ok:  # it had worked: a restarting daemon is back in seconds, look again soon
                delay = 0.5
            self.api_ok = False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)

    async def _follow(self) -> None:
        import aiohttp

        connector = aiohttp.UnixConnector(path=self.socket_path)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            version = await self._get(session, "/version")
            self.version = version.get("Version", "Unknown")
            info = await self._get(session, "/info")
            driver = info.get("Driver", "")
            # Subscribe before listing so no event falls between the list and the stream.
            params = {"filters": orjson.dumps({"type": ["container"]}).decode()}
            async with session.get("http://docker/events", params=params) as events:
                events.raise_for_status()
                listed = await self._get(session, "/containers/json?all=1")
                fresh = {}
                for item in listed:
                    doc = await self._inspect(session, item["Id"], driver)
                    if doc is not None:
                        fresh[item["Id"]] = doc
                self.containers = fresh
                self.api_ok = True
                if self._warned:
                    # Listed again and subscribed to the events again: metadata is the API's from here on.
                    log.info("docker_api_available", socket=self.socket_path, containers=len(fresh),
                             events="resubscribed")
                    self._warned = False
                self._changed()
                async for line in events.content:
                    if line.strip():
                        await self._apply(session, orjson.loads(line), driver)

    async def _apply(self, session: aiohttp.ClientSession, event: dict[str, Any], driver: str) -> None:
        action = event.get("Action") or event.get("status") or ""
        cid = event.get("id") or (event.get("Actor") or {}).get("ID", "")
        if not cid or action.startswith(("exec_", "attach", "top", "resize", "export", "commit", "copy")):
            return
        if action == "destroy":
            gone = self.containers.pop(cid, None)
            if gone is not None:
                self._remember_removed(cid, gone)
        else:
            doc = await self._inspect(session, cid, driver)
            if doc is not None:
                self.containers[cid] = doc
        if action in ("start", "die", "destroy", "create"):
            self._changed()

    async def _inspect(self, session: aiohttp.ClientSession, cid: str, driver: str) -> ContainerInfo | None:
        import aiohttp

        try:
            data = await self._get(session, f"/containers/{cid}/json")
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:
                return None
            raise
        upper = ((data.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir", "")
        layer = await asyncio.to_thread(rw_layer_dir, self.docker_root, cid, driver, upper)
        return info_from_inspect(data, self.env_prefixes, layer)

    @staticmethod
    async def _get(session: aiohttp.ClientSession, path: str) -> Any:
        import aiohttp

        async with session.get("http://docker" + path, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())

    def _changed(self) -> None:
        if self._on_change is not None:
            with contextlib.suppress(Exception):
                self._on_change()

"""Podman and containers/storage metadata, read from their own files (no API socket needed).

- containers/storage (used by Podman and CRI-O) keeps ``<graphroot>/<driver>-containers/containers.json``: each
  container's id, names, image id and writable layer. The layer's directory is the container's writable layer
  (``overlay/<layer>/diff``, ``vfs/dir/<layer>``, ``btrfs/subvolumes/<layer>``), measured for
  ``container_fs_usage_bytes`` as cAdvisor does for Podman and CRI-O.
- libpod keeps every container's configuration (name, labels, image name, OCI spec with the environment, log
  path and driver, the container whose network namespace it joins) and state (state, pid, start time) as JSON:
  in ``<graphroot>/libpod/bolt_state.db`` (bbolt; Podman 4.x, buckets ``ctr/<id>/{config,state}``) or in
  ``<graphroot>/db.sql`` (SQLite; Podman 4.8+ optionally, 5.x by default, tables ``ContainerConfig`` and
  ``ContainerState``). Podman uses the bbolt file when it exists, so this does too.

The graph root is ``[storage] graphroot`` of ``/etc/containers/storage.conf`` (else
``/usr/share/containers/storage.conf``), else ``/var/lib/containers/storage``; it is a host path (under
``--host-root``). Rootless Podman's per-user storage is not read.

As cAdvisor's Podman handler: name, ``image`` (the name it was created from), labels (with ``restartcount``
once it restarted), env vars by the allowlist with the key lower-cased, no network series for a container that
joins another's network namespace.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from agent.model import ContainerInfo, Runtime
from collectors import bolt
from collectors.docker import filter_env, parse_time, ships_logs

log = structlog.get_logger("lookout.podman")

DEFAULT_GRAPHROOT = "/var/lib/containers/storage"
_STORAGE_CONF = ("etc/containers/storage.conf", "usr/share/containers/storage.conf")
_RUNNING = 3  # libpod's define.ContainerStateRunning
_LAYER_DIRS = {"overlay": ("overlay", "diff"), "overlay2": ("overlay", "diff"), "vfs": ("vfs/dir", ""),
               "btrfs": ("btrfs/subvolumes", "")}


def graph_root(host_root: Path) -> Path:
    """containers/storage's graph root on the host, under ``host_root``."""
    for name in _STORAGE_CONF:
        try:
            conf = tomllib.loads((host_root / name).read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
        root = (conf.get("storage") or {}).get("graphroot")
        if isinstance(root, str) and root.startswith("/"):
            return host_root / root.lstrip("/")
        break  # the first file found is the configuration, as containers/storage reads it
    return host_root / DEFAULT_GRAPHROOT.lstrip("/")


def _stamp(path: Path | str) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a file, None when it is missing: a file is read again only when this changes."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ContainerStorage:
    """containers/storage's containers: id -> (writable layer directory, storage directory, names, metadata)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dir = str(root)  # the per-cycle paths are made as strings: a Path interns its parts (write_atomic)
        self.by_id: dict[str, tuple[str, str, list[str], dict[str, Any]]] = {}
        self._stamps: dict[str, tuple[int, int, int] | None] = {}

    def refresh(self) -> None:
        """Re-read the ``*-containers/containers.json`` files that changed."""
        try:
            dirs = sorted(e.name for e in os.scandir(self.root) if e.name.endswith("-containers") and e.is_dir())
        except OSError:
            dirs = []
        stamps = {d: _stamp(f"{self._dir}/{d}/containers.json") for d in dirs}
        if stamps == self._stamps:
            return
        fresh: dict[str, tuple[str, str, list[str], dict[str, Any]]] = {}
        for d in dirs:
            driver = d[: -len("-containers")]
            try:
                with open(f"{self._dir}/{d}/containers.json", "rb") as fh:
                    entries = orjson.loads(fh.read())
            except (OSError, orjson.JSONDecodeError):
                continue
            for entry in entries if isinstance(entries, list) else ():
                if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                    continue
                cid = entry["id"]
                try:
                    meta = orjson.loads(entry.get("metadata") or "{}")
                except orjson.JSONDecodeError:
                    meta = {}
                fresh[cid] = (self.layer_dir(driver, entry.get("layer") or ""), str(self.root / d / cid),
                              list(entry.get("names") or []), meta if isinstance(meta, dict) else {})
        self.by_id, self._stamps = fresh, stamps

    def layer_dir(self, driver: str, layer: str) -> str:
        """The directory of a writable layer under a storage driver; "" for drivers without one (zfs, ...)."""
        where = _LAYER_DIRS.get(driver)
        if not layer or where is None:
            return ""
        path = self.root / where[0] / layer
        return str(path / where[1]) if where[1] else str(path)


def _libpod_rows_bolt(path: str) -> list[tuple[bytes, bytes]]:
    def visit(root: bolt.Bucket) -> list[tuple[bytes, bytes]]:
        rows = []
        ctrs = root.bucket("ctr")
        for _, bucket in ctrs.buckets() if ctrs is not None else ():
            rows.append((bucket.get("config") or b"", bucket.get("state") or b""))
        return rows

    return bolt.read(path, visit)


def _libpod_rows_sqlite(path: str) -> list[tuple[bytes, bytes]]:
    query = ("SELECT ContainerConfig.JSON, ContainerState.JSON FROM ContainerConfig "
             "LEFT JOIN ContainerState ON ContainerConfig.ID = ContainerState.ID")
    # Read-only. Where the database's directory cannot be written (a read-only --host-root mount), SQLite cannot
    # make the WAL index: then read the file as it is, without what is still only in the write-ahead log.
    for mode in ("mode=ro", "immutable=1"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?{mode}", uri=True, timeout=1.0)) as db:
                return [(_bytes(c), _bytes(s)) for c, s in db.execute(query)]
        except sqlite3.Error as exc:
            last = exc
    raise OSError(f"{path}: {last}")


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else b""


class PodmanMetadata:
    """Podman's containers by id, as ``ContainerInfo`` templates (no cgroup)."""

    def __init__(self, host_root: Path, env_prefixes: Sequence[str] = (), root: Path | None = None) -> None:
        self.root = root if root is not None else graph_root(host_root)
        self.env_prefixes = tuple(env_prefixes)
        self.storage = ContainerStorage(self.root)
        self._databases = tuple(str(self.root / name) for name in ("libpod/bolt_state.db", "db.sql"))
        self.containers: dict[str, ContainerInfo] = {}
        self._db_stamp: tuple[str, tuple[int, int, int] | None] | None = None
        self._warned = ""

    def database(self) -> str:
        """The libpod database in use: bbolt when it exists (as Podman decides), else SQLite; "" for none."""
        for path in self._databases:  # strings made once: asked every cycle (see ContainerStorage._dir)
            if os.path.isfile(path):
                return path
        return ""

    def get(self, container_id: str) -> ContainerInfo | None:
        return self.containers.get(container_id)

    def refresh(self) -> None:
        """Read the libpod database again when it (or containers.json) changed; keep the last state on errors."""
        storage_before = self.storage.by_id
        self.storage.refresh()
        path = self.database()
        stamp = (path, _stamp(path) if path else None)
        if stamp == self._db_stamp and self.storage.by_id is storage_before:
            return
        if not path:
            self.containers, self._db_stamp = {}, stamp
            return
        try:
            rows = _libpod_rows_sqlite(path) if path.endswith(".sql") else _libpod_rows_bolt(path)
        except (OSError, bolt.BoltError) as exc:
            if str(exc) != self._warned:  # logged once per distinct problem, not every cycle
                log.warning("podman_db_unreadable", path=path, error=str(exc))
                self._warned = str(exc)
            return  # the last good state stays; tried again next cycle
        self._warned = ""
        fresh = {}
        for config_raw, state_raw in rows:
            try:
                config = orjson.loads(config_raw)
                state = orjson.loads(state_raw) if state_raw else {}
            except orjson.JSONDecodeError:
                continue
            if isinstance(config, dict) and isinstance(state, dict) and config.get("id"):
                info = self.info(config, state)
                old = self.containers.get(info.container_id)
                fresh[info.container_id] = old if old == info else info  # same object: no relabelling downstream
        self.containers, self._db_stamp = fresh, stamp

    def info(self, config: dict[str, Any], state: dict[str, Any]) -> ContainerInfo:
        """A container's ``ContainerInfo`` from its libpod config and state documents."""
        cid = config["id"]
        spec = config.get("spec") or {}
        env = (spec.get("process") or {}).get("env") or []
        labels = {str(k): str(v) for k, v in (config.get("labels") or {}).items()}
        restarts = int(state.get("restartCount") or 0)
        if restarts > 0:
            labels["restartcount"] = str(restarts)
        layer, storage_dir, names, meta = self.storage.by_id.get(cid, ("", "", [], {}))
        log_path = config.get("logPath") or ""
        if (config.get("logDriver") or "k8s-file") != "k8s-file":
            log_path = ""  # journald, none, passthrough: no file of its own
        running = state.get("state") == _RUNNING
        return ContainerInfo(
            cgroup="",
            runtime=Runtime.PODMAN,
            container_id=cid,
            name=config.get("name") or (names[0] if names else ""),
            image=config.get("rootfsImageName") or meta.get("image-name") or config.get("rootfsImageID") or "",
            labels=labels,
            env={k.lower(): v for k, v in filter_env(env, self.env_prefixes).items()},
            started_at=parse_time(state.get("startedTime")),
            created_at=parse_time(config.get("createdTime")),
            owns_network=not config.get("netNsCtr"),
            rw_layer=layer,
            storage_dir=storage_dir,
            pid=int(state.get("pid") or 0) if running else 0,
            log_path=log_path,
            running=running,
            ship_logs=ships_logs(labels, env),
        )

"""Per-route, per-file acknowledged offsets, persisted atomically in the state dir.

File format (versioned JSON): ``{"version": 1, "first_start": <unix s>, "routes": {route_id:
{file_key: {"path": ..., "offset": n}}}}``. An offset only moves when the route acknowledged
every record before it, so a restart resumes at-least-once. Writes go to a temp file that is
fsynced and renamed over the old one, then the directory is fsynced.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("lookout.checkpoints")

VERSION = 1
FILENAME = "checkpoints.json"


class CheckpointStore:
    def __init__(self, state_dir: Path | None) -> None:
        """``state_dir`` None: kept in memory only (the live stream's reader: nothing to resume)."""
        self.path = state_dir / FILENAME if state_dir is not None else None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._routes: dict[str, dict[str, dict[str, Any]]] = {}
        self._dirty = False
        self.existed = False
        self.first_start = time.time()
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            # Never silently start over from the head of every file: keep the bad file for inspection.
            broken = self.path.with_suffix(f".broken-{int(time.time())}")
            log.error("checkpoints_unreadable", path=str(self.path), error=str(exc), moved_to=str(broken))
            with contextlib.suppress(OSError):
                os.replace(self.path, broken)
            self.existed = True
            return
        if not isinstance(data, dict) or data.get("version") != VERSION:
            log.error("checkpoints_unknown_version", path=str(self.path), version=data.get("version")
                      if isinstance(data, dict) else None)
            self.existed = True
            return
        self.existed = True
        self.first_start = float(data.get("first_start") or self.first_start)
        self._routes = {r: dict(files) for r, files in (data.get("routes") or {}).items()}

    def offset(self, route: str, key: str) -> int | None:
        with self._lock:
            entry = self._routes.get(route, {}).get(key)
            return None if entry is None else int(entry["offset"])

    def ack(self, route: str, key: str, path: str, offset: int, source: str = "") -> None:
        with self._lock:
            files = self._routes.setdefault(route, {})
            entry = files.get(key)
            if entry is None or entry["offset"] != offset or entry["path"] != path:
                files[key] = {"path": path, "offset": offset, "source": source}
                self._dirty = True

    def retain_sources(self, route: str, live: set[str], keep_keys: set[str]) -> None:
        """Forget entries of sources that no longer exist (their containers were removed)."""
        with self._lock:
            files = self._routes.get(route, {})
            stale = [k for k, e in files.items() if e.get("source") not in live and k not in keep_keys]
            for key in stale:
                del files[key]
            if stale:
                self._dirty = True

    def forget(self, route: str, key: str) -> None:
        with self._lock:
            if self._routes.get(route, {}).pop(key, None) is not None:
                self._dirty = True

    def forget_route(self, route: str) -> None:
        """Drop every offset of a route that was removed."""
        with self._lock:
            if self._routes.pop(route, None) is not None:
                self._dirty = True

    def routes(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            return {r: {k: dict(v) for k, v in files.items()} for r, files in self._routes.items()}

    def flush(self, force: bool = False) -> bool:
        """Write the file if anything changed; True if written. One write at a time: a flush still running in a
        thread when the pipeline's final flush begins (its task was cancelled, not its thread) would otherwise
        rename the shared temporary file away under the other."""
        with self._write_lock:
            return self._flush(force)

    def _flush(self, force: bool) -> bool:
        if self.path is None:
            return False
        with self._lock:
            if not self._dirty and not force:
                return False
            body = orjson.dumps({"version": VERSION, "first_start": self.first_start, "routes": self._routes})
            self._dirty = False
        write_atomic(self.path, body)
        return True


def write_atomic(path: Path, body: bytes) -> None:
    """Write ``path`` whole or not at all: a 0600 temporary file beside it, fsynced, renamed over it, and the
    directory fsynced (also the API routes' routes.json, agent.control)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

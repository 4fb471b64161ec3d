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
        self.set_aside: Path | None = None  # where an untrusted checkpoint file was moved at start
        self.first_start = time.time()
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:  # unreadable (EIO, EACCES): not trusted, set aside if it can be
            self._set_aside(f"cannot be read: {exc}")
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:  # truncated, overwritten, not JSON
            self._set_aside(f"not JSON: {exc}")
            return
        if not isinstance(data, dict) or data.get("version") != VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            self._set_aside(f"unknown version {version!r}" if version is not None else "not a checkpoint file")
            return
        routes = _valid_routes(data.get("routes"))
        first_start = data.get("first_start")
        if routes is None or not isinstance(first_start, int | float | None) or isinstance(first_start, bool):
            self._set_aside("malformed entries")
            return
        self.existed = True
        self.first_start = float(first_start or self.first_start)
        self._routes = routes

    def _set_aside(self, why: str) -> None:
        """A checkpoint file that cannot be trusted: renamed to ``checkpoints.json.corrupt-<unix s>`` (kept for
        inspection, never overwritten) and logged; the routes start from the head of every file (at-least-once:
        what was shipped before is shipped again, nothing is skipped)."""
        assert self.path is not None
        self.existed = True  # not a first start: --read-from tail must not skip what was never shipped
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.error("checkpoints_corrupt", path=str(self.path), why=why, moved_to=None, move_error=str(exc),
                      consequence="every file is read again from its head; the bad file will be overwritten")
            return
        self.set_aside = aside
        log.error("checkpoints_corrupt", path=str(self.path), why=why, moved_to=str(aside),
                  consequence="every file is read again from its head")

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
        try:
            write_atomic(self.path, body)
        except BaseException:
            with self._lock:
                self._dirty = True  # written by the next flush: the offsets are still only in memory
            raise
        return True


def _valid_routes(routes: object) -> dict[str, dict[str, dict[str, Any]]] | None:
    """The routes' entries when every one has the shape this module writes (a string path, an offset that is a
    non-negative int), else None: a file that parses as JSON but holds anything else is not trusted in part."""
    if routes is None:
        return {}
    if not isinstance(routes, dict):
        return None
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for route, files in routes.items():
        if not isinstance(files, dict):
            return None
        for entry in files.values():
            if (not isinstance(entry, dict) or not isinstance(entry.get("path"), str)
                    or type(entry.get("offset")) is not int or entry["offset"] < 0
                    or not isinstance(entry.get("source", ""), str)):
                return None
        out[route] = dict(files)
    return out


def write_atomic(path: Path | str, body: bytes) -> None:
    """Write ``path`` whole or not at all: a 0600 temporary file beside it, fsynced, renamed over it, and the
    directory fsynced (also the API routes' routes.json, agent.control). On any error the temporary file is
    removed and ``path`` is left as it was. The names are strings: a ``Path`` made for each write (several a second
    at a soak's pace) interns its parts, and the temporary file's name churns the interpreter's table of interned
    strings, which grows in a step of ~1 MiB once its slots are used up (tests/unit/test_interning.py)."""
    directory, name = os.path.split(os.fspath(path))
    tmp = os.path.join(directory, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(body)
        while view:  # a full file system may take only part of a write without an error: never rename a part
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # its blocks back to a full file system
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

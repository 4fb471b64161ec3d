"""The paths provider: every container log source on the host and its files in reading order.

- Docker json-file: ``<docker-root>/containers/<id>/<id>-json.log`` with rotated ``.1``, ``.2``, …
  (oldest first: ``.N`` … ``.1``, then the live file).
- CRI: ``<host-root>/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`` with kubelet's
  rotated ``<restart>.log.<YYYYMMDD-hhmmss>`` siblings (by restart count, rotated before live).
Compressed (``.gz``) and temporary (``.tmp``) files are not read: a rotated file the agent already
holds open is drained before it is compressed away.

A watchdog observer wakes the pipeline as soon as a directory or file appears; a periodic rescan
is the safety net for missed events. ``DirectoryWatch`` (raw inotify on each source's directory) reports
new files within milliseconds, so a rotated file can be opened before the runtime deletes it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from collectors.logs.files import Tail

log = structlog.get_logger("lookout.logs.sources")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CRI_FILE = re.compile(r"^(\d+)\.log(?:\.(\d{8}-\d{6}))?$")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    source_id: str  # "docker:<id>" or "cri:<ns>_<pod>_<uid>/<container>"
    format: str  # "json-file" | "cri"
    directory: str
    container_id: str = ""
    namespace: str = ""
    pod: str = ""
    pod_uid: str = ""
    container: str = ""

    def files(self) -> list[str]:
        """Existing log files, oldest first; the last one is the live file."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        if self.format == "json-file":
            base = f"{self.container_id}-json.log"
            rotated = sorted(
                (int(n[len(base) + 1 :]), n) for n in names
                if n.startswith(base + ".") and n[len(base) + 1 :].isdigit()
            )
            ordered = [n for _, n in reversed(rotated)]
            if base in names:
                ordered.append(base)
            return [os.path.join(self.directory, n) for n in ordered]
        keyed = []
        for name in names:
            m = _CRI_FILE.match(name)
            if m:
                # (restart count, rotated files first in time order, live file last)
                keyed.append(((int(m.group(1)), 0 if m.group(2) else 1, m.group(2) or ""), name))
        return [os.path.join(self.directory, n) for _, n in sorted(keyed)]


def scan(docker_root: Path, pods_root: Path) -> dict[str, SourceSpec]:
    specs: dict[str, SourceSpec] = {}
    containers = docker_root / "containers"
    try:
        for entry in os.scandir(containers):
            if _HEX64.match(entry.name) and entry.is_dir():
                specs[f"docker:{entry.name}"] = SourceSpec(f"docker:{entry.name}", "json-file", entry.path,
                                                          container_id=entry.name)
    except OSError:
        pass
    try:
        for pod in os.scandir(pods_root):
            parts = pod.name.split("_")
            if len(parts) != 3 or not pod.is_dir():
                continue
            namespace, pod_name, uid = parts
            for cont in os.scandir(pod.path):
                if cont.is_dir():
                    sid = f"cri:{pod.name}/{cont.name}"
                    specs[sid] = SourceSpec(sid, "cri", cont.path, namespace=namespace, pod=pod_name,
                                            pod_uid=uid, container=cont.name)
    except OSError:
        pass
    return specs


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def on_created(self, event: FileSystemEvent) -> None:
        self._wake()

    def on_moved(self, event: FileSystemEvent) -> None:
        self._wake()


def watch(paths: list[Path], wake: Callable[[], None]) -> BaseObserver | None:
    """Start an inotify observer on the existing ``paths``; ``wake`` runs on watchdog's thread."""
    observer = Observer()
    handler = _Wake(wake)
    scheduled = 0
    for path in paths:
        if path.is_dir():
            try:
                # Only creations and renames: without the filter inotify also reports every write Docker makes
                # to a log file (IN_MODIFY) and every open of one, and watchdog's thread turns each into a Python
                # event that competes with the reader for the GIL.
                observer.schedule(handler, str(path), recursive=True,
                                  event_filter=[FileCreatedEvent, DirCreatedEvent, FileMovedEvent, DirMovedEvent])
                scheduled += 1
            except OSError as exc:
                log.warning("log_watch_failed", path=str(path), error=str(exc))
    if not scheduled:
        return None
    observer.daemon = True
    observer.start()
    return observer


_IN_CREATE = 0x100
_IN_MOVED_TO = 0x80
_IN_ONLYDIR = 0x01000000
_IN_IGNORED = 0x8000
_IN_ISDIR = 0x40000000
_IN_Q_OVERFLOW = 0x4000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def is_live_log_name(name: bytes) -> bool:
    """A runtime creates log files only under the live name: ``<id>-json.log`` (Docker) or ``<n>.log`` (CRI);
    rotated files get their names by renames, compressed ones (``.gz``) are not read."""
    if name.endswith(b"-json.log"):
        return _HEX64.match(name[:-9].decode("latin-1")) is not None
    return name.endswith(b".log") and name[:-4].isdigit()


@dataclass(slots=True)
class Births:
    """Live log files created in one directory since its watch began (``created``, counted from the kernel's
    inotify events, which queue while the process is busy), and the files present before (``base_keys``:
    identity keys). A route that has come to know
    fewer new files than were created has lost the difference: the runtime rotated them away unread."""

    generation: int
    base_keys: frozenset[str]
    created: int = 0

    def is_base(self, key: str) -> bool:
        # A base file without a complete first line has no key yet: once readable it counts as new without a
        # creation event, which can hide a loss but never fake one. (Its inode cannot stand in for it: once the
        # file is deleted a new file may get the same inode.)
        return key in self.base_keys


def _identities(directory: str) -> frozenset[str]:
    """The identity keys of the log files in ``directory`` that have a complete first line."""
    keys: set[str] = set()
    try:
        names = os.listdir(directory)
    except OSError:
        return frozenset()
    for name in names:
        if ("-json.log" not in name and not _CRI_FILE.match(name)) or name.endswith((".gz", ".tmp")):
            continue  # config.v2.json, hostconfig.json, checkpoints/, compressed rotations
        tail = Tail.open(os.path.join(directory, name))
        if tail is not None:
            keys.add(tail.key)
            tail.close()
    return frozenset(keys)


class DirectoryWatch:
    """Calls ``on_file(directory)`` on its own thread as soon as a file is created in, or renamed into, one of the
    log directories given to ``sync`` (raw inotify, ``IN_CREATE | IN_MOVED_TO``, no recursion).

    This is not watchdog's observer on purpose: watchdog holds the first half of every rename for up to 0.5 s
    to pair it with the second, and every event queued behind it waits too. Docker renames files on every
    rotation, and at a fast writer's pace with ``max-file=3`` a rotated file lives only a few tens of
    milliseconds: its creation has to be reported at once for the pipeline to open it before it is deleted.
    Without inotify (not Linux, no watches left) ``sync`` does nothing.
    """

    def __init__(self, on_file: Callable[[str], None]) -> None:
        self._on_file = on_file
        self._lock = threading.Lock()
        self._dirs: dict[str, int] = {}
        self._wds: dict[int, str] = {}
        # Per watched directory: the files present when its watch began and how many live log files were
        # created since (see ``births``).
        self._births: dict[str, Births] = {}
        self._generation = 0
        self._overflowed = False
        self._fd = -1
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        except (OSError, AttributeError) as exc:
            log.warning("log_directory_watch_unavailable", error=str(exc))
            return
        if fd < 0:
            log.warning("log_directory_watch_unavailable", error=os.strerror(ctypes.get_errno()))
            return
        self._fd = fd
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="log-directory-watch", daemon=True)
        self._thread.start()

    def sync(self, directories: set[str]) -> None:
        if self._fd < 0:
            return
        with self._lock:
            for directory in set(self._dirs) - directories:
                wd = self._dirs.pop(directory)
                self._wds.pop(wd, None)
                self._births.pop(directory, None)
                self._libc.inotify_rm_watch(self._fd, wd)
            for directory in directories - set(self._dirs):
                # The files present before the watch begins are the baseline; a file created between this listing
                # and the watch is in neither count, so it can only hide a loss, never fake one.
                base = _identities(directory)
                wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory),
                                                  _IN_CREATE | _IN_MOVED_TO | _IN_ONLYDIR)
                if wd < 0:
                    err = ctypes.get_errno()
                    if err != errno.ENOENT:  # a container removed meanwhile is no news
                        log.warning("log_directory_watch_failed", directory=directory, error=os.strerror(err))
                    continue
                self._dirs[directory] = wd
                self._generation += 1
                self._births[directory] = Births(self._generation, base)
                self._wds[wd] = directory

    def _changed(self, data: bytes) -> list[str]:
        """The directories in which files appeared, in the order of the events."""
        changed: list[str] = []
        with self._lock:
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + size
                if mask & _IN_Q_OVERFLOW:
                    if not self._overflowed:  # creations were dropped: the counts mean nothing any more
                        log.warning("log_directory_watch_overflow", note="rotated-away files are no longer counted")
                    self._overflowed = True
                    self._births.clear()
                    return list(self._dirs)
                directory = self._wds.get(wd)
                if mask & _IN_IGNORED:  # the directory is gone
                    if directory is not None and self._dirs.get(directory) == wd:
                        del self._dirs[directory]
                        self._births.pop(directory, None)
                    self._wds.pop(wd, None)
                elif directory is not None and not mask & _IN_ISDIR:
                    if mask & _IN_CREATE and is_live_log_name(data[pos - size:pos].rstrip(b"\0")):
                        births = self._births.get(directory)
                        if births is not None:
                            births.created += 1
                    if directory not in changed:
                        changed.append(directory)
        return changed

    def births(self, directory: str) -> Births | None:
        """The directory's baseline and creation count, or None when not watched (or no longer countable)."""
        if self._overflowed:
            return None
        return self._births.get(directory)

    def _run(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._fd, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError:
                return
            for directory in self._changed(data):
                try:
                    self._on_file(directory)
                except Exception:  # never let one bad callback stop the watch
                    log.exception("log_directory_watch_callback_failed", directory=directory)

    def close(self) -> None:
        if self._fd < 0:
            return
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
        self._fd = -1

"""The log path's one inotify layer (watchdog's ``InotifyFD``: one inotify instance, its own reader thread), with a
polling fallback.

It watches two kinds of directories, without recursion:

- the parents of log sources (``<docker-root>/containers``, ``/var/log/pods`` and each pod's directory): a
  directory created or moved in there is a new container or pod, and ``on_new_source()`` wakes discovery;
- each source's directory: a file created or moved in there is a new log file (a rotation, a CRI restart), and
  ``on_file(directory)`` lets the routes open it at once. Docker renames files on every rotation, and at a fast
  writer's pace with ``max-file=3`` a rotated file lives only a few tens of milliseconds. The creations are also
  counted per directory (``Births``), so a file the runtime created and deleted before any route opened it is
  counted as lost instead of vanishing silently.

watchdog's observer is not used on purpose: it holds the first half of every rename for up to 0.5 s to pair it with
the second, and every event queued behind it waits too; ``InotifyFD`` hands events over as the kernel reports them.

Without inotify (not Linux, no instance left) or once the kernel's watch limit is reached
(``fs.inotify.max_user_watches``), the directories not watched are polled: ``polling`` tells discovery to rescan
every ``POLL_INTERVAL`` (the routes list each source's directory again when its mtime changes), and their files are
not counted (no ``Births``), which can hide a loss but never fake one.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from collectors.logs.files import Tail

log = structlog.get_logger("lookout.logs.watch")

POLL_INTERVAL = 1.0  # seconds between rescans while some directory is not watched
# Seconds between two tries to watch a directory that could not be watched (each try lists its files and opens them
# for their identities): at the watch limit, hundreds of directories would otherwise cost that every second.
RETRY_INTERVAL = 30.0

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
MASK = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CRI_FILE = re.compile(r"^(\d+)\.log(?:\.(\d{8}-\d{6}))?$")


def is_live_log_name(name: bytes) -> bool:
    """A runtime creates log files only under the live name: ``<id>-json.log`` (Docker) or ``<n>.log`` (CRI);
    rotated files get their names by renames, compressed ones (``.gz``) are not read."""
    if name.endswith(b"-json.log"):
        return _HEX64.match(name[:-9].decode("latin-1")) is not None
    return name.endswith(b".log") and name[:-4].isdigit()


@dataclass(slots=True)
class Births:
    """Live log files created in one directory since its watch began (``created``, counted from the kernel's
    inotify events), and the files present before (``base_keys``: identity keys). A route that has come to know
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


class _Callback:
    """What watchdog's ``InotifyFD`` calls (its ``WatchCallback`` protocol), on its dispatcher thread."""

    def __init__(self, watch: LogWatch) -> None:
        self._watch = watch

    def on_event(self, event: Any) -> None:
        self._watch._event(event.wd, event.mask, event.name)

    def on_watch_deleted(self, wd: int) -> None:
        self._watch._deleted(wd)

    def on_queue_overflow(self) -> None:
        self._watch._overflow()

    def on_events_lost(self) -> None:
        return None


class LogWatch:
    """Watches the sources' parents (``on_new_source()``) and the sources' directories (``on_file(directory)``);
    both callbacks run on the inotify thread. ``sync`` sets what is watched."""

    def __init__(self, on_new_source: Callable[[], None], on_file: Callable[[str], None]) -> None:
        self._on_new_source = on_new_source
        self._on_file = on_file
        self._lock = threading.Lock()
        self._callback = _Callback(self)
        self._dirs: dict[str, int] = {}  # watched directory -> watch descriptor
        self._kinds: dict[int, tuple[str, bool]] = {}  # watch descriptor -> (directory, is a source's directory)
        self._births: dict[str, Births] = {}
        self._generation = 0
        self._overflowed = False
        self.unwatched = 0  # directories that could not be watched (polled instead)
        self._polled: set[str] = set()  # those directories, so each fallback is counted once
        self._retry_at = 0.0  # monotonic time after which the polled directories are tried again
        # Fallbacks to polling, by reason (no_instance, watch_limit, overflow): lookout_log_watch_fallbacks_total.
        self.fallbacks: Counter[str] = Counter()
        self._warned_limit = False
        self._fd: Any = None
        try:
            from watchdog.observers.inotify_c import InotifyFD

            fd = InotifyFD()
            fd.start()
        except (ImportError, AttributeError, OSError) as exc:
            self.fallbacks["no_instance"] += 1
            hint = ("raise fs.inotify.max_user_instances" if getattr(exc, "errno", None) == errno.EMFILE
                    else "inotify is not available")
            log.warning("log_watch_unavailable", error=str(exc), fallback=f"rescan every {POLL_INTERVAL:g} s",
                        hint=hint)
            return
        self._fd = fd

    @property
    def polling(self) -> bool:
        """True while some directory is not watched: discovery rescans every ``POLL_INTERVAL`` then."""
        return self._fd is None or self.unwatched > 0 or self._overflowed

    def sync(self, parents: Iterable[str], sources: Iterable[str]) -> None:
        """Watch exactly ``parents`` (for new directories) and ``sources`` (for new files)."""
        wanted = {d: False for d in parents} | {d: True for d in sources}
        if self._fd is None:
            self.unwatched = len(wanted)
            return
        with self._lock:
            for directory in set(self._dirs) - set(wanted):
                wd = self._dirs.pop(directory)
                self._kinds.pop(wd, None)
                self._births.pop(directory, None)
                self._fd.remove_callbacks([(wd, 0)])
            unwatched = 0
            polled: set[str] = set()
            retry = time.monotonic() >= self._retry_at
            for directory, is_source in wanted.items():
                if directory in self._dirs:
                    continue
                if not retry and directory in self._polled:
                    unwatched += 1
                    polled.add(directory)
                    continue
                # The files present before the watch begins are the baseline; a file created between this listing
                # and the watch is in neither count, so it can only hide a loss, never fake one.
                base = _identities(directory) if is_source else frozenset()
                try:
                    wd = self._fd.add_callback(os.fsencode(directory), MASK, self._callback, 0)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                        continue  # removed meanwhile: no news
                    unwatched += 1
                    polled.add(directory)
                    if exc.errno == errno.ENOSPC and directory not in self._polled:
                        self.fallbacks["watch_limit"] += 1
                    if exc.errno == errno.ENOSPC and not self._warned_limit:
                        self._warned_limit = True
                        log.warning("log_watch_limit_reached", directory=directory, error=str(exc),
                                    hint="raise fs.inotify.max_user_watches; unwatched directories are polled")
                    elif exc.errno != errno.ENOSPC:
                        log.warning("log_watch_failed", directory=directory, error=str(exc))
                    continue
                if wd < 0:  # watchdog returns a failed watch quietly for EACCES
                    unwatched += 1
                    polled.add(directory)
                    continue
                self._dirs[directory] = wd
                self._kinds[wd] = (directory, is_source)
                if is_source:
                    self._generation += 1
                    self._births[directory] = Births(self._generation, base)
            self.unwatched = unwatched
            if retry and polled:  # tried and not watched: the next try in RETRY_INTERVAL (new directories at once)
                self._retry_at = time.monotonic() + RETRY_INTERVAL
            self._polled = polled

    def births(self, directory: str) -> Births | None:
        """The directory's baseline and creation count, or None when not watched (or no longer countable)."""
        if self._overflowed:
            return None
        return self._births.get(directory)

    # --- the inotify thread ---

    def _event(self, wd: int, mask: int, name: bytes) -> None:
        with self._lock:
            kind = self._kinds.get(wd)
            if kind is None:
                return
            directory, is_source = kind
            if is_source and not mask & IN_ISDIR and mask & IN_CREATE and is_live_log_name(name):
                births = self._births.get(directory)
                if births is not None:
                    births.created += 1
        try:
            if not is_source:
                if mask & IN_ISDIR:
                    self._on_new_source()
            elif not mask & IN_ISDIR:
                self._on_file(directory)
        except Exception:  # never let one bad callback stop the watch
            log.exception("log_watch_callback_failed", directory=directory)

    def _deleted(self, wd: int) -> None:
        with self._lock:
            kind = self._kinds.pop(wd, None)
            if kind is not None and self._dirs.get(kind[0]) == wd:
                del self._dirs[kind[0]]
                self._births.pop(kind[0], None)

    def _overflow(self) -> None:
        with self._lock:
            if not self._overflowed:  # creations were dropped: the counts mean nothing any more
                self.fallbacks["overflow"] += 1
                log.warning("log_watch_overflow", note="rotated-away files are no longer counted")
            self._overflowed = True
            self._births.clear()
            sources = [d for d, is_source in self._kinds.values() if is_source]
        self._on_new_source()
        for directory in sources:
            self._on_file(directory)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fd.stop()  # closes the instance, which removes every watch
            fd.join(5)

"""A log source's files: its state (``SourceState``) and the opening of its new files in reading order.

``SourceFiles`` is the part of the route's ``Follower`` (collectors.logs.follower) that lists a source's directory
and opens the files it does not know yet (new, or after rotation), each put in place by its first record's time and
resumed from its acknowledged offset; finished files gone from disk are forgotten with their checkpoints. Files the
runtime created and deleted before they could be opened are counted against the directory watch's ``Births``.
All of it runs under the follower's lock, on the reader's thread or the inotify thread (``Follower.pin_new_files``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from agent.model import ContainerInfo, LogSource
from collectors.logs.checkpoints import CheckpointStore
from collectors.logs.decoders import CriDecoder, JsonFileDecoder, time_order_key
from collectors.logs.files import Tail
from collectors.logs.sources import SourceSpec

if TYPE_CHECKING:
    from collectors.logs.watch import Births, LogWatch

log = structlog.get_logger("lookout.logs.follower")


class SourceState:
    """One container's log files for one route, in reading order."""

    def __init__(self, spec: SourceSpec, max_line_bytes: int) -> None:
        self.spec = spec
        self.decoder: JsonFileDecoder | CriDecoder = (
            JsonFileDecoder(max_line_bytes) if spec.format == "json-file" else CriDecoder(max_line_bytes))
        self.tails: list[Tail] = []
        self.sources: dict[str, LogSource] = {}  # file key -> LogSource
        self.done: dict[str, int] = {}  # finished file key -> inode
        self.dir_mtime = -1.0
        self.initial = False  # present at the very first start: --read-from applies
        self.info: ContainerInfo | None = None
        self.fallback: ContainerInfo | None = None  # the info of a container whose metadata cannot be read
        self.listed_births = (-1, -1)  # the watch's (generation, creations) when the directory was last listed
        self.name_checked = 0.0  # when the live file's name was last looked at while nothing else was due
        self.first_seen = time.monotonic()
        self.gone = False
        self.skip = False  # filtered out by the route, or opted out with lookout.logs=false
        # Rotated-away accounting against the directory watch's ``Births`` (see ``SourceFiles._account``).
        self.births_generation = 0
        self.known_new = 0  # files created since the watch began that this route has opened or finished
        self.lost = 0  # of those, reported lost
        self.suspect_since = 0.0  # when fewer were known than created, if still so

    def close(self) -> None:
        for tail in self.tails:
            tail.close()
        self.tails.clear()


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


class SourceFiles:
    """Opening a source's new files in reading order, for the ``Follower`` that is made of it."""

    # The follower's own (set in ``Follower.__init__``).
    route_id: str
    label: str
    store: CheckpointStore
    read_from: str
    watch: LogWatch | None
    lock: threading.RLock
    on_lost: Callable[[int], None]

    # --- opening files (the reader's thread) ---

    def _refresh_files(self, state: SourceState, force: bool = False) -> None:
        """Open files of the source not yet known (new, or after rotation), in reading order."""
        with self.lock:
            # A rotation while the names are opened one by one (oldest first) can make a name open a newer file
            # than the listing showed and skip the one that was there; list again until every name still names
            # the file opened through it and the listing is the same, so an older file is never found after a newer
            # one has been begun.
            for _ in range(3):
                if self._open_new_files(state, force):
                    break
                force = True

    def _open_new_files(self, state: SourceState, force: bool) -> bool:
        """Open the new files; False when a name no longer named the file opened through it by the end."""
        try:
            mtime = os.stat(state.spec.directory).st_mtime
        except OSError:
            mtime = -2.0
        if mtime == state.dir_mtime and not force:
            return True
        state.dir_mtime = mtime
        births = self._births(state)
        created = births.created if births is not None else 0  # before the listing: all of these are in it, or gone
        seen = (births.generation, created) if births is not None else (-1, -1)
        files = state.spec.files()
        open_inos = {t.ino for t in state.tails}
        present: set[str] = set()
        opened: list[tuple[str, int]] = []
        pending = 0
        for path in files:
            tail = Tail.open(path)
            if tail is None:
                state.dir_mtime = -1.0  # gone, or no complete first line yet: look again next time
                pending += 1
                continue
            opened.append((path, tail.ino))
            if tail.ino in open_inos:
                present.update(t.key for t in state.tails if t.ino == tail.ino)
                tail.close()
                continue
            present.add(tail.key)
            if self._adopt(state, tail, path, files):
                open_inos.add(tail.ino)
        if not all(_inode(path) == ino for path, ino in opened) or state.spec.files() != files:
            state.dir_mtime = -1.0  # list again next time, even if this was the last try
            return False  # a file renamed meanwhile may be missing from ``present``: forget nothing yet
        state.initial = False
        state.listed_births = seen  # the creations this complete listing has seen
        # Forget finished files that are gone from disk (their checkpoints too).
        for key in list(state.done):
            if key not in present:
                del state.done[key]
                self.store.forget(self.route_id, key)
        if births is not None:
            self._account(state, created - pending)
        return True

    def _births(self, state: SourceState) -> Births | None:
        """The directory watch's count of files created in the source's directory (None when not counted)."""
        births = self.watch.births(state.spec.directory) if self.watch is not None else None
        if births is not None and births.generation != state.births_generation:
            state.births_generation, state.known_new, state.lost, state.suspect_since = births.generation, 0, 0, 0.0
        return births

    def _adopt(self, state: SourceState, tail: Tail, path: str, files: list[str]) -> bool:
        """Make a newly opened file one of the source's files (True), or close it: already known, or fully
        delivered (False). ``files`` is the listing it was found in."""
        if any(t.ino == tail.ino or t.key == tail.key for t in state.tails) or tail.key in state.done:
            tail.close()
            return False
        acked = self.store.offset(self.route_id, tail.key)
        if acked is not None:
            tail.offset = acked
        elif state.initial and self.read_from == "tail":
            tail.offset = tail.size
        births = self._births(state)
        if births is not None and not births.is_base(tail.key):
            state.known_new += 1
        if acked is not None and acked >= tail.size and path != files[-1]:
            state.done[tail.key] = tail.ino  # a rotated file already fully delivered
            tail.close()
            return False
        # A rotation while the names are opened one by one can make a name open a newer file than the
        # listing showed, and the file skipped that way is found by a later listing: new files are put in
        # place by their first record's time, not in the order found.
        tail.order = time_order_key(tail.first_line(), state.spec.format)
        self._insert(state, tail)
        return True

    def _account(self, state: SourceState, created: int) -> None:
        """Count files the runtime created and deleted before this route opened them (Docker's ``max-file``
        under a writer faster than the reader, or a reader starved of CPU). ``created`` files were born since
        the watch began, not counting those listed but not readable yet; the route knows ``known_new`` of them.
        The difference must last a second and another listing before it counts: a file being renamed while the
        directory is listed can be missed by one listing."""
        missing = created - state.known_new - state.lost
        if missing <= 0:
            state.suspect_since = 0.0
            return
        now = time.monotonic()
        if not state.suspect_since:
            state.suspect_since = now
        if now - state.suspect_since < 1.0:
            state.dir_mtime = -1.0  # list again on the next refresh
            return
        state.lost += missing
        state.suspect_since = 0.0
        self.on_lost(missing)
        info = state.info
        log.error("log_files_rotated_away", route=self.label, directory=state.spec.directory, files=missing,
                  container=info.name if info is not None else "",
                  hint="the runtime deleted them before they could be read: raise max-file/max-size, or give the "
                       "agent more CPU")

    @staticmethod
    def _insert(state: SourceState, tail: Tail) -> None:
        """Put a new file among the source's files by its first record's time (never before a file already
        being read; at the end when its time is unknown)."""
        tails = state.tails
        i = len(tails)
        if tail.order:
            while i > 0 and tails[i - 1].order > tail.order and not tails[i - 1].begun:
                i -= 1
        tails.insert(i, tail)

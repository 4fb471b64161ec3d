"""The file follower: one route's log sources and their files in reading order, through rotation and truncation.

Per log source (one container): rotated files are read oldest first; a renamed or deleted file stays open until
read to its end, then the next file is followed; a file that shrinks (copytruncate) is taken up again from 0 as a
new file (``_truncated``); identity is (device, inode, first-line CRC). Opening a source's new files in reading order,
and counting those the runtime created and deleted before they could be opened (``Births``), is
collectors.logs.source_files.

Ownership: the route's reader thread owns the follower's sources. Discovery only hands it work: it offers the
latest scan (``offer``) and asks for gone sources to be dropped (``collect_garbage``), which the reader takes at
its next ``take_offers``. The one exception is the inotify thread, which opens a source's new files the moment
they appear (``pin_new_files``), under the lock the reader changes files with, so a file deleted right after its
rotation is still read (the descriptor keeps it). Reads from other threads (the lag gauge) hold the lock too.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

from agent.model import ContainerInfo, LogSource
from collectors.logs.checkpoints import CheckpointStore
from collectors.logs.decoders import time_order_key
from collectors.logs.files import READ_CHUNK, Tail
from collectors.logs.multiline import Multiline, MultilineSpec, container_spec
from collectors.logs.source_files import SourceFiles, SourceState
from collectors.logs.sources import SourceSpec

if TYPE_CHECKING:
    from collectors.logs.watch import LogWatch

log = structlog.get_logger("lookout.logs.follower")

METADATA_WAIT = 5.0  # how long a new container's lines wait for its metadata before shipping without
# Files per source the inotify thread holds open ahead of the reader (see ``Follower.pin_new_files``).
PIN_MAX_FILES = 16
# A CRI log file renamed by the kubelet's rotation is still written by the runtime until the kubelet has it reopen
# the live name (ReopenContainerLog): it is ended only once it has not changed for this long.
CRI_REOPEN_GRACE = 1.0
# A watched source's live file at its end: its name is looked at this often at least (a stat per source: once a
# second it was 70 of the reader's ~250 file syscalls a second with 100 quiet containers, counted; the watch's
# creation counts catch a rotation at once, this is the net under them).
NAME_CHECK_INTERVAL = 5.0

# file key -> (path, offset, source id, tail): the offsets a batch acknowledges once sent
Acks = dict[str, tuple[str, int, str, Tail]]


def _live_rank(path: str) -> int | None:
    """None for a rotated file's name (complete: runtimes write only to the live name); for a live name, the CRI
    restart count of ``<n>.log`` (0 for Docker's ``<id>-json.log``): a higher one is a later container's file."""
    name = os.path.basename(path)
    if name.endswith("-json.log"):
        return 0
    if name.endswith(".log") and name[:-4].isdigit():
        return int(name[:-4])
    return None


class Follower(SourceFiles):
    """One route's view of every log source: which to ship, their open files, and reading them chunk by chunk.

    ``ship`` is the route's filter; ``lookup`` finds a source's container metadata; ``store`` holds the route's
    acknowledged offsets under ``route_id``. ``on_lost(n)`` is told of files rotated away unread,
    ``on_skipped()`` of each line skipped as longer than a read, and ``on_close(key)`` of each file closed."""

    def __init__(self, route_id: str, label: str, store: CheckpointStore,
                 lookup: Callable[[SourceSpec], ContainerInfo | None], ship: Callable[[ContainerInfo], bool], *,
                 read_from: str = "head", max_line_bytes: int = 1 << 20, host: str = "", fresh_start: bool = False,
                 on_lost: Callable[[int], None] = lambda n: None, on_skipped: Callable[[], None] = lambda: None,
                 on_close: Callable[[str], None] = lambda k: None, multiline: MultilineSpec | None = None,
                 multiline_set: bool = False, multiline_timeout: float = 1.0) -> None:
        self.route_id = route_id
        self.label = label
        self.store = store
        self.lookup = lookup
        self.ship = ship
        self.read_from = read_from
        self.max_line_bytes = max_line_bytes
        self.host = host
        self.on_lost = on_lost
        self.on_skipped = on_skipped
        self.on_close = on_close
        # The route's multiline setting; when the route set none, each container's lookout.multiline label.
        self.multiline = multiline
        self.multiline_set = multiline_set
        self.multiline_timeout = multiline_timeout
        self.joining: dict[str, SourceState] = {}  # the sources with a multiline mode, by source id
        self.truncations = 0  # files truncated in place with the same first line as before (their keys' suffix)
        self.states: dict[str, SourceState] = {}
        self.watch: LogWatch | None = None  # set by the pipeline: counts the files runtimes create
        # Files present at the very first start (no checkpoints at all) honour --read-from.
        self._initial = fresh_start
        self._order: list[str] = []
        self._rr = 0
        # Handed over by other threads, taken by the reader (``take_offers``).
        self._offered: Mapping[str, SourceSpec] | None = None
        self._gc_due = False
        # Held while the reader changes sources or files, and by readers on other threads (gauges, tests).
        self.lock = threading.RLock()

    # --- hand-overs (other threads) ---

    def offer(self, specs: Mapping[str, SourceSpec]) -> None:
        """The latest scan of the host's log sources (discovery's thread); the reader takes it on its next read."""
        self._offered = specs

    def collect_garbage(self) -> None:
        """Have the reader drop sources whose directory is gone and whose open files are drained."""
        self._gc_due = True

    def pin_new_files(self, directory: str) -> None:
        """Open the new files of the source in ``directory`` now (called on the inotify thread, under the lock).

        Docker deletes its oldest rotated file as soon as the live file fills up again (``max-file``): at a
        fast writer's pace a file can exist for only a few tens of milliseconds, less than the reader may take
        to come back to the source while it parses, encodes or waits for the sender. A file held open here is
        read to its end later even once deleted. At most ``PIN_MAX_FILES`` files per source are held ahead of
        the reader, so a route that is down for long does not keep every rotated file on disk. This is the one
        change another thread makes to the sources' files, and only under the lock the reader changes them with."""
        with self.lock:
            for state in list(self.states.values()):
                if (state.spec.directory == directory and state.info is not None and not state.skip
                        and len(state.tails) < PIN_MAX_FILES):
                    self._refresh_files(state, force=True)

    # --- the reader's thread ---

    def take_offers(self) -> None:
        """Apply what the other threads handed over: a new scan, dropping gone sources."""
        specs, self._offered = self._offered, None
        if specs is not None:
            self._update_sources(specs)
        if self._gc_due:
            self._collect_garbage()

    def _update_sources(self, specs: Mapping[str, SourceSpec]) -> None:
        with self.lock:
            for sid, spec in specs.items():
                if sid not in self.states:
                    state = self.states[sid] = SourceState(spec, self.max_line_bytes)
                    state.initial = self._initial
            self._initial = False
            for sid, state in self.states.items():
                state.gone = sid not in specs
            self._order = sorted(self.states)
        if specs:  # an empty scan may be a transient error: never forget checkpoints on it
            keep = {t.key for st in self.states.values() for t in st.tails}
            self.store.retain_sources(self.route_id, set(self.states), keep)

    def _collect_garbage(self) -> None:
        self._gc_due = False
        with self.lock:
            for sid in [sid for sid, st in self.states.items() if st.gone]:
                state = self.states[sid]
                multiline = state.decoder.multiline
                # A multiline event still held is finished by its timeout first (``RouteRunner``), then dropped.
                if all(t.drained() and (multiline is None or not multiline.holds(t.key)) for t in state.tails):
                    for tail in state.tails:
                        self.on_close(tail.key)
                    state.close()
                    del self.states[sid]
                    self.joining.pop(sid, None)
            self._order = sorted(self.states)

    def next_state(self) -> SourceState | None:
        """The next source in round-robin order (None when there are none)."""
        order = self._order
        if not order:
            return None
        sid = order[self._rr % len(order)]
        self._rr += 1
        return self.states.get(sid)

    @property
    def source_count(self) -> int:
        return len(self._order)

    def resolve(self, state: SourceState) -> bool:
        """Attach metadata and apply the route filter; False while a new container's name is unknown. A container
        removed while its files are still being read (its metadata gone from the API and from disk) keeps the
        metadata it had: its last lines go where the rest went, under its name, and it stays filtered the same."""
        info = self.lookup(state.spec)
        if info is None and state.info is not None and state.info is not state.fallback:
            return True
        if info is None:
            if time.monotonic() - state.first_seen < METADATA_WAIT:
                return False
            # Without metadata: the same object every time, so the source's records keep one LogSource (the
            # encoders cache their per-source part by it) instead of a new one per read.
            if state.fallback is None:
                state.fallback = ContainerInfo(cgroup="", container_id=state.spec.container_id)
            info = state.fallback
        if info is not state.info:
            state.info = info
            state.skip = not self.ship(info)
            state.sources.clear()
            self._set_multiline(state, info)
        return True

    def _set_multiline(self, state: SourceState, info: ContainerInfo) -> None:
        """The source's multiline mode: the route's when it sets one (``multiline=off`` too), else the container's
        ``lookout.multiline`` label (a bad label is logged and ignored). Kept while an event is held."""
        spec = self.multiline
        if not self.multiline_set:
            try:
                spec = container_spec(info.labels, self.multiline_timeout)
            except ValueError as exc:
                log.warning("multiline_label_invalid", route=self.label, container=info.name or info.container_id,
                            error=str(exc))
                spec = None
        decoder = state.decoder
        current = decoder.multiline
        if current is not None and (current.held or current.spec == spec):
            return
        decoder.multiline = Multiline(spec, self.max_line_bytes) if spec is not None else None
        if spec is not None:
            self.joining[state.spec.source_id] = state
        else:
            self.joining.pop(state.spec.source_id, None)

    def tail_of(self, state: SourceState, key: str) -> Tail | None:
        """The source's open file ``key`` (None when it is closed)."""
        return next((t for t in state.tails if t.key == key), None)

    def source(self, state: SourceState, tail: Tail) -> LogSource:
        src = state.sources.get(tail.key)
        if src is None:
            assert state.info is not None
            src = state.sources[tail.key] = LogSource(tail.path, tail.key, state.info, self.host)
        return src

    def read(self, state: SourceState, acks: Acks) -> tuple[Tail, bytes, int] | bool:
        """One read from the source's active file: (file, complete lines, their offset) to decode (no lines: the file
        ends, finish its multiline events), else True if it moved anything (a file finished, an over-long line
        skipped: ``acks`` has the offset), False if not. After decoding the lines, the caller acknowledges them with
        ``ack``."""
        if not self.resolve(state) or state.skip:
            return False
        watched = self._watched(state)
        if not watched or not state.tails:
            self._refresh_files(state)
        if not state.tails:
            return False
        tail = state.tails[0]
        try:
            data, start, skipped = tail.read(READ_CHUNK)
        except OSError as exc:
            if self._holds(state, tail):
                return tail, b"", tail.offset  # the codec finishes the file's multiline events first
            log.warning("log_read_failed", route=self.label, file=tail.path, error=str(exc))
            self._finish(state, tail, acks)
            return True
        if tail.truncated:  # what was read is the new content: it is read again under the file's new key
            if self._holds(state, tail):
                return tail, b"", tail.offset  # the codec finishes the old content's multiline events first
            return self._truncated(state, tail, acks)
        if skipped:
            self.on_skipped()
            log.warning("log_line_too_long_skipped", route=self.label, file=tail.path, offset=start, bytes=skipped)
            self.ack(acks, state, tail)
            return True
        if data:
            return tail, data, start
        # End of this file. It is complete when it has a rotated name, its name now names another file, or a
        # later live file of the source exists (a CRI container's next restart); otherwise it is the live file
        # and the runtime may write more. Read once more after that check so a write racing a rename is not lost.
        later = state.tails[1:]
        rank = _live_rank(tail.path)
        # A watched directory's new files are opened as they appear (pin_new_files): a live file renamed or
        # deleted by a rotation has a later file by then, so its name is looked at only when one is there.
        if (rank is None or ((later or not watched or self._name_due(state)) and tail.replaced())
                or any((other := _live_rank(t.path)) is not None and other > rank for t in later)):
            if state.spec.format == "cri" and self._recently_written(tail):
                return False  # the kubelet renames first and has the runtime reopen after: more may come
            data, start, _ = tail.read(READ_CHUNK)
            if data:
                return tail, data, start
            if self._holds(state, tail):
                return tail, b"", tail.offset  # no event spans two files: the codec finishes those held in this one
            self._finish(state, tail, acks)
            if len(state.tails) == 0:
                self._refresh_files(state, force=True)
            return True
        if later and state.decoder.safe_offset(tail.offset, tail.key) == tail.offset:
            # The live file, and only rotated files follow: found after it was begun (a rotation raced a
            # listing). Read them first and come back to it, never close it early; but not while a line of it
            # is half joined, which the older file's next line would otherwise be joined to.
            with self.lock:
                state.tails.remove(tail)
                state.tails.append(tail)
            return True
        return False

    @staticmethod
    def _holds(state: SourceState, tail: Tail) -> bool:
        """Whether the source's decoder holds a multiline event of ``tail``: an empty chunk for the codec (read
        returns ``(tail, b"", offset)``) finishes it before the file is closed."""
        multiline = state.decoder.multiline
        return multiline is not None and multiline.holds(tail.key)

    def _watched(self, state: SourceState) -> bool:
        """No file was created in the source's directory since its last complete listing, as the directory watch
        counts them (and no listing is due): the reader need not list the directory again. A watch that began
        after that listing, or any creation since (a pin skipped at ``PIN_MAX_FILES`` too), makes it list."""
        watch = self.watch
        if watch is None or state.dir_mtime == -1.0:
            return False
        births = watch.births(state.spec.directory)
        return births is not None and (births.generation, births.created) == state.listed_births

    @staticmethod
    def _name_due(state: SourceState) -> bool:
        """Look at a watched live file's name every ``NAME_CHECK_INTERVAL`` anyway: the net for a rename the watch
        missed."""
        now = time.monotonic()
        if now - state.name_checked < NAME_CHECK_INTERVAL:
            return False
        state.name_checked = now
        return True

    @staticmethod
    def _recently_written(tail: Tail) -> bool:
        try:
            return time.time() - os.fstat(tail.fd).st_mtime < CRI_REOPEN_GRACE
        except OSError:
            return False

    def ack(self, acks: Acks, state: SourceState, tail: Tail) -> None:
        """Acknowledge ``tail`` up to where its decoder holds nothing back."""
        offset = state.decoder.safe_offset(tail.offset, tail.key)
        acks[tail.key] = (tail.path, offset, state.spec.source_id, tail)

    def _finish(self, state: SourceState, tail: Tail, acks: Acks) -> None:
        """A file read to its end and replaced: close it; the next file in order becomes active."""
        self.ack(acks, state, tail)
        self.on_close(tail.key)
        with self.lock:
            tail.close()
            state.tails.remove(tail)
            state.done[tail.key] = tail.ino
        state.sources.pop(tail.key, None)

    def _truncated(self, state: SourceState, tail: Tail, acks: Acks) -> bool:
        """The active file was truncated in place (copytruncate): what it held is gone, and what is written to it
        now is a new file's content at the same offsets. The old content is finished as a rotated file is; the
        file is taken up again as a new one, read from 0 under a key of its new first line, so that neither its
        checkpoint nor the Elasticsearch ids of its records (file key and offset) are the old content's: a
        restart resumes it where it was acknowledged, and no id repeats an earlier record's. False until the
        new first line is complete."""
        new = Tail.open(tail.path)
        if new is None:
            return False
        if new.ino != tail.ino:  # the name was rotated meanwhile: the old file is read again from 0, as it is
            new.close()
            tail.offset, tail.fp, tail.truncated = 0, None, False
            return False
        if new.key == tail.key:  # the same first line as before: a key no earlier content had
            self.truncations += 1
            new.key = f"{new.key}:t{self.truncations}"
        log.info("log_file_truncated", route=self.label, file=tail.path, size=new.size)
        self._finish(state, tail, acks)  # its checkpoint is forgotten with the next listing, as a rotated file's
        with self.lock:
            new.order = time_order_key(new.first_line(), state.spec.format)
            state.tails.insert(0, new)
        return True

    # --- the lag gauge (any thread) ---

    def lag(self) -> tuple[int, int]:
        """(files open, bytes in them and in unopened sources' files not yet acknowledged). The sizes are the
        files' own, not the reader's last read: while the route is down the reader waits for the sender and reads
        nothing, and the lag must still grow."""
        lag = files = 0
        with self.lock:
            states = list(self.states.values())
            offered = self._offered
            for state in states:
                if not state.tails and not state.skip:
                    lag += self._unopened_lag(state.spec, state.info)
                for tail in list(state.tails):
                    files += 1
                    size = tail.size
                    with contextlib.suppress(OSError):
                        size = os.fstat(tail.fd).st_size
                    acked = self.store.offset(self.route_id, tail.key)
                    lag += max(size - (acked if acked is not None else 0), 0)
        if offered is not None:  # sources found while the reader was waiting on the sender
            for sid, spec in offered.items():
                if sid not in self.states:
                    lag += self._unopened_lag(spec, None)
        return files, lag

    def _unopened_lag(self, spec: SourceSpec, info: ContainerInfo | None) -> int:
        """Bytes not acknowledged in the files of a source the reader has not opened yet (a new container while
        the route is down), when the route ships it."""
        info = info or self.lookup(spec)
        if info is None or not self.ship(info):
            return 0
        lag = 0
        for path in spec.files():
            tail = Tail.open(path)
            if tail is not None:
                acked = self.store.offset(self.route_id, tail.key)
                lag += max(tail.size - (acked or 0), 0)
                tail.close()
        return lag

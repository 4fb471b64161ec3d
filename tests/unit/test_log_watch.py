"""The log path's one inotify layer (collectors.logs.watch) against real directories, and its polling fallback."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.model import ContainerInfo
from collectors.logs.checkpoints import CheckpointStore
from collectors.logs.follower import Follower
from collectors.logs.source_files import SourceState
from collectors.logs.sources import SourceSpec
from collectors.logs.watch import Births, LogWatch

CID = "a" * 64


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.new_sources = 0
        self.files: list[str] = []

    def new_source(self) -> None:
        with self.lock:
            self.new_sources += 1

    def file(self, directory: str) -> None:
        with self.lock:
            self.files.append(directory)


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def watch(seen: Seen) -> Iterator[LogWatch]:
    w = LogWatch(seen.new_source, seen.file)
    yield w
    w.close()


def test_new_containers_wake_discovery_and_new_files_are_reported_and_counted(tmp_path: Path, watch: LogWatch,
                                                                              seen: Seen) -> None:
    containers = tmp_path / "containers"
    source = containers / CID
    source.mkdir(parents=True)
    live = source / f"{CID}-json.log"
    live.write_bytes(b'{"log":"first\\n","stream":"stdout","time":"2026-12-04T10:00:00Z"}\n')
    watch.sync([str(containers)], {str(source)})
    assert not watch.polling
    births = watch.births(str(source))
    assert births is not None and births.created == 0 and len(births.base_keys) == 1

    (containers / ("b" * 64)).mkdir()  # a new container
    wait_for(lambda: seen.new_sources == 1)
    (source / "config.v2.json.tmp").write_bytes(b"{}")  # not a log file: reported, not counted
    live.rename(source / f"{CID}-json.log.1")  # Docker's rotation: rename, then a new live file
    live.write_bytes(b"")
    wait_for(lambda: len(seen.files) >= 3)
    assert set(seen.files) == {str(source)}
    assert births.created == 1  # only the live name's creation is a birth
    assert seen.new_sources == 1  # files in a source's directory never wake discovery


def test_a_directory_no_longer_wanted_is_no_longer_watched(tmp_path: Path, watch: LogWatch, seen: Seen) -> None:
    source = tmp_path / CID
    source.mkdir()
    watch.sync([], {str(source)})
    watch.sync([], set())
    assert watch.births(str(source)) is None
    (source / f"{CID}-json.log").write_bytes(b"")
    other = tmp_path / "other"
    other.mkdir()
    watch.sync([], {str(other)})
    (other / "1.log").write_bytes(b"")
    wait_for(lambda: seen.files == [str(other)])  # the event of the unwatched directory never came


def test_without_inotify_everything_is_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: Seen) -> None:
    from watchdog.observers import inotify_c

    def unavailable() -> None:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    monkeypatch.setattr(inotify_c, "InotifyFD", unavailable)
    w = LogWatch(seen.new_source, seen.file)
    w.sync([str(tmp_path)], {str(tmp_path / CID)})
    assert w.polling and w.unwatched == 2 and w.births(str(tmp_path / CID)) is None
    assert w.fallbacks == {"no_instance": 1}
    w.close()


def test_at_the_watch_limit_the_rest_is_polled_and_not_counted(tmp_path: Path, watch: LogWatch,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    add = watch._fd.add_callback

    def limited(path: bytes, *args: object) -> int:
        if path.endswith(b"second"):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return add(path, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(watch._fd, "add_callback", limited)
    watch.sync([], {str(first), str(second)})
    assert watch.polling and watch.unwatched == 1
    assert watch.births(str(first)) is not None and watch.births(str(second)) is None
    assert watch.fallbacks == {"watch_limit": 1}


def test_a_directory_over_the_watch_limit_is_counted_once_and_tried_again_later(
        tmp_path: Path, watch: LogWatch, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.logs import watch as watch_module

    dirs = [tmp_path / f"d{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    add = watch._fd.add_callback
    tries: list[bytes] = []
    full = True

    def limited(path: bytes, *args: object) -> int:
        tries.append(path)
        if full and not path.endswith(b"d0"):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return add(path, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(watch._fd, "add_callback", limited)
    clock = [1000.0]
    monkeypatch.setattr(watch_module.time, "monotonic", lambda: clock[0])
    wanted = {str(d) for d in dirs}
    watch.sync([], wanted)
    assert watch.unwatched == 2 and watch.fallbacks == {"watch_limit": 2} and len(tries) == 3
    for _ in range(5):  # rescans within RETRY_INTERVAL: no new try, no new count
        clock[0] += 1
        watch.sync([], wanted)
    assert len(tries) == 3 and watch.unwatched == 2 and watch.polling and watch.fallbacks == {"watch_limit": 2}
    full = False  # watches were freed
    clock[0] += watch_module.RETRY_INTERVAL
    watch.sync([], wanted)
    assert len(tries) == 5 and watch.unwatched == 0 and not watch.polling
    assert watch.fallbacks == {"watch_limit": 2}


class FakeWatch:
    """A watch whose counts the test sets (the directory watch's ``births``)."""

    def __init__(self) -> None:
        self.counts: Births | None = None

    def births(self, directory: str) -> Births | None:
        return self.counts


def _doc(i: int) -> bytes:
    return b'{"log":"line %d\\n","stream":"stdout","time":"2026-12-04T10:00:%02d.000000000Z"}\n' % (i, i)


def test_a_rotation_before_the_watch_began_is_still_followed(tmp_path: Path) -> None:
    """The reader lists a source, Docker rotates it, and only then does the watch begin (its baseline holds the new
    live file, so no event ever comes for it): the first listing under the watch finds the new file (found by
    review: the old file was read to its end and the source stuck there)."""
    live = tmp_path / f"{CID}-json.log"
    live.write_bytes(_doc(0))
    follower, state, watch = _follower(tmp_path)
    assert follower.read(state, {})[1] == _doc(0)  # type: ignore[index]
    live.rename(tmp_path / f"{CID}-json.log.1")
    live.write_bytes(_doc(1))
    watch.counts = Births(1, frozenset())
    got = [follower.read(state, {}) for _ in range(3)]
    assert got[0] is True and got[1][1] == _doc(1)  # type: ignore[index]


def test_creations_beyond_the_pin_limit_make_the_reader_list_again(tmp_path: Path) -> None:
    """A route that was down holds at most PIN_MAX_FILES files ahead; the files created after that are found by a
    listing, since the watch counted more creations than the last listing saw."""
    live = tmp_path / f"{CID}-json.log"
    live.write_bytes(_doc(0))
    follower, state, watch = _follower(tmp_path)
    watch.counts = Births(1, frozenset())
    assert follower.read(state, {})[1] == _doc(0)  # type: ignore[index]
    assert follower.read(state, {}) is False  # at the end, nothing created: no listing, nothing to read
    live.rename(tmp_path / f"{CID}-json.log.1")
    live.write_bytes(_doc(1))
    watch.counts.created += 1  # the creation event, whose pin was skipped
    got = [follower.read(state, {}) for _ in range(3)]
    assert _doc(1) in [g[1] for g in got if isinstance(g, tuple)]


def _follower(directory: Path) -> tuple[Follower, SourceState, FakeWatch]:
    store = CheckpointStore(directory.parent / f"state-{directory.name}")
    info = ContainerInfo(cgroup="", container_id=CID, name="c")
    follower = Follower("r", "r", store, lambda spec: info, lambda i: True)
    watch = FakeWatch()
    follower.watch = watch  # type: ignore[assignment]
    spec = SourceSpec(f"docker:{CID}", "json-file", str(directory), container_id=CID)
    follower.offer({spec.source_id: spec})
    follower.take_offers()
    return follower, follower.states[spec.source_id], watch

"""The log pipeline on real files written the way Docker and the kubelet write them.

No Docker engine needed: a fake Docker data root holds ``config.v2.json`` and json-file logs,
and the tests append, rotate, truncate and delete files while the pipeline runs in-process.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from agent.cli import _parser
from agent.config import load_config
from agent.logs.pipeline import LogPipeline
from agent.model import DeliveryResult, Payload
from agent.runtime import tune_interpreter_for_logs
from agent.telemetry import Telemetry
from agent.wiring import make_logs
from collectors.docker import DockerMetadata
from collectors.logs.files import Tail
from collectors.logs.source_files import SourceState
from tests.fixtures import trees
from tests.helpers.es_standin import EsStandin
from tests.helpers.wait import until as wait_for


class FakeContainer:
    def __init__(self, root: Path, cid: str, name: str, labels: dict[str, str], env: list[str]) -> None:
        self.cid = cid
        self.name = name
        self.dir = root / "containers" / cid
        self.dir.mkdir(parents=True)
        doc = {"ID": cid, "Name": "/" + name, "Created": "2026-11-28T00:00:00Z",
               "Config": {"Image": "busybox:test", "Labels": labels, "Env": env},
               "State": {"Running": True, "Pid": 0, "StartedAt": "2026-11-28T00:00:01Z"}}
        (self.dir / "config.v2.json").write_bytes(orjson.dumps(doc))
        (self.dir / "hostconfig.json").write_bytes(b'{"NetworkMode":"default"}')
        self.log = self.dir / f"{cid}-json.log"
        self.log.touch()
        self.seq = 0

    def write(self, n: int, stream: str = "stdout", prefix: str = "line") -> list[str]:
        msgs = []
        with self.log.open("ab") as fh:
            for _ in range(n):
                msg = f"{prefix} {self.seq}\t✓"
                self.seq += 1
                msgs.append(msg)
                fh.write(orjson.dumps({"log": msg + "\n", "stream": stream,
                                       "time": f"2026-11-28T04:00:00.{self.seq:09d}Z"}) + b"\n")
        return msgs

    def write_raw(self, data: bytes) -> None:
        with self.log.open("ab") as fh:
            fh.write(data)

    def rotate(self, max_file: int = 3) -> None:
        """Docker's rotation: shift .N, rename the live file to .1, open a new live file."""
        for i in range(max_file - 1, 0, -1):
            src = Path(f"{self.log}.{i}")
            if src.exists():
                if i + 1 >= max_file:
                    src.unlink()
                else:
                    src.rename(f"{self.log}.{i + 1}")
        self.log.rename(f"{self.log}.1")
        self.log.touch()


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.docker_root = tmp / "docker"
        (self.docker_root / "containers").mkdir(parents=True)
        self.state = tmp / "state"
        self.out = tmp / "out.ndjson"
        self.pipeline: LogPipeline | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.count = 0

    def container(self, name: str, labels: dict[str, str] | None = None, env: list[str] | None = None) -> FakeContainer:
        self.count += 1
        cid = f"{self.count:064x}"
        return FakeContainer(self.docker_root, cid, name, labels or {}, env or [])

    def start(self, *routes: str, extra: tuple[str, ...] = (), run: bool = True) -> LogPipeline:
        argv = ["run", "--host-root", str(self.tmp / "host"), "--docker-root", str(self.docker_root),
                "--docker-socket", "", "--state-dir", str(self.state), *extra]
        for route in routes or (f"file://{self.out}",):
            argv += ["--route", route]
        args, unknown = _parser().parse_known_args(argv)
        config = load_config(args, environ={}, unknown=unknown)
        docker = DockerMetadata(config.docker_root, "", ())
        pipeline = make_logs(config, docker, Telemetry())
        assert pipeline is not None
        pipeline.RESCAN_INTERVAL = 0.2  # type: ignore[misc]
        for runner in pipeline.runners:
            runner.options.poll_interval = 0.02
            runner.options.poll_max = 0.1
        self.pipeline = pipeline
        if run:
            tune_interpreter_for_logs()  # as the agent does
        self.tasks = pipeline.tasks() if run else []
        return pipeline

    async def crash(self) -> None:
        """Stop as kill -9 would: no final checkpoint flush, queued batches lost."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def stop(self) -> None:
        await self.crash()
        if self.pipeline is not None:
            await self.pipeline.close()


def idle(harness: Harness) -> bool:
    """Every route has read and delivered all there is: it has taken up the latest scan, nothing is unacknowledged
    (lag 0, also in the files of sources it has not opened) and no batch is queued. What has arrived by then is
    all that will."""
    assert harness.pipeline is not None
    for runner in harness.pipeline.runners:
        follower = runner.follower
        if not follower.states or follower._offered is not None or runner.queue.qsize():
            return False
        if follower.lag()[1]:
            return False
    return True


def state_of(harness: Harness, directory: Path) -> SourceState:
    assert harness.pipeline is not None
    [state] = [st for st in harness.pipeline.runners[0].follower.states.values()
               if st.spec.directory == str(directory)]
    return state


def tails_of(harness: Harness, directory: Path) -> list[Tail]:
    """The open files of the source in ``directory`` ([] while the reader has not taken it up yet)."""
    assert harness.pipeline is not None
    follower = harness.pipeline.runners[0].follower
    with follower.lock:
        return [t for st in follower.states.values() if st.spec.directory == str(directory) for t in st.tails]


def acked_to_end(harness: Harness, c: FakeContainer) -> bool:
    """The route acknowledged the container's live file to its end (in memory; written by the next commit)."""
    assert harness.pipeline is not None
    size = c.log.stat().st_size
    return any(e["path"] == str(c.log) and e["offset"] == size
               for files in harness.pipeline.store.routes().values() for e in files.values())


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def messages(path: Path, name: str | None = None) -> list[str]:
    return [r["message"] for r in records(path) if name is None or r["container_name"] == name]


@pytest.fixture
async def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


async def test_lines_arrive_once_in_order_with_metadata(harness: Harness):
    web = harness.container("web", labels={"team": "api"})
    sent = web.write(50)
    harness.start()
    sent += web.write(50, stream="stderr")
    await wait_for(lambda: len(records(harness.out)) >= 100)
    await wait_for(lambda: idle(harness))
    got = records(harness.out)
    assert [r["message"] for r in got] == sent
    first = got[0]
    assert first["container_name"] == "web" and first["image"] == "busybox:test"
    assert first["labels"] == {"team": "api"} and first["container_id"] == web.cid
    assert first["stream"] == "stdout" and got[-1]["stream"] == "stderr"
    assert first["time"] == "2026-11-28T04:00:00.000000001Z"
    assert first["file"] == str(web.log) and first["offset"] == 0
    assert got[1]["offset"] == len(web.log.read_bytes().split(b"\n")[0]) + 1


async def test_unterminated_last_line_waits_for_its_newline(harness: Harness):
    c = harness.container("c")
    harness.start()
    first = c.write(1)
    await wait_for(lambda: messages(harness.out) == first)
    line = orjson.dumps({"log": "slow writer\n", "stream": "stdout", "time": "2026-11-28T04:00:00Z"})
    c.write_raw(line[:20])
    size = c.log.stat().st_size
    # The reader has seen the 20 bytes (a read sets the file's size) and shipped nothing of them.
    await wait_for(lambda: any(t.size >= size for t in tails_of(harness, c.dir)))
    assert messages(harness.out) == first
    c.write_raw(line[20:] + b"\n")
    await wait_for(lambda: messages(harness.out) == [*first, "slow writer"])


async def test_rotation_under_a_fast_writer_loses_nothing(harness: Harness):
    c = harness.container("rot")
    harness.start()
    sent = []
    # Each file holds ~0.5 MB and lives through two rotations: the agent has to open it in that time.
    for _ in range(8):
        sent += c.write(6000)
        c.rotate(max_file=3)
        await asyncio.sleep(0.1)  # the writer's pace (not a wait for the agent)
    sent += c.write(10)
    try:
        await wait_for(lambda: len(records(harness.out)) >= len(sent), timeout=20)
    finally:
        got = messages(harness.out)
        print(len(got), len(sent), len(set(got)))
    await wait_for(lambda: idle(harness))
    assert messages(harness.out) == sent
    assert files_lost(harness) == 0


def files_lost(harness: Harness) -> float:
    assert harness.pipeline is not None
    runner = harness.pipeline.runners[0]
    return runner.metrics.files_lost.labels(runner.label)._value.get()


async def test_a_file_rotated_away_unread_is_counted_and_the_rest_flows(harness: Harness,
                                                                       caplog: pytest.LogCaptureFixture):
    """A file the runtime creates and deletes before the route opens it cannot be read, but it is not lost
    silently: the kernel's creation events outnumber the files the route came to know."""
    c = harness.container("lost")
    sent = c.write(10)
    harness.start()
    await wait_for(lambda: len(records(harness.out)) == 10)
    runner = harness.pipeline.runners[0]
    watch = runner.follower
    await wait_for(lambda: watch.watch is not None and watch.watch.births(str(c.dir)) is not None)
    with runner.follower.lock:  # neither the reader nor the inotify thread can open a file meanwhile
        c.rotate(max_file=2)  # the read file becomes .1; file X is created
        c.write(50)  # into X
        c.rotate(max_file=2)  # X becomes .1; Y is created
        sent += c.write(5)  # into Y
        c.rotate(max_file=2)  # X is deleted unread; Y becomes .1; Z is created
    sent += c.write(5)  # into Z
    await wait_for(lambda: files_lost(harness) == 1, timeout=10)
    await wait_for(lambda: len(records(harness.out)) >= len(sent))
    assert messages(harness.out) == sent
    await wait_for(lambda: idle(harness))
    # Counted once: listings after the count (each one accounts again) find nothing more missing.
    state = state_of(harness, c.dir)
    for _ in range(3):
        with runner.follower.lock:
            runner.follower._refresh_files(state, force=True)
        assert state.suspect_since == 0.0
    assert files_lost(harness) == 1


async def test_rotated_and_deleted_files_still_open_are_drained(harness: Harness):
    c = harness.container("del")
    sent = c.write(100)
    harness.start()
    await wait_for(lambda: len(records(harness.out)) == 100)
    # The reader pauses (route blocked) while the file is rotated away and deleted.
    runner = harness.pipeline.runners[0]
    sink = runner.sink
    original = sink.send
    gate = asyncio.Event()

    async def blocked(payload: Payload) -> DeliveryResult:
        await gate.wait()
        return await original(payload)

    sink.send = blocked  # type: ignore[method-assign]
    sent += c.write(3000)
    size = c.log.stat().st_size  # the reader has read it all and waits for the sender
    await wait_for(lambda: [t.offset for t in tails_of(harness, c.dir)] == [size])
    os.unlink(c.log)  # max-file=1 rotation: unlink the live file and recreate it
    c.log.touch()
    sent += c.write(5)
    gate.set()
    await wait_for(lambda: len(records(harness.out)) >= len(sent), timeout=20)
    assert messages(harness.out) == sent


async def test_an_older_file_found_late_never_ends_the_live_file_early(harness: Harness):
    """A rotation racing a listing can make the route find a rotated file only after it began the newer, live one.
    The older file is read then, and the live file stays open: what is written to it afterwards still arrives."""
    c = harness.container("late")
    harness.start()
    sent = c.write(10)
    await wait_for(lambda: len(records(harness.out)) == 10)
    older = [f"older {i}" for i in range(20)]
    staged = c.dir / "staged"
    staged.write_bytes(b"".join(
        orjson.dumps({"log": m + "\n", "stream": "stdout", "time": f"2026-11-28T03:00:00.{i:09d}Z"}) + b"\n"
        for i, m in enumerate(older)))
    staged.rename(f"{c.log}.1")  # older than the live file by its records' times
    await wait_for(lambda: len(records(harness.out)) == 30)  # found and read; the live file is at its end meanwhile
    sent += c.write(10, prefix="after")
    await wait_for(lambda: len(records(harness.out)) >= 40)
    await wait_for(lambda: idle(harness))
    got = messages(harness.out)
    assert got == sent[:10] + older + sent[10:]


async def test_a_rotation_while_the_files_are_opened_keeps_their_order(harness: Harness,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """The names are listed, then opened one by one: a rotation in between makes ``.1`` open the newer file and
    hides the older one (now ``.2``). The route lists again until the names are stable, so it finds the older file
    before it begins the newer ones, and the lines come out in the order they were written."""
    c = harness.container("race")
    sent = c.write(10, prefix="a")
    c.rotate(max_file=3)
    sent += c.write(10, prefix="b")
    real_open = Tail.open
    raced: list[str] = []

    def open_racing_a_rotation(path: str) -> Tail | None:
        if path.endswith(".1") and not raced:
            raced.append(path)
            c.rotate(max_file=3)  # a -> .2, b -> .1, a new live file
        return real_open(path)

    monkeypatch.setattr(Tail, "open", staticmethod(open_racing_a_rotation))
    harness.start()
    sent += c.write(10, prefix="c")
    await wait_for(lambda: len(records(harness.out)) >= 30)
    await wait_for(lambda: idle(harness))
    assert raced and messages(harness.out) == sent


async def test_a_cri_restart_after_the_clock_stepped_back_keeps_the_new_live_file(harness: Harness):
    """The container restarted (``1.log``) after the node's clock was stepped back, so its first record is older
    than ``0.log``'s. A later restart count is the newer file whatever the times say: ``0.log`` is ended, ``1.log``
    stays the live file and what is written to it later still arrives (found by review: the time order ended it)."""
    host = harness.tmp / "host"
    uid = "8712f785-1a3e-41ec-a00b-e2dcc77431cb"
    cid = "c" * 64
    pod_dir = host / "var/log/pods" / f"shop_api-7d9f_{uid}" / "app"
    pod_dir.mkdir(parents=True)
    bundle = host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_bytes(orjson.dumps({"annotations": {
        "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-name": "api-7d9f",
        "io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.container-name": "app"}}))
    (pod_dir / "0.log").write_bytes(b"2026-11-28T04:00:00.000000001Z stdout F run0 a\n"
                                    b"2026-11-28T04:00:00.000000002Z stdout F run0 b\n")
    harness.start()
    await wait_for(lambda: len(records(harness.out)) == 2)
    new = pod_dir / "1.log"  # the container restarted; the clock was stepped back 1 h meanwhile
    new.write_bytes(b"2026-11-28T03:00:00.000000001Z stdout F run1 a\n")
    await wait_for(lambda: len(records(harness.out)) == 3)
    await wait_for(lambda: [t.path for t in tails_of(harness, pod_dir)] == [str(new)])  # 0.log is ended
    with new.open("ab") as fh:
        fh.write(b"2026-11-28T03:00:01.000000001Z stdout F run1 b (written later)\n")
    await wait_for(lambda: len(records(harness.out)) == 4)
    await wait_for(lambda: idle(harness))
    got = [r["message"] for r in records(harness.out)]
    assert got == ["run0 a", "run0 b", "run1 a", "run1 b (written later)"], got


def _doc(msg: str, t: str) -> bytes:
    return orjson.dumps({"log": msg, "stream": "stdout", "time": t}) + b"\n"


async def test_a_half_joined_line_of_the_live_file_is_not_joined_to_an_older_file(harness: Harness):
    """The live file ends in the first part of a long line (a Docker partial) when an older file is found late: the
    reader stays on the live file until the line is complete, instead of joining the older file's next line to it."""
    c = harness.container("late")
    harness.start()
    c.write(3)
    await wait_for(lambda: len(records(harness.out)) == 3)
    c.write_raw(_doc("HEAD of a long line from the live file|", "2026-11-28T04:00:01.000000000Z"))  # Docker partial
    state = state_of(harness, c.dir)
    await wait_for(lambda: bool(state.decoder.pending))  # the reader holds the first part
    staged = c.dir / "staged"
    staged.write_bytes(b"".join(_doc(f"older {i}\n", f"2026-11-28T03:00:00.{i:09d}Z") for i in range(3)))
    staged.rename(f"{c.log}.1")
    await wait_for(lambda: len(state.tails) == 2)  # the older file is found while the line is half joined
    c.write_raw(_doc("TAIL of the long line\n", "2026-11-28T04:00:01.000000001Z"))
    await wait_for(lambda: len(records(harness.out)) == 7)
    await wait_for(lambda: idle(harness))
    got = [r["message"] for r in records(harness.out)]
    assert "HEAD of a long line from the live file|TAIL of the long line" in got, got


async def test_a_gone_source_is_dropped_by_the_reader_not_by_discovery(harness: Harness):
    """Discovery runs in its own thread while the reader reads: it only marks a removed container's source, and the
    reader (which owns the files and the chunks read ahead) closes and drops it on its next read, never while it
    may be reading it (found by review: a file closed under the reader, the read-ahead jobs changed under it)."""
    import shutil

    c = harness.container("gone")
    sent = c.write(5)
    pipeline = harness.start(run=False)
    runner = pipeline.runners[0]
    follower = runner.follower
    follower.offer(pipeline.scan())  # the discovery thread's call: taken by the reader's next read
    assert not follower.states
    assert runner.read_batch(100, 1 << 20).count == len(sent)
    shutil.rmtree(c.dir)
    follower.offer(pipeline.scan())
    [state] = follower.states.values()
    [tail] = state.tails
    follower.collect_garbage()  # the discovery thread's call
    assert follower.states and tail.fd >= 0 and not state.gone
    runner.read_batch(100, 1 << 20)  # the reader's next read
    assert not follower.states and tail.fd == -1


def test_discovery_hands_sources_over_while_the_reader_drops_them(harness: Harness):
    """Discovery's thread offers scans and asks for garbage collection while the reader's thread reads and drops
    removed sources: only the reader changes the sources. Before, discovery iterated and grew the sources while
    the reader deleted from them: with the threads switching every microsecond, 24 of 30 runs of this test failed
    with "dictionary changed size during iteration" on the code of e3cd204."""
    import shutil
    import sys
    import threading

    containers = [harness.container(f"churn-{i}") for i in range(200)]
    for c in containers:
        c.write(2)
    pipeline = harness.start(run=False)
    follower = pipeline.runners[0].follower
    errors: list[BaseException] = []
    done = threading.Event()

    def discovery() -> None:
        try:
            for i, c in enumerate(containers):
                follower.offer(pipeline.scan())
                follower.collect_garbage()
                if i % 2:
                    shutil.rmtree(c.dir)  # a container removed: its source is gone from the next scan
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                pipeline.runners[0].read_batch(100, 1 << 20)
            follower.offer(pipeline.scan())
            follower.collect_garbage()
            pipeline.runners[0].read_batch(100, 1 << 20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=discovery), threading.Thread(target=reader)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: the interleavings come quickly
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert sorted(follower.states) == sorted(f"docker:{c.cid}" for c in containers[::2])


async def test_without_inotify_new_containers_and_rotations_are_found_by_polling(harness: Harness,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    from watchdog.observers import inotify_c

    def unavailable() -> None:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    monkeypatch.setattr(inotify_c, "InotifyFD", unavailable)
    first = harness.container("first")
    sent = first.write(5)
    harness.start()
    await wait_for(lambda: messages(harness.out) == sent)
    late = harness.container("late")  # found by a rescan, not by an inotify event
    sent += late.write(5)
    first.rotate(max_file=3)
    sent += first.write(5, prefix="rotated")
    await wait_for(lambda: sorted(messages(harness.out)) == sorted(sent))
    await wait_for(lambda: idle(harness))
    assert sorted(messages(harness.out)) == sorted(sent)


async def test_copytruncate_restarts_at_zero(harness: Harness):
    c = harness.container("trunc")
    sent = c.write(30)
    harness.start()
    await wait_for(lambda: len(records(harness.out)) == 30)
    os.truncate(c.log, 0)
    more = c.write(5, prefix="after")
    await wait_for(lambda: len(records(harness.out)) == 35)
    assert messages(harness.out) == sent + more


async def test_copytruncate_is_a_new_file_a_restart_resumes_without_repeats(harness: Harness):
    """The truncated file is taken up under a key of its new first line: its checkpoint is found again after a
    restart (the old key would name a file whose first line is gone), so nothing is sent twice."""
    c = harness.container("trunc")
    sent = c.write(30)
    harness.start()
    await wait_for(lambda: len(records(harness.out)) == 30)
    os.truncate(c.log, 0)
    sent += c.write(5, prefix="after")
    await wait_for(lambda: len(records(harness.out)) == 35)
    await wait_for(lambda: idle(harness))
    await harness.stop()
    keys = next(iter(orjson.loads((harness.state / "checkpoints.json").read_bytes())["routes"].values()))
    new_key = Tail.open(str(c.log)).key  # type: ignore[union-attr]
    assert keys[new_key]["offset"] == c.log.stat().st_size
    sent += c.write(3, prefix="late")
    harness.start()
    await wait_for(lambda: len(records(harness.out)) >= 38)
    await wait_for(lambda: idle(harness))
    assert messages(harness.out) == sent


async def test_copytruncate_gives_elasticsearch_new_ids(harness: Harness):
    """Elasticsearch ids are the file key and the offset: the truncated file's records are at the old content's
    offsets, and under the old key they would be answered 409 (create) as if indexed already, and be lost."""
    es = EsStandin().start()
    try:
        c = harness.container("trunc-es")
        sent = c.write(30)
        harness.start(f"elasticsearch+http://127.0.0.1:{es.port}/logs")
        await wait_for(lambda: len(es.docs("logs")) == 30)
        os.truncate(c.log, 0)
        sent += c.write(30, prefix="aftr")  # past the old offset: the size alone may not show the truncation
        await wait_for(lambda: len(es.docs("logs")) >= 60)
        await wait_for(lambda: idle(harness))
        assert sorted(d["message"] for d in es.docs("logs")) == sorted(sent)
        assert set(es.writes.values()) == {1}
    finally:
        await harness.stop()
        es.stop()


async def test_restart_after_a_crash_resumes_without_loss(harness: Harness):
    c = harness.container("crashy")
    sent = c.write(2000)
    harness.start()
    await wait_for(lambda: len(records(harness.out)) >= 500, timeout=20)
    await harness.crash()
    # What a restart sends again: the records written beyond the checkpoint persisted at the crash.
    persisted = orjson.loads((harness.state / "checkpoints.json").read_bytes()) \
        if (harness.state / "checkpoints.json").exists() else {"routes": {}}
    acked = max((e["offset"] for files in persisted["routes"].values() for e in files.values()), default=0)
    window = sum(1 for r in records(harness.out) if r["offset"] >= acked)
    sent += c.write(1000)
    harness.start()
    await wait_for(lambda: set(messages(harness.out)) >= set(sent), timeout=20)
    await wait_for(lambda: acked_to_end(harness, c))  # nothing is left to send again
    got = messages(harness.out)
    assert set(got) == set(sent)
    dup = len(got) - len(sent)
    assert dup <= window, (dup, window)
    # A clean stop writes the checkpoint: a third run re-sends nothing.
    await harness.stop()
    before = len(got)
    harness.start()
    await wait_for(lambda: bool(tails_of(harness, c.dir)) and idle(harness))  # open again, at its acknowledged end
    assert len(messages(harness.out)) == before


async def test_a_failing_route_does_not_hold_up_the_other(harness: Harness, tmp_path: Path):
    c = harness.container("two")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the route wants a directory")
    good = tmp_path / "good.ndjson"
    bad = blocker / "out.ndjson"
    sent = c.write(300)
    harness.start(f"file://{good}", f"file://{bad}")
    await wait_for(lambda: messages(good) == sent)
    assert not bad.exists()
    sent += c.write(100)
    await wait_for(lambda: messages(good) == sent)
    blocker.unlink()  # the receiver comes back
    await wait_for(lambda: messages(bad) == sent, timeout=40)


async def test_a_bug_in_a_sink_stops_its_route_only_visibly_and_once(harness: Harness, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]):
    """A sink that raises TypeError is not retried forever in silence: its route stops (lookout_route_failed 1,
    lookout_route_up 0, /readyz 503 naming it while /healthz stays 200), the bug is logged once with its traceback,
    nothing of it is
    acknowledged, and the other route goes on."""
    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client import CollectorRegistry

    from agent.model import LiveSurface
    from exporters.prometheus.exposition import Exposition
    from exporters.web.app import make_app

    c = harness.container("bug")
    good, buggy = tmp_path / "good.ndjson", tmp_path / "buggy.ndjson"
    sent = c.write(50)
    pipeline = harness.start(f"file://{good}", f"file://{buggy}", run=False)
    broken = pipeline.runners[1]
    calls = 0

    async def send(payload: Payload) -> DeliveryResult:
        nonlocal calls
        calls += 1
        raise TypeError("a bug in the sink")

    broken.sink.send = send  # type: ignore[method-assign]
    harness.tasks = pipeline.tasks()
    await wait_for(lambda: messages(good) == sent)
    await wait_for(lambda: bool(broken.failed))
    label, metrics = broken.label, broken.metrics
    assert metrics.failed.labels(label)._value.get() == 1 and metrics.up.labels(label)._value.get() == 0
    assert pipeline.runners[0].metrics.failed.labels(pipeline.runners[0].label)._value.get() == 0
    assert "TypeError: a bug in the sink" in broken.failed and calls == 1
    assert all(t.done() for t in broken.tasks)
    sent += c.write(20)
    await wait_for(lambda: messages(good) == sent)  # the other route goes on
    assert calls == 1 and not buggy.exists()
    assert not any(files for route, files in pipeline.store.routes().items() if route == broken.route.id)
    logged = capsys.readouterr().out
    assert logged.count("route_failed") == 1 and "Traceback" in logged
    problems = lambda: {f"route {k}": v for k, v in pipeline.failed().items()}  # noqa: E731  (as agent.runtime)
    app = make_app(Exposition(CollectorRegistry()), LiveSurface(problems=problems))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503 and f"failed: route {label}: SinkFailed" in await resp.text()
        assert (await client.get("/healthz")).status == 200  # alive: a restart would not mend a bug


async def test_route_filters_and_opt_out(harness: Harness, tmp_path: Path):
    web = harness.container("web-1", labels={"team": "api"})
    db = harness.container("db", labels={"team": "data"})
    quiet = harness.container("web-quiet", labels={"lookout.logs": "false"})
    ignored = harness.container("web-ignored", env=["LOGSPOUT=ignore"])
    for c in (web, db, quiet, ignored):
        c.write(3)
        c.write(2, stream="stderr")
    only_web = tmp_path / "web.ndjson"
    by_label = tmp_path / "label.ndjson"
    everything = tmp_path / "all.ndjson"
    harness.start(f"file://{only_web}?filter.name=web-*&filter.sources=stdout",
                  f"file://{by_label}?filter.labels=team:data", f"file://{everything}")
    await wait_for(lambda: len(records(everything)) == 10)
    await wait_for(lambda: len(records(only_web)) == 3 and len(records(by_label)) == 5)
    await wait_for(lambda: idle(harness))
    assert {r["container_name"] for r in records(everything)} == {"web-1", "db"}
    assert {(r["container_name"], r["stream"]) for r in records(only_web)} == {("web-1", "stdout")}
    assert {r["container_name"] for r in records(by_label)} == {"db"}


async def test_read_from_tail_skips_only_what_existed_at_the_first_start(harness: Harness):
    old = harness.container("old")
    old.write(10)
    harness.start(extra=("--read-from", "tail"))
    await wait_for(lambda: [t.offset for t in tails_of(harness, old.dir)] == [old.log.stat().st_size])
    new_lines = old.write(2, prefix="new")
    late = harness.container("late")
    late_lines = late.write(4)
    await wait_for(lambda: len(records(harness.out)) == 6)
    assert sorted(messages(harness.out, "old")) == sorted(new_lines)
    assert messages(harness.out, "late") == late_lines


async def test_broken_lines_are_skipped_and_counted_good_lines_flow(harness: Harness):
    c = harness.container("broken")
    sent = c.write(2)
    c.write_raw(b'{"log":"torn by a cra\n\n\x00\x00\n')
    sent += c.write(2)
    pipeline = harness.start()
    await wait_for(lambda: len(records(harness.out)) == 4)
    assert messages(harness.out) == sent
    runner = pipeline.runners[0]
    assert runner.metrics.parse_errors.labels(runner.label)._value.get() == 3


def test_file_identity_survives_rename_and_tells_reused_inodes_apart(tmp_path: Path):
    a = tmp_path / "a.log"
    a.write_bytes(b"first line\nsecond\n")
    t1 = Tail.open(str(a))
    assert t1 is not None
    a.rename(tmp_path / "a.log.1")
    t2 = Tail.open(str(tmp_path / "a.log.1"))
    assert t2 is not None and t2.key == t1.key
    b = tmp_path / "b.log"
    b.write_bytes(b"other first line\n")
    t3 = Tail.open(str(b))
    assert t3 is not None and t3.key.split(":")[2] != t1.key.split(":")[2]
    empty = tmp_path / "c.log"
    empty.write_bytes(b"no newline yet")
    assert Tail.open(str(empty)) is None  # identity needs a complete first line
    for t in (t1, t2, t3):
        t.close()


async def test_cri_pod_logs_join_partials_follow_rotation_and_carry_pod_metadata(harness: Harness):
    host = harness.tmp / "host"
    uid = "8712f785-1a3e-41ec-a00b-e2dcc77431cb"
    cid = "c" * 64
    pod_dir = host / "var/log/pods" / f"shop_api-7d9f_{uid}" / "app"
    pod_dir.mkdir(parents=True)
    links = host / "var/log/containers"
    links.mkdir(parents=True)
    (links / f"api-7d9f_shop_app-{cid}.log").symlink_to(pod_dir / "0.log")
    bundle = host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_bytes(orjson.dumps({"annotations": {
        "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-name": "api-7d9f",
        "io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.image-name": "registry.example/shop/api:1.4"}}))
    live = pod_dir / "0.log"
    live.write_bytes(b"2026-11-28T04:00:00.000000001Z stdout F first\n"
                     b"2026-11-28T05:00:00.5+01:00 stderr P part one, \n")
    harness.start()
    with live.open("ab") as fh:
        fh.write(b"2026-11-28T04:00:00.7Z stderr F part two\n")
    await wait_for(lambda: len(records(harness.out)) == 2)
    # kubelet rotation: rename to 0.log.<timestamp>, the runtime reopens a fresh 0.log
    with live.open("ab") as fh:
        fh.write(b"2026-11-28T04:00:01Z stdout F before rotation\n")
    live.rename(pod_dir / "0.log.20261128-040001")
    live.write_bytes(b"2026-11-28T04:00:02Z stdout F after rotation\n")
    await wait_for(lambda: len(records(harness.out)) == 4)
    got = records(harness.out)
    assert [(r["stream"], r["message"]) for r in got] == [
        ("stdout", "first"), ("stderr", "part one, part two"), ("stdout", "before rotation"),
        ("stdout", "after rotation")]
    assert got[1]["time"] == "2026-11-28T04:00:00.5Z"  # the first part's time, converted to UTC
    first = got[0]
    assert (first["pod"], first["namespace"], first["container"]) == ("api-7d9f", "shop", "app")
    assert first["container_id"] == cid and first["image"] == "registry.example/shop/api:1.4"
    assert first["labels"]["io.kubernetes.pod.name"] == "api-7d9f"


def _podman_container(host: Path, cid: str, name: str, labels: dict[str, str], running: bool = True) -> Path:
    """A Podman container as Podman 5 leaves it on disk: libpod's db.sql record, containers/storage's
    ``vfs-containers/<id>/userdata``; returns where conmon writes its k8s-file log."""
    storage = host / "var/lib/containers/storage"
    userdata = storage / "vfs-containers" / cid / "userdata"
    userdata.mkdir(parents=True)
    db = storage / "db.sql"
    if not db.exists():
        trees.put_libpod_sqlite(db, [])
    with sqlite3.connect(db) as conn:
        config = {"id": cid, "name": name, "rootfsImageName": "localhost/busybox:test", "labels": labels,
                  "logPath": str(userdata / "ctr.log"), "logDriver": "k8s-file",
                  "spec": {"process": {"env": ["PATH=/bin"]}}}
        conn.execute("INSERT INTO ContainerConfig VALUES (?, ?, NULL, ?)", (cid, name, orjson.dumps(config)))
        conn.execute("INSERT INTO ContainerState VALUES (?, 3, NULL, ?)",
                     (cid, orjson.dumps({"state": 3 if running else 2, "pid": 4242})))
    conn.close()
    return userdata / "ctr.log"


async def test_podman_k8s_file_logs_carry_libpod_metadata_and_follow_conmons_rotation(harness: Harness):
    """Podman's k8s-file driver: conmon writes CRI lines (with the host's UTC offset) to ``userdata/ctr.log`` and,
    at ``--log-opt max-size``, writes ``ctr.log.tmp`` and renames it over ``ctr.log``. A container started while
    the agent runs is found (its directory appears first, its log a moment later) with its name from libpod."""
    host = harness.tmp / "host"
    web = _podman_container(host, "a" * 64, "web", {"app": "web"})
    web.write_bytes(b"2026-11-28T04:00:00.000000001+00:00 stdout F first\n"
                    b"2026-11-28T05:00:00.5+01:00 stderr P part one, \n")
    harness.start()
    with web.open("ab") as fh:
        fh.write(b"2026-11-28T04:00:00.7+00:00 stderr F part two\n")
    await wait_for(lambda: len(records(harness.out)) == 2)
    with web.open("ab") as fh:
        fh.write(b"2026-11-28T04:00:01+00:00 stdout F before rotation\n")
    tmp = web.with_name("ctr.log.tmp")
    tmp.write_bytes(b"2026-11-28T04:00:02+00:00 stdout F after rotation\n")
    tmp.rename(web)
    late = _podman_container(host, "b" * 64, "late", {})
    late.write_bytes(b"2026-11-28T04:00:03+00:00 stdout F hello from late\n")
    await wait_for(lambda: len(records(harness.out)) == 5)
    await wait_for(lambda: idle(harness))
    got = records(harness.out)
    assert [(r["stream"], r["message"]) for r in got if r["container_name"] == "web"] == [
        ("stdout", "first"), ("stderr", "part one, part two"), ("stdout", "before rotation"),
        ("stdout", "after rotation")]
    assert [r["message"] for r in got if r["container_name"] == "late"] == ["hello from late"]
    assert got[1]["time"] == "2026-11-28T04:00:00.5Z"  # the first part's time, in UTC
    assert (got[0]["container_id"], got[0]["image"], got[0]["labels"]) == ("a" * 64, "localhost/busybox:test",
                                                                           {"app": "web"})
    assert got[0]["file"] == str(web) and "pod" not in got[0]


def test_podman_sources_are_containers_with_a_ctr_log(tmp_path: Path) -> None:
    """containers/storage holds CRI-O's containers too: only those with conmon's ctr.log are Podman log sources, and
    its containers directories are watched for new ones."""
    from collectors.logs.sources import parents, scan

    storage = tmp_path / "storage"
    podman, crio = "a" * 64, "b" * 64
    (storage / "overlay-containers" / podman / "userdata").mkdir(parents=True)
    (storage / "overlay-containers" / podman / "userdata/ctr.log").touch()
    (storage / "overlay-containers" / crio / "userdata").mkdir(parents=True)
    (storage / "overlay-containers/containers.json").write_text("[]")
    specs = scan(tmp_path / "docker", tmp_path / "pods", storage)
    assert list(specs) == [f"podman:{podman}"]
    spec = specs[f"podman:{podman}"]
    assert (spec.format, spec.container_id) == ("cri", podman)
    assert spec.files() == [str(storage / "overlay-containers" / podman / "userdata/ctr.log")]
    assert str(storage / "overlay-containers") in parents(tmp_path / "docker", tmp_path / "pods", storage)
    assert scan(tmp_path / "docker", tmp_path / "pods") == {}  # no graph root given: no Podman sources


async def test_a_cri_containers_lines_wait_for_its_link_and_runtime_record(harness: Harness):
    """The kubelet makes a container's log directory before the container, and its /var/log/containers link only
    once it started: lines written before then wait for the record (up to CRI_RECORD_WAIT) instead of going out
    with only what the path tells (found by the containerd integration test: no image, the id of no record)."""
    host = harness.tmp / "host"
    uid = "8712f785-1a3e-41ec-a00b-e2dcc77431cb"
    cid = "d" * 64
    pod_dir = host / "var/log/pods" / f"shop_api-7d9f_{uid}" / "app"
    pod_dir.mkdir(parents=True)
    links = host / "var/log/containers"  # a kubelet's host: it makes the links
    links.mkdir(parents=True)
    pipeline = harness.start()
    (pod_dir / "0.log").write_bytes(b"2026-11-28T04:00:00.000000001Z stdout F early\n")
    lookup = pipeline.runners[0].follower.lookup
    # the container is starting: no link, no bundle yet; the reader asked for its metadata and holds its lines
    await wait_for(lambda: str(pod_dir) in lookup._cri_first)  # type: ignore[attr-defined]
    assert records(harness.out) == []
    bundle = host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_bytes(orjson.dumps({"annotations": {
        "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-name": "api-7d9f",
        "io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.image-name": "registry.example/shop/api:1.4"}}))
    (links / f"api-7d9f_shop_app-{cid}.log").symlink_to(pod_dir / "0.log")
    await wait_for(lambda: len(records(harness.out)) == 1)
    (got,) = records(harness.out)
    assert (got["message"], got["container_id"], got["image"]) == ("early", cid, "registry.example/shop/api:1.4")


async def test_a_cri_container_without_link_or_record_ships_with_the_paths_metadata(harness: Harness):
    """No /var/log/containers (not mounted, or no kubelet): nothing to wait for, the path's metadata at once."""
    host = harness.tmp / "host"
    uid = "8712f785-1a3e-41ec-a00b-e2dcc77431cb"
    pod_dir = host / "var/log/pods" / f"shop_api-7d9f_{uid}" / "app"
    pod_dir.mkdir(parents=True)
    (pod_dir / "0.log").write_bytes(b"2026-11-28T04:00:00.000000001Z stdout F orphan\n")
    harness.start()
    await wait_for(lambda: len(records(harness.out)) == 1)
    (got,) = records(harness.out)
    assert (got["pod"], got["namespace"], got["container"], got["container_name"]) == ("api-7d9f", "shop", "app",
                                                                                       "app")

"""Chunk workers (agent.logs.offload): real worker processes give exactly the bytes the reader would have made.

Each worker decodes a chunk from shared memory and encodes it for the route; the reader takes that payload only
when the worker's decoder ended with nothing held, no error and nothing cut. These tests feed real processes real
json-file chunks (plain ones, and ones with partials, bad lines and over-long lines), kill workers mid-way, and
run the whole pipeline twice over the same multi-MiB log, with and without workers, comparing the outputs byte for
byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest

from agent.logs import offload
from agent.logs.offload import ChunkWorkers, Job, default_workers
from agent.model import ContainerInfo, LogSource, Segment
from collectors.cgroups.quota import own_cpu_limit, usable_cpus
from collectors.logs.decoders import CriDecoder, JsonFileDecoder
from exporters.logs.ndjson import NdjsonEncoder
from exporters.syslog.format import SyslogEncoder, SyslogFormat
from tests.unit.test_log_pipeline import Harness, idle, records, wait_for

SOURCE = LogSource("/var/lib/docker/containers/c/c-json.log", "8:1:ab",
                   ContainerInfo(cgroup="", container_id="c" * 64, name="web", image="nginx:1.27",
                                 labels={"team": "a%b"}), "node-1")


def line(i: int, text: str = "", stream: str = "stdout", end: str = "\n") -> bytes:
    msg = text or f"request {i} finished in {i % 97} ms ✓ \"quoted\"\ttab"
    return orjson.dumps({"log": msg + end, "stream": stream, "time": f"2026-11-28T04:00:{i % 60:02d}.{i:09d}Z"})


def chunk(lines: list[bytes]) -> bytes:
    return b"".join(x + b"\n" for x in lines)


def local(data: bytes, offset: int, encode) -> bytes:  # type: ignore[no-untyped-def]
    return encode([Segment(SOURCE, JsonFileDecoder().decode(data, offset).records)])


@pytest.fixture
def workers(monkeypatch):  # type: ignore[no-untyped-def]
    failures: list[str] = []
    pool = ChunkWorkers(2, ("ndjson", None), 1 << 20, failures.append)
    pool.failures_seen = failures  # type: ignore[attr-defined]
    # Worker starts are held until the first submit has returned: with a forkserver already warm from an
    # earlier test, the background start could otherwise win the race against the submit that began it.
    gate, real = threading.Event(), offload._Worker
    monkeypatch.setattr(offload, "_Worker", lambda context: gate.wait(10) and real(context))
    assert pool.submit(chunk([line(0)]), 0, SOURCE) is None  # none running yet: they start in the background
    gate.set()
    pool.start(wait=True)
    yield pool
    pool.close()


def test_a_cri_chunk_comes_back_encoded_exactly_as_the_reader_would_and_a_partial_stays_with_it(
        workers: ChunkWorkers) -> None:
    data = cri_log(3000)[:-1].rpartition(b"\n")[0] + b"\n"  # whole lines; the partial (P) in it is joined there
    job = workers.submit(data, 100, SOURCE, ("syslog", SyslogFormat(framing="lf")), fmt="cri")
    assert job is not None
    payload, count, truncated = workers.take(job)  # type: ignore[misc]
    records = CriDecoder().decode(data, 100).records
    assert count == len(records) == 2999 and truncated == 0
    assert payload == SyslogEncoder(SyslogFormat(framing="lf")).encode([Segment(SOURCE, records)])
    partial = b"2026-12-04T10:00:00.000000001Z stdout P half of a line\n"
    held = workers.submit(data + partial, 100, SOURCE, fmt="cri")  # ends in a partial: the reader joins it
    assert held is not None and workers.take(held) is None


def test_a_plain_chunk_comes_back_encoded_exactly_as_the_reader_would(workers: ChunkWorkers) -> None:
    data = chunk([line(i, stream="stderr" if i % 5 == 0 else "stdout") for i in range(3000)])
    job = workers.submit(data, 4096, SOURCE)
    assert job is not None
    payload, count, truncated = workers.take(job)  # type: ignore[misc]
    assert (count, truncated) == (3000, 0)
    assert payload == local(data, 4096, NdjsonEncoder().encode)
    assert orjson.loads(payload.split(b"\n")[1])["offset"] == 4096 + len(line(0)) + 1


def test_chunks_the_reader_must_decode_itself_come_back_as_none(workers: ChunkWorkers) -> None:
    good = [line(i) for i in range(10)]
    partial = line(10, "first part of a long line", end="")  # Docker's 16 KiB partial: no newline yet
    bad = b'{"log":"torn by a cra'
    for data in (chunk([*good, partial]), chunk([*good, bad, *good])):
        job = workers.submit(data, 0, SOURCE)
        assert job is not None
        assert workers.take(job) is None
    # A partial completed within the chunk holds nothing at its end: as the reader would make it.
    joined = chunk([partial, *good])
    job = workers.submit(joined, 0, SOURCE)
    assert job is not None and workers.take(job) == (local(joined, 0, NdjsonEncoder().encode), 10, 0)
    too_long = ChunkWorkers(1, ("ndjson", None), 1024)
    too_long.start(wait=True)
    try:
        job = too_long.submit(chunk([line(0, "x" * 2000)]), 0, SOURCE)
        assert job is not None and too_long.take(job) is None  # cut at max-line-bytes: the reader counts it
    finally:
        too_long.close()
    assert workers.failures_seen == []  # type: ignore[attr-defined]


def test_syslog_payloads_are_the_readers_bytes_and_count_what_they_cut() -> None:
    fmt = SyslogFormat(max_message_bytes=480)
    pool = ChunkWorkers(1, ("syslog", fmt), 1 << 20)
    pool.start(wait=True)
    try:
        data = chunk([line(i) for i in range(200)] + [line(200, "y" * 1000)])
        job = pool.submit(data, 0, SOURCE)
        assert job is not None
        payload, count, truncated = pool.take(job)  # type: ignore[misc]
        encoder = SyslogEncoder(fmt)
        assert payload == local(data, 0, encoder.encode)
        assert (count, truncated) == (201, encoder.last_truncated) and truncated == 1
        frame = payload.split(b" ", 1)[1]
        assert frame.startswith(b"<14>1 2026-11-28T04:00:00.000000Z node-1 web - - [lookout@32473 container_id=")
    finally:
        pool.close()


def test_many_jobs_in_flight_keep_their_own_slots(workers: ChunkWorkers) -> None:
    chunks = [chunk([line(i * 1000 + j) for j in range(1000)]) for i in range(12)]
    offsets = [sum(map(len, chunks[:i])) for i in range(len(chunks))]
    taken = 0
    jobs: list = []
    for data, offset in zip(chunks, offsets, strict=True):
        job = workers.submit(data, offset, SOURCE)
        if job is None:  # every slot busy: take the oldest first, as the reader does
            old = jobs.pop(0)
            assert workers.take(old) == (local(old.data, old.offset, NdjsonEncoder().encode), 1000, 0)
            taken += 1
            job = workers.submit(data, offset, SOURCE)
        assert job is not None
        jobs.append(job)
    dropped = jobs.pop(0)
    workers.drop(dropped)  # given up: its slot comes back once its answer is in
    for job in jobs:
        assert workers.take(job) == (local(job.data, job.offset, NdjsonEncoder().encode), 1000, 0)
        taken += 1
    assert taken == 11
    assert workers.submit(chunks[0], 0, SOURCE) is not None


def test_a_killed_worker_costs_only_its_chunks_and_is_replaced_then_given_up(workers: ChunkWorkers) -> None:
    data = chunk([line(i) for i in range(6000)])
    job = workers.submit(data, 0, SOURCE)
    assert job is not None
    os.kill(job.worker.process.pid, signal.SIGKILL)
    job.worker.process.join(5)
    assert workers.take(job) is None  # the reader decodes this chunk itself
    assert len(workers.failures_seen) == 1 and "died" in workers.failures_seen[0]  # type: ignore[attr-defined]
    assert len(workers._workers) == 1
    workers.start(wait=True)  # a new worker takes its place
    again = workers.submit(data, 0, SOURCE)
    assert again is not None and workers.take(again) is not None
    for _ in range(2):
        workers.start(wait=True)
        victim = workers.submit(data, 0, SOURCE)
        assert victim is not None
        os.kill(victim.worker.process.pid, signal.SIGKILL)
        victim.worker.process.join(5)
        assert workers.take(victim) is None
    assert workers.disabled and workers.submit(data, 0, SOURCE) is None
    assert "decoding in the reader from now on" in workers.failures_seen[-1]  # type: ignore[attr-defined]


def test_default_workers_follow_the_cpus_this_process_may_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert usable_cpus(str(tmp_path)) == 64 and default_workers(64) == 4  # no cgroup files: the affinity, capped
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert default_workers(usable_cpus(str(tmp_path))) == 0  # one CPU: the reader alone
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    cgroup_tree(tmp_path, {"proc/self/cgroup": "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope\n",
                           "sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/cpu.max": "50000 100000\n",
                           "sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope/cpu.max":
                               "max 100000\n"})
    assert usable_cpus(str(tmp_path)) == 0.5  # a DaemonSet's limits.cpu 500m on a 64-CPU node
    assert default_workers(0.5) == 0 and default_workers(2.5) == 2


def cgroup_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize(("files", "want"), [
    # cgroup v2: the smallest cpu.max from the process's cgroup up to the root
    ({"proc/self/cgroup": "0::/a/b\n", "sys/fs/cgroup/cpu.max": "max 100000\n",
      "sys/fs/cgroup/a/cpu.max": "300000 100000\n", "sys/fs/cgroup/a/b/cpu.max": "max 100000\n"}, 3.0),
    ({"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "150000 100000\n"}, 1.5),  # a private cgroup namespace
    ({"proc/self/cgroup": "0::/a\n", "sys/fs/cgroup/a/cpu.max": "max 100000\n"}, None),
    # cgroup v1, comounted cpu,cpuacct; -1 is no quota
    ({"proc/self/cgroup": "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
      "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
      "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 2.0),
    # v1 inside a container: the mount's root is the container's cgroup and the host path is not below it
    ({"proc/self/cgroup": "5:cpu,cpuacct:/docker/abc\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"proc/self/cgroup": "5:cpu,cpuacct:/\n", "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
    ({"proc/self/cgroup": "0::/x\n", "sys/fs/cgroup/x/cpu.max": "garbage\n"}, None),  # unreadable: no cap
    ({}, None),  # no /proc/self/cgroup at all
])
def test_the_cgroup_cpu_quota_caps_the_workers(tmp_path: Path, files: dict[str, str], want: float | None) -> None:
    cgroup_tree(tmp_path, files)
    assert own_cpu_limit(str(tmp_path)) == want


# --- the whole pipeline, with and without workers ----------------------------------------------------------


def big_log(n: int) -> bytes:
    """~n lines as Docker writes them, with what the workers must leave to the reader mixed in: 16 KiB partials,
    broken lines, a line over --max-line-bytes, blank lines."""
    out = []
    for i in range(n):
        if i in (1234, 31234, 31235):
            out += [line(i, "p" * 16384, end=""), line(i, "q" * 16384, end=""), line(i, "end of the long one")]
        elif i in (20099, 50000):
            out.append(b'{"log":"torn by a cra')
        elif i in (7, 45007):
            out.append(line(i, "z" * 70000))  # over the 64 KiB cap below: cut and marked truncated
        elif i == 55005:
            out.append(b"")
        else:
            out.append(line(i, stream="stderr" if i % 3 == 0 else "stdout"))
    return chunk(out)


async def ship(tmp: Path, log: bytes, workers: str, kill_workers: bool = False) -> tuple[bytes, dict[str, float]]:
    harness = Harness(tmp)
    c = harness.container("web", labels={"team": "api"})
    c.write_raw(b"")
    expected = len(JsonFileDecoder(64 << 10).decode(log, 0).records)
    pipeline = harness.start(extra=("--log-workers", workers, "--max-line-bytes", "64KiB"))
    runner = pipeline.runners[0]
    try:
        if workers != "0":
            # Workers start in the background on the first chunk while the reader decodes by itself; with a cold
            # forkserver the reader could finish the whole log first. Started here and the log written once they
            # run, the test shows them used whatever ran before it.
            assert runner.offload is not None
            await asyncio.to_thread(runner.offload.start, True)
            assert len(runner.offload._workers) == int(workers)
        if kill_workers:
            for worker in list(runner.offload._workers):  # type: ignore[union-attr]
                os.kill(worker.process.pid, signal.SIGKILL)
        c.write_raw(log)
        await wait_for(lambda: runner.metrics.sent.labels(runner.label)._value.get() >= expected, 60)
        await wait_for(lambda: idle(harness))  # anything more would have been read and sent by now
        outcomes = {o: runner.metrics.worker_chunks.labels(runner.label, o)._value.get() for o in ("taken", "reread")}
    finally:
        await harness.stop()
    return harness.out.read_bytes(), outcomes


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to be worth testing")
async def test_the_pipeline_ships_the_same_bytes_with_workers_as_without(tmp_path: Path) -> None:
    log = big_log(60_000)  # ~7 MiB: several chunks read ahead
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alone, none = await ship(tmp_path / "a", log, "0")
    shared, outcomes = await ship(tmp_path / "b", log, "2")
    assert none == {"taken": 0.0, "reread": 0.0}
    assert outcomes["taken"] >= 3 and outcomes["reread"] >= 1, outcomes  # both paths were taken
    # The file field names each harness's own log path: compare everything else byte for byte.
    a_path, b_path = (str(tmp_path / x / "docker").encode() for x in ("a", "b"))
    assert shared.replace(b_path, a_path) == alone
    got = records(tmp_path / "b" / "out.ndjson")
    assert len(got) == 60_000 - 3  # every line but the broken and blank ones, partials joined into one
    assert sum(1 for r in got if r.get("truncated")) == 2
    assert sum(1 for r in got if r["message"].startswith("p" * 16384 + "q" * 16384 + "end")) == 3
    assert [r["offset"] for r in got] == sorted(r["offset"] for r in got)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to be worth testing")
async def test_killed_workers_lose_nothing(tmp_path: Path) -> None:
    log = big_log(60_000)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alone, _ = await ship(tmp_path / "a", log, "0")
    shared, _outcomes = await ship(tmp_path / "b", log, "2", kill_workers=True)
    a_path, b_path = (str(tmp_path / x / "docker").encode() for x in ("a", "b"))
    assert shared.replace(b_path, a_path) == alone


def test_a_job_given_up_as_stale_is_never_taken(workers: ChunkWorkers, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.logs.offload as offload

    monkeypatch.setattr(offload, "STALE_JOB", 0.0)
    data = chunk([line(i) for i in range(100)])
    jobs = [workers.submit(data, 0, SOURCE) for _ in range(4)]
    assert all(jobs) and workers.submit(data, 0, SOURCE) is None  # every slot taken: the oldest are given up
    assert all(job.abandoned for job in jobs if job is not None)
    assert [workers.take(job) for job in jobs if job is not None] == [None] * 4
    deadline = time.monotonic() + 10
    fresh = None
    while fresh is None and time.monotonic() < deadline:  # the slots come back as the given-up answers come in
        fresh = workers.submit(data, 100, SOURCE)
        time.sleep(0.01)
    assert fresh is not None and workers.take(fresh) == (local(data, 100, NdjsonEncoder().encode), 100, 0)


def answered(workers: ChunkWorkers, job: Job) -> None:
    """Wait until the reader side has collected ``job``'s answer without taking it (as ``submit`` does)."""
    deadline = time.monotonic() + 10
    while job.answer is None and time.monotonic() < deadline:
        workers._collect(job.worker, wait_for=None)
        time.sleep(0.01)
    assert job.answer is not None


def test_a_job_dropped_twice_gives_its_slot_back_once(workers: ChunkWorkers,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader drops a job it finds stale-reclaimed (its chunk changed, or its file was finished): a slot handed
    out twice would let two chunks share it and one chunk's payload be taken for the other's."""
    import agent.logs.offload as offload

    data = chunk([line(i) for i in range(100)])
    job = workers.submit(data, 0, SOURCE)
    assert job is not None
    answered(workers, job)
    monkeypatch.setattr(offload, "STALE_JOB", 0.0)
    workers._reclaim_stale()  # given up as stale (as when every slot is busy for too long) ...
    workers.drop(job)  # ... and dropped again by the reader when it reaches that chunk
    assert sorted(job.worker.free) == list(range(offload.SLOTS))


def test_an_answer_of_a_worker_that_died_since_is_not_taken(workers: ChunkWorkers) -> None:
    """A worker answered job A (the reader collected it along with another answer), then died: its slots are
    unmapped with it, so A is decoded by the reader (None), not read from memory that is gone."""
    a = workers.submit(chunk([line(i) for i in range(100)]), 0, SOURCE)
    assert a is not None
    answered(workers, a)
    os.kill(a.worker.process.pid, signal.SIGKILL)
    a.worker.process.join(5)
    workers.submit(chunk([line(1)]), 10_000, SOURCE)  # finds the worker gone
    assert not a.worker.alive and workers.take(a) is None
    assert "chunk worker died" in workers.failures_seen[-1]  # type: ignore[attr-defined]


def test_a_worker_that_stops_answering_is_given_up(workers: ChunkWorkers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker alive but silent (stopped, starved) does not hold the reader: after ``ANSWER_TIMEOUT`` the job is
    the reader's to decode and the worker is killed and replaced."""
    import agent.logs.offload as offload

    monkeypatch.setattr(offload, "ANSWER_TIMEOUT", 0.5)
    job = None
    for worker in workers._workers:
        os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        job = workers.submit(chunk([line(i) for i in range(100)]), 0, SOURCE)
        assert job is not None
        started = time.monotonic()
        assert workers.take(job) is None
        assert 0.4 < time.monotonic() - started < 5
        assert "silent" in workers.failures_seen[-1]  # type: ignore[attr-defined]
    finally:
        for worker in workers._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, signal.SIGCONT)
    assert job is not None and not job.worker.process.is_alive()


def cri_log(n: int) -> bytes:
    """~n CRI lines with partials (P) the workers must leave to the reader mixed in."""
    out = []
    for i in range(n):
        stamp = f"2026-12-04T10:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i:09d}Z"
        if i % 9000 == 17:
            out.append(f"{stamp} stdout P first half of {i} | ".encode())
        out.append(f"{stamp} {'stderr' if i % 4 == 0 else 'stdout'} F cri line {i} {'x' * (i % 50)}".encode())
    return b"\n".join(out) + b"\n"


async def ship_two_routes(tmp: Path, json_log: bytes, cri: bytes, workers: str) -> tuple[list[bytes], float]:
    """A json-file container and a CRI pod log shipped by two file routes that share the agent's chunk workers."""
    harness = Harness(tmp)
    c = harness.container("web")
    c.write_raw(json_log)
    pod = tmp / "host/var/log/pods/shop_api-7d9f_8712f785-1a3e-41ec-a00b-e2dcc77431cb/app"
    pod.mkdir(parents=True)
    (pod / "0.log").write_bytes(cri)
    outs = [tmp / "one.ndjson", tmp / "two.ndjson"]
    pipeline = harness.start(*(f"file://{o}" for o in outs), extra=("--log-workers", workers))
    expected = (len(JsonFileDecoder(1 << 20).decode(json_log, 0).records)
                + len(CriDecoder(1 << 20).decode(cri, 0).records))
    try:
        pools = {id(r.offload) for r in pipeline.runners}
        assert len(pools) == 1 and (pipeline.workers is None) == (workers == "0")  # one pool for every route
        for runner in pipeline.runners:
            await wait_for(lambda r=runner: r.metrics.sent.labels(r.label)._value.get() >= expected, 60)
        await wait_for(lambda: idle(harness))
        taken = sum(r.metrics.worker_chunks.labels(r.label, "taken")._value.get() for r in pipeline.runners)
    finally:
        await harness.stop()
    return [o.read_bytes().replace(str(tmp).encode(), b"TMP") for o in outs], taken


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to be worth testing")
async def test_routes_share_one_pool_and_cri_chunks_go_to_the_workers_too(tmp_path: Path) -> None:
    json_log, cri = big_log(40_000), cri_log(120_000)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alone, none = await ship_two_routes(tmp_path / "a", json_log, cri, "0")
    shared, taken = await ship_two_routes(tmp_path / "b", json_log, cri, "2")
    assert none == 0 and taken >= 4
    assert shared == alone  # byte for byte, both routes
    cri_records = [r for r in map(orjson.loads, shared[0].splitlines()) if r.get("pod") or "cri line" in r["message"]]
    assert len(cri_records) == 120_000

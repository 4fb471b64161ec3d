"""Multiline joining in the running log pipeline, on files written the way Docker writes them: the route option and
the container label, the timeout flush with no new bytes, rotation, the chunk workers, and a crash in the middle
of a stack trace."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from agent.logs.codec import WorkerCodec
from agent.logs.routes import check_route
from tests.unit.test_log_pipeline import FakeContainer, Harness, acked_to_end, idle, records, wait_for
from tests.unit.test_multiline import events_of

JAVA = events_of("java.log")
PYTHON = events_of("python.log")


def write_events(c: FakeContainer, events: list[str], stream: str = "stdout") -> None:
    """Each event's lines as Docker writes them, one json-file line per line."""
    with c.log.open("ab") as fh:
        for event in events:
            for line in event.split("\n"):
                c.seq += 1
                fh.write(orjson.dumps({"log": line + "\n", "stream": stream,
                                       "time": f"2026-12-04T10:00:00.{c.seq:09d}Z"}) + b"\n")


@pytest.fixture
async def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


def out_of(path: Path, name: str) -> list[str]:
    return [r["message"] for r in records(path) if r["container_name"] == name]


async def test_route_option_joins_and_the_last_event_is_flushed_by_the_timeout(harness: Harness):
    c = harness.container("shop")
    write_events(c, JAVA)
    harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=0.3")
    # The last line waits for the next one or for the timeout: nothing more is written, the timeout ships it.
    await wait_for(lambda: out_of(harness.out, "shop") == JAVA)
    await wait_for(lambda: idle(harness))
    got = records(harness.out)
    sizes = [len(orjson.dumps({"log": line + "\n", "stream": "stdout", "time": "2026-12-04T10:00:00.000000001Z"})) + 1
             for event in JAVA for line in event.split("\n")]
    firsts, pos, i = [], 0, 0
    for event in JAVA:
        firsts.append(pos)
        n = event.count("\n") + 1
        pos += sum(sizes[i:i + n])
        i += n
    assert [r["offset"] for r in got] == firsts
    assert got[1]["time"] == "2026-12-04T10:00:00.000000002Z"  # the first line's time


async def test_label_applies_when_the_route_sets_nothing_and_the_route_wins(harness: Harness, tmp_path: Path):
    py = harness.container("py", labels={"lookout.multiline": "python"})
    plain = harness.container("plain")
    bad = harness.container("bad", labels={"lookout.multiline": "cobol"})
    for c in (py, plain, bad):
        write_events(c, PYTHON)
    lines = [line for event in PYTHON for line in event.split("\n")]
    off = tmp_path / "off.ndjson"
    java = tmp_path / "java.ndjson"
    harness.start(f"file://{harness.out}?multiline_timeout=0.2", f"file://{off}?multiline=off",
                  f"file://{java}?multiline=indented&multiline_timeout=0.2")
    await wait_for(lambda: out_of(harness.out, "py") == PYTHON)
    await wait_for(lambda: out_of(harness.out, "plain") == lines and out_of(harness.out, "bad") == lines)
    await wait_for(lambda: out_of(off, "py") == lines)
    # The route's own mode for every container, the label notwithstanding: indented lines join their head.
    await wait_for(lambda: "\n".join(out_of(java, "py")) == "\n".join(lines) and len(out_of(java, "py")) < len(lines))
    assert out_of(java, "py") != PYTHON


async def test_chunk_workers_never_ship_a_multiline_source_unjoined(harness: Harness):
    c = harness.container("w")
    write_events(c, JAVA * 300)
    harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=0.2", extra=("--log-workers", "2"))
    assert harness.pipeline is not None
    assert isinstance(harness.pipeline.runners[0].codec, WorkerCodec)
    await wait_for(lambda: len(out_of(harness.out, "w")) == len(JAVA) * 300, timeout=30)
    assert out_of(harness.out, "w") == JAVA * 300


async def test_an_event_held_at_the_end_of_a_rotated_file_is_finished_there(harness: Harness):
    c = harness.container("rot")
    harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=30")
    write_events(c, JAVA[:2])
    await wait_for(lambda: out_of(harness.out, "rot") == JAVA[:1])
    c.rotate()
    write_events(c, JAVA[2:])
    # With a 30 s timeout only the rotated file's end (and the new file's next start lines) finish events.
    await wait_for(lambda: out_of(harness.out, "rot") == JAVA[:-1])


async def test_a_crash_in_the_middle_of_a_stack_trace_delivers_it_once_whole(harness: Harness):
    c = harness.container("crash")
    trace = JAVA[1].split("\n")
    write_events(c, JAVA[:1])
    write_events(c, ["\n".join(trace[:6])])  # the log line and half of the trace's frames
    harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=60")
    await wait_for(lambda: out_of(harness.out, "crash") == JAVA[:1])
    start = records(harness.out)[0]["offset"] + len(c.log.read_bytes().split(b"\n")[0]) + 1
    assert harness.pipeline is not None
    store = harness.pipeline.store
    # The checkpoint moves up to the held trace's first line, never past it.
    await wait_for(lambda: [e["offset"] for f in store.routes().values() for e in f.values()] == [start])
    await wait_for(lambda: (harness.state / "checkpoints.json").exists()
                   and [e["offset"] for f in orjson.loads((harness.state / "checkpoints.json").read_bytes())
                        ["routes"].values() for e in f.values()] == [start])
    await harness.crash()  # kill -9: the held half trace is gone with the process
    write_events(c, ["\n".join(trace[6:]), *JAVA[2:]])
    harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=0.3")
    await wait_for(lambda: out_of(harness.out, "crash") == JAVA)
    await wait_for(lambda: idle(harness))
    assert out_of(harness.out, "crash") == JAVA


@pytest.mark.parametrize(("query", "problem"), [
    ("multiline=cobol", "multiline: 'cobol': use java or python or go or ruby or indented or regex or off"),
    ("multiline=regex", "multiline: regex needs multiline_start"),
    ("multiline=regex&multiline_start=%28", "multiline_start: not a regular expression"),
    ("multiline_start=x", "multiline_start: needs multiline=regex"),
    ("multiline=java&multiline_timeout=0", "multiline_timeout: must be positive"),
])
def test_bad_route_options_are_refused_naming_the_option(tmp_path: Path, query: str, problem: str) -> None:
    for base in ("file:///tmp/x.ndjson", "http://127.0.0.1:9/logs", "syslog+tcp://127.0.0.1:514"):
        found = check_route(f"{base}?{query}", tmp_path)
        assert found is not None and problem in found, found
    assert check_route("http://127.0.0.1:9/logs?multiline=regex&multiline_start=%5E%5Cd", tmp_path) is None


async def test_cri_pod_with_the_annotation_joins_go_panics_after_partial_lines(harness: Harness):
    """A containerd pod whose ``lookout.multiline`` annotation is passed to the container's bundle (containerd's
    ``pod_annotations``): its CRI log, with a frame split into ``P`` partials, ships Go panics whole."""
    go = events_of("go.log")
    long_frame = "main.handler(" + "0xc000010000, " * 2000 + "0x1)"  # 28 KB: written as two P parts and an F
    go[1] = go[1].replace("main.main()", long_frame, 1)
    host = harness.tmp / "host"
    uid = "8712f785-1a3e-41ec-a00b-e2dcc77431cb"
    cid = "e" * 64
    pod_dir = host / "var/log/pods" / f"shop_api-0_{uid}" / "app"
    pod_dir.mkdir(parents=True)
    links = host / "var/log/containers"
    links.mkdir(parents=True)
    (links / f"api-0_shop_app-{cid}.log").symlink_to(pod_dir / "0.log")
    bundle = host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_bytes(orjson.dumps({"annotations": {
        "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-name": "api-0",
        "io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.container-name": "app",
        "lookout.multiline": "go"}}))
    out = bytearray()
    for n, line in enumerate(line for event in go for line in event.split("\n")):
        stamp = f"2026-12-04T10:00:00.{n:09d}Z".encode()
        data = line.encode()
        parts = [data[i:i + 16384] for i in range(0, len(data), 16384)] or [b""]
        for i, part in enumerate(parts):
            out += stamp + b" stderr " + (b"F " if i == len(parts) - 1 else b"P ") + part + b"\n"
        if n == 3:
            out += b"2026-12-04T10:00:00.5Z stdout F an unrelated stdout line\n"
    (pod_dir / "0.log").write_bytes(bytes(out))
    harness.start(f"file://{harness.out}?multiline_timeout=0.2")
    await wait_for(lambda: [r["message"] for r in records(harness.out) if r["stream"] == "stderr"] == go)
    got = records(harness.out)
    assert [r["message"] for r in got if r["stream"] == "stdout"] == ["an unrelated stdout line"]
    assert {r["pod"] for r in got} == {"api-0"} and got[0]["labels"]["lookout.multiline"] == "go"


async def test_a_removed_containers_held_event_ships_before_its_source_is_dropped(harness: Harness):
    import shutil

    c = harness.container("gone")
    write_events(c, JAVA[:2])
    pipeline = harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=60", run=False)
    runner = pipeline.runners[0]
    follower = runner.follower
    follower.offer(pipeline.scan())

    def shipped() -> list[str]:
        return [r[2] for seg in runner.read_batch(100, 1 << 20).segments for r in seg.records]

    assert shipped() == JAVA[:1]  # the trace is held: the next line may continue it
    assert [s.decoder.multiline.first_offset("stdout") for s in follower.states.values()  # type: ignore[union-attr]
            ] == [len(c.log.read_bytes().split(b"\n")[0]) + 1]
    shutil.rmtree(c.dir)  # the container is removed: its file has ended (still open, read to its end)
    follower.offer(pipeline.scan())
    follower.collect_garbage()
    out = shipped()
    assert out == [JAVA[1]], "the held trace ships when its file ends, long before its timeout"
    follower.collect_garbage()
    shipped()
    assert not follower.states


async def test_a_held_event_expires_while_another_container_keeps_the_reader_busy(harness: Harness):
    """The timeout holds when the reader never finds every source at its end: a backlog elsewhere does not keep a
    quiet container's last trace waiting."""
    quiet = harness.container("quiet")
    write_events(quiet, JAVA[:2])
    busy = harness.container("busy")
    lines = 150_000
    busy.write(lines)  # a backlog of about 15 MB, read a chunk per visit
    harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=0.2&batch=2000")

    def count(name: str) -> int:
        return harness.out.read_bytes().count(f'"container_name":"{name}"'.encode()) if harness.out.exists() else 0

    await wait_for(lambda: count("quiet") == 2, timeout=60)  # the log line and the whole trace
    busy_out = count("busy")
    await wait_for(lambda: count("busy") == lines, timeout=120)
    assert out_of(harness.out, "quiet") == JAVA[:2]
    assert busy_out < lines, "the trace waited for the whole backlog"


async def test_a_line_still_being_written_keeps_its_event_open_without_spinning(harness: Harness):
    c = harness.container("slow")
    write_events(c, JAVA[:2])
    c.write_raw(b'{"log":"\\tat A.b(A.java:1)\\n","stream":"stdout","ti')  # the runtime is writing the next line
    pipeline = harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=0.1", run=False)
    runner = pipeline.runners[0]
    runner.follower.offer(pipeline.scan())
    assert [r[2] for seg in runner.read_batch(100, 1 << 20).segments for r in seg.records] == JAVA[:1]
    import time

    time.sleep(0.2)
    assert runner.read_batch(100, 1 << 20).count == 0  # its next line may continue it: not expired
    assert runner.multiline_due is None  # and the reader does not wake for it before its next poll
    c.write_raw(b'me":"2026-12-04T10:00:01Z"}\n')
    runner.read_batch(100, 1 << 20)
    time.sleep(0.2)
    got = [r[2] for seg in runner.read_batch(100, 1 << 20).segments for r in seg.records]
    assert got == [JAVA[1] + "\n\tat A.b(A.java:1)"]


def test_check_config_refuses_bad_multiline_options_naming_them(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    args = ["check-config", "--state-dir", str(tmp_path / "s"), "--multiline-timeout=0",
            "--route", "file:///tmp/a.ndjson?multiline=cobol",
            "--route", "syslog+tcp://127.0.0.1:514?multiline=regex&multiline_start=%5B",
            "--route", "http://127.0.0.1:9/in?multiline=java&multiline_timeout=never"]
    assert main(args) == 2
    err = capsys.readouterr().err
    for problem in ("--multiline-timeout", "multiline: 'cobol'", "multiline_start: not a regular expression",
                    "multiline_timeout: expected a duration"):
        assert problem in err, f"{problem!r} not in {err}"
    good = ["check-config", "--state-dir", str(tmp_path / "s"), "--multiline-timeout", "2s",
            "--route", "file:///tmp/a.ndjson?multiline=go&multiline_timeout=500ms"]
    assert main(good) == 0, capsys.readouterr().err


async def test_processing_applies_to_joined_events_also_those_the_timeout_finishes(harness: Harness):
    """multiline and processing on one route: every joined event goes through the route's processing stage, the last
    one too, which only the timeout finishes (InlineCodec._add for both ways); excluded events are counted and the
    checkpoint still passes them."""
    c = harness.container("shop")
    write_events(c, JAVA)
    # An exclude that matches the last event only: the one the timeout ships.
    last = JAVA[-1].split("\n")[0]
    harness.start(f"file://{harness.out}?multiline=java&multiline_timeout=0.3&add_field=team:shop"
                  f"&exclude={quote(re.escape(last), safe='')}")
    await wait_for(lambda: out_of(harness.out, "shop") == JAVA[:-1])
    # The last event is held until the timeout: it is past once the route acknowledged the whole file.
    await wait_for(lambda: acked_to_end(harness, c))
    await wait_for(lambda: idle(harness))
    got = [r for r in records(harness.out) if r["container_name"] == "shop"]
    assert [r["message"] for r in got] == JAVA[:-1]
    assert all(r.get("fields") == {"team": "shop"} for r in got), got[:2]

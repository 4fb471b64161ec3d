"""The journal spool (collectors.logs.journal): entries of Docker's journald log driver and of systemd-cat, captured
from a real journal (tests/fixtures/data/journal), become the json-file lines Docker itself writes for the same
output; the spool rotates within its bound as Docker does; the reader's cursor is saved only after the lines it
covers, and a restarted reader goes on after it."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from collectors.logs.decoders import JsonFileDecoder
from collectors.logs.journal import JournalSpool, SpoolFile, _Stopped, journal_present, read_by_routes
from collectors.logs.journal_entries import classify, field_bytes, matches, to_line, unit_identifier, unit_name
from collectors.logs.sources import SourceSpec, scan
from tests.helpers.wait import wait_for

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "journal"
REPLAY = Path(__file__).resolve().parents[1] / "helpers" / "journal_replay.py"


def entries(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (DATA / name).read_bytes().splitlines() if line]


def by_stream(lines: list[bytes]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        doc = orjson.loads(line)
        out.setdefault(doc["stream"], []).append(doc["log"])
    return out


def test_docker_entries_become_the_json_file_lines_docker_writes() -> None:
    docker = entries("docker-entries.ndjson")
    cid = field_bytes(docker[0]["CONTAINER_ID_FULL"])
    assert cid is not None
    assert all(classify(e, {}) == ("docker", cid.decode()) for e in docker)
    converted = [to_line(e) for e in docker]
    assert all(line is not None and line.endswith(b"\n") for line in converted)
    oracle = (DATA / "docker-json.log").read_bytes().splitlines(keepends=True)
    # Docker's own json-file of the same script: per stream, the same parts (the 16 KiB split included) in order.
    assert by_stream([c for c in converted if c is not None]) == by_stream(oracle)
    assert len(converted) == len(oracle) == 8


def test_converted_lines_decode_to_whole_records_with_the_journal_time() -> None:
    docker = entries("docker-entries.ndjson")
    data = b"".join(line for line in map(to_line, docker) if line is not None)
    decoder = JsonFileDecoder(1 << 20)
    decoded = decoder.decode(data, 0)
    assert decoded.errors == []
    records = decoded.records
    messages = [r[2] for r in records]
    assert "x" * 17000 in messages  # the two parts joined
    assert "bad-\ufffd-utf8" in messages  # the 0xFF byte replaced, as Docker's json-file does
    assert "" in messages and 'tab\tand "quotes" and \\ backslash' in messages
    assert len(records) == 7
    first = next(e for e in docker if e["MESSAGE"] == "first")
    micros = int(first["__REALTIME_TIMESTAMP"])
    doc = orjson.loads(to_line(first) or b"")
    assert doc["time"].endswith(f".{micros % 1_000_000:06d}Z")
    assert {r[1] for r in records if r[2] in ("to-stderr", "last")} == {"stderr"}


def test_podman_entries_keep_their_newline_once_and_join_their_partials() -> None:
    """conmon (Podman's journald driver) keeps each line's newline in MESSAGE and splits long lines in parts of its
    own size; the lines decode to what the container printed, as Docker's entries do."""
    podman = entries("podman-entries.ndjson")
    cid = field_bytes(podman[0]["CONTAINER_ID_FULL"])
    assert cid is not None and all(classify(e, {}) == ("podman", cid.decode()) for e in podman)
    assert sum(e.get("CONTAINER_PARTIAL_MESSAGE") == "true" for e in podman) == 2
    lines = [line for line in map(to_line, podman) if line is not None]
    assert len(lines) == len(podman)
    decoded = JsonFileDecoder(1 << 20).decode(b"".join(lines), 0)
    assert decoded.errors == []
    got = {"stdout": [r[2] for r in decoded.records if r[1] == "stdout"],
           "stderr": [r[2] for r in decoded.records if r[1] == "stderr"]}
    # What the script printed (tests/fixtures/capture_journal.py), as Docker's json-file of it decodes.
    oracle = JsonFileDecoder(1 << 20).decode((DATA / "docker-json.log").read_bytes(), 0).records
    assert got["stdout"] == [r[2] for r in oracle if r[1] == "stdout"]
    assert got["stdout"] == ["first", "x" * 17000, "bad-\ufffd-utf8", "", 'tab\tand "quotes" and \\ backslash']
    assert got["stderr"] == ["to-stderr", "last"]


def test_systemd_cat_entries_belong_to_the_unit_by_identifier_without_systemd() -> None:
    unit_entries = entries("unit-entries.ndjson")
    spool_units = {"lookout-fixture-unit.service": "lookout-fixture-unit.service",
                   "lookout-fixture-unit": "lookout-fixture-unit.service"}
    assert [classify(e, spool_units) for e in unit_entries] == [("units", "lookout-fixture-unit.service")] * 3
    assert [classify(e, {}) for e in unit_entries] == [None] * 3
    lines = [orjson.loads(to_line(e) or b"") for e in unit_entries]
    assert [(d["log"], d["stream"]) for d in lines] == [("unit line one\n", "stdout"), ("unit line two\n", "stdout"),
                                                        ("unit error\n", "stderr")]
    # Written under systemd by another unit, the same identifier is not the unit's.
    other = {**unit_entries[0], "_SYSTEMD_UNIT": "other.service"}
    assert classify(other, spool_units) is None
    assert classify({**unit_entries[0], "_SYSTEMD_UNIT": "lookout-fixture-unit.service"}, spool_units) == \
        ("units", "lookout-fixture-unit.service")
    # A runtime's own messages (no container id) are not a container's.
    assert classify({"_COMM": "dockerd", "MESSAGE": "daemon says"}, {}) is None


def test_unit_names_and_matches() -> None:
    assert unit_name("nginx") == "nginx.service" and unit_name("cron.timer") == "cron.timer"
    assert unit_identifier("nginx") == "nginx" and unit_identifier("getty@tty1.service") == "getty@tty1"
    assert matches([]) == ["_COMM=dockerd", "_COMM=conmon"]
    assert matches(["b", "a.service"]) == ["_COMM=dockerd", "_COMM=conmon", "+", "_SYSTEMD_UNIT=a.service",
                                           "_SYSTEMD_UNIT=b.service", "+", "SYSLOG_IDENTIFIER=a",
                                           "SYSLOG_IDENTIFIER=b"]


@pytest.mark.parametrize(("entry", "why"), [
    ({"__REALTIME_TIMESTAMP": "1796401790822885"}, "no MESSAGE"),
    ({"MESSAGE": None, "__REALTIME_TIMESTAMP": "1796401790822885"}, "MESSAGE too large to print (null)"),
    ({"MESSAGE": "x"}, "no time"),
    ({"MESSAGE": "x", "__REALTIME_TIMESTAMP": "soon"}, "a time that is no number"),
    ({"MESSAGE": [300, 1], "__REALTIME_TIMESTAMP": "1"}, "byte values out of range"),
])
def test_entries_without_message_or_time_make_no_line(entry: dict[str, Any], why: str) -> None:
    assert to_line(entry) is None, why


def test_field_values_as_journalctl_prints_them() -> None:
    assert field_bytes("a") == b"a"
    assert field_bytes([104, 105]) == b"hi"
    assert field_bytes(["first", [255]]) == b"\xff"  # a field given twice: the last value
    assert field_bytes(None) is None and field_bytes([]) is None and field_bytes(3) is None
    doc = orjson.loads(to_line({"MESSAGE": "p", "CONTAINER_PARTIAL_MESSAGE": "true", "PRIORITY": "6",
                                "__REALTIME_TIMESTAMP": "0"}) or b"")
    assert doc == {"log": "p", "stream": "stdout", "time": "1970-01-01T00:00:00.000000Z"}


def test_spool_rotates_within_its_bound_as_docker_does(tmp_path: Path) -> None:
    spool = SpoolFile(tmp_path / "docker" / "c1", "c1", max_size=1000, max_files=3)
    written = [b'{"log":"%04d\\n","stream":"stdout","time":"1970-01-01T00:00:00.000000Z"}\n' % n
               for n in range(200)]
    for line in written:
        spool.write(line)
    spool.close()
    names = sorted(os.listdir(tmp_path / "docker" / "c1"))
    assert names == ["c1-json.log", "c1-json.log.1", "c1-json.log.2"]
    sizes = [os.path.getsize(tmp_path / "docker" / "c1" / n) for n in names]
    assert all(0 < s <= 1000 for s in sizes), sizes
    # The files, as a json-file source reads them (oldest first), hold the last lines written, in order.
    spec = SourceSpec("journal:docker:c1", "json-file", str(tmp_path / "docker" / "c1"), container_id="c1")
    kept = b"".join(Path(p).read_bytes() for p in spec.files())
    assert kept == b"".join(written[-len(kept.splitlines()):])
    assert len(kept.splitlines()) > 2 * (1000 // len(written[0]))
    # The scan finds the spool's sources by kind.
    (tmp_path / "units" / "nginx.service").mkdir(parents=True)
    found = scan(tmp_path / "no-docker", tmp_path / "no-pods", None, tmp_path)
    assert set(found) == {"journal:docker:c1", "journal:units:nginx.service"}
    assert found["journal:units:nginx.service"].container_id == "nginx.service"


def test_journal_present_looks_for_journal_files(tmp_path: Path) -> None:
    assert not journal_present(tmp_path)
    (tmp_path / "run/log/journal/abc").mkdir(parents=True)
    assert not journal_present(tmp_path)
    (tmp_path / "run/log/journal/abc/system.journal").write_bytes(b"")
    assert journal_present(tmp_path)


# --- the reader: cursor save, resume, restart (journalctl replaced by a replay of the captured entries) ---------


def replay(tmp_path: Path, die_after: int = -1) -> tuple[str, Path]:
    combined = tmp_path / "entries.ndjson"
    combined.write_bytes((DATA / "docker-entries.ndjson").read_bytes() + (DATA / "unit-entries.ndjson").read_bytes())
    calls = tmp_path / "calls.ndjson"
    wrapper = tmp_path / "journalctl"
    wrapper.write_text(f"#!/bin/sh\nLOOKOUT_REPLAY_FILE={combined} LOOKOUT_REPLAY_CALLS={calls} "
                       f"LOOKOUT_REPLAY_DIE_AFTER={die_after} exec {sys.executable} {REPLAY} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper), calls


def running(spool: JournalSpool) -> Callable[[], None]:
    thread = threading.Thread(target=spool.run, daemon=True)
    thread.start()

    def stop() -> None:
        spool.stop()
        thread.join(10)
        assert not thread.is_alive()

    return stop


def spooled(root: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in sorted(root.glob("*/*/*-json.log")) for line in path.read_bytes()
            .splitlines()]


def test_cursor_is_saved_after_the_lines_and_a_new_reader_resumes_after_it(tmp_path: Path) -> None:
    journalctl, calls = replay(tmp_path)
    root = tmp_path / "state" / "journal"
    spool = JournalSpool(root, Path("/"), ["lookout-fixture-unit"], "head", journalctl=journalctl)
    stop = running(spool)
    last = entries("unit-entries.ndjson")[-1]["__CURSOR"]
    wait_for(lambda: (root / "cursor").exists() and (root / "cursor").read_text() == last, timeout=10,
             message="the last entry's cursor saved")
    stop()
    assert len(spooled(root)) == 8 + 3
    first = json.loads(calls.read_text().splitlines()[0])
    assert "--no-tail" in first and not any(a.startswith("--cursor") for a in first)
    # A new reader (the agent restarted) starts after the saved cursor: nothing is written twice.
    again = JournalSpool(root, Path("/"), ["lookout-fixture-unit"], "head", journalctl=journalctl)
    assert again.cursor == last
    stop = running(again)
    wait_for(lambda: len(calls.read_text().splitlines()) == 2, timeout=10, message="the second journalctl")
    stop()
    assert f"--cursor={last}" in json.loads(calls.read_text().splitlines()[1])
    assert len(spooled(root)) == 11  # the saved entry, printed again by --cursor, is not spooled again


def test_tail_starts_after_the_journals_last_entry(tmp_path: Path) -> None:
    journalctl, calls = replay(tmp_path)
    root = tmp_path / "journal"
    spool = JournalSpool(root, Path("/"), ["lookout-fixture-unit"], "tail", journalctl=journalctl)
    stop = running(spool)
    wait_for(lambda: len(calls.read_text().splitlines()) == 2, timeout=10, message="journalctl followed")
    stop()
    last = entries("unit-entries.ndjson")[-1]["__CURSOR"]
    assert (root / "cursor").read_text() == last
    assert f"--cursor={last}" in json.loads(calls.read_text().splitlines()[1])
    assert spooled(root) == []


def test_a_journalctl_that_dies_is_restarted_from_the_saved_cursor(tmp_path: Path) -> None:
    journalctl, calls = replay(tmp_path, die_after=4)
    restarts: list[int] = []
    root = tmp_path / "journal"
    spool = JournalSpool(root, Path("/"), [], "head", journalctl=journalctl, on_restart=lambda: restarts.append(1))
    stop = running(spool)
    wait_for(lambda: len(calls.read_text().splitlines()) == 2, timeout=15, message="journalctl started again")
    wait_for(lambda: len(spooled(root)) == 8, timeout=10, message="every container entry spooled")
    stop()
    docker = entries("docker-entries.ndjson")
    assert f"--cursor={docker[3]['__CURSOR']}" in json.loads(calls.read_text().splitlines()[1])
    assert restarts == [1] and spool.restarts == 1
    assert [d["log"] for d in spooled(root)] == [orjson.loads(to_line(e) or b"")["log"] for e in docker]


def test_unreadable_output_is_counted_and_skipped(tmp_path: Path) -> None:
    skipped: list[int] = []
    spool = JournalSpool(tmp_path, Path("/"), [], "head", on_skipped=lambda: skipped.append(1))
    entry = entries("docker-entries.ndjson")[0]
    spool.handle(b"{not json")
    spool.handle(orjson.dumps({k: v for k, v in entry.items() if k != "MESSAGE"}))
    spool.handle(orjson.dumps(entry))
    spool.commit()
    assert len(skipped) == 2
    assert len(spooled(tmp_path)) == 1
    assert (tmp_path / "cursor").read_text() == entry["__CURSOR"]


def test_a_removed_containers_spool_is_deleted_once_idle(tmp_path: Path) -> None:
    docker_root = tmp_path / "docker"
    root = tmp_path / "journal"
    spool = JournalSpool(root, Path("/"), ["nginx"], "head", docker_root=docker_root)
    old = 10_000.0  # seconds ago: past GONE_IDLE, not past PODMAN_IDLE

    def spool_dir(kind: str, key: str, age: float) -> Path:
        directory = root / kind / key
        directory.mkdir(parents=True)
        f = directory / f"{key}-json.log"
        f.write_bytes(b"{}\n")
        stamp = os.stat(f).st_mtime - age
        os.utime(f, (stamp, stamp))
        return directory

    removed = spool_dir("docker", "a" * 64, old)  # its container directory is gone
    running = spool_dir("docker", "b" * 64, old)
    (docker_root / "containers" / ("b" * 64)).mkdir(parents=True)
    recent = spool_dir("docker", "c" * 64, 10.0)  # gone, but written to moments ago: the routes may still read it
    podman_recent = spool_dir("podman", "d" * 64, old)
    podman_old = spool_dir("podman", "e" * 64, 100_000.0)
    unit = spool_dir("units", "nginx.service", 100_000.0)
    spool.collect_garbage()
    assert [d.exists() for d in (removed, running, recent, podman_recent, podman_old, unit)] == \
        [False, True, True, True, False, True]


def test_a_rotation_waits_until_the_routes_are_done_with_the_file_it_deletes(tmp_path: Path) -> None:
    """The spool's bound holds no route's unread lines: the rotation that would delete the oldest file waits (here
    until a route, played by the test, acknowledges it) and only then deletes it."""
    directory = tmp_path / "docker" / "c1"
    sid = "journal:docker:c1"
    routes: dict[str, dict[str, dict[str, Any]]] = {}
    waits: list[str] = []

    def finished(path: str) -> None:
        waits.append(path)
        assert read_by_routes(routes, path, sid) is False  # the route holds an offset in the file's middle
        st = os.stat(path)
        key = next(k for k in routes["r"] if k.startswith(f"{st.st_dev}:{st.st_ino}:"))
        routes["r"][key]["offset"] = st.st_size  # ... and now acknowledged it to its end
        assert read_by_routes(routes, path, sid) is True

    spool = SpoolFile(directory, "c1", max_size=100, max_files=2, before_delete=finished)
    line = b'{"log":"x\\n","stream":"stdout","time":"1970-01-01T00:00:00.000000Z"}\n'  # 67 bytes: one per file
    spool.write(line)
    spool.write(line)  # live -> .1: nothing deleted yet
    spool.flush()
    st = os.stat(directory / "c1-json.log.1")
    routes["r"] = {f"{st.st_dev}:{st.st_ino}:abcd": {"path": str(directory / "c1-json.log.1"), "offset": 10,
                                                     "source": sid},
                   "other:1:ffff": {"path": "/elsewhere", "offset": 0, "source": "docker:x"}}
    routes["filtered"] = {"1:2:3": {"path": "/x", "offset": 0, "source": "journal:docker:c2"}}
    spool.write(line)  # .1 would be deleted: waits for the route
    spool.close()
    assert waits == [str(directory / "c1-json.log.1")]


def test_read_by_routes_by_offsets_and_newer_files(tmp_path: Path) -> None:
    directory = tmp_path / "units" / "u"
    directory.mkdir(parents=True)
    old, live = directory / "u-json.log.1", directory / "u-json.log"
    old.write_bytes(b"a" * 50)
    live.write_bytes(b"b" * 10)
    sid = "journal:units:u"
    so, sl = os.stat(old), os.stat(live)
    in_old = {f"{so.st_dev}:{so.st_ino}:1": {"path": str(old), "offset": 50, "source": sid}}
    in_live = {f"{sl.st_dev}:{sl.st_ino}:2": {"path": str(live), "offset": 3, "source": sid}}
    in_gone = {f"{so.st_dev}:999999999:3": {"path": str(old) + ".2", "offset": 7, "source": sid}}
    assert read_by_routes({}, str(old), sid)  # no route
    assert read_by_routes({"r": in_old}, str(old), sid)  # acknowledged to its end
    assert not read_by_routes({"r": {k: {**e, "offset": 49} for k, e in in_old.items()}}, str(old), sid)
    assert read_by_routes({"r": in_live}, str(old), sid)  # already in a newer file
    assert not read_by_routes({"r": in_gone}, str(old), sid)  # still in a file deleted before: behind
    assert not read_by_routes({"a": in_live, "b": in_gone}, str(old), sid)  # every route counts
    assert read_by_routes({"r": {"1:2:3": {"path": "/x", "offset": 0, "source": "docker:x"}}}, str(old), sid)
    assert read_by_routes({"r": in_gone}, str(directory / "missing"), sid)  # nothing to delete


def test_a_rotation_waits_at_most_rotate_wait_and_not_past_a_stop(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    def never(path: str, sid: str) -> bool:
        asked.append((path, sid))
        return False

    spool = JournalSpool(tmp_path, Path("/"), [], "head", max_size=100, max_files=2, finished=never, rotate_wait=0.3)
    entry = entries("docker-entries.ndjson")[0]
    cid = entry["CONTAINER_ID_FULL"]
    started = time.monotonic()
    for n in range(3):  # the third rotation deletes a file: it waits 0.3 s for the route, then goes on
        spool.handle(orjson.dumps({**entry, "__CURSOR": f"c{n}"}))
    assert time.monotonic() - started >= 0.3
    asked_once = len(asked)
    spool.handle(orjson.dumps({**entry, "__CURSOR": "c2b"}))  # given up on: the next rotation asks once, no wait
    assert len(asked) == asked_once + 1
    spool.commit()
    assert asked and all(a == (str(tmp_path / "docker" / cid / f"{cid}-json.log.1"), f"journal:docker:{cid}")
                         for a in asked)
    assert (tmp_path / "cursor").read_text() == "c2b"
    spool._gave_up.clear()
    spool.stop()  # stopped: a rotation that waits gives up without deleting, and the entry is not covered
    with pytest.raises(_Stopped):
        spool.handle(orjson.dumps({**entry, "__CURSOR": "c3"}))
    spool.commit()
    assert (tmp_path / "cursor").read_text() == "c2b"

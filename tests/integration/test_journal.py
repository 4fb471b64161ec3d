"""Issue #14 (journald): containers run with Docker's ``journald`` log driver and ``--journal-units`` units, read from a
real journal written by a standalone ``systemd-journald`` (tests/helpers/journald.py starts one when none answers).

The agent runs as a real process; Docker's journald driver and ``systemd-cat`` write the entries; the agent's journal
spool (collectors/logs/journal.py, ``journalctl -o json --follow``) turns them into json-file files that a ``file://``
route ships. Waiting is polling with a timeout.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collectors.logs.journal import JournalSpool
from tests.helpers.agent import AgentProcess
from tests.helpers.deps import unavailable
from tests.helpers.docker import IMAGE, ContainerRunner
from tests.helpers.journald import JournaldUnavailable, ensure_journald, journal_files
from tests.helpers.runtimes import PODMAN_IMAGE, PodmanRunner
from tests.helpers.wait import wait_for
from tests.integration.test_logs_docker import Ndjson, acked_offset, gaps, numbers, settled

pytestmark = pytest.mark.journald

AgentFactory = Callable[..., AgentProcess]


@pytest.fixture(scope="session")
def journald() -> str:
    try:
        return ensure_journald()
    except JournaldUnavailable as exc:
        unavailable(str(exc))


def journal(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["journalctl", "--no-pager", "--output=json", "--all", *args], capture_output=True,
                         check=True, timeout=60).stdout
    return [orjson.loads(line) for line in out.splitlines() if line]


def spool_lines(state_dir: Path, kind: str, key: str) -> list[dict[str, Any]]:
    directory = state_dir / "journal" / kind / key
    files = sorted(directory.glob("*-json.log*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]


def journalctl_children(agent: AgentProcess) -> list[int]:
    """The agent's journalctl processes (each run through setpriv, which execs it)."""
    assert agent.proc is not None
    found = []
    for task in Path(f"/proc/{agent.proc.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "journalctl":
                found.append(int(pid))
    return found


# --- a container with --log-driver journald, its agent killed with SIGKILL mid-stream -------------------------

LINES = 20_000
# 80 bursts of 250 numbered lines, 0.1 s apart: a stream of >= 8 s.
SCRIPT = "i=0; while [ $i -lt 80 ]; do seq $((i*250+1)) $((i*250+250)); i=$((i+1)); sleep 0.1; done"


@pytest.mark.docker
def test_journald_container_is_shipped_with_metadata_and_a_kill_9_resumes_from_the_cursor(
        journald: str, agent: AgentFactory, containers: ContainerRunner, tmp_path: Path) -> None:
    out = Ndjson(tmp_path / "out.ndjson")
    # From the tail: the journal's older entries (other tests' containers) are not read first; the container's,
    # all after the start, are (its spool file appears after the routes' first scan: read from its head).
    a = agent("--journal", "auto", "--route", f"file://{out.path}?filter.name=lookout-test-journal-*",
              "--read-from", "tail")
    c = containers.run("--log-driver", "journald", cmd=["sh", "-c", SCRIPT], purpose="journal")
    spool_file = str(a.state_dir / "journal" / "docker" / c.id / f"{c.id}-json.log")

    wait_for(lambda: len(set(numbers(out.of(c)))) >= 4000, timeout=30, message="4000 lines before the kill",
             describe=lambda: f"got {len(out.of(c))}; agent log:\n{a.log(40)}")
    assert c.inspect()["State"]["Running"], "the writer finished before the kill: not mid-stream"
    readers = journalctl_children(a)
    assert len(readers) == 1
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    # Its journalctl does not outlive it (setpriv --pdeathsig).
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in readers), timeout=10,
             message=f"the killed agent's journalctl {readers} gone")
    # What the killed agent left: the spool's saved cursor and the lines it wrote, the route's checkpoint.
    cursor = (a.state_dir / "journal" / "cursor").read_text()
    spooled_at_kill = len(spool_lines(a.state_dir, "docker", c.id))
    covered = [e["__CURSOR"] for e in journal(f"CONTAINER_ID_FULL={c.id}", "--output-fields=MESSAGE")]
    assert cursor in covered, "the saved cursor is one of the container's entries"
    up_to_cursor = covered.index(cursor) + 1
    spool_window = spooled_at_kill - up_to_cursor
    acked = acked_offset(a.state_dir, spool_file)
    route_window = sum(1 for r in out.of(c) if r["offset"] >= acked)
    assert spool_window >= 0 and up_to_cursor >= 1

    a.start()  # same --state-dir: the spool goes on after its cursor, the route after its checkpoint
    wait_for(lambda: len(set(numbers(out.of(c)))) >= LINES, timeout=60, message=f"all {LINES} lines",
             describe=lambda: f"missing {gaps(numbers(out.of(c)), range(1, LINES + 1))[:10]}; log:\n{a.log(40)}")
    settled(a, str(out.path), [c])
    got = out.of(c)
    duplicates = len(got) - LINES
    spooled = spool_lines(a.state_dir, "docker", c.id)
    print(f"journald kill -9: {len(got)} records for {LINES} lines, duplicates {duplicates}; at the kill "
          f"{spooled_at_kill} lines spooled, cursor after {up_to_cursor} (spool window {spool_window}), route "
          f"window {route_window}; {len(spooled)} spool lines in all")
    assert set(numbers(got)) == set(range(1, LINES + 1))
    # Resumed from the saved cursor: the spool holds every entry once, and again only those written after it.
    assert len(spooled) == LINES + spool_window
    assert [int(x["log"]) for x in spooled[up_to_cursor + spool_window:]] == list(range(up_to_cursor + 1, LINES + 1))
    assert 0 <= duplicates <= spool_window + route_window
    assert duplicates <= LINES * 0.05, f"{duplicates} duplicates"
    # The container's metadata, as for its json-file log; the stream and Docker's line order.
    for r in got:
        assert (r["container_id"], r["container_name"], r["image"], r["stream"]) == (c.id, c.name, IMAGE, "stdout"), r
    assert got[-1]["file"].startswith(str(a.state_dir / "journal" / "docker" / c.id))
    first = {}
    for n in numbers(got):
        first.setdefault(n, len(first))
    assert sorted(first, key=first.__getitem__) == list(range(1, LINES + 1)), "lines out of order"


# --- --journal-units: systemd-cat entries (no systemd: matched by SYSLOG_IDENTIFIER) ---------------------------


def systemd_cat(ident: str, text: str, priority: str = "info") -> None:
    subprocess.run(["systemd-cat", "-t", ident, "-p", priority], input=text.encode(), check=True, timeout=30)


def test_journal_units_ship_a_units_entries_and_a_killed_journalctl_is_restarted(
        journald: str, agent: AgentFactory, tmp_path: Path) -> None:
    ident = f"lookout-test-unit-{secrets.token_hex(3)}"
    other = f"lookout-test-other-{secrets.token_hex(3)}"
    out = Ndjson(tmp_path / "out.ndjson")
    a = agent("--journal", "auto", "--route", f"file://{out.path}", "--journal-units", ident, "--read-from", "tail")
    unit = f"{ident}.service"

    def of_unit() -> list[dict[str, Any]]:
        return [r for r in out.poll() if r["container_name"] == unit]

    wait_for(lambda: journalctl_children(a), timeout=20, message="the agent's journalctl")
    systemd_cat(ident, "".join(f"unit {n}\n" for n in range(1, 101)))
    systemd_cat(ident, "unit failed\n", priority="err")
    systemd_cat(other, "not this unit\n")
    wait_for(lambda: len(of_unit()) >= 101, timeout=30, message="the unit's 101 lines",
             describe=lambda: f"got {len(of_unit())}; log:\n{a.log(30)}")
    got = of_unit()
    assert [r["message"] for r in got] == [f"unit {n}" for n in range(1, 101)] + ["unit failed"]
    assert [r["stream"] for r in got] == ["stdout"] * 100 + ["stderr"]
    assert all(r["container_id"] == "" for r in got)

    # journalctl killed: started again from the saved cursor (counted), nothing lost or repeated.
    (pid,) = journalctl_children(a)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: a.metrics().value("lookout_journal_reader_restarts_total") == 1, timeout=20,
             message="the restart counted")
    wait_for(lambda: journalctl_children(a), timeout=20, message="journalctl started again")
    systemd_cat(ident, "".join(f"after {n}\n" for n in range(1, 51)))
    wait_for(lambda: len(of_unit()) >= 151, timeout=30, message="the 50 lines after the restart")
    assert [r["message"] for r in of_unit()[101:]] == [f"after {n}" for n in range(1, 51)]
    settled(a, str(out.path))
    assert len(of_unit()) == 151
    assert not [r for r in out.poll() if other in r["message"] or r["message"] == "not this unit"]
    assert "journal_reader_restarted" in a.log(200)


# --- under --host-root: the host's journal read with journalctl --root ------------------------------------------


def test_a_host_roots_journal_is_read_with_root(journald: str, tmp_path: Path) -> None:
    ident = f"lookout-test-root-{secrets.token_hex(3)}"
    systemd_cat(ident, "from the host\n")
    wait_for(lambda: journal(f"SYSLOG_IDENTIFIER={ident}"), timeout=10, message="the entry in the journal")
    host = tmp_path / "host"
    for path in journal_files():
        target = host / "var/log/journal" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    spool = JournalSpool(tmp_path / "state" / "journal", host, [ident], "head")
    assert f"--root={host}" in spool.command()
    thread = threading.Thread(target=spool.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: spool_lines(tmp_path / "state", "units", f"{ident}.service"), timeout=30,
                 message="the host's entry spooled")
    finally:
        spool.stop()
        thread.join(10)
    assert [x["log"] for x in spool_lines(tmp_path / "state", "units", f"{ident}.service")] == ["from the host\n"]


def test_resuming_from_a_cursor_whose_entry_is_not_matched_loses_no_entry(journald: str, tmp_path: Path) -> None:
    """The saved cursor may name an entry the matches no longer select (a unit dropped from --journal-units; the
    journal's last entry, where --read-from tail starts): the first matching entry after it is still spooled
    (journalctl 252's --after-cursor would skip it; the reader uses --cursor and drops the saved entry itself)."""
    ident, other = f"lookout-test-cur-{secrets.token_hex(3)}", f"lookout-test-cur-other-{secrets.token_hex(3)}"
    systemd_cat(ident, "before\n")
    systemd_cat(other, "the cursor's entry\n")
    systemd_cat(ident, "right after\n")
    systemd_cat(ident, "later\n")
    saved = wait_for(lambda: journal(f"SYSLOG_IDENTIFIER={other}"), timeout=10, message="the other entry")
    wait_for(lambda: len(journal(f"SYSLOG_IDENTIFIER={ident}")) == 3, timeout=10, message="the unit's entries")
    root = tmp_path / "state" / "journal"
    root.mkdir(parents=True)
    (root / "cursor").write_text(saved[0]["__CURSOR"])
    spool = JournalSpool(root, Path("/"), [ident], "head")
    thread = threading.Thread(target=spool.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(spool_lines(tmp_path / "state", "units", f"{ident}.service")) >= 2, timeout=30,
                 message="the entries after the cursor spooled")
    finally:
        spool.stop()
        thread.join(10)
    assert [x["log"] for x in spool_lines(tmp_path / "state", "units", f"{ident}.service")] == \
        ["right after\n", "later\n"]


# --- Podman's journald driver (conmon) ----------------------------------------------------------------------------


@pytest.fixture
def pods() -> Iterator[PodmanRunner]:
    from tests.helpers.runtimes import RuntimeCommandError, RuntimeUnavailable, ensure_podman

    try:
        ensure_podman()
    except (RuntimeUnavailable, RuntimeCommandError) as exc:
        unavailable(f"no usable podman: {exc}")
    runner = PodmanRunner()
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.mark.podman
def test_podman_journald_container_is_shipped_with_its_metadata(journald: str, agent: AgentFactory,
                                                                 pods: PodmanRunner, tmp_path: Path) -> None:
    out = Ndjson(tmp_path / "out.ndjson")
    a = agent("--journal", "auto", "--route", f"file://{out.path}?filter.name=lookout-test-podjournal-*",
              "--read-from", "tail")
    wait_for(lambda: journalctl_children(a), timeout=20, message="the agent's journalctl")
    script = "seq 1 500; echo oops >&2; printf 'y%.0s' $(seq 1 20000); echo; echo done"
    c = pods.run("--log-driver", "journald", "--label", "com.example.team=journal", cmd=["sh", "-c", script],
                 purpose="podjournal")

    def mine() -> list[dict[str, Any]]:
        return [r for r in out.poll() if r["container_id"] == c.id]

    wait_for(lambda: len(mine()) >= 503, timeout=30, message="the container's 503 lines",
             describe=lambda: f"got {len(mine())}; log:\n{a.log(30)}")
    got = mine()
    assert [r["message"] for r in got if r["stream"] == "stdout"] == [str(n) for n in range(1, 501)] + \
        ["y" * 20000, "done"]
    assert [r["message"] for r in got if r["stream"] == "stderr"] == ["oops"]
    assert {(r["container_name"], r["image"]) for r in got} == {(c.name, PODMAN_IMAGE)}
    assert got[0]["labels"]["com.example.team"] == "journal"
    assert got[0]["file"].startswith(str(a.state_dir / "journal" / "podman" / c.id))


@pytest.mark.docker
def test_read_from_head_ships_what_the_journal_holds_and_tail_only_what_comes_after(
        journald: str, agent: AgentFactory, containers: ContainerRunner, tmp_path: Path) -> None:
    before = containers.run("--log-driver", "journald", cmd=["sh", "-c", "seq 1 100"], purpose="jhead")
    wait_for(lambda: not before.inspect()["State"]["Running"], timeout=30, message="the first container exited")
    wait_for(lambda: len(journal(f"CONTAINER_ID_FULL={before.id}", "--output-fields=MESSAGE")) == 100, timeout=10,
             message="its 100 entries in the journal")
    head, tail = Ndjson(tmp_path / "head.ndjson"), Ndjson(tmp_path / "tail.ndjson")
    a_head = agent("--journal", "auto", "--route", f"file://{head.path}?filter.name=lookout-test-jhead-*")
    a_tail = agent("--journal", "auto", "--route", f"file://{tail.path}?filter.name=lookout-test-jhead-*",
                   "--read-from", "tail")
    wait_for(lambda: journalctl_children(a_tail), timeout=20, message="the tail agent's journalctl")
    after = containers.run("--log-driver", "journald", cmd=["sh", "-c", "seq 101 150"], purpose="jhead")
    wait_for(lambda: len(head.of(before)) >= 100 and len(head.of(after)) >= 50, timeout=90,
             message="head: both containers' lines", describe=lambda: a_head.log(20))
    wait_for(lambda: len(tail.of(after)) >= 50, timeout=60, message="tail: the later container's lines")
    settled(a_tail, str(tail.path))
    assert numbers(head.of(before)) == list(range(1, 101)) and numbers(head.of(after)) == list(range(101, 151))
    assert tail.of(before) == [] and numbers(tail.of(after)) == list(range(101, 151))

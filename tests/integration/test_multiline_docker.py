"""Multiline joining with real containers printing stack traces (busybox ``printf``), through the agent as a
subprocess: to a real rsyslogd over syslog TCP (the route option and the container label), and to the
Elasticsearch stand-in, with the agent killed with -9 while a trace is half written and held: after the restart the
trace is delivered once, whole."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.es_standin import EsStandin
from tests.helpers.rsyslog import Input, Rsyslog
from tests.helpers.wait import wait_for
from tests.integration.test_routes_syslog import need, wait_records
from tests.unit.test_multiline import events_of

JAVA = events_of("java.log")
GO = events_of("go.log")


@pytest.fixture
def rsyslogd(tmp_path: Path) -> Iterator[Any]:
    """``rsyslogd(inputs)`` starts a rsyslogd in a tmp dir; stopped at teardown."""
    started: list[Rsyslog] = []

    def start(inputs: list[Input]) -> Rsyslog:
        server = Rsyslog(tmp_path / f"rsyslog{len(started)}", inputs, None)
        started.append(server)
        try:
            return server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def printf(lines: list[str], stderr: bool = False) -> str:
    """A shell command printing ``lines`` as they are (single-quoted, one printf)."""
    quoted = " ".join("'" + line.replace("'", "'\\''") + "'" for line in lines)
    return f"printf '%s\\n' {quoted}" + (" >&2" if stderr else "")


def lines_of(events: list[str]) -> list[str]:
    return [line for event in events for line in event.split("\n")]


def file_lines(c: Container) -> list[tuple[int, str, str]]:
    """(offset, stream, message) of every line of the container's json-file log."""
    data = Path(c.inspect()["LogPath"]).read_bytes()
    out, offset = [], 0
    for raw in data.splitlines(keepends=True):
        doc = orjson.loads(raw)
        out.append((offset, doc["stream"], doc["log"].removesuffix("\n")))
        offset += len(raw)
    return out


@pytest.mark.docker
def test_stack_traces_to_rsyslog_by_route_option_and_by_label(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, rsyslogd: Any) -> None:
    need("tcp")
    token = secrets.token_hex(4)
    java = containers.run("--label", f"lookout.route.test=j{token}", "--log-driver", "json-file",
                          cmd=["sh", "-c", printf(lines_of(JAVA)) + "; exec sleep 3600"], purpose="ml-java")
    # The label picks the mode for a route that sets none; stdout is plain lines, each its own record.
    go = containers.run("--label", f"lookout.route.test=g{token}", "--label", "lookout.multiline=go",
                        "--log-driver", "json-file",
                        cmd=["sh", "-c", printf(lines_of(GO), stderr=True) + "; " + printf(["out 1", "  out 2"])
                             + "; exec sleep 3600"], purpose="ml-go")
    total = len(lines_of(JAVA))
    wait_for(lambda: len(file_lines(java)) == total, 30, message="the java container's lines")
    wait_for(lambda: len(file_lines(go)) == len(lines_of(GO)) + 2, 30, message="the go container's lines")
    inputs = [Input("tcp", name="java"), Input("tcp", name="go")]
    server = rsyslogd(inputs)
    port = {i.name: i.port for i in inputs}
    routes = {"java": f"syslog+tcp://127.0.0.1:{port['java']}?multiline=java&filter.labels=lookout.route.test:j{token}",
              "go": f"syslog+tcp://127.0.0.1:{port['go']}?filter.labels=lookout.route.test:g{token}"}
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                 "--multiline-timeout", "500ms", "--route", routes["java"], "--route", routes["go"])
    got = wait_records(server, "java", len(JAVA), proc, routes["java"])
    assert [r["msg"] for r in got] == JAVA
    assert {r["app"] for r in got} == {java.name}
    got = wait_records(server, "go", len(GO) + 2, proc, routes["go"])
    assert sorted(r["msg"] for r in got if r["pri"] == "11") == sorted(GO)  # user.err: stderr
    assert [r["msg"] for r in got if r["pri"] == "11"] == GO
    # The mode is the container's, per stream: go joins an indented line only inside an event a go line began.
    assert [r["msg"] for r in got if r["pri"] == "14"] == ["out 1", "  out 2"]


def checkpoint(state_dir: Path, log_path: str) -> int | None:
    try:
        doc = orjson.loads((state_dir / "checkpoints.json").read_bytes())
    except FileNotFoundError:
        return None
    found = [e["offset"] for files in doc["routes"].values() for e in files.values() if e["path"] == log_path]
    return found[0] if found else None


@pytest.mark.docker
def test_kill_9_in_the_middle_of_a_stack_trace_delivers_it_once_whole_to_elasticsearch(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any) -> None:
    es = EsStandin().start()
    try:
        token = secrets.token_hex(4)
        trace = JAVA[1].split("\n")
        first, rest = trace[:7], trace[7:]
        # The trace's first half, then nothing until the test lets the container go on (a file in it).
        script = (printf(JAVA[0].split("\n")) + "; " + printf(first) + "; while [ ! -e /tmp/go ]; do sleep 0.1; done; "
                  + printf([*rest, *lines_of(JAVA[2:])]) + "; exec sleep 3600")
        c = containers.run("--label", f"lookout.route.test={token}", "--log-driver", "json-file",
                           cmd=["sh", "-c", script], purpose="ml-crash")
        wait_for(lambda: len(file_lines(c)) == 1 + len(first), 30, message="the first half of the trace")
        log_path = c.inspect()["LogPath"]
        trace_start = file_lines(c)[1][0]
        uri = (f"elasticsearch+http://127.0.0.1:{es.port}/logs?multiline=java&batch=100&flush=100ms"
               f"&filter.labels=lookout.route.test:{token}")
        a = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                  "--multiline-timeout", "1h", "--route", uri)
        wait_for(lambda: [d["message"] for d in es.docs()] == [JAVA[0]], 30, message="the line before the trace")
        # The checkpoint stops at the held trace's first line, however long the agent waits.
        wait_for(lambda: checkpoint(a.state_dir, log_path) == trace_start, 30,
                 message=f"checkpoint at {trace_start}", describe=lambda: str(checkpoint(a.state_dir, log_path)))
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        assert checkpoint(a.state_dir, log_path) == trace_start
        c.exec("touch", "/tmp/go")
        wait_for(lambda: len(file_lines(c)) == len(lines_of(JAVA)), 30, message="the rest of the log")
        a.extra_args = tuple(arg if arg != "1h" else "300ms" for arg in a.extra_args)  # now let the last one go
        a.start()
        wait_for(lambda: len(es.docs()) == len(JAVA), 60, message=f"{len(JAVA)} documents",
                 describe=lambda: str([d["message"][:40] for d in es.docs()]))
        docs = sorted(es.docs(), key=lambda d: d["log"]["offset"])
        assert [d["message"] for d in docs] == JAVA
        assert docs[1]["log"]["offset"] == trace_start
        assert set(es.writes.values()) == {1}, "a document was written twice"
        # Once: no request after the restart carried the trace again (not even one answered 409).
        items = [item for r in es.bulk_requests() for item in r.items]
        ids = [doc_id for _, _, doc_id, _ in items]
        assert len(ids) == len(set(ids)) == len(JAVA), items
        wait_for(lambda: checkpoint(a.state_dir, log_path) == Path(log_path).stat().st_size, 30,
                 message="the checkpoint at the log's end")
    finally:
        es.stop()

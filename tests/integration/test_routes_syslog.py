"""Syslog routes against a real rsyslogd on loopback: what rsyslog itself parses is what the containers wrote.

- Real Docker containers, the agent as a subprocess, one rsyslogd with UDP, TCP (octet counting and LF
  framing), TLS and an RFC 3164 input: PRI, HOSTNAME, APP-NAME, PROCID, TIMESTAMP, structured data
  (parsed by rsyslog's mmpstrucdata) and MSG match the container's own json-file log, record for record,
  and a container printing syslog-looking text creates no record of its own.
- The pipeline in-process on a fake Docker root (messages no real runtime can produce: embedded
  newlines, SD values with ``"``, ``\\`` and ``]``, Kubernetes fields, over-long lines): no forged
  record over any framing, SD round-trips exactly, truncation at a UTF-8 boundary is marked and counted.
- TLS: CA verification, ``verify=false``, a wrong CA (nothing delivered, route down), client certificates.
- RELP: rsyslogd killed with -9 mid-stream and restarted loses no line (real container, agent subprocess).
- TCP: a receiver killed with -9 and restarted loses only lines its kernel had acknowledged; the test
  prints how many (and the receive queue at the kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.cli import _parser
from agent.config import load_config
from agent.logs.pipeline import LogPipeline
from agent.logs.runner import RouteRunner
from agent.model import DeliveryResult, Payload
from agent.telemetry import Telemetry
from agent.wiring import make_logs
from collectors.docker import DockerMetadata
from tests.helpers import rsyslog as rsyslog_helper
from tests.helpers.agent import AgentProcess
from tests.helpers.deps import unavailable
from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.rsyslog import Certs, Input, Rsyslog, make_certs
from tests.helpers.wait import wait_for

HOST = socket.gethostname()
SD_ID = "lookout@32473"
FORGED = "<13>1 2026-01-01T00:00:00Z forged app - - - injected"


def need(*kinds: str) -> None:
    reason = rsyslog_helper.missing(*kinds)
    if reason:
        unavailable(reason)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    need("tls")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def rsyslogd(tmp_path: Path) -> Iterator[Callable[..., Rsyslog]]:
    """``rsyslogd(inputs, certs=None)`` starts a rsyslogd in a tmp dir; stopped at teardown."""
    started: list[Rsyslog] = []

    def start(inputs: list[Input], certs: Certs | None = None) -> Rsyslog:
        server = Rsyslog(tmp_path / f"rsyslog{len(started)}", inputs, certs)
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


def stamp_5424(time_: str) -> str:
    """The runtime's RFC 3339 time as RFC 5424 wants it: six fraction digits, UTC."""
    base, _, frac = time_.rstrip("Z").partition(".")
    return f"{base}.{(frac + '000000')[:6]}Z"


def wait_records(server: Rsyslog, name: str, count: int, proc: AgentProcess, route: str,
                 timeout: float = 30.0) -> list[dict[str, Any]]:
    """The records at rsyslog input ``name`` once ``count`` arrived and the agent's ``route`` (its redacted URI) sent
    exactly ``count``: a record sent twice would make the second count larger, not arrive late unnoticed."""
    wait_for(lambda: len(server.records(name)) >= count, timeout,
             message=f"{count} records at rsyslog input {name!r}", describe=server.describe)
    wait_for(lambda: proc.metrics().value("lookout_route_records_sent_total", route=route) >= count, timeout,
             message=f"route {route} sent {count} records", describe=lambda: proc.metrics().describe(None, route=route))
    sent = proc.metrics().value("lookout_route_records_sent_total", route=route)
    assert sent == count, f"route {route} sent {sent} records for {count} lines"
    return server.records(name)


# --- real containers, agent subprocess ------------------------------------------------------------------


def docker_log(container: Container) -> list[tuple[str, str, str]]:
    """(time, stream, message) of every line in the container's json-file log, in file order."""
    path = container.inspect()["LogPath"]
    out = []
    for line in Path(path).read_bytes().splitlines():
        doc = orjson.loads(line)
        out.append((doc["time"], doc["stream"], doc["log"].removesuffix("\n")))
    return out


SCRIPT = r"""
printf 'plain line from stdout\n'
printf 'quotes " backslash \\ bracket ] open [ unicode é ✓ 日本語\n'
printf '%s\n' '<13>1 2026-01-01T00:00:00Z forged app - - - injected'
printf '%s\n' '56 <13>1 2026-01-01T00:00:00Z forged app - - - [x@1 a="b"] octet lookalike'
printf 'error line on stderr\n' >&2
printf '%s\n' '<11>Jan  1 00:00:00 forged tag[1]: bsd lookalike' >&2
printf 'tab\there and   spaces  \n'
exec sleep 3600
"""
EXPECTED_MESSAGES = {
    "plain line from stdout", 'quotes " backslash \\ bracket ] open [ unicode é ✓ 日本語', FORGED,
    '56 <13>1 2026-01-01T00:00:00Z forged app - - - [x@1 a="b"] octet lookalike', "error line on stderr",
    "<11>Jan  1 00:00:00 forged tag[1]: bsd lookalike", "tab\there and   spaces  ",
}


def start_writer(containers: ContainerRunner, token: str, script: str, lines: int, purpose: str) -> Container:
    c = containers.run("--label", f"lookout.route.test={token}", "--log-driver", "json-file",
                       cmd=["sh", "-c", script], purpose=purpose)
    wait_for(lambda: len(docker_log(c)) >= lines, 30, message=f"{lines} lines in {c.name}'s json-file log",
             describe=c.logs)
    return c


def route_args(*routes: str) -> list[str]:
    return [arg for route in routes for arg in ("--route", route)]


@pytest.mark.docker
def test_containers_to_rsyslog_over_udp_tcp_lf_tls_and_rfc3164(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, rsyslogd: Any, certs: Certs) -> None:
    need("udp", "tcp", "tls")
    token = secrets.token_hex(4)
    c = start_writer(containers, token, SCRIPT, len(EXPECTED_MESSAGES), "syslog")
    written = docker_log(c)
    assert {m for _, _, m in written} == EXPECTED_MESSAGES
    info = c.inspect()
    pid = info["State"]["Pid"]

    inputs = [Input("udp"), Input("tcp", name="octet"), Input("tcp", name="lf"), Input("tls"),
              Input("tcp", name="bsd")]
    server = rsyslogd(inputs, certs)
    ports = {i.name: i.port for i in inputs}
    flt = f"filter.labels=lookout.route.test:{token}"
    routes = {
        "udp": f"syslog+udp://127.0.0.1:{ports['udp']}?{flt}",
        "octet": f"syslog+tcp://127.0.0.1:{ports['octet']}?{flt}",
        "lf": f"syslog+tcp://127.0.0.1:{ports['lf']}?framing=lf&{flt}",
        "tls": f"syslog+tls://127.0.0.1:{ports['tls']}?ca={certs.ca}&{flt}",
        "bsd": f"syslog+tcp://127.0.0.1:{ports['bsd']}?format=rfc3164&framing=lf&facility=local3&{flt}",
    }
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                 *route_args(*routes.values()))

    for name in ("udp", "octet", "lf", "tls"):
        got = wait_records(server, name, len(written), proc, routes[name])
        assert len(got) == len(written), f"{name}: {len(got)} records for {len(written)} lines"
        for (time_, stream, message), rec in zip(written, got, strict=True):
            where = f"{name}: {rec}"
            assert rec["pri"] == ("14" if stream == "stdout" else "11"), where  # user.info / user.err
            assert rec["hostname"] == HOST, where
            assert rec["app"] == c.name, where
            assert (rec["procid"], rec["msgid"]) == ("-", "-"), where
            assert rec["ts"] == stamp_5424(time_), where
            assert rec["msg"] == message, where
            assert rec["sdp"] == {SD_ID: {"container_id": c.id, "container_name": c.name,
                                          "image": docker_engine.image, "stream": stream}}, where
        # The syslog-looking lines are messages of the container's own records, never records of their own.
        assert {r["app"] for r in got} == {c.name} and {r["hostname"] for r in got} == {HOST}

    got = wait_records(server, "bsd", len(written), proc, routes["bsd"])
    assert len(got) == len(written)
    for (time_, stream, message), rec in zip(written, got, strict=True):
        where = f"bsd: {rec}"
        assert rec["pri"] == str(19 * 8 + (6 if stream == "stdout" else 3)), where  # local3
        assert (rec["hostname"], rec["app"], rec["procid"]) == (HOST, c.name, str(pid)), where
        assert rec["msg"] == " " + message, where  # rsyslog keeps the space after "TAG[PID]:"
        assert rec["ts"][5:19] == time_[5:19], where  # RFC 3164 has no year and no fraction

    metrics = proc.metrics()
    for uri in routes.values():
        assert metrics.value("lookout_route_records_sent_total", route=uri) == len(written)
        assert metrics.value("lookout_route_up", route=uri) == 1
        assert metrics.value("lookout_route_records_truncated_total", route=uri) == 0


@pytest.mark.docker
def test_relp_receiver_killed_mid_stream_and_restarted_loses_no_line(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, rsyslogd: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    need("relp")
    lines = 60_000
    token = secrets.token_hex(4)
    script = f"seq 1 {lines} | sed 's/^/relp line /'; exec sleep 3600"
    c = start_writer(containers, token, script, lines, "relp")
    relp = Input("relp")
    server = rsyslogd([relp])
    uri = f"syslog+relp://127.0.0.1:{relp.port}?filter.labels=lookout.route.test:{token}"
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket, "--route", uri)

    wait_for(lambda: server.count("relp") >= 3000, 60, message="3000 lines over RELP",
             describe=server.describe)
    server.kill9()
    at_kill = server.count("relp")
    time.sleep(1.0)  # the receiver stays down a second (the outage itself, not a wait for the agent)
    assert at_kill < lines, "the kill came after the last line: make the stream longer"
    server.start()
    wait_for(lambda: server.count("relp") >= lines, 120,
             message=f"all {lines} lines after the restart", describe=server.describe)
    got = [r["msg"] for r in server.records("relp")]
    assert set(got) == {f"relp line {i}" for i in range(1, lines + 1)}
    assert all(r["app"] == c.name for r in server.records("relp"))
    duplicates = len(got) - len(set(got))
    wait_for(lambda: proc.metrics().value("lookout_route_records_sent_total", route=uri) == lines, 10,
             message="lookout_route_records_sent_total == lines")
    metrics = proc.metrics()
    assert metrics.value("lookout_route_retries_total", route=uri) >= 1
    assert metrics.value("lookout_route_up", route=uri) == 1
    with capsys.disabled():
        print(f"\n[RELP kill -9] {lines} lines, rsyslogd killed after {at_kill} had been written: 0 lost, "
              f"{duplicates} duplicate(s) (answered by rsyslogd too late), "
              f"{metrics.value('lookout_route_retries_total', route=uri):.0f} retried send(s)")


# --- the pipeline in-process on a fake Docker root --------------------------------------------------------


class FakeContainer:
    def __init__(self, root: Path, cid: str, name: str, image: str, labels: dict[str, str], pid: int) -> None:
        self.cid, self.name, self.image = cid, name, image
        self.dir = root / "containers" / cid
        self.dir.mkdir(parents=True)
        doc = {"ID": cid, "Name": "/" + name, "Created": "2026-11-28T00:00:00Z",
               "Config": {"Image": image, "Labels": labels, "Env": []},
               "State": {"Running": True, "Pid": pid, "StartedAt": "2026-11-28T00:00:01Z"}}
        (self.dir / "config.v2.json").write_bytes(orjson.dumps(doc))
        (self.dir / "hostconfig.json").write_bytes(b'{"NetworkMode":"default"}')
        self.log = self.dir / f"{cid}-json.log"
        self.log.touch()
        self.seq = 0

    def write(self, items: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Append (stream, message) records; returns (time, stream, message) as written."""
        out = []
        with self.log.open("ab") as fh:
            for stream, message in items:
                self.seq += 1
                t = f"2026-11-28T04:{self.seq // 60 % 60:02d}:{self.seq % 60:02d}.{self.seq:09d}Z"
                fh.write(orjson.dumps({"log": message + "\n", "stream": stream, "time": t}) + b"\n")
                out.append((t, stream, message))
        return out


class LocalAgent:
    """The agent's log pipeline built by the real wiring, running on the test's event loop."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.docker_root = tmp / "docker"
        (self.docker_root / "containers").mkdir(parents=True)
        self.state = tmp / "state"
        self.telemetry = Telemetry()
        self.pipeline: LogPipeline | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.count = 0

    def container(self, name: str, image: str = "busybox:test", labels: dict[str, str] | None = None,
                  pid: int = 0) -> FakeContainer:
        self.count += 1
        return FakeContainer(self.docker_root, f"{self.count:064x}", name, image, labels or {}, pid)

    def start(self, *routes: str) -> LogPipeline:
        argv = ["run", "--host-root", str(self.tmp / "host"), "--docker-root", str(self.docker_root),
                "--docker-socket", "", "--state-dir", str(self.state), *route_args(*routes)]
        args, unknown = _parser().parse_known_args(argv)
        config = load_config(args, environ={}, unknown=unknown)
        pipeline = make_logs(config, DockerMetadata(config.docker_root, "", ()), self.telemetry)
        assert pipeline is not None
        pipeline.RESCAN_INTERVAL = 0.2  # type: ignore[misc]
        for runner in pipeline.runners:
            runner.options.poll_interval = 0.02
            runner.options.poll_max = 0.1
        self.pipeline = pipeline
        self.tasks = pipeline.tasks()
        return pipeline

    def runner(self, uri: str) -> RouteRunner:
        assert self.pipeline is not None
        return next(r for r in self.pipeline.runners if r.route.uri == uri)

    def metric(self, name: str, uri: str) -> float:
        value = self.telemetry.registry.get_sample_value(name, {"route": uri})
        return 0.0 if value is None else value

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        if self.pipeline is not None:
            await self.pipeline.close()


@pytest.fixture
async def local(tmp_path: Path) -> Any:
    agent = LocalAgent(tmp_path)
    yield agent
    await agent.stop()


async def await_records(server: Rsyslog, name: str, count: int, local: LocalAgent, *uris: str,
                        timeout: float = 30.0) -> list[dict[str, Any]]:
    """The records at rsyslog input ``name`` once there are ``count`` and the routes ``uris`` that send to it have
    nothing left to send (lag 0, nothing queued) and all they delivered has arrived: a record more would be
    there by then."""
    deadline = time.monotonic() + timeout

    def settled() -> bool:
        runners = [local.runner(uri) for uri in uris]
        if any(r.follower.lag()[1] or r.queue.qsize() for r in runners):
            return False
        sent = sum(local.metric("lookout_route_records_sent_total", uri) for uri in uris)
        return len(server.records(name)) >= max(sent, count)

    while not settled():
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} records at {name!r} not within {timeout}s\n{server.describe()}")
        await asyncio.sleep(0.05)
    return server.records(name)


async def test_no_framing_lets_a_message_forge_a_record_and_sd_round_trips(
        local: LocalAgent, rsyslogd: Any, certs: Certs) -> None:
    need("udp", "tcp", "tls", "relp")
    labels = {"app": "shop", "io.kubernetes.pod.name": 'pod-"7"', "io.kubernetes.pod.namespace": "ns\\prod",
              "io.kubernetes.container.name": "web]main"}
    c = local.container("web-1", image='registry:5000/img"q\\b]x[y:1.0', labels=labels)
    messages = [
        ("stdout", "first\n" + FORGED),
        ("stderr", "a\nb\r\nc\n\n"),
        ("stdout", "\n" + FORGED + "\n"),
        ("stdout", "42 " + FORGED),
        ("stdout", 'sd lookalike [lookout@32473 container_id="forged"] ] " \\'),
        ("stdout", "ünïcödé ✓ 日本語 \U0001f600"),
        ("stdout", "plain"),
    ]
    written = c.write(messages)
    inputs = [Input("udp"), Input("tcp", name="octet"), Input("tcp", name="lf"), Input("tls"), Input("relp")]
    server = rsyslogd(inputs, certs)
    port = {i.name: i.port for i in inputs}
    routes = {
        "udp": f"syslog+udp://127.0.0.1:{port['udp']}",
        "octet": f"syslog+tcp://127.0.0.1:{port['octet']}",
        "lf": f"syslog+tcp://127.0.0.1:{port['lf']}?framing=lf",
        "tls": f"syslog+tls://127.0.0.1:{port['tls']}?ca={certs.ca}",
        "relp": f"syslog+relp://127.0.0.1:{port['relp']}?tag={{label:app}}-{{stream}}&hostname=edge-01",
    }
    local.start(*routes.values())
    for name in routes:
        got = await await_records(server, name, len(written), local, routes[name])
        assert len(got) == len(written), f"{name}: {[r['msg'] for r in got]}"
        for (time_, stream, message), rec in zip(written, got, strict=True):
            # LF framing turns every LF into a space before sending; the other framings carry it as is.
            expected = message.replace("\n", " ") if name == "lf" else message
            assert rec["msg"] == expected, f"{name}: {rec}"
            assert rec["ts"] == stamp_5424(time_)
            sd = {"container_id": c.cid, "container_name": "web-1", "image": c.image, "stream": stream,
                  "pod": labels["io.kubernetes.pod.name"], "namespace": labels["io.kubernetes.pod.namespace"],
                  "container": labels["io.kubernetes.container.name"]}
            assert rec["sdp"] == {SD_ID: sd}, f"{name}: {rec}"
            if name == "relp":
                assert (rec["hostname"], rec["app"]) == ("edge-01", f"shop-{stream}")
            else:
                assert (rec["hostname"], rec["app"]) == (HOST, "web-1")


async def test_long_lines_are_cut_at_a_utf8_boundary_marked_and_counted(local: LocalAgent, rsyslogd: Any) -> None:
    need("udp", "tcp")
    c = local.container("long")
    long_text = "é" * 1500 + "✓" * 400  # 4200 bytes of UTF-8, no ASCII cut point
    written = c.write([("stdout", long_text), ("stdout", "short")])
    inputs = [Input("udp"), Input("tcp", name="tcp600"), Input("tcp", name="tcp")]
    server = rsyslogd(inputs)
    port = {i.name: i.port for i in inputs}
    udp = f"syslog+udp://127.0.0.1:{port['udp']}"  # default max_message_bytes 2048 on UDP
    tcp600 = f"syslog+tcp://127.0.0.1:{port['tcp600']}?max_message_bytes=600"
    tcp = f"syslog+tcp://127.0.0.1:{port['tcp']}"  # default 65536
    local.start(udp, tcp600, tcp)
    for name, uri, limit in (("udp", udp, 2048), ("tcp600", tcp600, 600)):
        got = await await_records(server, name, 2, local, uri)
        cut, short = got
        assert short["msg"] == "short" and "truncated" not in short["sdp"][SD_ID]
        assert cut["sdp"][SD_ID]["truncated"] == "true"
        assert long_text.startswith(cut["msg"]) and 0 < len(cut["msg"]) < len(long_text)
        header = len(f"<14>1 {stamp_5424(written[0][0])} {HOST} long - - ".encode())
        sd_len = len(cut["sd"].encode())
        total = header + sd_len + 1 + len(cut["msg"].encode())
        assert limit - 3 <= total <= limit, f"{name}: {total} bytes for a limit of {limit}"  # a 2-3 byte char
        assert local.metric("lookout_route_records_truncated_total", uri) == 1
    got = await await_records(server, "tcp", 2, local, tcp)
    assert got[0]["msg"] == long_text and "truncated" not in got[0]["sdp"][SD_ID]
    assert local.metric("lookout_route_records_truncated_total", tcp) == 0


@pytest.mark.parametrize("lines", [300, 3000])
async def test_udp_burst_arrives_whole_at_a_local_rsyslog(
        local: LocalAgent, rsyslogd: Any, lines: int, capsys: pytest.CaptureFixture[str]) -> None:
    """A burst written at once is one batch of datagrams: rsyslog's imudp must get every one (UDP has no
    acknowledgement, so what its socket buffer cannot hold is dropped by its kernel, silently)."""
    need("udp")
    c = local.container("burst")
    written = c.write([("stdout", f"udp burst line {i:05d} " + "x" * 80) for i in range(lines)])
    expected = {m for _, _, m in written}
    udp = Input("udp")
    server = rsyslogd([udp])
    uri = f"syslog+udp://127.0.0.1:{udp.port}"
    started = time.monotonic()
    local.start(uri)
    deadline = started + 60
    while local.metric("lookout_route_records_sent_total", uri) < lines:  # every datagram handed to the kernel
        assert time.monotonic() < deadline, f"the route sent {local.metric('lookout_route_records_sent_total', uri)}"
        await asyncio.sleep(0.01)
    sent_after = time.monotonic() - started
    # The kernel has them all; rsyslog writes each within milliseconds of reading it. Wait for the rest with a
    # deadline far beyond that (a dropped datagram never comes, so a loss shows as this timeout).
    deadline = time.monotonic() + 10
    while server.count("udp") < lines and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    got = [r["msg"] for r in server.records("udp")]
    with capsys.disabled():
        print(f"\n[UDP burst] {len(set(got) & expected)} of {lines} lines arrived at rsyslog "
              f"(sent in {sent_after:.3f}s)")
    assert len(got) == lines and set(got) == expected, \
        f"{len(set(got) & expected)} of {lines} lines arrived, {len(got) - len(set(got))} duplicate(s)"
    assert local.runner(uri).sink.refused == 0  # type: ignore[attr-defined]  # nothing reported lost


async def test_tls_verification_and_client_certificates(local: LocalAgent, rsyslogd: Any, certs: Certs) -> None:
    need("tls")
    c = local.container("tls")
    written = c.write([("stdout", f"tls line {i}") for i in range(20)])
    anon, mutual = Input("tls", name="anon"), Input("tls", name="mutual", auth_mode="x509/name",
                                                     permitted_peers=("lookout-client",))
    server = rsyslogd([anon, mutual], certs)
    routes = {
        "ca": f"syslog+tls://127.0.0.1:{anon.port}?ca={certs.ca}",
        "noverify": f"syslog+tls://127.0.0.1:{anon.port}?verify=false&name=noverify",
        "wrong_ca": f"syslog+tls://127.0.0.1:{anon.port}?ca={certs.other_ca}&name=wrongca",
        "client_cert": f"syslog+tls://127.0.0.1:{mutual.port}?ca={certs.ca}&cert={certs.client_cert}"
                       f"&key={certs.client_key}",
        "no_client_cert": f"syslog+tls://127.0.0.1:{mutual.port}?ca={certs.ca}&name=nocert",
    }
    local.start(*routes.values())
    got = await await_records(server, "anon", 2 * len(written), local, routes["ca"], routes["noverify"])
    assert sorted(r["msg"] for r in got) == sorted(m for _, _, m in written for _ in range(2))
    got = await await_records(server, "mutual", len(written), local, routes["client_cert"])
    assert [r["msg"] for r in got] == [m for _, _, m in written]
    for key in ("ca", "noverify", "client_cert"):
        assert local.metric("lookout_route_records_sent_total", routes[key]) == len(written), key
        assert local.metric("lookout_route_up", routes[key]) == 1, key
    for key in ("wrong_ca", "no_client_cert"):
        assert local.metric("lookout_route_records_sent_total", routes[key]) == 0, key
        assert local.metric("lookout_route_up", routes[key]) == 0, key
        assert local.metric("lookout_route_retries_total", routes[key]) >= 1, key
    assert len(server.records("anon")) == 2 * len(written)  # the refused routes delivered nothing


async def test_tcp_receiver_restart_loses_only_what_its_kernel_acknowledged(
        local: LocalAgent, rsyslogd: Any, capsys: pytest.CaptureFixture[str]) -> None:
    need("tcp")
    lines = 150_000
    c = local.container("tcp-restart")
    pad = "x" * 60
    written = c.write([("stdout", f"tcp line {i:06d} {pad}") for i in range(lines)])
    expected = {m for _, _, m in written}
    tcp = Input("tcp")
    server = rsyslogd([tcp])
    uri = f"syslog+tcp://127.0.0.1:{tcp.port}?batch=2000"
    local.start(uri)
    runner = local.runner(uri)

    # Which records the payloads send() reported delivered hold, read from the octet-counted frames themselves
    # (a payload may come from the reader's encoder or from a chunk worker).
    delivered: set[str] = set()
    send = runner.sink.send

    async def tracking_send(payload: Payload) -> DeliveryResult:
        result = await send(payload)
        assert isinstance(payload.data, bytes)
        messages = frame_messages(payload.data)
        assert len(messages) == payload.count == result.delivered
        delivered.update(messages)
        return result

    runner.sink.send = tracking_send  # type: ignore[method-assign]

    deadline = time.monotonic() + 60
    while server.count("tcp") < 20_000:
        assert time.monotonic() < deadline, server.describe()
        await asyncio.sleep(0.01)
    recv_q = Rsyslog.recv_queue(tcp.port)
    server.kill9()
    written_at_kill = server.count("tcp")
    await asyncio.sleep(1.0)  # the receiver stays down a second (the outage itself, not a wait for the agent)
    acknowledged_before_restart = set(delivered)  # nothing can be acknowledged while no receiver runs
    assert written_at_kill < lines, "the kill came after the last line: make the stream longer"
    await asyncio.to_thread(server.start)

    deadline = time.monotonic() + 120
    while True:
        if local.metric("lookout_route_records_sent_total", uri) >= lines:
            break
        assert time.monotonic() < deadline, server.describe()
        await asyncio.sleep(0.1)
    # Everything sent after the restart arrives: all but what the dead receiver's kernel had acknowledged.
    deadline = time.monotonic() + 30
    while not expected - acknowledged_before_restart <= {r["msg"] for r in server.records("tcp")}:
        assert time.monotonic() < deadline, "lines never acknowledged by the dead receiver's kernel are missing"
        await asyncio.sleep(0.05)
    got = [r["msg"] for r in server.records("tcp")]
    lost = expected - set(got)
    unexpected = lost - acknowledged_before_restart
    assert not unexpected, f"{len(unexpected)} lost line(s) were never acknowledged by the receiver's kernel"
    assert set(got) <= expected
    duplicates = len(got) - len(set(got))
    assert local.metric("lookout_route_retries_total", uri) >= 1
    with capsys.disabled():
        print(f"\n[TCP kill -9] {lines} lines, rsyslogd killed after writing {written_at_kill}: {len(lost)} lost "
              f"(all acknowledged by its kernel; its receive queue held {recv_q} bytes at the kill), "
              f"{duplicates} duplicate(s) resent after the reconnect")


def frame_messages(payload: bytes) -> list[str]:
    """The MSG of every octet-counted RFC 5424 frame in ``payload`` (the text after the structured data)."""
    out = []
    pos = 0
    while pos < len(payload):
        space = payload.index(b" ", pos)
        end = space + 1 + int(payload[pos:space])
        out.append(payload[space + 1:end].decode().rsplit('"] ', 1)[1])
        pos = end
    return out


def test_frame_messages_reads_octet_counted_frames() -> None:
    frames = [b'<14>1 2026-11-28T04:00:00.000000Z h web - - [lookout@32473 stream="stdout"] tcp line ' + str(i).encode()
              + b" \xc3\xa9]" for i in range(3)]
    payload = b"".join(b"%d %s" % (len(f), f) for f in frames)
    assert frame_messages(payload) == [f"tcp line {i} é]" for i in range(3)]


def test_receiver_records_parse_helper_round_trip(tmp_path: Path) -> None:
    """The helper's own parsing of rsyslog's JSON lines (no rsyslogd needed)."""
    server = Rsyslog(tmp_path, [Input("tcp", port=1)])
    line = {"msg": "m", "sdp": '{ "a@1": { "k": "v\\"]" } }', "app": "x"}
    server.out("tcp").write_text(orjson.dumps(line).decode() + "\n{partial")
    assert server.records("tcp") == [{"msg": "m", "sdp": {"a@1": {"k": 'v"]'}}, "app": "x"}]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(server.out("tcp"))
    assert server.records("tcp") == []

"""Issue #13 on a real agent process and real Docker containers: the live log stream with its token, routes added
over the API and kept across a restart, SIGHUP reloading the routes (and refusing a bad configuration), and
readiness that tells the truth about a wrong --host-root.

Waiting is polling with a timeout; "nothing more will arrive" comes from the agent's gauges (lag 0, queue 0).
"""

from __future__ import annotations

import http.client
import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.docker import Container, ContainerRunner
from tests.helpers.wait import wait_for
from tests.integration.test_logs_docker import AgentFactory, Ndjson

pytestmark = pytest.mark.docker

TOKEN = "integration-token-7f3a"


def counter_script(count: int, pause: str = "0.02") -> list[str]:
    """Print ``count`` numbered lines, then wait for /go before printing ``count`` more and exiting."""
    return ["sh", "-c", f'i=1; while [ $i -le {count} ]; do echo "n $i"; i=$((i+1)); sleep {pause}; done; '
            f'while [ ! -f /go ]; do sleep 0.05; done; '
            f'while [ $i -le {2 * count} ]; do echo "n $i"; i=$((i+1)); done']


def request(agent: AgentProcess, method: str, path: str, body: Any = None,
            token: str | None = TOKEN) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def routes(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    status, body = request(agent, "GET", "/routes", token=None)
    assert status == 200
    return {r["id"]: r for r in orjson.loads(body)["routes"]}


def settled(agent: AgentProcess, route_id: str, container: Container) -> dict[str, Any] | None:
    """The container exited and the route delivered every byte of its files."""
    if container.inspect()["State"]["Running"]:
        return None
    entry = routes(agent).get(route_id)
    return entry if entry and entry["files"] >= 1 and entry["lag_bytes"] == 0 else None


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def test_the_live_stream_needs_the_token_and_streams_a_real_containers_lines(
        agent: AgentFactory, containers: ContainerRunner, token_file: Path) -> None:
    a = agent("--api-token-file", str(token_file))
    assert request(a, "GET", "/logs", token=None)[0] == 401
    assert request(a, "GET", "/logs", token="wrong")[0] == 401
    c = containers.run(cmd=counter_script(5), purpose="stream")
    wait_for(lambda: "n 5" in c.logs(), timeout=20, message="the first lines in Docker's log")
    req = urllib.request.Request(f"{a.url}/logs?format=json&tail=2&filter.name={c.name}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        got = [orjson.loads(resp.readline()) for _ in range(2)]  # ?tail=2: the last two lines before the request
        assert [r["message"] for r in got] == ["n 4", "n 5"]
        c.exec("touch", "/go")
        got = [orjson.loads(resp.readline()) for _ in range(5)]  # and then what it prints from now on
        assert [r["message"] for r in got] == [f"n {i}" for i in range(6, 11)]
        assert {r["container_name"] for r in got} == {c.name} and got[0]["container_id"] == c.id
        assert "lookout_stream_clients 1.0" in a.get("/metrics").body.decode()
        # A stopping agent ends the streams of its clients instead of waiting for them to leave (the web server's
        # shutdown waited up to a minute for them): a clean exit well within stop()'s 15 s before SIGKILL.
        assert a.stop(timeout=15) == 0
        assert resp.readline() == b""  # the stream ended


def test_an_api_route_ships_is_kept_across_a_restart_and_is_deleted_with_its_checkpoints(
        agent: AgentFactory, containers: ContainerRunner, token_file: Path, tmp_path: Path) -> None:
    a = agent("--api-token-file", str(token_file))
    c = containers.run(cmd=counter_script(50, "0"), purpose="apiroute")
    out = Ndjson(tmp_path / "api.ndjson")
    uri = f"file://{out.path}?filter.name={c.name}"
    status, body = request(a, "POST", "/routes", {"uri": uri, "id": "api-file"})
    assert status == 201, body
    assert request(a, "POST", "/routes", {"uri": "syslog+tcp://127.0.0.1:1?framing=nope"})[0] == 400
    wait_for(lambda: len(out.of(c)) >= 50, timeout=30, message="the first 50 lines through the API route")
    wait_for(lambda: routes(a)["api-file"]["lag_bytes"] == 0, timeout=30, message="acknowledged")

    a.stop()  # a clean restart: the route comes back from routes.json and goes on from its checkpoints
    c.exec("touch", "/go")
    a.start()
    assert routes(a)["api-file"]["origin"] == "api"
    wait_for(lambda: settled(a, "api-file", c), timeout=30, message="every line delivered after the restart")
    assert [r["message"] for r in out.of(c)] == [f"n {i}" for i in range(1, 101)]  # each once, in order

    assert request(a, "DELETE", "/routes/api-file")[0] == 204
    assert "api-file" not in routes(a)
    saved = orjson.loads((a.state_dir / "routes.json").read_bytes())
    assert saved["routes"] == []
    wait_for(lambda: "api-file" not in orjson.loads((a.state_dir / "checkpoints.json").read_bytes())["routes"],
             timeout=10, message="its checkpoints forgotten on disk")


def test_sighup_reloads_the_routes_and_refuses_a_bad_configuration(
        agent: AgentFactory, containers: ContainerRunner, tmp_path: Path) -> None:
    c = containers.run(cmd=counter_script(30, "0"), purpose="reload")
    kept, added = Ndjson(tmp_path / "kept.ndjson"), Ndjson(tmp_path / "added.ndjson")
    conf = tmp_path / "lookout.toml"
    conf.write_text(f'route = ["file://{kept.path}?filter.name={c.name}"]\n')
    a = agent("--config", str(conf))
    wait_for(lambda: len(kept.of(c)) >= 30, timeout=30, message="the first lines")
    kept_id = f"file://{kept.path}"
    wait_for(lambda: routes(a)[kept_id]["lag_bytes"] == 0, timeout=30, message="acknowledged")

    # The kept route's filter changes (same id: it goes on from its checkpoints) and a route is added.
    conf.write_text(f'route = ["file://{kept.path}?filter.name=lookout-test-reload-*", '
                    f'"file://{added.path}?filter.name={c.name}"]\n')
    assert a.proc is not None
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: set(routes(a)) == {kept_id, f"file://{added.path}"}, timeout=20, message="reloaded routes")
    assert routes(a)[kept_id]["uri"].endswith("filter.name=lookout-test-reload-*")
    c.exec("touch", "/go")
    wait_for(lambda: settled(a, kept_id, c) and settled(a, f"file://{added.path}", c), timeout=30,
             message="both routes delivered everything")
    assert [r["message"] for r in kept.of(c)] == [f"n {i}" for i in range(1, 61)]  # nothing twice
    assert [r["message"] for r in added.of(c)] == [f"n {i}" for i in range(1, 61)]  # a new route reads from the head

    conf.write_text("route = [1]\nhousekeeping-interval = 'soon'\n")
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload_refused" in a.log(200), timeout=20, message="the bad configuration refused")
    assert a.alive()
    assert set(routes(a)) == {kept_id, f"file://{added.path}"}
    assert "Traceback" not in a.log(400)


class AliveAgent(AgentProcess):
    """An agent that is started once /healthz answers (it has no containers to wait for)."""

    def _wait_ready(self, timeout: float) -> None:
        wait_for(lambda: self.get("/healthz").status == 200, timeout=timeout, message="/healthz",
                 describe=lambda: self.log())


def test_readiness_is_false_with_a_wrong_host_root_and_says_why(tmp_path: Path) -> None:
    wrong = tmp_path / "no-host"
    wrong.mkdir()
    proc = AliveAgent(tmp_path / "agent", ("--host-root", str(wrong), "--docker-socket", ""))
    proc.start()
    try:
        assert proc.get("/healthz").status == 200  # alive
        wait_for(lambda: b"cgroups" in proc.get("/readyz").body, timeout=20, message="/readyz names the cgroups")
        ready = proc.get("/readyz")
        assert ready.status == 503 and b"cgroups" in ready.body and str(wrong).encode() in ready.body
        m = proc.metrics()
        assert m.value("container_scrape_error") == 1
        wait_for(lambda: proc.metrics().value("lookout_collector_errors_total", collector="cgroups") >= 2,
                 timeout=20, message="each cycle counts the error")
        assert proc.log(200).count("cgroups_not_found") == 1  # said once, not every cycle
    finally:
        proc.stop()


class TlsAgent(AliveAgent):
    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        raise NotImplementedError("use https_get")


def https_get(agent: AgentProcess, path: str, ca: str, token: str | None = None) -> tuple[int, bytes]:
    import ssl

    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection("localhost", agent.port, timeout=10, context=context)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


@pytest.mark.docker
def test_the_listener_serves_https_with_the_given_certificate(tmp_path: Path, token_file: Path) -> None:
    from tests.helpers.rsyslog import make_certs

    certs = make_certs(tmp_path / "certs")
    proc = TlsAgent(tmp_path / "agent", ("--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
                                         "--api-token-file", str(token_file)))

    def up() -> bool:
        return https_get(proc, "/healthz", certs.ca)[0] == 200

    proc._wait_ready = lambda timeout: wait_for(up, timeout=timeout, message="https /healthz")  # type: ignore
    proc.start()
    try:
        status, body = https_get(proc, "/metrics", certs.ca)
        assert status == 200 and b"container_cpu_usage_seconds_total" in body
        assert https_get(proc, "/routes", certs.ca)[0] == 200
        assert https_get(proc, "/logs?tail=0", certs.ca)[0] == 401
        plain = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError)):  # plain HTTP is not served
            plain.request("GET", "/metrics")
            plain.getresponse().read()
        import ssl

        with pytest.raises(ssl.SSLCertVerificationError):  # a client that trusts another CA refuses it
            https_get(proc, "/healthz", certs.other_ca)
    finally:
        proc.stop()

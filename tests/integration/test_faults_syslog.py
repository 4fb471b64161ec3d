"""Syslog receivers that misbehave (RELIABILITY.md, "Receivers and the clock"): real containers -> json-file -> the
agent (subprocess) -> loopback receivers from tests/helpers/receivers.py.

- A TCP receiver that accepts and never reads: the agent's memory stays bounded while tens of megabytes of lines
  are behind (RSS sampled all along; the bound is far below what is behind), the route shows ``stalled`` on
  /routes, another route delivers every line meanwhile, and once the receiver reads again nothing is missing.
- A receiver that resets every connection: retried with backoff, the error on the route, nothing lost once it
  accepts again.
- TLS: a receiver whose certificate has expired is refused with the verification error on the route (nothing
  sent to it); once it has a valid certificate every line arrives; a changed certificate signed by the same CA is
  accepted when the agent dials again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.deps import unavailable
from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.metrics import http_get
from tests.helpers.receivers import StreamReceiver, rss_bytes, server_context
from tests.helpers.rsyslog import _openssl
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def log_lines(container: Container) -> list[str]:
    return [orjson.loads(line)["log"].removesuffix("\n")
            for line in Path(container.inspect()["LogPath"]).read_bytes().splitlines()]


def writer(containers: ContainerRunner, token: str, script: str, lines: int, purpose: str,
           timeout: float = 60) -> Container:
    c = containers.run("--label", f"lookout.fault={token}", "--log-driver", "json-file",
                       cmd=["sh", "-c", script + "; exec sleep 3600"], purpose=purpose)
    wait_for(lambda: len(log_lines(c)) >= lines, timeout, message=f"{lines} lines in {c.name}'s log", describe=c.logs)
    return c


def route(agent: AgentProcess, name: str) -> dict[str, Any]:
    body = orjson.loads(http_get(agent.url + "/routes").body)
    (entry,) = [r for r in body["routes"] if r["id"] == name]
    return dict(entry)


def messages(receiver: StreamReceiver) -> list[str]:
    """The MSG part of every RFC 5424 message received (after the structured data)."""
    out = []
    for raw in receiver.received():
        text = raw.decode()
        out.append(text[text.index("] ") + 2:] if "] " in text else text.split(" - ", 1)[-1])
    return out


@pytest.fixture
def receivers() -> Iterator[list[StreamReceiver]]:
    started: list[StreamReceiver] = []
    yield started
    for r in started:
        r.stop()


def start(receivers: list[StreamReceiver], receiver: StreamReceiver) -> StreamReceiver:
    receivers.append(receiver.start())
    return receiver


@pytest.mark.slow
def test_receiver_that_never_reads_stalls_its_route_only_and_memory_stays_bounded(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any,
        receivers: list[StreamReceiver]) -> None:
    token = secrets.token_hex(4)
    held = start(receivers, StreamReceiver("hold"))
    good = start(receivers, StreamReceiver("read"))
    flt = f"filter.labels=lookout.fault:{token}"
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                 "--route", f"syslog+tcp://127.0.0.1:{held.port}?name=held&{flt}",
                 "--route", f"syslog+tcp://127.0.0.1:{good.port}?name=good&{flt}")
    assert proc.proc is not None
    pid = proc.proc.pid
    baseline = rss_bytes(pid)
    pad = "x" * 180
    per = 300_000
    samples: list[int] = []

    def flood(n: int) -> Container:
        return containers.run("--label", f"lookout.fault={token}", "--log-driver", "json-file",
                              cmd=["sh", "-c", f"seq 1 {per} | sed 's/$/ flood{n} {pad}/'; exec sleep 3600"],
                              purpose=f"flood{n}")

    def good_has(total: int) -> bool:
        samples.append(rss_bytes(pid))
        return good.count() >= total

    def describe() -> str:
        return f"good {good.count()}, routes {route(proc, 'good')} {route(proc, 'held')}"

    c1 = flood(1)
    wait_for(lambda: good_has(per), 120, interval=0.2, message=f"{per} lines at the reading receiver",
             describe=describe)
    held_entry = wait_for(lambda: (e := route(proc, "held"))["state"] == "stalled" and e, 30,
                          message="the held route shows stalled", describe=lambda: str(route(proc, "held")))
    assert "no answer" in held_entry["error"], held_entry
    assert held.count() == 0 and route(proc, "good")["state"] == "running"
    first_peak, first_lag = max(samples), held_entry["lag_bytes"]
    samples.clear()
    c2 = flood(2)  # lines keep coming while the route is stalled
    wait_for(lambda: good_has(2 * per), 120, interval=0.2, message=f"{2 * per} lines at the reading receiver",
             describe=describe)
    # The lag gauge is refreshed every few seconds: wait for it to count the second flood (RSS sampled meanwhile).
    held_entry = wait_for(lambda: (samples.append(rss_bytes(pid)), e := route(proc, "held"))
                          and e["lag_bytes"] > first_lag + (40 << 20) and e, 20, interval=0.2,
                          message="the second flood behind the stalled route",
                          describe=lambda: str(route(proc, "held")))
    written = log_lines(c1) + log_lines(c2)
    assert len(written) == 2 * per
    assert sorted(messages(good)) == sorted(written) and len(messages(good)) == len(written)  # the other route: all
    assert held_entry["state"] == "stalled" and held.count() == 0
    second_peak, second_lag = max(samples), held_entry["lag_bytes"]
    print(f"\nagent RSS: {baseline >> 20} MiB at start, peak {first_peak >> 20} MiB with {first_lag >> 20} MiB behind "
          f"on the stalled route, peak {second_peak >> 20} MiB with {second_lag >> 20} MiB behind")
    # Bounded by the routes' queues of batches (QUEUE_BATCHES of 1 MiB each, their records) and the socket buffers,
    # not by what is behind: the second flood put tens of megabytes more behind the stalled route.
    assert second_lag - first_lag > 40 << 20, (first_lag, second_lag)
    assert second_peak - first_peak < 16 << 20, (first_peak, second_peak)

    held.set_mode("read")
    held.drop_clients()  # the held connection breaks; the agent dials again and resends what was not acknowledged
    wait_for(lambda: len(set(messages(held))) >= len(written), 120, message="every line at the receiver that now reads",
             describe=lambda: f"{held.count()} received; {route(proc, 'held')}")
    assert set(messages(held)) == set(written)
    wait_for(lambda: route(proc, "held")["state"] == "running", 10, message="the route runs again")
    assert proc.alive()


def test_receiver_that_resets_every_connection_is_retried_and_loses_nothing(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any,
        receivers: list[StreamReceiver]) -> None:
    token = secrets.token_hex(4)
    rx = start(receivers, StreamReceiver("reset"))
    c = writer(containers, token, "seq 1 2000 | sed 's/^/reset line /'", 2000, "reset")
    uri = f"syslog+tcp://127.0.0.1:{rx.port}?name=resets&filter.labels=lookout.fault:{token}"
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket, "--route", uri)
    entry = wait_for(lambda: rx.resets >= 3 and (e := route(proc, "resets"))["state"] == "retrying" and e, 30,
                     message="three resets and the route retrying", describe=lambda: str(route(proc, "resets")))
    assert "reset" in entry["error"].lower() or "closed" in entry["error"].lower(), entry
    assert entry["records_total"] == 0 and entry["retries_total"] >= 2
    rx.set_mode("read")
    written = log_lines(c)
    wait_for(lambda: set(messages(rx)) >= set(written), 30, message="every line once the receiver accepts",
             describe=lambda: f"{rx.count()} received; {route(proc, 'resets')}")
    assert messages(rx) == written  # nothing was half-delivered to a reset connection: no duplicate either
    m = proc.metrics()
    assert m.value("lookout_route_records_sent_total", route=uri) == len(written)
    assert m.value("lookout_route_retries_total", route=uri) >= 2


def make_server_cert(d: Path, name: str, expired: bool = False) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 signed by ``d``'s CA; an expired one is issued by openssl run under
    libfaketime ten days ago, valid for one day."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", "/CN=localhost", cwd=d)
    (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                   "extendedKeyUsage=serverAuth\n")
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext"]
    if expired:
        if not FAKETIME_LIB.exists():
            unavailable(f"no {FAKETIME_LIB} (Debian: apt-get install faketime)")
        env = {**os.environ, "LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": "-10d"}
        subprocess.run(["openssl", *args], cwd=d, env=env, check=True, capture_output=True, timeout=60)
    else:
        _openssl(*args, cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


def test_tls_receiver_with_an_expired_then_a_changed_certificate(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, receivers: list[StreamReceiver],
        tmp_path: Path) -> None:
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
             "-subj", "/CN=Lookout fault CA", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    expired = make_server_cert(d, "expired", expired=True)
    first = make_server_cert(d, "first")
    second = make_server_cert(d, "second")
    token = secrets.token_hex(4)
    rx = start(receivers, StreamReceiver("read", tls=server_context(*expired)))
    rx.cert_name = "expired"
    c1 = writer(containers, token, "seq 1 500 | sed 's/^/tls one /'", 500, "tls1")
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                 "--route", f"syslog+tls://127.0.0.1:{rx.port}?name=tls&ca={d / 'ca.pem'}"
                            f"&filter.labels=lookout.fault:{token}")
    entry = wait_for(lambda: (e := route(proc, "tls"))["state"] == "retrying" and rx.handshake_errors and e, 30,
                     message="the expired certificate refused", describe=lambda: str(route(proc, "tls")))
    assert "certificate has expired" in entry["error"], entry
    assert rx.count() == 0 and rx.served == []
    assert "route_send_failed" in proc.log(200) and "certificate has expired" in proc.log(200)

    rx.set_tls(server_context(*first), "first")
    wait_for(lambda: set(messages(rx)) >= set(log_lines(c1)), 30, message="every line once the certificate is valid",
             describe=lambda: f"{rx.count()}; {route(proc, 'tls')}")
    assert messages(rx) == log_lines(c1) and set(rx.served) == {"first"}

    rx.set_tls(server_context(*second), "second")  # a renewed certificate (new key, same CA), receiver restarted
    rx.drop_clients()
    c2 = writer(containers, token, "seq 1 500 | sed 's/^/tls two /'", 500, "tls2")
    wait_for(lambda: set(messages(rx)) >= set(log_lines(c1) + log_lines(c2)), 30,
             message="the second container's lines over the changed certificate",
             describe=lambda: f"{rx.count()}; {rx.served}; {route(proc, 'tls')}")
    assert rx.served[-1] == "second" and sorted(set(messages(rx))) == sorted(log_lines(c1) + log_lines(c2))
    assert route(proc, "tls")["state"] == "running"

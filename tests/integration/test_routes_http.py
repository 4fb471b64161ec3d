"""HTTP routes end to end: real containers -> json-file -> the agent (subprocess) -> loopback receivers.

- Elasticsearch (tests/helpers/es_standin.py, strict ``_bulk``) under a whole-request 429 with
  Retry-After, per-item 429s, a connection dropped after indexing and a poison document: every line
  is indexed exactly once with its ECS fields, the poison document lands in
  ``<state-dir>/dead-letter/*.ndjson`` and is counted, the lines after it flow on; the password is
  redacted in metric labels and never appears in the agent's log.
- HTTP NDJSON: gzip, basic auth from the URL's (percent-encoded) userinfo, batches closed by count
  and by time; 503/429 with Retry-After honoured (the delay is measured and printed), a 400 batch
  dead-lettered while the next ones flow, a bearer token from ``LOOKOUT_HTTP_TOKEN``.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.es_standin import EsStandin, NdjsonReceiver
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker


def docker_log(container: Container) -> list[tuple[str, str, str, int]]:
    """(time, stream, message, offset) of every line of the container's json-file log, in file order."""
    out, offset = [], 0
    for line in Path(container.inspect()["LogPath"]).read_bytes().splitlines(keepends=True):
        doc = orjson.loads(line)
        out.append((doc["time"], doc["stream"], doc["log"].removesuffix("\n"), offset))
        offset += len(line)
    return out


def start_writer(containers: ContainerRunner, token: str, script: str, lines: int, purpose: str) -> Container:
    c = containers.run("--label", f"lookout.route.test={token}", "--label", "tier=web", "--log-driver", "json-file",
                       cmd=["sh", "-c", script], purpose=purpose)
    wait_for(lambda: len(docker_log(c)) >= lines, 30, message=f"{lines} lines in {c.name}'s json-file log",
             describe=c.logs)
    return c


def dead_letters(state_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted((state_dir / "dead-letter").glob("*.ndjson"))
            for line in f.read_bytes().splitlines()]


def assert_not_leaked(secret: str, metrics_text: str, agent_log: str) -> None:
    """Neither /metrics nor the agent's own log lines (not the helper's "--- start" command line) hold it."""
    lines = [line for line in metrics_text.splitlines() + agent_log.splitlines()
             if secret in line and not line.startswith("--- start")]
    assert not lines, f"{secret!r} leaked: {lines[:3]}"


@pytest.fixture
def es() -> Iterator[EsStandin]:
    server = EsStandin(users={"elastic": "s3cr@t"}, poison=("POISON",)).start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
def receiver() -> Iterator[NdjsonReceiver]:
    server = NdjsonReceiver(users={"lookout": "p@ss:1"}).start()
    yield server  # type: ignore[misc]
    server.stop()


def test_container_to_elasticsearch_every_line_once_and_poison_dead_lettered(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, es: EsStandin) -> None:
    token = secrets.token_hex(4)
    script = ("seq 1 1500 | sed 's/^/es line /'; echo 'a POISON pill'; echo 'stderr line' >&2; "
              "seq 1501 3000 | sed 's/^/es line /'; exec sleep 3600")
    c = start_writer(containers, token, script, 3002, "es")
    written = docker_log(c)
    log_path = c.inspect()["LogPath"]

    first_attempts: set[str] = set()

    def every_50th_once(action: str, index: str, doc_id: str, doc: dict[str, Any]) -> int | None:
        if doc.get("log", {}).get("offset", 0) % 50 == 0 and doc_id not in first_attempts:
            first_attempts.add(doc_id)
            return 429
        return None

    es.item_fault = every_50th_once
    es.fail_next(429, retry_after="1")
    es.drop_next()
    uri = (f"elasticsearch+http://elastic:s3cr%40t@127.0.0.1:{es.port}/logs-lookout-%Y.%m.%d"
           f"?gzip=true&batch=500&flush=200ms&filter.labels=lookout.route.test:{token}")
    redacted = uri.replace("s3cr%40t", "***")
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket, "--route", uri)

    wait_for(lambda: len(es.docs()) >= len(written) - 1, 60, message=f"{len(written) - 1} documents",
             describe=lambda: f"{len(es.docs())} docs; requests: {[(r.status, len(r.items)) for r in es.requests]}")

    def settled() -> Any:
        m = proc.metrics()
        return m if m.value("lookout_route_records_sent_total", route=redacted) == len(written) - 1 else None

    # Everything acknowledged: a document written twice, or one more, would be in the stand-in by now.
    metrics = wait_for(settled, 10, message="sent_total == lines - 1")
    by_message = {d["message"]: d for d in es.docs()}
    assert len(by_message) == len(es.docs()) == len(written) - 1
    assert set(es.writes.values()) == {1}, "a document was written twice"
    labels = c.inspect()["Config"]["Labels"]
    assert labels["lookout.route.test"] == token and labels["tier"] == "web"
    for time_, stream, message, offset in written:
        if message == "a POISON pill":
            continue
        doc = by_message[message]
        assert doc == {"@timestamp": time_, "message": message, "stream": stream,
                       "container": {"id": c.id, "name": c.name, "image": {"name": docker_engine.image},
                                     "labels": {k.replace(".", "_"): v for k, v in labels.items()}},
                       "host": {"name": socket.gethostname()}, "log": {"file": {"path": log_path}, "offset": offset}}
    index = "logs-lookout-" + datetime.fromisoformat(written[0][0][:19]).strftime("%Y.%m.%d")
    assert {i for i, _ in es.ids()} == {index}
    statuses = [s for r in es.bulk_requests() for *_, s in r.items]
    assert statuses.count(429) == len(first_attempts) > 0 and statuses.count(409) > 0  # resent after the drop
    assert any(r.status == 429 for r in es.bulk_requests())
    assert {r.headers.get("Content-Encoding") for r in es.bulk_requests()} == {"gzip"}

    (dead,) = dead_letters(proc.state_dir)
    assert dead["status"] == 400 and dead["document"]["message"] == "a POISON pill"
    assert dead["document"]["container"]["id"] == c.id

    assert metrics.value("lookout_route_records_dead_lettered_total", route=redacted) == 1
    assert metrics.value("lookout_route_records_rejected_total", route=redacted) == 1
    assert metrics.value("lookout_route_retries_total", route=redacted) >= 2
    assert metrics.value("lookout_route_up", route=redacted) == 1
    assert metrics.value("lookout_route_batch_duration_seconds_count", route=redacted) >= 1
    assert_not_leaked("s3cr", metrics.text, proc.log(10_000))


SCRIPT_BATCHES = ("seq 1 250 | sed 's/^/http line /'; echo 'on stderr' >&2; sleep 3; "
                  "echo 'late one'; echo 'late two'; echo 'late three'; exec sleep 3600")


def test_container_to_http_ndjson_gzip_auth_and_batches_closed_by_count_and_time(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, receiver: NdjsonReceiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    token = secrets.token_hex(4)
    c = start_writer(containers, token, SCRIPT_BATCHES, 251, "http")
    uri = (f"http://lookout:p%40ss%3A1@127.0.0.1:{receiver.port}/ingest?gzip=true&batch=100&flush=400ms"
           f"&tenant=blue&filter.labels=lookout.route.test:{token}")
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket, "--route", uri)
    wait_for(lambda: len(receiver.accepted()) >= 254, 30, message="254 records",
             describe=lambda: str([(r.status, len(r.records)) for r in receiver.log()]))
    redacted = uri.replace("p%40ss%3A1", "***")
    # The route acknowledged 254 (each only after the receiver answered): a record sent twice would be there now.
    def acknowledged() -> Any:
        m = proc.metrics()
        return m if m.value("lookout_route_records_sent_total", route=redacted) >= 254 else None

    metrics = wait_for(acknowledged, 10, message="254 records acknowledged by the route")
    written = docker_log(c)
    assert len(written) == 254
    log = receiver.log()
    assert all(r.status == 200 for r in log)
    assert [len(r.records) for r in log] == [100, 100, 51, 3]
    # 100 and 100 closed by count at once; 51 by the 400 ms flush; the late 3 by the flush as well.
    assert log[1].at - log[0].at < 0.3
    # The 400 ms flush runs from the batch's first record, the gap from where the receiver's handler started the first
    # request, which can be late (test_faults_http saw 0.1 s in CI): a batch closed at once would be ~0.05 s after.
    assert log[2].at - log[0].at >= 0.25
    late_written = datetime.fromisoformat(written[-1][0][:26].replace("Z", "") + "+00:00").timestamp()
    late_delay = log[3].wall - late_written
    assert 0.35 <= late_delay < 3.0, late_delay
    for r in log:
        assert r.path == "/ingest" and r.query == {"tenant": "blue"}
        assert r.headers["Content-Encoding"] == "gzip" and r.headers["Content-Type"] == "application/x-ndjson"
    got = receiver.accepted()
    assert [(g["time"], g["stream"], g["message"], g["offset"]) for g in got] == written
    first = got[0]
    assert (first["container_id"], first["container_name"], first["image"]) == (c.id, c.name, docker_engine.image)
    assert first["labels"]["tier"] == "web" and first["file"] == c.inspect()["LogPath"]
    assert metrics.value("lookout_route_records_sent_total", route=redacted) == 254
    assert_not_leaked("p%40ss", metrics.text, proc.log(10_000))
    with capsys.disabled():
        print(f"\n[HTTP batches] sizes {[len(r.records) for r in log]}; count-closed batches 100 and 100 "
              f"{(log[1].at - log[0].at) * 1000:.0f} ms apart, time-closed batch after "
              f"{(log[2].at - log[0].at) * 1000:.0f} ms, 3 late lines shipped {late_delay * 1000:.0f} ms after "
              "they were written (flush=400ms)")


def test_http_retry_after_honoured_4xx_dead_lettered_bearer_token(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    token = secrets.token_hex(4)
    script = ("seq 1 20 | sed 's/^/retry line /'; echo 'REJECT ME'; seq 21 40 | sed 's/^/retry line /'; "
              "exec sleep 3600")
    c = start_writer(containers, token, script, 41, "retry")
    monkeypatch.setenv("LOOKOUT_HTTP_TOKEN", "tok-" + token)
    server = NdjsonReceiver(token="tok-" + token, reject=lambda recs: any(r["message"] == "REJECT ME" for r in recs))
    server.start()
    try:
        server.fail_next(503, retry_after="2")
        server.fail_next(429, retry_after="1")
        uri = f"http://127.0.0.1:{server.port}/bulk?batch=10&flush=100ms&filter.labels=lookout.route.test:{token}"
        proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                     "--route", uri)
        wait_for(lambda: len(server.accepted()) >= 31, 40, message="31 accepted records",
                 describe=lambda: str([(r.status, len(r.records)) for r in server.log()]))
        # Every record has its outcome at the route (sent or dead-lettered, each after the receiver answered):
        # a request more would be in the receiver's log by now.
        wait_for(lambda: (m := proc.metrics()).value("lookout_route_records_sent_total", route=uri)
                 + m.value("lookout_route_records_dead_lettered_total", route=uri) >= 41, 20,
                 message="41 records with an outcome", describe=lambda: proc.metrics().describe(None, route=uri))
        log = server.log()
    finally:
        server.stop()
    statuses = [r.status for r in log]
    assert statuses[:3] == [503, 429, 200] and statuses.count(400) == 1 and set(statuses[3:]) <= {200, 400}
    after_503 = log[1].at - log[0].at
    after_429 = log[2].at - log[1].at
    assert 2.0 <= after_503 < 3.5, after_503  # Retry-After: 2 wins over the jittered 0..0.4 s backoff
    assert 1.0 <= after_429 < 2.5, after_429
    assert log[0].records == log[1].records == log[2].records  # the same batch, resent
    assert {r.headers.get("Authorization") for r in log} == {f"Bearer tok-{token}"}

    rejected_batch = next(r.records for r in log if r.status == 400)
    assert "REJECT ME" in [r["message"] for r in rejected_batch]
    dead = dead_letters(proc.state_dir)
    assert [d["record"] for d in dead] == rejected_batch and {d["status"] for d in dead} == {400}
    written = [m for _, _, m, _ in docker_log(c)]
    shipped = [r["message"] for r in server.accepted()]
    assert shipped == [m for m in written if m not in {r["message"] for r in rejected_batch}]

    metrics = proc.metrics()
    n = len(rejected_batch)
    assert metrics.value("lookout_route_records_rejected_total", route=uri) == n
    assert metrics.value("lookout_route_records_dead_lettered_total", route=uri) == n
    assert metrics.value("lookout_route_records_sent_total", route=uri) == 41 - n
    assert metrics.value("lookout_route_retries_total", route=uri) == 2
    assert metrics.value("lookout_route_up", route=uri) == 1
    with capsys.disabled():
        print(f"\n[HTTP Retry-After] 503 Retry-After: 2 -> resent after {after_503:.3f} s; "
              f"429 Retry-After: 1 -> resent after {after_429:.3f} s; 400 batch of {n} dead-lettered")

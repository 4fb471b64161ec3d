"""HTTP and Elasticsearch receivers that misbehave (RELIABILITY.md, "Receivers and the clock"): real containers ->
json-file -> the agent (subprocess) -> the loopback stand-ins of tests/helpers/es_standin.py.

- A receiver that answers 200 only after 60 s: the route's ``timeout=`` gives up first and the batch is sent again.
  Five in a row do not exhaust the route's connections. The NDJSON receiver then holds that one batch six times
  (at-least-once, said and measured); Elasticsearch holds every
  document once (the retry's items answer 409: the ``_id`` is the record's position).
- Malformed answers: an NDJSON receiver's 200 whose body breaks off is still a 200 (delivered once); a ``_bulk``
  answer that is not JSON, or whose items are not items, is retried with the reason on the route, never a stopped
  route, and every document is indexed once.
- Elasticsearch refusing the mapping (``message`` mapped as a ``long``): the refused items
  are dead-lettered with Elasticsearch's reason, the batch's other records are indexed by the same request, and the
  checkpoint passes them all.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.es_standin import EsStandin, NdjsonReceiver
from tests.helpers.metrics import http_get
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker


def log_lines(container: Container) -> list[str]:
    return [orjson.loads(line)["log"].removesuffix("\n")
            for line in Path(container.inspect()["LogPath"]).read_bytes().splitlines()]


def writer(containers: ContainerRunner, token: str, script: str, lines: int, purpose: str) -> Container:
    c = containers.run("--label", f"lookout.fault={token}", "--log-driver", "json-file",
                       cmd=["sh", "-c", script + "; exec sleep 3600"], purpose=purpose)
    wait_for(lambda: len(log_lines(c)) >= lines, 30, message=f"{lines} lines in {c.name}'s log", describe=c.logs)
    return c


def route(agent: AgentProcess, name: str) -> dict[str, Any]:
    body = orjson.loads(http_get(agent.url + "/routes").body)
    (entry,) = [r for r in body["routes"] if r["id"] == name]
    return dict(entry)


def dead_letters(state_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted((state_dir / "dead-letter").glob("*.ndjson"))
            for line in f.read_bytes().splitlines()]


def checkpoint_offsets(state_dir: Path, route_id: str) -> dict[str, int]:
    data = orjson.loads((state_dir / "checkpoints.json").read_bytes())
    return {key: entry["offset"] for key, entry in data["routes"].get(route_id, {}).items()}


@pytest.fixture
def es() -> Iterator[EsStandin]:
    server = EsStandin().start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
def ndjson() -> Iterator[NdjsonReceiver]:
    server = NdjsonReceiver().start()
    yield server  # type: ignore[misc]
    server.stop()


def start_agent(agent: Any, docker_engine: DockerEngine, *uris: str) -> AgentProcess:
    args = ["--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket]
    for uri in uris:
        args += ["--route", uri]
    return agent(*args)  # type: ignore[no-any-return]


def test_receivers_answering_200_after_60s_are_timed_out_and_retried(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, es: EsStandin,
        ndjson: NdjsonReceiver) -> None:
    token = secrets.token_hex(4)
    c = writer(containers, token, "seq 1 1000 | sed 's/^/slow line /'", 1000, "slow")
    written = log_lines(c)
    es.slow_next(60)
    ndjson.slow_next(60, times=5)  # more slow answers than the route's connection pool (4) holds connections
    flt = f"filter.labels=lookout.fault:{token}"
    proc = start_agent(agent, docker_engine,
                       f"http://127.0.0.1:{ndjson.port}/ingest?name=http&timeout=2s&batch=400&{flt}",
                       f"elasticsearch+http://127.0.0.1:{es.port}/slow?name=es&timeout=2s&batch=400&{flt}")

    def all_there() -> bool:
        return ({r["message"] for r in ndjson.accepted()} >= set(written)
                and {d["message"] for d in es.docs()} >= set(written))

    wait_for(all_there, 40, message="every line at both receivers",
             describe=lambda: f"{len(ndjson.accepted())} ndjson, {len(es.docs())} es; {route(proc, 'http')}")
    # The slow answers are still on their way (the receivers wait their 60 s): the agent did not wait for them, and
    # gave up their connections (five timed-out requests did not exhaust its pool of four).
    assert es.slow_waiting == 1 and ndjson.slow_waiting == 5
    for name, slow, at in (("http", 5, [r.at for r in ndjson.log()]), ("es", 1, [r.at for r in es.bulk_requests()])):
        entry = route(proc, name)
        assert entry["retries_total"] >= slow and entry["state"] == "running", entry
        gaps = [at[i + 1] - at[i] for i in range(slow)]
        # Each after the 2 s timeout, long before 60 s. Measured where the receiver's handler starts: the agent's
        # timeout runs from its send, and the handler of a request may start late (the receivers run in this test's
        # process, beside its polling), which shortens the gap to the next request: 1.895 s was seen in CI. A route
        # without the timeout waits the receiver's 60 s; a retry sent before the timeout ran out comes within a second.
        assert all(1.5 <= gap < 10.0 for gap in gaps), (name, gaps)
    failures = [orjson.loads(line)["error"] for line in proc.log(500).splitlines() if "route_send_failed" in line]
    assert len(failures) == 2 and all("no answer within 2s (timeout=)" in e for e in failures), failures

    # NDJSON: at-least-once. The batch the slow requests held was accepted each time and sent again: exactly those
    # records (the first batch, 400) are there six times, every other line once.
    counts = Counter(r["message"] for r in ndjson.accepted())
    assert set(counts) == set(written)
    assert sorted(m for m, n in counts.items() if n == 6) == sorted(written[:400])
    assert sorted(counts.values()) == [1] * 600 + [6] * 400
    # Elasticsearch: the retry's items answered 409 (the same _id), so every document was written once.
    assert sorted(d["message"] for d in es.docs()) == sorted(written)
    assert set(es.writes.values()) == {1}
    assert [s for *_, s in es.bulk_requests()[1].items].count(409) == 400


def test_malformed_answers_are_retried_with_the_reason_and_nothing_is_lost_or_doubled(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, es: EsStandin,
        ndjson: NdjsonReceiver) -> None:
    token = secrets.token_hex(4)
    c = writer(containers, token, "seq 1 900 | sed 's/^/garbled /'", 900, "garble")
    written = log_lines(c)
    def items_as(value: Any) -> Any:
        return lambda answer: orjson.dumps({**answer, "errors": True, "items": [value(i) for i in answer["items"]]})

    garbage = [b"<html><body>502 Bad Gateway</body></html>",  # a proxy's page with a 200
               items_as(lambda item: {k: {**v, "status": "abc"} for k, v in item.items()}),  # a status no number
               items_as(lambda item: 5),  # items that are not objects
               items_as(lambda item: {k: 5 for k in item}),  # outcomes that are not objects
               b'{"took":1,"errors":false}']  # no items
    for body in garbage:
        es.garble_next(body)
    ndjson.garble_next(b"ok")
    flt = f"filter.labels=lookout.fault:{token}"
    proc = start_agent(agent, docker_engine, f"http://127.0.0.1:{ndjson.port}/ingest?name=http&batch=300&{flt}",
                       f"elasticsearch+http://127.0.0.1:{es.port}/garbled?name=es&batch=300&{flt}")
    wait_for(lambda: {d["message"] for d in es.docs()} >= set(written)
             and len(ndjson.accepted()) >= len(written), 40, message="every line at both receivers",
             describe=lambda: f"{len(ndjson.accepted())} ndjson, {len(es.docs())} es; {route(proc, 'es')}")
    assert sorted(d["message"] for d in es.docs()) == sorted(written) and set(es.writes.values()) == {1}
    # The 200 whose body broke off was a 200: the batch counts as delivered and is not sent again.
    assert sorted(r["message"] for r in ndjson.accepted()) == sorted(written)
    entry = route(proc, "es")
    assert entry["state"] == "running" and entry["retries_total"] >= len(garbage), entry
    log = proc.log(2000)
    assert "route_failed" not in log and log.count("unreadable _bulk response") >= 1
    assert route(proc, "http")["retries_total"] == 0
    assert proc.alive()


def test_elasticsearch_refusing_the_mapping_dead_letters_those_items_and_indexes_the_rest(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any) -> None:
    # The index maps message as a long: "17" is coerced and indexed, "bad 50" is refused (400 per item).
    server = EsStandin(mapping={"message": "long"}).start()
    script = "seq 1 300 | awk '{ if ($1 % 50 == 0) print \"bad \" $1; else print $1 }'"
    try:
        token = secrets.token_hex(4)
        c = writer(containers, token, script, 300, "mapping")
        written = log_lines(c)
        uri = (f"elasticsearch+http://127.0.0.1:{server.port}/mapped?name=es&batch=1000"
               f"&filter.labels=lookout.fault:{token}")
        proc = start_agent(agent, docker_engine, uri)
        bad = [m for m in written if m.startswith("bad ")]
        assert len(bad) == 6
        wait_for(lambda: len(dead_letters(proc.state_dir)) >= len(bad) or None, 30, message="dead letters",
                 describe=lambda: f"{len(server.docs())} docs; {route(proc, 'es')}")
        dead = dead_letters(proc.state_dir)
        assert sorted(d["document"]["message"] for d in dead) == sorted(bad)
        for d in dead:
            assert d["status"] == 400
            assert "document_parsing_exception" in d["error"] and "of type [long]" in d["error"], d
        assert sorted(d["message"] for d in server.docs()) == sorted(m for m in written if m not in bad)
        statuses = [s for r in server.bulk_requests() for *_, s in r.items]
        assert statuses.count(400) == len(bad) and len(server.bulk_requests()) == 1  # one request: no retry
        entry = wait_for(lambda: (e := route(proc, "es"))["dead_lettered_total"] == len(bad) and e, 10,
                         message="the route counts them")
        assert entry["records_total"] == len(written) - len(bad) and entry["state"] == "running"
        size = Path(c.inspect()["LogPath"]).stat().st_size
        wait_for(lambda: list(checkpoint_offsets(proc.state_dir, "es").values()) == [size], 10,
                 message="the checkpoint at the file's end")
    finally:
        server.stop()

"""The HTTP NDJSON and Elasticsearch sinks against the strict stand-ins of tests/helpers/es_standin.py.

The sinks are driven directly (``encode`` then ``send`` until it stops raising ``RetryableError``, as
the pipeline does), so every outcome of the ``_bulk`` contract is checked item by item: exactly one
write per record under whole-request 429, per-item 429, dropped connections and 413; 409 on
``create`` counted as delivered; 400s dead-lettered with the document and never blocking the rest;
auth from the URL (percent-decoded) or ``LOOKOUT_HTTP_TOKEN``; gzip; Retry-After parsing.
"""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.logs.routes import parse_route
from agent.model import ContainerInfo, LogRecord, LogSource, Payload, RetryableError, Segment
from exporters.http.common import Target, retry_after
from exporters.http.elasticsearch import ElasticsearchSink, document_id
from exporters.http.sink import HttpSink
from exporters.logs.ndjson import record_dict
from tests.helpers.es_standin import EsStandin, NdjsonReceiver

CID = "c0ffee" + "0" * 58


def source(name: str = "web-1", labels: dict[str, str] | None = None, pod: str = "", key: str = "8:1:abc",
           path: str = "/var/lib/docker/containers/x/x-json.log") -> LogSource:
    info = ContainerInfo(cgroup="", container_id=CID, name=name, image="nginx:1.27",
                         labels=labels if labels is not None else {"team": "api"}, pod=pod,
                         namespace="prod" if pod else "", container="web" if pod else "")
    return LogSource(path, key, info, "node-7")


def records(n: int, start: int = 0, prefix: str = "line") -> list[LogRecord]:
    return [(f"2026-11-28T23:59:{i % 60:02d}.{i:09d}Z", "stdout" if i % 3 else "stderr", f"{prefix} {i}",
             1000 + 100 * i, False) for i in range(start, start + n)]


class Sent(list[RetryableError]):
    """What ``deliver`` saw: the failed sends (as errors, in order) and the records' outcomes over all sends."""

    delivered = dead_lettered = retried_items = 0


async def deliver(sink: Any, payload: Payload, count: int, attempts: int = 10) -> Sent:
    """``send`` until no record is left to retry, as the pipeline's delivery does (without its sleeps)."""
    sent = Sent()
    for _ in range(attempts):
        expected = len(payload.pending()) if payload.done is not None else count
        try:
            result = await sink.send(payload)
        except RetryableError as exc:
            sent.append(exc)
            continue
        assert result.final + result.retry == expected, (result, expected)  # every record has one outcome
        sent.delivered += result.delivered
        sent.dead_lettered += result.dead_lettered
        if not result.retry:
            assert sent.delivered + sent.dead_lettered == count, (sent.delivered, sent.dead_lettered, count)
            return sent
        sent.retried_items += result.retry
        sent.append(RetryableError(result.error, result.retry_after))
    raise AssertionError(f"not delivered after {attempts} attempts: {list(sent)}")


@pytest.fixture
def es() -> Iterator[EsStandin]:
    server = EsStandin(users={"elastic": "p@ss:w/rd"}).start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
def receiver() -> Iterator[NdjsonReceiver]:
    server = NdjsonReceiver().start()
    yield server  # type: ignore[misc]
    server.stop()


def es_uri(es: EsStandin, index: str = "logs-lookout-%Y.%m.%d", query: str = "") -> str:
    return f"elasticsearch+http://elastic:p%40ss%3Aw%2Frd@127.0.0.1:{es.port}/{index}{query}"


def es_sink(es: EsStandin, tmp_path: Path, index: str = "logs-lookout-%Y.%m.%d", query: str = "") -> ElasticsearchSink:
    uri = es_uri(es, index, query)
    return ElasticsearchSink(uri, "http", tmp_path, parse_route(uri).id)


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted((tmp_path / "dead-letter").glob("*.ndjson"))
            for line in f.read_bytes().splitlines()]


# --- pure parts ---------------------------------------------------------------------------------------


def test_document_id_is_deterministic_per_source_position() -> None:
    a = document_id("8:1:abc", 100)
    assert a == document_id("8:1:abc", 100)
    assert len({a, document_id("8:1:abc", 101), document_id("8:2:abc", 100), document_id("8:1:abd", 100)}) == 4
    assert len(a) == 20 and base64.urlsafe_b64decode(a) and "/" not in a and "+" not in a


@pytest.mark.parametrize(("value", "expected"), [
    ("2", 2.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0), ("86400", 300.0), ("soon", None), ("", None), (None, None),
])
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after(value) == expected


def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = retry_after(when)
    assert seconds is not None and 27 <= seconds <= 30


def test_retry_after_http_date_is_read_against_the_answers_own_date() -> None:
    # The receiver's clock is a day ahead of this host's (or this host's was stepped back): "in 20 s" by its clock.
    theirs = datetime.now(UTC) + timedelta(days=1)
    when = format_datetime(theirs + timedelta(seconds=20), usegmt=True)
    assert retry_after(when, format_datetime(theirs, usegmt=True)) == 20.0
    assert retry_after(when) == 300.0  # without a Date: this host's clock, capped
    assert retry_after(when, "not a date") == 300.0


def test_target_auth_is_percent_decoded_and_own_params_stay_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_HTTP_TOKEN", "t0k3n")
    t = Target.from_route("https://us%40er:p%40ss%3Aw%2Frd@logs.example:8443/in?batch=10&flush=1s&gzip=true"
                          "&filter.name=web-*&tenant=a%20b&verify=false", "https")
    assert t.auth is not None and (t.auth.login, t.auth.password) == ("us@er", "p@ss:w/rd")
    # userinfo wins over the token
    assert t.headers["Authorization"] == "Basic " + base64.b64encode(b"us@er:p@ss:w/rd").decode()
    assert t.url == "https://logs.example:8443/in?tenant=a+b" and t.gzip
    bearer = Target.from_route("http://logs.example/in", "http")
    assert bearer.auth is None and bearer.headers["Authorization"] == "Bearer t0k3n"


def test_route_uri_is_redacted_for_labels_and_logs() -> None:
    route = parse_route("elasticsearch+https://elastic:s3cret@es:9200/logs?op=index")
    assert "s3cret" not in route.redacted and "elastic:***@es:9200" in route.redacted
    assert "s3cret" not in route.id


def test_es_documents_carry_ecs_fields_and_utc_index(tmp_path: Path, es: EsStandin) -> None:
    src = source(pod="web-7f9c", labels={"team": "api", "odd": "100% %s %d"}, path="/var/log/pods/ns_p_u/web/0.log")
    sink = es_sink(es, tmp_path)
    recs = [("2026-11-28T23:59:59.123456789Z", "stdout", 'say "hi" \\ %s', 42, False),
            ("2026-11-29T00:00:00.5Z", "stderr", "next day ✓", 142, False)]
    batch = sink.encode([Segment(src, recs)])
    assert isinstance(batch.data, list) and batch.count == 2 and batch.pending() == [0, 1]
    actions = [orjson.loads(item.partition(b"\n")[0]) for item in batch.data]
    docs = [orjson.loads(item.partition(b"\n")[2]) for item in batch.data]
    assert actions == [{"create": {"_index": "logs-lookout-2026.11.28", "_id": document_id(src.file_key, 42)}},
                       {"create": {"_index": "logs-lookout-2026.11.29", "_id": document_id(src.file_key, 142)}}]
    assert docs[0] == {
        "@timestamp": "2026-11-28T23:59:59.123456789Z", "message": 'say "hi" \\ %s', "stream": "stdout",
        "container": {"id": CID, "name": "web-1", "image": {"name": "nginx:1.27"},
                      "labels": {"team": "api", "odd": "100% %s %d"}},
        "host": {"name": "node-7"},
        "kubernetes": {"pod": {"name": "web-7f9c"}, "namespace": "prod", "container": {"name": "web"}},
        "log": {"file": {"path": "/var/log/pods/ns_p_u/web/0.log"}, "offset": 42},
    }
    assert docs[1]["message"] == "next day ✓" and docs[1]["stream"] == "stderr"
    only = sink.encode([Segment(source(), records(1))]).data[0]
    assert isinstance(only, bytes) and "kubernetes" not in orjson.loads(only.partition(b"\n")[2])


# --- Elasticsearch _bulk ------------------------------------------------------------------------------


async def test_es_bulk_indexes_every_record_once_with_gzip_and_basic_auth(tmp_path: Path, es: EsStandin) -> None:
    sink = es_sink(es, tmp_path, query="?gzip=true&pipeline=ingest-1&batch=500&filter.name=web-*")
    recs = records(300)
    try:
        assert await deliver(sink, sink.encode([Segment(source(), recs)]), len(recs)) == []
    finally:
        await sink.close()
    (req,) = es.bulk_requests()
    assert req.status == 200 and req.path == "/_bulk" and req.query == {"pipeline": "ingest-1"}
    assert req.headers["Content-Encoding"] == "gzip" and req.headers["Content-Type"] == "application/x-ndjson"
    assert base64.b64decode(req.headers["Authorization"][6:]) == b"elastic:p@ss:w/rd"
    assert [s for *_, s in req.items] == [201] * 300
    docs = es.docs("logs-lookout-2026.11.28")
    assert sorted(d["message"] for d in docs) == sorted(r[2] for r in recs)
    assert set(es.writes.values()) == {1}


async def test_es_a_damaged_record_time_is_indexed_at_the_current_time(tmp_path: Path, es: EsStandin) -> None:
    """Elasticsearch refuses a document whose mapped date field does not parse; a json-file line with a damaged
    ``time`` is indexed with the agent's current time instead of being dead-lettered."""
    sink = es_sink(es, tmp_path)
    recs: list[LogRecord] = [("2026-11-28T04:00:00.1Z", "stdout", "good", 0, False),
                             ("", "stdout", "no time", 100, False),
                             ("2026-11-28T04:00:0\"x", "stderr", "quoted", 200, False)]
    before = datetime.now(UTC)
    try:
        assert await deliver(sink, sink.encode([Segment(source(), recs)]), len(recs)) == []
    finally:
        await sink.close()
    (req,) = es.bulk_requests()
    assert [s for *_, s in req.items] == [201] * 3
    today = before.strftime("logs-lookout-%Y.%m.%d")
    names = {"logs-lookout-2026.11.28", today}  # the damaged records go to today's index
    docs = {d["message"]: d for name in names for d in es.docs(name)}
    assert docs["good"]["@timestamp"] == "2026-11-28T04:00:00.1Z"
    for message in ("no time", "quoted"):
        stamp = datetime.strptime(docs[message]["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    assert dead_letters(tmp_path) == []


async def test_es_whole_request_429_and_dropped_connection_never_duplicate(tmp_path: Path, es: EsStandin) -> None:
    sink = es_sink(es, tmp_path)
    recs = records(50)
    es.fail_next(429, retry_after="3")
    es.fail_next(503)
    es.drop_next()  # indexed, then the connection is closed without an answer
    try:
        errors = await deliver(sink, sink.encode([Segment(source(), recs)]), len(recs))
    finally:
        await sink.close()
    assert [e.retry_after for e in errors] == [3.0, None, None]
    statuses = [[s for *_, s in r.items] for r in es.bulk_requests()]
    assert statuses[:3] == [[], [], [201] * 50]  # 429, 503, then indexed without an answer
    assert statuses[3] == [409] * 50  # the resend: every _id already exists, counted as delivered
    assert len(es.docs()) == 50 and set(es.writes.values()) == {1}
    assert errors.dead_lettered == 0 and errors.delivered == 50 and not dead_letters(tmp_path)


async def test_es_per_item_429_retries_only_the_failed_items(tmp_path: Path, es: EsStandin) -> None:
    rejected_once: set[str] = set()

    def fault(action: str, index: str, doc_id: str, doc: dict[str, Any]) -> int | None:
        if int(doc["message"].split()[1]) % 4 == 0 and doc_id not in rejected_once:
            rejected_once.add(doc_id)
            return 429
        return None

    es.item_fault = fault
    sink = es_sink(es, tmp_path)
    recs = records(40)
    try:
        errors = await deliver(sink, sink.encode([Segment(source(), recs)]), len(recs))
    finally:
        await sink.close()
    assert len(errors) == 1 and "10 item(s)" in str(errors[0])
    first, second = es.bulk_requests()
    assert len(first.items) == 40 and sorted(s for *_, s in first.items).count(429) == 10
    assert len(second.items) == 10 and {s for *_, s in second.items} == {201}
    assert {i for _, _, i, _ in second.items} == rejected_once
    assert len(es.docs()) == 40 and set(es.writes.values()) == {1}
    assert errors.retried_items == 10 and errors.delivered == 40


async def test_es_rejected_documents_are_dead_lettered_and_the_rest_flow(tmp_path: Path) -> None:
    es = EsStandin(mapping={"container.labels.build": "long"}, poison=("POISON",)).start()
    try:
        uri = f"elasticsearch+http://127.0.0.1:{es.port}/logs"
        sink = ElasticsearchSink(uri, "http", tmp_path, parse_route(uri).id)
        good = source("good", labels={"build": "42"}, key="1:1:a")
        bad = source("bad", labels={"build": "nightly"}, key="1:2:b")  # a field type conflict
        mixed = records(10, start=5, prefix="mixed")
        mixed[3] = (mixed[3][0], "stdout", "a POISON message", mixed[3][3], False)
        segments = [Segment(good, records(5, prefix="good")), Segment(bad, records(2, prefix="bad")),
                    Segment(good, mixed)]
        sent = await deliver(sink, sink.encode(segments), 17)
        await sink.close()
    finally:
        es.stop()
    indexed = sorted(d["message"] for d in es.docs("logs"))
    assert len(indexed) == 14 and "a POISON message" not in indexed and not any(m.startswith("bad") for m in indexed)
    assert sent.dead_lettered == 3 and sent.delivered == 14
    dead = dead_letters(tmp_path)
    assert [d["document"]["message"] for d in dead] == ["bad 0", "bad 1", "a POISON message"]
    assert {d["status"] for d in dead} == {400} and {d["route"] for d in dead} == {parse_route(uri).id}
    assert "document_parsing_exception" in dead[0]["error"] and dead[0]["index"] == "logs"
    assert dead[0]["id"] == document_id("1:2:b", 1000)
    assert [f.suffix for f in (tmp_path / "dead-letter").iterdir()] == [".ndjson"]


async def test_es_413_halves_the_request_and_dead_letters_a_single_oversized_document(tmp_path: Path) -> None:
    es = EsStandin(max_content_length=6000).start()
    try:
        uri = f"elasticsearch+http://127.0.0.1:{es.port}/logs"
        sink = ElasticsearchSink(uri, "http", tmp_path, parse_route(uri).id)
        recs = records(40)
        recs[7] = (recs[7][0], "stdout", "x" * 7000, recs[7][3], False)
        await deliver(sink, sink.encode([Segment(source(), recs)]), len(recs))
        await sink.close()
    finally:
        es.stop()
    sizes = [(r.status, len(r.items)) for r in es.bulk_requests()]
    assert sizes[0] == (413, 0) and all(r.body_bytes <= 6000 for r in es.bulk_requests() if r.status == 200)
    assert len(es.docs("logs")) == 39 and set(es.writes.values()) == {1}
    (dead,) = dead_letters(tmp_path)
    assert dead["status"] == 413 and dead["document"]["message"] == "x" * 7000


async def test_es_a_split_send_keeps_the_outcomes_of_its_answered_requests(tmp_path: Path) -> None:
    """413 halves the request; the first half is answered (one document refused), the second 429: the send says
    19 delivered, 1 dead-lettered and 20 to retry, instead of raising and leaving the dead letter to be counted as
    delivered with the retry."""
    recs = records(40)
    recs[3] = (recs[3][0], "stdout", "a POISON message", recs[3][3], False)
    probe = EsStandin().start()
    try:
        size = sum(len(item) for item in es_sink(probe, tmp_path / "probe").encode([Segment(source(), recs)]).data)
    finally:
        probe.stop()
    es = EsStandin(poison=("POISON",), max_content_length=size * 6 // 10).start()
    try:
        uri = f"elasticsearch+http://127.0.0.1:{es.port}/logs"
        sink = ElasticsearchSink(uri, "http", tmp_path, parse_route(uri).id)
        payload = sink.encode([Segment(source(), recs)])
        es.slow_next(0.01, times=2)  # the 413 and the first half: answered as usual
        es.fail_next(429, retry_after="0")  # the second half
        first = await sink.send(payload)
        assert (first.delivered, first.dead_lettered, first.retry) == (19, 1, 20), first
        assert "429" in first.error
        second = await sink.send(payload)
        assert (second.delivered, second.dead_lettered, second.retry) == (20, 0, 0), second
        await sink.close()
    finally:
        es.stop()
    assert [r.status for r in es.bulk_requests()] == [413, 200, 429, 200]
    assert len(es.docs("logs")) == 39 and set(es.writes.values()) == {1}


async def test_es_op_index_overwrites_instead_of_duplicating(tmp_path: Path, es: EsStandin) -> None:
    sink = es_sink(es, tmp_path, index="logs", query="?op=index")
    recs = records(20)
    es.drop_next()
    try:
        await deliver(sink, sink.encode([Segment(source(), recs)]), len(recs))
    finally:
        await sink.close()
    first, second = es.bulk_requests()
    assert {a for a, *_ in first.items} == {"index"} and {s for *_, s in second.items} == {200}
    assert len(es.docs("logs")) == 20 and set(es.writes.values()) == {2}


async def test_es_auth_failure_is_retried_never_dead_lettered(tmp_path: Path, es: EsStandin) -> None:
    uri = f"elasticsearch+http://elastic:wrong@127.0.0.1:{es.port}/logs"
    sink = ElasticsearchSink(uri, "http", tmp_path, parse_route(uri).id)
    payload = sink.encode([Segment(source(), records(5))])
    try:
        with pytest.raises(RetryableError, match="HTTP 401"):
            await sink.send(payload)
        es.set_users({"elastic": "wrong"})  # the operator fixes the password on the server side
        await deliver(sink, payload, 5)
    finally:
        await sink.close()
    assert len(es.docs("logs")) == 5 and not dead_letters(tmp_path)


async def test_es_bearer_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_HTTP_TOKEN", "abc.def")
    es = EsStandin(token="abc.def").start()
    try:
        uri = f"elasticsearch+http://127.0.0.1:{es.port}/logs"
        sink = ElasticsearchSink(uri, "http", tmp_path, parse_route(uri).id)
        await deliver(sink, sink.encode([Segment(source(), records(3))]), 3)
        await sink.close()
    finally:
        es.stop()
    assert len(es.docs("logs")) == 3


def test_es_index_names_follow_fields_finer_than_the_hour(tmp_path: Path) -> None:
    """Index names are cached per hour of the records' time unless the name has a finer field."""
    hourly = ElasticsearchSink("elasticsearch+http://h:9200/logs-%Y.%m.%d", "http", tmp_path, "a")
    minutely = ElasticsearchSink("elasticsearch+http://h:9200/logs-%Y.%m.%d-%H%M", "http", tmp_path, "b")
    times = ["2026-11-28T23:58:01.5Z", "2026-11-28T23:59:59.999999999Z", "2026-11-29T00:00:00Z"]
    assert [hourly._index_for(t) for t in times] == ["logs-2026.11.28", "logs-2026.11.28", "logs-2026.11.29"]
    assert [minutely._index_for(t) for t in times] == ["logs-2026.11.28-2358", "logs-2026.11.28-2359",
                                                       "logs-2026.11.29-0000"]


def raw_bulk(es: EsStandin, body: bytes) -> tuple[int, Any]:
    """POST a hand-made _bulk body to the stand-in (as the ``es`` fixture's user)."""
    import urllib.request

    auth = base64.b64encode(b"elastic:p@ss:w/rd").decode()
    req = urllib.request.Request(es.url + "/_bulk", data=body, method="POST",
                                 headers={"Content-Type": "application/x-ndjson", "Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, orjson.loads(resp.read())


COMPOSE_LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.project.working_dir": "/srv/shop",
                  "app": "web", "app.kubernetes.io/name": "web"}


async def test_es_label_keys_are_dedotted_so_compose_containers_index(tmp_path: Path, es: EsStandin) -> None:
    """Elasticsearch expands dotted names into objects: Compose's project label next to its working_dir label
    would be a value and an object at once. The stand-in refuses that as Elasticsearch does; the sink dedots."""
    doc = {"container": {"labels": COMPOSE_LABELS}}
    raw = orjson.dumps({"create": {"_index": "raw"}}) + b"\n" + orjson.dumps(doc) + b"\n"
    status, answer = raw_bulk(es, raw)
    assert status == 200 and next(iter(answer["items"][0].values()))["status"] == 400
    sink = es_sink(es, tmp_path, index="logs")
    try:
        await deliver(sink, sink.encode([Segment(source(labels=COMPOSE_LABELS), records(2))]), 2)
    finally:
        await sink.close()
    labels = [d["container"]["labels"] for d in es.docs("logs")]
    assert labels == [{"com_docker_compose_project": "shop", "com_docker_compose_project_working_dir": "/srv/shop",
                       "app": "web", "app_kubernetes_io/name": "web"}] * 2
    assert not dead_letters(tmp_path)


def test_es_standin_is_strict_about_the_bulk_contract(es: EsStandin) -> None:
    """The stand-in refuses what Elasticsearch refuses, so the sink tests above mean something."""
    import urllib.error
    import urllib.request

    def post(body: bytes, ctype: str = "application/x-ndjson", path: str = "/_bulk") -> tuple[int, Any]:
        auth = base64.b64encode(b"elastic:p@ss:w/rd").decode()
        req = urllib.request.Request(es.url + path, data=body, method="POST",
                                     headers={"Content-Type": ctype, "Authorization": f"Basic {auth}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    doc = b'{"create":{"_index":"i","_id":"1"}}\n{"message":"m","n":1}\n'
    assert post(doc[:-1])[0] == 400  # no final newline
    assert post(doc, "text/plain")[0] == 406
    assert post(b'{"upsert":{"_index":"i"}}\n{}\n')[0] == 400
    assert post(b'{"create":{"_id":"1"}}\n{}\n')[0] == 400  # no index anywhere
    status, answer = post(doc)
    assert status == 200 and answer["errors"] is False and answer["items"][0]["create"]["status"] == 201
    more = (b'{"index":{"_index":"i","_id":"2"}}\n{"message":"m","n":"x"}\n'  # "n" is mapped long
            b'{"index":{"_index":"Bad"}}\n{}\n'  # upper case index name
            b'{"index":{}}\n{"message":"auto"}\n')  # index from the path, generated _id
    status, answer = post(doc + more, path="/i/_bulk")
    assert status == 200 and answer["errors"] is True
    assert [next(iter(i.values()))["status"] for i in answer["items"]] == [409, 400, 400, 201]
    assert post(gzip.compress(doc), "application/json")[0] == 400  # gzip without Content-Encoding: garbage
    unauth = urllib.request.Request(es.url + "/_bulk", data=doc, method="POST",
                                    headers={"Content-Type": "application/x-ndjson"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(unauth, timeout=10)
    assert err.value.code == 401


# --- HTTP NDJSON --------------------------------------------------------------------------------------


async def test_http_sink_posts_ndjson_records(tmp_path: Path, receiver: NdjsonReceiver) -> None:
    uri = f"http://127.0.0.1:{receiver.port}/ingest?gzip=true&batch=100"
    sink = HttpSink(uri, "http", tmp_path, parse_route(uri).id)
    src = source()
    recs = records(25)
    try:
        assert await deliver(sink, sink.encode([Segment(src, recs)]), 25) == []
    finally:
        await sink.close()
    (req,) = receiver.log()
    assert req.path == "/ingest" and req.query == {} and req.headers["Content-Encoding"] == "gzip"
    assert req.headers["Content-Type"] == "application/x-ndjson"
    assert req.records == [record_dict(src, r) for r in recs]


@pytest.mark.parametrize("query", ["", "?gzip=true"])
async def test_http_sink_retry_classes_and_dead_letters(tmp_path: Path, receiver: NdjsonReceiver, query: str) -> None:
    uri = f"http://127.0.0.1:{receiver.port}/ingest{query}"
    sink = HttpSink(uri, "http", tmp_path, parse_route(uri).id)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    receiver.fail_next(503, retry_after="2")
    receiver.fail_next(429, retry_after=later)
    receiver.fail_next(500)
    receiver.fail_next(400)  # final: dead-lettered, not retried
    payload = sink.encode([Segment(source(), records(4))])
    try:
        errors = await deliver(sink, payload, 4)
        assert errors[0].retry_after == 2.0 and 17 <= (errors[1].retry_after or 0) <= 20
        assert errors[2].retry_after is None and len(errors) == 3
        assert errors.dead_lettered == 4 and errors.delivered == 0
        dead = dead_letters(tmp_path)
        assert [d["record"]["message"] for d in dead] == [r[2] for r in records(4)]
        assert {d["status"] for d in dead} == {400}
        await deliver(sink, sink.encode([Segment(source(), records(2, start=4))]), 2)  # the next batch flows
    finally:
        await sink.close()
    assert [r["message"] for r in receiver.accepted()] == ["line 4", "line 5"]


async def test_http_sink_auth_refusals_are_retried_never_dead_lettered(tmp_path: Path,
                                                                        receiver: NdjsonReceiver) -> None:
    """401/403/407 refuse the route's credentials, not its records: the batch waits (as with Elasticsearch)."""
    uri = f"http://127.0.0.1:{receiver.port}/ingest"
    sink = HttpSink(uri, "http", tmp_path, parse_route(uri).id)
    for status in (401, 403, 407):
        receiver.fail_next(status)
    payload = sink.encode([Segment(source(), records(3))])
    try:
        errors = await deliver(sink, payload, 3)
    finally:
        await sink.close()
    assert [str(e).split(":")[0] for e in errors] == ["HTTP 401", "HTTP 403", "HTTP 407"]
    assert not dead_letters(tmp_path) and errors.dead_lettered == 0 and errors.delivered == 3
    assert [r["message"] for r in receiver.accepted()] == [r[2] for r in records(3)]


async def test_http_sink_network_errors_are_retryable(tmp_path: Path) -> None:
    server = NdjsonReceiver().start()
    port = server.port
    server.stop()
    uri = f"http://127.0.0.1:{port}/ingest?timeout=2"
    sink = HttpSink(uri, "http", tmp_path, parse_route(uri).id)
    started = time.monotonic()
    try:
        with pytest.raises(RetryableError):
            await sink.send(sink.encode([Segment(source(), records(1))]))
    finally:
        await sink.close()
    assert time.monotonic() - started < 5 and not dead_letters(tmp_path)


def test_batch_split_bounds_requests_and_acknowledges_only_what_was_kept() -> None:
    """``batch=N`` (every HTTP route's count limit): one 1 MiB read decodes more records than that, so the
    pipeline splits; the kept part may only move each file's checkpoint up to its first record left out."""
    from agent.logs.batch import Batch

    a, b = source(key="1:1:a"), source(key="1:2:b")
    tail: Any = object()
    batch = Batch(segments=[Segment(a, records(6)), Segment(b, records(4)), Segment(a, records(3, start=6))],
                  count=13, size=1300, acks={"1:1:a": ("/a", 5000, "s", tail), "1:2:b": ("/b", 4000, "s", tail)})
    rest = batch.split(8)
    assert batch.count == 8 and sum(len(s.records) for s in batch.segments) == 8
    assert rest.count == 5 and [len(s.records) for s in rest.segments] == [2, 3]
    assert batch.acks["1:1:a"][1] == 1600  # the first "a" record not sent yet: 1000 + 100 * 6
    assert batch.acks["1:2:b"][1] == 1200  # "b" records 2 and 3 moved to the rest
    assert rest.acks == {"1:1:a": ("/a", 5000, "s", tail), "1:2:b": ("/b", 4000, "s", tail)}
    assert batch.size + rest.size == 1300
    whole = Batch(segments=[Segment(a, records(4))], count=4, size=400, acks={"1:1:a": ("/a", 1400, "s", tail)})
    assert whole.split(2).count == 2 and whole.acks["1:1:a"][1] == 1200  # records 2 and 3 start at 1200

"""The processing stage (agent.logs.process) and what the encoders make of its fields.

Inputs are lines as real applications write them: Go's zap and logrus, Node's pino, Python's structlog, Go's
logfmt (go-kit/log); what is checked is what each sink would put on the wire (NDJSON, an Elasticsearch document,
an RFC 5424 message read back by a strict parser)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agent.logs.batch import Batch
from agent.logs.metrics import LogMetrics
from agent.logs.process import Processing, parse_json, parse_logfmt, parse_time
from agent.logs.routes import check_route, make_sink, parse_route
from agent.model import ContainerInfo, LogRecord, LogSource, Segment
from exporters.http.elasticsearch import ElasticsearchSink
from exporters.logs.ndjson import NdjsonEncoder
from exporters.syslog.format import SyslogEncoder, SyslogFormat, sd_name
from tests.unit.test_syslog_format import parse_5424

T0 = "2026-12-04T10:00:00.000000001Z"
ZAP = ('{"level":"warn","ts":1733306400.25,"caller":"server/http.go:118","msg":"slow request",'
       '"method":"GET","path":"/api/v1/items","status":200,"duration":1.73}')
PINO = '{"level":50,"time":1733306400123,"pid":7,"hostname":"web-5d9c","msg":"upstream timed out","retry":3}'
STRUCTLOG = '{"event":"user logged in","user_id":42,"level":"info","timestamp":"2024-12-04T10:00:00.123456Z"}'
LOGRUS = 'time="2024-12-04T11:00:00+01:00" level=error msg="payment failed: card \\"declined\\"" order=8812 retry=false'
GOKIT = "ts=2024-12-04T10:00:00.5Z caller=main.go:52 level=info msg=listening addr=:8080"
PLAIN = "GET /healthz 200 0.4ms"


def source(name: str = "web", labels: dict[str, str] | None = None, cid: str = "a1" * 32) -> LogSource:
    info = ContainerInfo(cgroup=f"/docker/{cid}", container_id=cid, name=name, image="shop/web:3",
                         labels=labels or {})
    return LogSource(f"/var/lib/docker/containers/{cid}/{cid}-json.log", f"8:1:{cid[:8]}", info, "node-1")


def records(*messages: str, time: str = T0, start: int = 0) -> list[LogRecord]:
    return [(time, "stdout", m, start + 100 * i, False) for i, m in enumerate(messages)]


def run(params: dict[str, str], *messages: str, src: LogSource | None = None,
        metrics: LogMetrics | None = None) -> Segment:
    batch = Batch()
    Processing(params, metrics, "r").add(src or source(), records(*messages), batch)
    assert len(batch.segments) == 1 and batch.count == len(batch.segments[0].records)
    seg = batch.segments[0]
    assert isinstance(seg, Segment)
    return seg


def ndjson(seg: Segment, fields_key: str = "") -> list[dict[str, object]]:
    return [orjson.loads(line) for line in NdjsonEncoder(fields_key).encode([seg]).splitlines()]


def dropped(metrics: LogMetrics, reason: str) -> float:
    return metrics.dropped.labels("r", reason)._value.get()


# --- parsers -----------------------------------------------------------------------------------------------------

def test_json_objects_parse_and_anything_else_is_not_json() -> None:
    assert parse_json(ZAP) == orjson.loads(ZAP)
    assert parse_json("  " + PINO) == orjson.loads(PINO)
    for line in (PLAIN, "[1,2,3]", '"a string"', "42", '{"unterminated": ', "{not json}", "", "{", "\udcff{}"):
        assert parse_json(line) is None, line


def test_logfmt_pairs_with_quoted_values_and_escapes() -> None:
    assert parse_logfmt(LOGRUS) == {"time": "2024-12-04T11:00:00+01:00", "level": "error",
                                    "msg": 'payment failed: card "declined"', "order": "8812", "retry": "false"}
    assert parse_logfmt(GOKIT) == {"ts": "2024-12-04T10:00:00.5Z", "caller": "main.go:52", "level": "info",
                                   "msg": "listening", "addr": ":8080"}
    assert parse_logfmt('empty= path="C:\\\\tmp"') == {"empty": "", "path": "C:\\tmp"}


@pytest.mark.parametrize("line", [PLAIN, "hello world", "level=info and some words", 'msg="unterminated', "",
                                  "=value", 'key="a"b', ZAP])
def test_lines_that_are_not_only_pairs_are_not_logfmt(line: str) -> None:
    assert parse_logfmt(line) is None


@pytest.mark.parametrize(("value", "fmt", "want"), [
    ("2024-12-04T10:00:00.123456789Z", "rfc3339", "2024-12-04T10:00:00.123456789Z"),
    ("2024-12-04T11:00:00+01:00", "rfc3339", "2024-12-04T10:00:00Z"),
    ("2024-12-04T10:00:00.5-02:30", "rfc3339", "2024-12-04T12:30:00.500000000Z"),
    ("2024-12-04T10:00:00.1234567891Z", "rfc3339", "2024-12-04T10:00:00.123456000Z"),  # beyond ns: to µs
    ("2024-12-04 10:00:00", "rfc3339", "2024-12-04T10:00:00Z"),  # no zone: UTC
    (1733306400.25, "unix", "2024-12-04T10:00:00.250000000Z"),
    ("1733306400", "unix", "2024-12-04T10:00:00Z"),
    (1733306400123, "unix_ms", "2024-12-04T10:00:00.123000000Z"),
    (1733306400123456, "unix_us", "2024-12-04T10:00:00.123456000Z"),
    (1733306400123456789, "unix_ns", "2024-12-04T10:00:00.123456789Z"),
    ("04/Dec/2024:11:00:00 +0100", "%d/%b/%Y:%H:%M:%S %z", "2024-12-04T10:00:00Z"),
])
def test_times_in_each_format_become_rfc3339_utc(value: object, fmt: str, want: str) -> None:
    assert parse_time(value, fmt) == want


@pytest.mark.parametrize(("value", "fmt"), [("yesterday", "rfc3339"), (None, "rfc3339"), (17, "rfc3339"),
                                            ("soon", "unix"), (True, "unix"), (float("nan"), "unix"),
                                            (1e300, "unix"), (-5, "unix"), ("2024-12-04", "%d/%b/%Y")])
def test_unreadable_times_are_none(value: object, fmt: str) -> None:
    assert parse_time(value, fmt) is None


# --- parsing in a route ------------------------------------------------------------------------------------------

def test_json_route_maps_message_level_and_the_rest_and_passes_other_lines_unchanged() -> None:
    seg = run({"parse": "json"}, ZAP, PLAIN, PINO, "[1,2]")
    assert [r[2] for r in seg.records] == ["slow request", PLAIN, "upstream timed out", "[1,2]"]
    assert seg.fields is not None
    assert seg.fields[0] == ("warn", 4, {"ts": 1733306400.25, "caller": "server/http.go:118", "method": "GET",
                                         "path": "/api/v1/items", "status": 200, "duration": 1.73})
    assert seg.fields[1] is None and seg.fields[3] is None
    assert seg.fields[2] is not None and seg.fields[2][:2] == ("50", 3)  # pino's numeric level: error
    out = ndjson(seg)
    assert out[0]["log"] == {"level": "warn"} and out[0]["fields"]["status"] == 200  # type: ignore[index]
    assert out[0]["labels"] == {} and out[0]["container_name"] == "web" and out[0]["offset"] == 0
    assert out[1] == ndjson(Segment(seg.source, seg.records[1:2]))[0]  # a plain line: exactly as without parsing
    assert "log" not in out[1] and "fields" not in out[1]


def test_a_chunk_without_json_keeps_the_plain_segment() -> None:
    seg = run({"parse": "json"}, PLAIN, "still plain")
    assert seg.fields is None and [r[2] for r in seg.records] == [PLAIN, "still plain"]


def test_time_key_takes_the_applications_time_and_falls_back_to_the_runtimes() -> None:
    seg = run({"parse": "json", "time_key": "time", "time_format": "unix_ms"}, PINO, '{"msg":"x","time":"late"}',
              '{"msg":"no time"}')
    assert [r[0] for r in seg.records] == ["2024-12-04T10:00:00.123000000Z", T0, T0]
    assert seg.fields is not None
    assert "time" not in seg.fields[0][2] and seg.fields[1][2]["time"] == "late"  # type: ignore[index]
    seg = run({"parse": "logfmt", "time_key": "time"}, LOGRUS)
    assert seg.records[0][0] == "2024-12-04T10:00:00Z"


def test_container_label_chooses_the_parser_over_the_route() -> None:
    seg = run({"parse": "json"}, LOGRUS, ZAP, src=source(labels={"lookout.parse": "logfmt"}))
    assert [r[2] for r in seg.records] == ['payment failed: card "declined"', ZAP]
    seg = run({}, ZAP, src=source(labels={"lookout.parse": "json"}))
    assert seg.records[0][2] == "slow request"
    seg = run({"parse": "json"}, ZAP, src=source(labels={"lookout.parse": "none"}))
    assert seg.records[0][2] == ZAP and seg.fields is None
    seg = run({}, ZAP, src=source(labels={"lookout.parse": "yaml"}))  # unknown: logged, the route's choice
    assert seg.records[0][2] == ZAP


def test_add_and_drop_fields() -> None:
    seg = run({"parse": "json", "add_field": "env:prod,team:shop", "drop_field": "caller,ts"}, ZAP, PLAIN)
    assert seg.fields is not None
    assert seg.fields[0] == ("warn", 4, {"method": "GET", "path": "/api/v1/items", "status": 200, "duration": 1.73,
                                         "env": "prod", "team": "shop"})
    assert seg.fields[1] == ("", -1, {"env": "prod", "team": "shop"})
    seg = run({"add_field": "env:prod"}, PLAIN)  # without parsing
    assert seg.fields == [("", -1, {"env": "prod"})] and seg.records[0][2] == PLAIN


def test_include_exclude_and_level_min_drop_and_count() -> None:
    metrics = LogMetrics(CollectorRegistry())
    seg = run({"parse": "json", "include": "request|timed out|GET", "exclude": "healthz"}, ZAP, PINO, PLAIN,
              "unrelated", metrics=metrics)
    assert [r[2] for r in seg.records] == ["slow request", "upstream timed out"]  # on the message as shipped
    assert dropped(metrics, "excluded") == 2
    seg = run({"parse": "json", "level_min": "warn"}, ZAP, PINO, STRUCTLOG, '{"msg":"debugging","level":"debug"}',
              PLAIN, '{"msg":"odd","level":"chatty"}', metrics=metrics)
    # info (structlog) and debug are below warn; a line without a level, or with one not known, is kept
    assert [r[2] for r in seg.records] == ["slow request", "upstream timed out", PLAIN, "odd"]
    assert dropped(metrics, "level") == 2


# --- rate limits ---------------------------------------------------------------------------------------------------

def second(s: int, n: int, offset: int) -> list[LogRecord]:
    """``n`` records in second ``s`` of the records' own time, at offsets from ``offset``."""
    return [(f"2026-12-04T10:00:{s:02d}.{i:09d}Z", "stdout", f"line {s}.{i}", offset + 10 * i, False)
            for i in range(n)]


def test_rate_limit_drops_beyond_the_limit_per_window_counts_and_summarizes_once() -> None:
    metrics = LogMetrics(CollectorRegistry())
    proc = Processing({}, metrics, "r", rate_limit=None)
    src = source("flood", labels={"lookout.ratelimit": "100/s"})
    batch = Batch()
    proc.add(src, second(1, 150, 0), batch)   # 50 over in second 1
    proc.add(src, second(1, 30, 5000), batch)  # 30 more over in the same second: same window
    proc.add(src, second(2, 80, 9000), batch)  # a new second: the summary of second 1, then 80 kept
    got = [r for seg in batch.segments if isinstance(seg, Segment) for r in seg.records]
    assert len(got) == 100 + 1 + 80 and batch.count == len(got)
    summary = got[100]
    assert summary[2] == "lookout: dropped 80 records of flood over the rate limit 100/s in the last 1 s"
    assert summary[0] == "2026-12-04T10:00:01.000000029Z" and summary[3] == 5000 + 10 * 29  # the last dropped one
    assert got[:100] == second(1, 100, 0) and got[101:] == second(2, 80, 9000)
    assert dropped(metrics, "rate_limit") == 80 and proc.dropped_by_container["flood"] == 80
    assert metrics.rate_limited.labels("r", "flood")._value.get() == 80
    seg = batch.segments[-1]
    assert isinstance(seg, Segment) and seg.fields is not None
    assert seg.fields[0] == ("warn", 4, {"dropped": 80, "rate_limit": "100/s"})  # the summary's
    assert all(f is None for f in seg.fields[1:])
    out = ndjson(seg)
    assert out[0]["log"] == {"level": "warn"} and out[0]["container_name"] == "flood"


def test_the_global_rate_limit_applies_to_every_container_and_a_label_overrides_it() -> None:
    from agent.params import RateLimit

    proc = Processing({}, None, "r", rate_limit=RateLimit(10, "s"))
    batch = Batch()
    proc.add(source("a", cid="a" * 64), second(1, 30, 0), batch)
    proc.add(source("b", cid="b" * 64, labels={"lookout.ratelimit": "off"}), second(1, 30, 0), batch)
    proc.add(source("c", cid="c" * 64, labels={"lookout.ratelimit": "20/s"}), second(1, 30, 0), batch)
    assert [len(s.records) for s in batch.segments if isinstance(s, Segment)] == [10, 30, 20]
    assert proc.dropped_by_container == {"a": 20, "c": 10}


def test_a_summary_is_shipped_when_a_quiet_containers_window_is_long_over() -> None:
    metrics = LogMetrics(CollectorRegistry())
    proc = Processing({}, metrics, "r")
    proc.SUMMARY_CHECK = 0.0  # look at every chunk (the route looks once a second)
    quiet = source("quiet", labels={"lookout.ratelimit": "5/s"}, cid="q" * 64)
    batch = Batch()
    proc.add(quiet, second(3, 12, 0), batch)  # 7 dropped; the container then writes nothing more
    assert batch.count == 5
    other = Batch()
    proc.add(source("other", cid="o" * 64), records("hello"), other)  # the wall clock is long past 10:00:03
    [summary_seg, hello] = other.segments
    assert isinstance(summary_seg, Segment) and summary_seg.source is quiet
    assert summary_seg.records[0][2] == "lookout: dropped 7 records of quiet over the rate limit 5/s in the last 1 s"
    assert other.count == 2 and isinstance(hello, Segment) and hello.records[0][2] == "hello"
    again = Batch()
    proc.add(source("other", cid="o" * 64), records("again"), again)  # once only
    assert again.count == 1


def test_rate_limit_per_minute_counts_the_minute() -> None:
    proc = Processing({}, None, "r")
    src = source(labels={"lookout.ratelimit": "50/m"})
    batch = Batch()
    for s in range(10):
        proc.add(src, second(s, 10, 1000 * s), batch)
    assert batch.count == 50
    assert proc.dropped_by_container["web"] == 50


# --- batches and encoders ----------------------------------------------------------------------------------------

def test_batch_split_cuts_fields_with_their_records() -> None:
    seg = run({"parse": "json"}, ZAP, PLAIN, PINO, PLAIN)
    batch = Batch(segments=[seg], count=4)
    rest = batch.split(3)
    [kept], [moved] = batch.segments, rest.segments
    assert isinstance(kept, Segment) and isinstance(moved, Segment)
    assert kept.fields is not None and moved.fields is not None
    assert len(kept.fields) == len(kept.records) == 3 and len(moved.fields) == len(moved.records) == 1
    assert kept.fields[2] is not None and kept.fields[2][:2] == ("50", 3)
    assert moved.fields == [None] and moved.records[0][2] == PLAIN


def test_syslog_puts_fields_in_an_sd_element_escaped_and_the_level_in_the_pri() -> None:
    hostile = ('{"msg":"quote \\" bracket ] backslash \\\\","level":"ERROR","weird key=x]\\"":"v]\\"\\\\",'
               '"nested":{"a":[1,"]"]},"' + "k" * 40 + '":"long name"}')
    seg = run({"parse": "json"}, hostile, PLAIN)
    enc = SyslogEncoder(SyslogFormat(framing="none", facility=16))
    first, second_ = enc.messages([seg])
    parsed = parse_5424(first)
    assert parsed.pri == 16 * 8 + 3 and parsed.msg == 'quote " bracket ] backslash \\'
    assert parsed.sd["lookout@32473"]["container_name"] == "web"
    assert parsed.sd["fields@32473"] == {"level": "ERROR", "weird_key_x__": 'v]"\\',
                                         "nested": '{"a":[1,"]"]}', "k" * 32: "long name"}
    plain = parse_5424(second_)
    assert plain.pri == 16 * 8 + 6 and "fields@32473" not in plain.sd and plain.msg == PLAIN
    # the same bytes as a route without parsing for a plain line
    assert second_ == enc.messages([Segment(seg.source, seg.records[1:])])[0]
    legacy = SyslogEncoder(SyslogFormat(rfc="rfc3164", framing="none")).messages([seg])[0]
    assert legacy.startswith(b"<11>") and b"fields@" not in legacy


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=40), st.text(max_size=40) | st.integers() | st.booleans(),
                       max_size=6),
       st.sampled_from(["", "warn", 'odd"]\\level']))
def test_any_fields_make_structured_data_a_strict_parser_reads_back(values: dict[str, object], level: str) -> None:
    seg = Segment(source(), records("message"), [(level, -1, dict(values))])
    [msg] = SyslogEncoder(SyslogFormat(framing="none")).messages([seg])
    parsed = parse_5424(msg)
    want: dict[str, str] = {"level": level} if level else {}
    for key, value in values.items():
        want[sd_name(key)] = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) \
            else str(value)
    assert parsed.sd.get("fields@32473", {}) == want and parsed.msg == "message"


_FIELDS = st.none() | st.tuples(st.sampled_from(["", "info", "ERROR"]), st.integers(-1, 7),
                                 st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12) | st.integers(),
                                                 max_size=3))
_TIMES = st.sampled_from([T0, "2026-12-04T10:00:00.5Z", "2026-12-04T10:00:00Z", "garbage",
                          "2026-12-04T10:00:00.1234567890Z"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_TIMES, st.sampled_from(["stdout", "stderr"]), st.text(max_size=30), _FIELDS),
                min_size=1, max_size=8),
       st.sampled_from(["octet", "lf", "none"]), st.sampled_from([480, 65536]))
def test_the_fields_fast_path_writes_the_careful_paths_bytes(rows: list[tuple[str, str, str, object]], framing: str,
                                                              limit: int) -> None:
    seg = Segment(source(), [(t, s, m, i, False) for i, (t, s, m, _f) in enumerate(rows)],
                  [f for *_, f in rows])  # type: ignore[misc]
    enc = SyslogEncoder(SyslogFormat(framing=framing, facility=3, max_message_bytes=limit))
    careful, _cut = enc._careful(seg)
    fast = enc._fast_fields(seg, framed=False)
    assert fast is None or fast == careful
    framed = enc._fast_fields(seg, framed=True)
    if framed is not None:
        assert enc.encode([seg]) == b"".join(framed)
        want = [b"%d %s" % (len(m), m) for m in careful] if framing == "octet" else \
            [m + b"\n" for m in careful] if framing == "lf" else careful
        assert framed == want


def test_a_cut_syslog_message_keeps_its_fields_within_the_limit() -> None:
    seg = run({"parse": "logfmt"}, f'level=warn msg="{"é" * 600}" user=bob')
    enc = SyslogEncoder(SyslogFormat(framing="none", max_message_bytes=480))
    [msg] = enc.messages([seg])
    assert len(msg) <= 480 and enc.last_truncated == 1
    parsed = parse_5424(msg)
    assert parsed.sd["lookout@32473"]["truncated"] == "true"
    assert parsed.sd["fields@32473"] == {"level": "warn", "user": "bob"} and set(parsed.msg) == {"é"}


def test_elasticsearch_documents_carry_log_level_and_labels(tmp_path: Path) -> None:
    seg = run({"parse": "json", "add_field": "env:prod"}, ZAP, PLAIN)
    seg.fields[0][2]["http.status"] = 200  # type: ignore[index]  # a dotted key, as labels are dedotted
    sink = ElasticsearchSink("elasticsearch+http://es:9200/logs", "http", tmp_path, "r")
    items = sink.encode([seg]).data
    assert isinstance(items, list)
    doc = orjson.loads(items[0].split(b"\n")[1])
    assert doc["message"] == "slow request" and doc["log"]["level"] == "warn"
    assert doc["log"]["offset"] == 0 and doc["log"]["file"]["path"] == seg.source.path
    assert doc["labels"]["method"] == "GET" and doc["labels"]["env"] == "prod" and doc["labels"]["http_status"] == 200
    assert doc["container"]["name"] == "web"
    plain = orjson.loads(items[1].split(b"\n")[1])
    assert plain["labels"] == {"env": "prod"} and "level" not in plain["log"]
    custom = make_sink(parse_route("elasticsearch+http://es:9200/logs?fields_key=app"), tmp_path)
    doc = orjson.loads(custom.encode([seg]).data[0].split(b"\n")[1])  # type: ignore[union-attr,index]
    assert doc["app"]["method"] == "GET" and "labels" not in doc


def test_ndjson_fields_key() -> None:
    out = ndjson(run({"parse": "json"}, ZAP), "app")
    assert out[0]["app"]["status"] == 200 and "fields" not in out[0]  # type: ignore[index]
    with pytest.raises(ValueError, match="fields_key: 'labels' is a field of every NDJSON record"):
        NdjsonEncoder("labels")


# --- configuration -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "problem"), [
    ("file:///tmp/o.ndjson?include=(", "include: invalid regular expression '('"),
    ("file:///tmp/o.ndjson?exclude=[a", "exclude: invalid regular expression '[a'"),
    ("http://h/x?level_min=loud", "level_min: unknown level 'loud' (use trace, debug, info,"),
    ("syslog+tcp://h:514?parse=yaml", "parse: 'yaml': use json or logfmt or none"),
    ("http://h/x?add_field=env", "add_field: expected key:value pairs like env:prod, got 'env'"),
    ("http://h/x?time_format=%Q", "time_format: use rfc3339, unix, unix_ms, unix_us, unix_ns or a strptime"),
    ("file:///tmp/o.ndjson?fields_key=labels", "fields_key: 'labels' is a field of every NDJSON record"),
    ("elasticsearch+http://h:9200/logs?fields_key=container", "fields_key: 'container' is a field of every document"),
])
def test_bad_processing_options_are_route_errors_naming_the_option(uri: str, problem: str, tmp_path: Path) -> None:
    err = check_route(uri, tmp_path)
    assert err is not None and problem in err, err


def test_processing_options_are_not_passed_on_to_http_receivers(tmp_path: Path) -> None:
    from exporters.http.common import Target

    uri = "http://h:8080/in?parse=json&level_min=warn&include=x&add_field=a:b&pipeline_id=7"
    assert check_route(uri, tmp_path) is None
    assert Target.from_route(uri, "http").url == "http://h:8080/in?pipeline_id=7"


def test_log_rate_limit_flag_env_and_toml(tmp_path: Path) -> None:
    from agent.params import RateLimit
    from tests.unit.support import config_from

    assert config_from(["--log-rate-limit", "1000/s"]).log_rate_limit == RateLimit(1000, "s")
    assert config_from([], {"LOOKOUT_LOG_RATE_LIMIT": "30000/m"}).log_rate_limit == RateLimit(30000, "m")
    toml = tmp_path / "lookout.toml"
    toml.write_text('log-rate-limit = "off"\n')
    assert config_from(["--config", str(toml)]).log_rate_limit is None
    assert config_from([]).log_rate_limit is None

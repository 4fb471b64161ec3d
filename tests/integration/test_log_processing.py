"""Log processing (#14) with real containers and the agent as a subprocess.

- Structured messages through syslog: a busybox container prints zap-style JSON, logfmt and plain lines; rsyslog
  (mmpstrucdata) reads back the ``fields@32473`` SD element, the PRI severity of each level and the message.
- The same through the Elasticsearch stand-in: ``log.level``, ``labels``, ``@timestamp`` from ``time_key``,
  ``level_min`` and ``exclude`` drops counted, and every line accounted for.
- A rate limit: one container floods, its records beyond the limit are dropped and summarized (the summaries add up
  to exactly what was dropped), while another container's lines keep arriving within about a batch's time.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import rsyslog as rsyslog_helper
from tests.helpers.deps import unavailable
from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.es_standin import EsStandin
from tests.helpers.rsyslog import Input, Rsyslog
from tests.helpers.wait import wait_for
from tests.integration.test_routes_syslog import wait_records

pytestmark = pytest.mark.docker

JSON_SCRIPT = r"""
printf '%s\n' '{"level":"info","ts":1733306400.5,"caller":"api/users.go:88","msg":"user logged in",'\
'"user":"alice","latency_ms":12}'
printf '%s\n' '{"level":"debug","ts":1733306401,"msg":"cache miss","key":"u:42"}'
printf '%s\n' '{"level":"error","ts":1733306402.25,"msg":"payment \"declined\" [card]","order":8812,"tags":["a","b"]}'
printf '%s\n' 'plain text, not JSON at all'
printf '%s\n' '{"msg":"health check","level":"info","path":"/healthz"}'
printf '%s\n' '{"level":"warn","msg":"no time here","quote":"say \"hi\" \\ ]"}' >&2
exec sleep 3600
"""
JSON_LINES = 6
LOGFMT_SCRIPT = r"""
printf '%s\n' 'time="2024-12-04T11:00:00+01:00" level=warning msg="disk almost full" mount=/data used=91%'
printf '%s\n' 'just words here'
exec sleep 3600
"""


def docker_log(container: Container) -> list[tuple[str, str, str]]:
    """(time, stream, message) of every line in the container's json-file log, in file order."""
    out = []
    for line in Path(container.inspect()["LogPath"]).read_bytes().splitlines():
        doc = orjson.loads(line)
        out.append((doc["time"], doc["stream"], doc["log"].removesuffix("\n")))
    return out


def epoch(rfc3339: str) -> float:
    """A runtime's RFC 3339 UTC time (up to 9 fraction digits, trailing zeros maybe dropped) in seconds."""
    base, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))


def start_writer(containers: ContainerRunner, token: str, script: str, lines: int, purpose: str,
                 *labels: str) -> Container:
    options = ["--label", f"lookout.route.test={token}", "--log-driver", "json-file"]
    for label in labels:
        options += ["--label", label]
    c = containers.run(*options, cmd=["sh", "-c", script], purpose=purpose)
    wait_for(lambda: len(docker_log(c)) >= lines, 30, message=f"{lines} lines in {c.name}'s json-file log",
             describe=c.logs)
    return c


def test_json_and_logfmt_lines_to_rsyslog_as_structured_data(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, tmp_path: Path) -> None:
    reason = rsyslog_helper.missing("tcp")
    if reason:
        unavailable(reason)
    token = secrets.token_hex(4)
    app = start_writer(containers, token, JSON_SCRIPT, JSON_LINES, "json")
    legacy = start_writer(containers, token, LOGFMT_SCRIPT, 2, "logfmt", "lookout.parse=logfmt")
    server = Rsyslog(tmp_path / "rsyslog", [Input("tcp", name="in")]).start()
    try:
        port = server.inputs["in"].port
        uri = f"syslog+tcp://127.0.0.1:{port}?parse=json&facility=local0&filter.labels=lookout.route.test:{token}"
        proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                     "--route", uri)
        got = wait_records(server, "in", JSON_LINES + 2, proc, uri)  # and the route sent exactly that many
        assert len(got) == JSON_LINES + 2
        mine = [r for r in got if r["app"] == app.name]
        theirs = [r for r in got if r["app"] == legacy.name]
        local0 = 16 * 8
        # Docker copies stdout and stderr apart: the json-file log's order is the order shipped.
        expected = {"user logged in": 6, "cache miss": 7, 'payment "declined" [card]': 3,
                    "plain text, not JSON at all": 6, "health check": 6, "no time here": 4}
        in_file = [orjson.loads(m).get("msg", m) if m.startswith("{") else m for _, _, m in docker_log(app)]
        assert [(int(r["pri"]) - local0, r["msg"]) for r in mine] == [(expected[m], m) for m in in_file]
        mine = sorted(mine, key=lambda r: list(expected).index(r["msg"]))
        assert mine[0]["sdp"]["fields@32473"] == {"level": "info", "ts": "1733306400.5", "caller": "api/users.go:88",
                                                  "user": "alice", "latency_ms": "12"}
        assert mine[2]["sdp"]["fields@32473"] == {"level": "error", "ts": "1733306402.25", "order": "8812",
                                                  "tags": '["a","b"]'}
        assert "fields@32473" not in mine[3]["sdp"]  # shipped as it is
        assert mine[3]["sdp"]["lookout@32473"]["container_name"] == app.name
        assert mine[5]["sdp"]["fields@32473"] == {"level": "warn", "quote": 'say "hi" \\ ]'}
        assert mine[5]["sdp"]["lookout@32473"]["stream"] == "stderr"
        assert [(int(r["pri"]) - local0, r["msg"]) for r in theirs] == [(4, "disk almost full"),
                                                                       (6, "just words here")]
        assert theirs[0]["sdp"]["fields@32473"] == {"level": "warning", "time": "2024-12-04T11:00:00+01:00",
                                                    "mount": "/data", "used": "91%"}
        assert proc.metrics().value("lookout_route_records_sent_total", route=uri) == JSON_LINES + 2
    finally:
        server.stop()


def test_json_lines_to_elasticsearch_with_ecs_fields_time_key_and_drops(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any) -> None:
    token = secrets.token_hex(4)
    app = start_writer(containers, token, JSON_SCRIPT, JSON_LINES, "es-json")
    written = docker_log(app)
    es = EsStandin().start()
    try:
        uri = (f"elasticsearch+http://127.0.0.1:{es.port}/logs-app?parse=json&time_key=ts&time_format=unix"
               f"&level_min=info&exclude=healthz|health%20check&add_field=env:test&drop_field=caller"
               f"&flush=200ms&filter.labels=lookout.route.test:{token}")
        proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                     "--route", uri)
        wait_for(lambda: len(es.docs()) >= 4, 30, message="4 documents",
                 describe=lambda: f"{es.docs()}")

        def settled() -> Any:
            m = proc.metrics()
            return m if m.value("lookout_route_records_sent_total", route=uri) == 4 else None

        metrics = wait_for(settled, 15, message="4 records sent")
        assert metrics.value("lookout_route_records_dropped_total", route=uri, reason="level") == 1
        assert metrics.value("lookout_route_records_dropped_total", route=uri, reason="excluded") == 1
        order = ["user logged in", 'payment "declined" [card]', "plain text, not JSON at all", "no time here"]
        docs = sorted(es.docs(), key=lambda d: order.index(d["message"]))
        assert [d["message"] for d in docs] == order
        first, error, plain, warn = docs
        written = sorted(written, key=lambda w: w[2] != "plain text, not JSON at all")
        written_warn = next(w for w in written if "no time here" in w[2])
        assert first["@timestamp"] == "2024-12-04T10:00:00.500000000Z"  # the application's time
        assert first["log"]["level"] == "info" and first["labels"] == {"user": "alice", "latency_ms": 12,
                                                                        "env": "test"}
        assert error["@timestamp"] == "2024-12-04T10:00:02.250000000Z" and error["log"]["level"] == "error"
        assert error["labels"] == {"order": 8812, "tags": ["a", "b"], "env": "test"}
        assert plain["@timestamp"] == written[0][0] and plain["labels"] == {"env": "test"}
        assert "level" not in plain["log"] and plain["message"] == written[0][2]
        assert warn["@timestamp"] == written_warn[0]  # no ts: the runtime's time
        assert warn["stream"] == "stderr" and warn["container"]["name"] == app.name
        # the offsets are the lines' own: the _ids are as stable as for a route without processing
        assert {d["log"]["file"]["path"] for d in docs} == {app.inspect()["LogPath"]}
    finally:
        es.stop()


FLOOD_LINES = 300_000
FLOOD_SCRIPT = f"sleep 2; yes 'flood line with some padding to look like a real log line' | head -n {FLOOD_LINES}; " \
               "exec sleep 3600"
QUIET_SCRIPT = "i=0; while [ $i -lt 100 ]; do echo quiet $i; i=$((i+1)); sleep 0.1; done; exec sleep 3600"


def test_a_flooding_container_is_limited_summarized_and_does_not_hold_up_another(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    out = tmp_path / "out.ndjson"
    uri = f"file://{out}?filter.labels=lookout.route.test:{token}"
    proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                 "--log-rate-limit", "1000/s", "--route", uri)
    flood = containers.run("--label", f"lookout.route.test={token}", "--label", "lookout.ratelimit=2000/s",
                           cmd=["sh", "-c", FLOOD_SCRIPT], purpose="flood")
    quiet = containers.run("--label", f"lookout.route.test={token}", cmd=["sh", "-c", QUIET_SCRIPT],
                           purpose="quiet")
    arrived: dict[str, float] = {}  # quiet line -> when the test saw it in the output
    seen = 0

    def read_new() -> list[dict[str, Any]]:
        nonlocal seen
        if not out.exists():
            return []
        with out.open("rb") as fh:
            fh.seek(seen)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        seen += end
        return [orjson.loads(line) for line in data[:end].splitlines()]

    records: list[dict[str, Any]] = []

    def quiet_done() -> bool:
        now = time.time()
        for rec in read_new():
            records.append(rec)
            if rec["container_name"] == quiet.name:
                arrived[rec["message"]] = now
        return len(arrived) >= 100

    wait_for(quiet_done, 60, interval=0.05, message="100 quiet lines", describe=lambda: f"{len(arrived)} quiet")
    wait_for(lambda: len(docker_log(flood)) >= FLOOD_LINES, 60, message="the flood written")

    def flood_accounted() -> bool:
        quiet_done()
        summaries = [r for r in records if r["container_name"] == flood.name and r["message"].startswith("lookout:")]
        kept = [r for r in records if r["container_name"] == flood.name and not r["message"].startswith("lookout:")]
        return len(kept) + sum(int(s["fields"]["dropped"]) for s in summaries) == FLOOD_LINES

    # The last window's summary goes out once the wall clock is past it (the quiet container keeps the route busy).
    wait_for(flood_accounted, 30, interval=0.1, message="every flood line shipped or summarized")
    flood_log = docker_log(flood)
    per_second: dict[str, int] = {}
    for time_, _, _ in flood_log:
        per_second[time_[:19]] = per_second.get(time_[:19], 0) + 1
    kept = [r for r in records if r["container_name"] == flood.name and not r["message"].startswith("lookout:")]
    summaries = [r for r in records if r["container_name"] == flood.name and r["message"].startswith("lookout:")]
    assert len(kept) == sum(min(n, 2000) for n in per_second.values())  # the label's limit, per second written
    assert len(summaries) == sum(1 for n in per_second.values() if n > 2000)
    for s in summaries:
        assert s["log"] == {"level": "warn"} and s["fields"]["rate_limit"] == "2000/s"
        assert s["message"] == (f"lookout: dropped {s['fields']['dropped']} records of {flood.name} over the rate "
                                "limit 2000/s in the last 1 s")
    dropped = FLOOD_LINES - len(kept)
    assert dropped > 0, f"the flood was not over the limit: {per_second}"
    metrics = proc.metrics()
    assert metrics.value("lookout_route_records_dropped_total", route=uri, reason="rate_limit") == dropped
    assert metrics.value("lookout_route_records_rate_limited_total", route=uri, container_name=flood.name) == dropped

    # The quiet container's lines arrived while the flood was read, each within about a batch of its writing.
    quiet_log = {m: epoch(t) for t, _, m in docker_log(quiet)}
    delays = sorted(arrived[m] - quiet_log[m] for m in arrived)
    flood_start, flood_end = epoch(flood_log[0][0]), epoch(flood_log[-1][0])
    during = [arrived[m] - t for m, t in quiet_log.items() if flood_start <= t <= flood_end + 1]
    print(f"\nquiet line delay: median {delays[len(delays) // 2]:.3f} s, max {delays[-1]:.3f} s; during the flood "
          f"({flood_end - flood_start:.2f} s, {len(during)} lines) max {max(during, default=0):.3f} s; "
          f"flood per second {per_second}")
    assert max(during, default=0) < 2.0 and delays[-1] < 2.5

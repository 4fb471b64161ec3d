"""The processing stage (agent.logs.process) in the running pipeline, on real json-file logs: parsing, filters and
rate limits with their checkpoints, chunk workers, the live stream, and summaries of containers gone quiet."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.unit.test_log_process import PINO, PLAIN, T0, ZAP

# --- in the pipeline, on real json-file logs ------------------------------------------------------------------------

async def test_a_route_parses_filters_and_limits_and_its_checkpoints_pass_every_dropped_record(tmp_path: Path) -> None:
    from tests.unit.test_log_pipeline import Harness, acked_to_end, idle, wait_for
    from tests.unit.test_log_pipeline import records as read_ndjson

    harness = Harness(tmp_path)
    app = harness.container("app")
    flood = harness.container("flood", labels={"lookout.ratelimit": "20/s", "lookout.parse": "logfmt"})
    lines = [ZAP, PLAIN, PINO, '{"msg":"debug noise","level":"debug"}', "[not an object]"]
    for line in lines:
        app.write_raw(orjson.dumps({"log": line + "\n", "stream": "stdout", "time": T0}) + b"\n")
    for i in range(50):  # 50 lines in one second of their own time: 30 over the limit
        flood.write_raw(orjson.dumps({"log": f"level=info msg=\"tick {i}\" n={i}\n", "stream": "stderr",
                                      "time": f"2026-12-04T10:00:05.{i:09d}Z"}) + b"\n")
    flood.write_raw(orjson.dumps({"log": "level=warn msg=later\n", "stream": "stderr",
                                  "time": "2026-12-04T10:00:06.000000000Z"}) + b"\n")
    out = tmp_path / "parsed.ndjson"
    harness.start(f"file://{out}?parse=json&level_min=info&add_field=env:test", extra=("--log-workers", "2"))
    try:
        await wait_for(lambda: len(read_ndjson(out)) >= 4 + 20 + 1 + 1)
        await wait_for(lambda: idle(harness))
        assert acked_to_end(harness, app) and acked_to_end(harness, flood)
        got = read_ndjson(out)
        mine = [r for r in got if r["container_name"] == "app"]
        assert [r["message"] for r in mine] == ["slow request", PLAIN, "upstream timed out", "[not an object]"]
        assert mine[0]["log"] == {"level": "warn"} and mine[0]["fields"]["env"] == "test"
        assert mine[1]["fields"] == {"env": "test"} and "log" not in mine[1]
        theirs = [r for r in got if r["container_name"] == "flood"]
        assert [r["message"] for r in theirs[:20]] == [f"tick {i}" for i in range(20)]
        assert theirs[0]["fields"] == {"n": "0", "env": "test"} and theirs[0]["log"] == {"level": "info"}
        assert theirs[20]["message"] == ("lookout: dropped 30 records of flood over the rate limit 20/s "
                                         "in the last 1 s")
        assert theirs[21]["message"] == "later" and len(theirs) == 22
        assert harness.pipeline is not None
        text = harness.pipeline.runners[0].metrics.dropped.labels(harness.pipeline.runners[0].label, "rate_limit")
        assert text._value.get() == 30
        assert harness.pipeline.runners[0].offload is None  # a route that transforms every record decodes inline
    finally:
        await harness.stop()


async def test_a_container_asking_for_parsing_is_decoded_inline_on_a_worker_route(tmp_path: Path) -> None:
    from tests.unit.test_log_pipeline import Harness, idle, wait_for
    from tests.unit.test_log_pipeline import records as read_ndjson

    harness = Harness(tmp_path)
    plain = harness.container("plain")
    parsed = harness.container("parsed", labels={"lookout.parse": "json"})
    for c in (plain, parsed):
        for i in range(200):
            c.write_raw(orjson.dumps({"log": f'{{"msg":"m{i}","level":"info","i":{i}}}\n', "stream": "stdout",
                                      "time": T0}) + b"\n")
    out = tmp_path / "out.ndjson"
    harness.start(f"file://{out}", extra=("--log-workers", "2"))
    try:
        assert harness.pipeline is not None and harness.pipeline.runners[0].offload is not None
        await wait_for(lambda: len(read_ndjson(out)) >= 400)
        await wait_for(lambda: idle(harness))
        got = read_ndjson(out)
        assert [r["message"] for r in got if r["container_name"] == "parsed"] == [f"m{i}" for i in range(200)]
        assert [r["message"] for r in got if r["container_name"] == "plain"] == [
            f'{{"msg":"m{i}","level":"info","i":{i}}}' for i in range(200)]
    finally:
        await harness.stop()


async def test_the_live_stream_shows_lines_as_written_whatever_a_containers_labels_ask(tmp_path: Path) -> None:
    from tests.unit.test_live_api import AUTH, Live, read_lines
    from tests.unit.test_log_pipeline import wait_for

    live = Live(tmp_path)
    try:
        app = live.container("app", {"lookout.parse": "json", "lookout.ratelimit": "2/s"})
        client = await live.start()
        resp = await client.get("/logs", headers={**AUTH, "Accept": "application/x-ndjson"})
        assert live.table is not None
        hub = live.table.hub()
        await wait_for(lambda: len(hub.subscriptions) == 1)
        lines = [f'{{"msg":"m{i}","level":"info"}}' for i in range(5)]
        for line in lines:  # five in one second: over the label's limit, and JSON
            app.write_raw(orjson.dumps({"log": line + "\n", "stream": "stdout", "time": T0}) + b"\n")
        got = [orjson.loads(raw) for raw in await read_lines(resp, 5)]
        assert [r["message"] for r in got] == lines and all("fields" not in r for r in got)
    finally:
        await live.stop()


async def test_a_container_that_floods_and_goes_quiet_is_summarized_while_everything_is_idle(tmp_path: Path) -> None:
    from tests.unit.test_log_pipeline import Harness, acked_to_end, idle, wait_for
    from tests.unit.test_log_pipeline import records as read_ndjson

    harness = Harness(tmp_path)
    burst = harness.container("burst", labels={"lookout.ratelimit": "10/s"})
    for i in range(25):  # one second's burst, long ago by the wall clock; then nothing, from anyone
        burst.write_raw(orjson.dumps({"log": f"boom {i}\n", "stream": "stdout",
                                      "time": f"2026-12-04T10:00:07.{i:09d}Z"}) + b"\n")
    out = tmp_path / "out.ndjson"
    harness.start(f"file://{out}")
    try:
        await wait_for(lambda: len(read_ndjson(out)) >= 11, timeout=15)
        await wait_for(lambda: idle(harness))
        got = read_ndjson(out)
        assert [r["message"] for r in got] == [f"boom {i}" for i in range(10)] + [
            "lookout: dropped 15 records of burst over the rate limit 10/s in the last 1 s"]
        assert acked_to_end(harness, burst)
    finally:
        await harness.stop()

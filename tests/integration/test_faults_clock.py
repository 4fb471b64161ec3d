"""The clock jumps while the agent ships (RELIABILITY.md, "Receivers and the clock"): back an hour, then forward a
day, for the agent process only, through libfaketime (Debian package ``faketime``), never the machine's clock.

libfaketime is preloaded into the agent (``LD_PRELOAD``) and reads its offset from a file that this test rewrites
(``FAKETIME_TIMESTAMP_FILE`` with ``FAKETIME_NO_CACHE=1``: read again on every call). ``FAKETIME_DONT_FAKE_MONOTONIC=1``
leaves ``CLOCK_MONOTONIC`` alone, as a real clock step does. (libfaketime 0.9.10 then breaks ``time.sleep``, whose
``clock_nanosleep`` on the monotonic clock fails with EINVAL; the agent's run path does not call it.)

A real container writes lines all along to two routes (NDJSON HTTP and Elasticsearch); after each jump: every line
is delivered once (Elasticsearch: written once, into the index named by the records' own times), no checkpoint
moves backwards, the routes' rates stay those of the writer, and a receiver's ``Retry-After`` given as an HTTP date
(by the receiver's clock) is waited for seconds, not the agent's clock's error.
"""

from __future__ import annotations

import email.utils
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.deps import unavailable
from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.es_standin import EsStandin, NdjsonReceiver
from tests.helpers.metrics import http_get
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
# What a retry may be late by beyond the wait asked for: a stall of either process on a busy 2-core CI machine (seen
# once: 2.7 s, the agent's start-up in that run took 11 s instead of 0.5). The faults this test is for stay far
# outside it: a Retry-After date read by the agent's clock (an hour off) waits the 5-minute cap, one ignored retries
# within 0.4 s, one read against a wall-clock deadline across the jump waits 0 or the cap.
STALL = 8.0


def log_lines(container: Container) -> list[tuple[str, str]]:
    """(time, message) of every line of the container's json-file log."""
    out = []
    for line in Path(container.inspect()["LogPath"]).read_bytes().splitlines():
        doc = orjson.loads(line)
        out.append((doc["time"], doc["log"].removesuffix("\n")))
    return out


class CheckpointWatch:
    """Reads ``checkpoints.json`` whenever asked and remembers every offset seen, to find one that moved back."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "checkpoints.json"
        self.last: dict[tuple[str, str], int] = {}
        self.backwards: list[tuple[str, str, int, int]] = []
        self.reads = 0

    def poll(self) -> None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return  # not written yet (it is replaced atomically: never half-written)
        self.reads += 1
        for route_id, files in data["routes"].items():
            for key, entry in files.items():
                before = self.last.get((route_id, key), 0)
                if entry["offset"] < before:
                    self.backwards.append((route_id, key, before, entry["offset"]))
                self.last[(route_id, key)] = max(before, entry["offset"])


@pytest.mark.slow
def test_clock_back_an_hour_and_forward_a_day_while_shipping(
        docker_engine: DockerEngine, containers: ContainerRunner, agent: Any, tmp_path: Path) -> None:
    if not FAKETIME_LIB.exists():
        unavailable(f"no {FAKETIME_LIB} (Debian: apt-get install faketime)")
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n")
    env = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(offset_file), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    es = EsStandin().start()
    ndjson = NdjsonReceiver().start()
    try:
        token = secrets.token_hex(4)
        total = 6000
        c = containers.run("--label", f"lookout.fault={token}", "--log-driver", "json-file", purpose="clock",
                           cmd=["sh", "-c", f"i=1; while [ $i -le {total} ]; do echo \"tick $i\"; i=$((i+1)); "
                                "usleep 4000; done; exec sleep 3600"])
        flt = f"filter.labels=lookout.fault:{token}"
        proc = agent("--docker-root", docker_engine.root_dir, "--docker-socket", docker_engine.socket,
                     "--route", f"http://127.0.0.1:{ndjson.port}/ingest?name=http&{flt}",
                     "--route", f"elasticsearch+http://127.0.0.1:{es.port}/clock-%Y.%m.%d?name=es&{flt}", env=env)
        checkpoints = CheckpointWatch(proc.state_dir)

        def routes() -> dict[str, dict[str, Any]]:
            return {r["id"]: r for r in orjson.loads(http_get(proc.url + "/routes").body)["routes"]}

        def shipped(n: int) -> bool:
            checkpoints.poll()
            return len(ndjson.accepted()) >= n and len(es.docs()) >= n

        def rates(when: str) -> dict[str, float]:
            """The routes' rates once 300 more lines (about 2 s of the writer) are shipped."""
            start = len(ndjson.accepted())
            wait_for(lambda: shipped(start + 300), 30, message=f"300 more lines {when}")
            return {name: r["records_per_second"] for name, r in routes().items()}

        def sane(rates: dict[str, float]) -> bool:
            """Those of the writer (about 150-250 lines/s here), not 0 or a day's average."""
            return all(20 < rate < 5000 for rate in rates.values())

        def agent_clock_offset() -> float:
            """The agent's wall clock minus the real one, from the time in its newest log line."""
            line = proc.log(1).splitlines()[-1]
            stamp = datetime.fromisoformat(orjson.loads(line)["timestamp"].replace("Z", "+00:00"))
            return stamp.timestamp() - time.time()

        def timeline() -> str:
            """Where a slow retry's time went: the receiver's requests around the 503s (seconds after the first
            503) and the agent's own log of the failure and the recovery."""
            first = next(r.at for r in ndjson.log() if r.status == 503)
            seen = [(round(r.at - first, 3), r.status) for r in ndjson.log() if r.at >= first - 3]
            events = [line for line in proc.log(20).splitlines() if "route_" in line]
            return f"requests {seen}; agent {events}"

        wait_for(lambda: shipped(300) and sane(rates("before the jumps")), 30, message="rates before the jumps")
        offset_file.write_text("-1h\n")
        assert sane(after := rates("after the clock went back an hour")), after

        # A receiver asks to come back in a few seconds, as an HTTP date by its own clock (whole seconds); the agent's
        # clock is an hour behind.
        back_at = int(time.time()) + 5
        ndjson.fail_next(503, retry_after=email.utils.formatdate(back_at, usegmt=True))
        wait_for(lambda: any(r.status == 503 for r in ndjson.log()), 10, message="the 503")
        failed_at = next(r.at for r in ndjson.log() if r.status == 503)
        wait_for(lambda: any(r.at > failed_at and r.status == 200 for r in ndjson.log()), 30,
                 message="the retry after the 503")
        retried_at = next(r.at for r in ndjson.log() if r.at > failed_at and r.status == 200)
        asked = back_at - next(r.wall for r in ndjson.log() if r.status == 503)  # by the receiver's clock
        assert asked - 1.0 <= retried_at - failed_at < asked + STALL, (asked, retried_at - failed_at, timeline())
        assert abs(agent_clock_offset() + 3600) < 120  # the agent's clock was an hour behind (its log says so)

        offset_file.write_text("+1d\n")
        assert sane(after := rates("after the clock went forward a day")), after
        ndjson.fail_next(503, retry_after="2")  # and a backoff now: seconds are seconds
        wait_for(lambda: sum(r.status == 503 for r in ndjson.log()) == 2, 10, message="the second 503")
        failed_at = [r.at for r in ndjson.log() if r.status == 503][-1]
        wait_for(lambda: any(r.at > failed_at and r.status == 200 for r in ndjson.log()), 30,
                 message="the retry after the second 503")
        retried_at = next(r.at for r in ndjson.log() if r.at > failed_at and r.status == 200)
        assert 2.0 <= retried_at - failed_at < 2.0 + STALL, (retried_at - failed_at, timeline())
        wait_for(lambda: "route_recovered" in proc.log(1), 10, message="the route recovered")
        wait_for(lambda: log_lines(c)[-1][1] == f"tick {total}", 60, message="the writer done")
        written = log_lines(c)
        wait_for(lambda: shipped(len(written)), 30, message="every line at both receivers",
                 describe=lambda: f"{len(ndjson.accepted())} ndjson, {len(es.docs())} es; {routes()}")
        assert abs(agent_clock_offset() - 86400) < 120
        checkpoints.poll()

        messages = [m for _, m in written]
        assert sorted(r["message"] for r in ndjson.accepted()) == sorted(messages)  # once each
        assert sorted(d["message"] for d in es.docs()) == sorted(messages) and set(es.writes.values()) == {1}
        indices = {index for index, _ in es.ids()}
        assert indices == {"clock-" + datetime.fromisoformat(t[:19]).replace(tzinfo=UTC).strftime("%Y.%m.%d")
                           for t, _ in written}  # the records' times, not the agent's clock
        assert checkpoints.reads >= 10 and not checkpoints.backwards, checkpoints.backwards
        size = Path(c.inspect()["LogPath"]).stat().st_size
        wait_for(lambda: (checkpoints.poll(), sorted(checkpoints.last.values()) == [size, size])[1], 10,
                 message="both routes' checkpoints at the file's end")
        assert all(r["state"] == "running" for r in routes().values())
        assert proc.alive()
    finally:
        es.stop()
        ndjson.stop()

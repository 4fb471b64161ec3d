"""Issue #15, fault matrix: the Docker engine restarts (stop dockerd, start it again) while 20 containers log.

The machine's main engine is shared with other test sessions, so the engine restarted here is a private second one
the test owns (``tests.helpers.engine2``: its own socket, data root, exec root and containerd, in a private mount
namespace); the agent is pointed at it with ``--docker-socket`` and ``--docker-root``. Its containers run with
``--restart always`` (what users have), so they come back when the engine does.

Each container prints ``<name> <n>`` for n = 1..N, keeping n in a file of its own filesystem so that the count goes
on after the restart instead of beginning again, and stops between two lines on SIGTERM (the engine's stop). The
test checks that every line arrives exactly once (the agent itself never restarts, so its at-least-once contract
allows no repeat here), that the agent logged the API going away and coming back, that it follows the event stream
again afterwards (a container started after the restart gets its name and image: with the API up nothing else
gives them to the metrics path), and
that /api/v1/containers and /metrics show each container once, under its name and image.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.deps import unavailable
from tests.helpers.docker import IMAGE, LABEL, DockerEngine, DockerError, DockerUnavailable
from tests.helpers.engine2 import Engine2, EngineUnavailable
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AgentFactory = Callable[..., AgentProcess]
CONTAINERS = 20
LINES = 400  # per container, one every 0.05 s: about 25 s of logging with the restart in the middle
# n lives in /tmp/n of the container's own filesystem, which outlives the engine's restart; TERM ends the loop
# between two lines (a trap only sets a flag), so no line is printed twice nor skipped by the container itself.
SCRIPT = (
    "trap 'stop=1' TERM; n=$(cat /tmp/n 2>/dev/null || echo 0); "
    f'while [ -z "$stop" ] && [ "$n" -lt {LINES} ]; do n=$((n+1)); echo "$NAME $n"; echo $n > /tmp/n; sleep 0.05; '
    'done; while [ -z "$stop" ]; do sleep 0.2; done'
)


@pytest.fixture
def engine2(docker_engine: DockerEngine) -> Iterator[Engine2]:
    """A private second engine with the test image; always stopped and its tree removed at the end."""
    engine = None
    try:
        engine = Engine2().start()
        engine.load_image(IMAGE)
    except (EngineUnavailable, DockerUnavailable, DockerError) as exc:
        if engine is not None:
            engine.destroy()
        unavailable(f"a second Docker engine cannot run here: {exc}")
    try:
        yield engine
    finally:
        notes = engine.destroy()
        if notes:
            print(f"\nsecond engine teardown: {'; '.join(notes)}")


def delivered(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


def per_container(records: list[dict[str, Any]]) -> dict[str, Counter[int]]:
    """container name as printed -> Counter of the numbers received."""
    out: dict[str, Counter[int]] = {}
    for r in records:
        name, _, n = r["message"].rpartition(" ")
        out.setdefault(name, Counter())[int(n)] += 1
    return out


def api_containers(agent: AgentProcess) -> list[dict[str, Any]]:
    resp = agent.get("/api/v1/containers")
    assert resp.status == 200, resp.status
    return [c["info"] for c in json.loads(resp.body)["containers"]]


def agent_events(agent: AgentProcess) -> list[dict[str, Any]]:
    out = []
    for line in agent.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def shown_once(agent: AgentProcess, names: dict[str, str], image: str) -> bool:
    """Every container (id -> name) once in /api/v1/containers and once on /metrics, with its name and image."""
    infos = [i for i in api_containers(agent) if i.get("container_id") in names]
    by_id = Counter(i["container_id"] for i in infos)
    if sorted(by_id) != sorted(names) or set(by_id.values()) != {1}:
        return False
    if any((i["name"], i["image"]) != (names[i["container_id"]], image) for i in infos):
        return False
    seen = agent.metrics().select("container_last_seen")
    per_name = Counter(s.labels.get("name") for s in seen if s.labels.get("name") in names.values())
    if per_name != Counter(names.values()):
        return False
    return all(s.labels.get("image") == image for s in seen if s.labels.get("name") in names.values())


class TwiceWatch(threading.Thread):
    """Through the restart, twice a second: any container id twice in /api/v1/containers, or any of the test's
    container names on two ``container_last_seen`` series (two cgroups, or one under two names)."""

    def __init__(self, agent: AgentProcess, names: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.names = names
        self.twice: list[str] = []
        self.polls = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                ids = Counter(i.get("container_id") for i in api_containers(self.agent))
                seen = Counter(s.labels.get("name") for s in self.agent.metrics().select("container_last_seen"))
            except OSError:
                continue
            self.polls += 1
            self.twice += [f"id {cid} x{n}" for cid, n in ids.items() if cid in self.names and n > 1]
            self.twice += [f"name {name} x{n}" for name, n in seen.items() if name in self.names.values() and n > 1]


def test_engine_restart_while_20_containers_log_loses_nothing_and_metadata_comes_back(
        engine2: Engine2, agent: AgentFactory, tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    a = agent("--docker-socket", str(engine2.socket), "--docker-root", str(engine2.root), "--route", f"file://{out}")
    token = secrets.token_hex(3)
    names: dict[str, str] = {}  # id -> name
    for i in range(CONTAINERS):
        name = f"lookout-test-e2-{token}-{i:02d}"
        cid = engine2.docker("run", "-d", "--restart", "always", "--name", name, "--label", f"{LABEL}=1",
                             "--env", f"NAME={name}", IMAGE, "sh", "-c", SCRIPT).stdout.strip()
        names[cid] = name
    wait_for(lambda: shown_once(a, names, IMAGE), timeout=60, message="every container once, named, before")

    def least() -> int:
        got = per_container(delivered(out))
        return min((max(got[n]) if got.get(n) else 0) for n in names.values())

    wait_for(lambda: least() >= LINES // 4, timeout=120, message=f"{LINES // 4} lines of every container")
    before_restart = least()
    assert before_restart < LINES, "every container finished before the restart: not mid-way"
    twice = TwiceWatch(a, dict(names))
    twice.start()
    pid = engine2.pid
    started = time.monotonic()
    assert engine2.stop() == 0
    stopped = time.monotonic() - started
    wait_for(lambda: any(e.get("event") == "docker_api_unavailable" for e in agent_events(a)), timeout=60,
             message="the agent logged that the Engine API went away")
    engine2.start()
    assert engine2.pid != pid
    restarted = time.monotonic()
    wait_for(lambda: any(e.get("event") == "docker_api_available" and e.get("events") == "resubscribed"
                         and e.get("containers") == CONTAINERS for e in agent_events(a)),
             timeout=60, message="the agent logged the reconnect: containers listed, events resubscribed")
    reconnect_took = time.monotonic() - restarted

    # Metadata again from the API, each container once: the same ids, running again.
    running = engine2.docker("ps", "-q", "--no-trunc").stdout.split()
    assert sorted(running) == sorted(names), "the engine brought back its containers (restart always)"
    wait_for(lambda: shown_once(a, names, IMAGE), timeout=60, message="every container once, named, after",
             describe=lambda: f"api: {sorted((i.get('name'), i.get('image')) for i in api_containers(a))}")
    twice.done.set()
    twice.join(10)
    assert twice.polls >= 2 and not twice.twice, f"reported twice during the restart: {twice.twice[:10]}"

    # Resubscribed: a container started after the restart gets its name and image in /api/v1/containers (with the
    # API up, the metrics path takes metadata only from the API: the resync at connect, then the event stream).
    late = f"lookout-test-e2-{token}-late"
    late_id = engine2.docker("run", "-d", "--restart", "always", "--name", late, "--label", f"{LABEL}=1",
                             "--env", f"NAME={late}", IMAGE, "sh", "-c", SCRIPT).stdout.strip()
    names[late_id] = late
    wait_for(lambda: shown_once(a, names, IMAGE), timeout=30, message="the new container seen through the events",
             describe=lambda: f"api: {sorted((i.get('name'), i.get('image')) for i in api_containers(a))}")

    # Every line once, and what Docker's own files hold is what arrived.
    printed = set(names.values())
    wait_for(lambda: all(len(c) == LINES for c in per_container(delivered(out)).values())
             and len(per_container(delivered(out))) == len(names), timeout=180, interval=0.5,
             message=f"{LINES} lines of each of {len(names)} containers",
             describe=lambda: str({k: len(v) for k, v in per_container(delivered(out)).items()}))
    records = delivered(out)
    got = per_container(records)
    assert set(got) == printed
    for name, counts in got.items():
        assert sorted(counts) == list(range(1, LINES + 1)), f"{name}: missing {set(range(1, LINES + 1)) - set(counts)}"
        repeated = {n: c for n, c in counts.items() if c > 1}
        assert not repeated, f"{name}: lines delivered more than once: {repeated}"
    for cid in names:
        log_path = json.loads(engine2.docker("inspect", cid).stdout)[0]["LogPath"]
        in_file = [json.loads(line)["log"].rstrip("\n") for line in Path(log_path).read_text().splitlines()]
        shipped = [r["message"] for r in records if r["container_id"] == cid]
        assert shipped == in_file, f"{cid}: what arrived is not Docker's file, in order"
    unnamed = [r for r in records if r.get("container_name") != r["message"].rpartition(" ")[0]]
    assert not unnamed, f"records without their container's name: {unnamed[:3]}"
    events = [e["event"] for e in agent_events(a) if e.get("event", "").startswith("docker_")]
    print(f"engine restart: stopped in {stopped:.1f}s with >= {before_restart} of {LINES} lines out per container, "
          f"API back in the agent {reconnect_took:.1f}s after the engine; {len(records)} records, no loss, "
          f"no repeat; agent events {events}")

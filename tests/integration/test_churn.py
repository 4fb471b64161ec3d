"""Issue #15, fault matrix: container churn while logging and being scraped.

Containers are started at an even pace over a period, each prints ``<short id> <n>`` for n = 1..LINES (a burst of
ten lines every 0.1 s, the last burst right before it exits) and is removed (``docker rm -f``) the moment it has
exited, so its files are deleted while the agent may still be reading them. Meanwhile /metrics is scraped twice a
second. Then:

- every line of every container arrived, exactly once (the agent never restarts here), under its container's name;
- no series of a removed container is left on /metrics (the scrapes during the run show them while they lived);
- the agent's open file descriptors, inotify watches, threads and RSS are back within 10 % (counts rounded up to a
  whole one) of where they were after a warm-up, once its own gauges say it settled. The warm-up is the same churn,
  smaller, and one fast writer, so that what the agent starts on first use (its chunk worker processes, with their
  pipes and shared memory) is in the baseline.

The default run is scaled for CI (``CHURN_CONTAINERS`` over ``CHURN_SECONDS``); the issue's full run is::

    LOOKOUT_CHURN_CONTAINERS=500 LOOKOUT_CHURN_SECONDS=600 python -m pytest tests/integration/test_churn.py -s

The engine is the machine's main one, shared with other test sessions: the route ships only this test's containers
(``filter.name``), and the inotify watches are compared after taking away the other sessions' containers' directories
(the agent watches every container's log directory, shipped or not).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.docker import Container, ContainerRunner, DockerEngine, docker
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AgentFactory = Callable[..., AgentProcess]
CHURN_CONTAINERS = int(os.environ.get("LOOKOUT_CHURN_CONTAINERS", "100"))
CHURN_SECONDS = float(os.environ.get("LOOKOUT_CHURN_SECONDS", "120"))
WARMUP_CONTAINERS = 6
LINES = 100
BURST = 30_000  # the warm-up's fast writer: about 2 MB of json-file, read in 1 MiB chunks
WORKERS = 6  # containers being created, waited for or removed at once (2 cores, shared with other sessions)
TOLERANCE = 0.10
# $HOSTNAME is the container's short id; ten lines, then 0.1 s, ten times: the last ten right before it exits.
SCRIPT = (f'i=1; while [ $i -le {LINES} ]; do echo "$HOSTNAME $i"; '
          '[ $((i % 10)) -eq 0 ] && usleep 100000; i=$((i+1)); done')
PURPOSE = f"churn{secrets.token_hex(2)}"  # this run's containers only, also beside another run of this test


@dataclass(frozen=True)
class Usage:
    fds: int
    watches: int
    threads: int
    rss: int

    def __str__(self) -> str:
        return f"fds {self.fds}, inotify watches {self.watches}, threads {self.threads}, RSS {self.rss / 2**20:.1f} MiB"


def usage(pid: int) -> Usage:
    """Open descriptors, inotify watches (``inotify wd:`` lines of its fdinfo), threads and RSS of a process."""
    fds = os.listdir(f"/proc/{pid}/fd")
    watches = 0
    for fd in fds:
        try:
            watches += Path(f"/proc/{pid}/fdinfo/{fd}").read_text().count("inotify wd:")
        except OSError:
            continue  # closed meanwhile
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Usage(len(fds), watches, int(status["Threads"]), int(status["VmRSS"].split()[0]) * 1024)


def container_dirs(root: str) -> int:
    """Container directories under the engine's data root: the agent watches each one's log directory."""
    return sum(1 for e in os.scandir(f"{root}/containers") if e.is_dir())


def children(pid: int) -> list[str]:
    """The process's children (the chunk workers, multiprocessing's forkserver)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            out += fh.read().split()
    return out


def fd_kinds(pid: int) -> dict[str, int]:
    """The process's open descriptors by kind (a file's directory, socket, pipe, anon_inode:...), for a failure."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[target.split(":")[0] if ":" in target and not target.startswith("/") else os.path.dirname(target)] += 1
    return dict(kinds)


def within(now: Usage, base: Usage, other_dirs: int) -> list[str]:
    """What is not back within TOLERANCE of ``base`` (counts rounded up to a whole one: 10 % of 6 threads is less
    than one; watches corrected by ``other_dirs``, the change in other sessions' containers meanwhile); empty when
    everything is."""
    out = []
    for name, value, ref in (("fds", now.fds, base.fds), ("inotify watches", now.watches, base.watches + other_dirs),
                             ("threads", now.threads, base.threads)):
        if value > math.ceil(ref * (1 + TOLERANCE)):
            out.append(f"{name} {value} > {ref} + {TOLERANCE:.0%}")
    if now.rss > base.rss * (1 + TOLERANCE):
        out.append(f"RSS {now.rss / 2**20:.1f} MiB > {base.rss / 2**20:.1f} MiB + {TOLERANCE:.0%}")
    return out


class Output:
    """The ``file://`` route's NDJSON, read incrementally: per container short id, the numbers received (with how
    often) and the container names the records carried."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.numbers: dict[str, Counter[int]] = {}
        self.names: dict[str, set[str]] = {}
        self._pos = 0
        self._rest = b""

    def poll(self) -> dict[str, Counter[int]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read()
        except FileNotFoundError:
            return self.numbers
        self._pos += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            record = orjson.loads(line)
            short, _, n = record["message"].partition(" ")
            self.numbers.setdefault(short, Counter())[int(n)] += 1
            self.names.setdefault(short, set()).add(record.get("container_name", ""))
        return self.numbers

    def count(self, c: Container) -> int:
        return len(self.poll().get(c.id[:12], ()))

    def complete(self, containers: list[Container]) -> int:
        """How many of the containers have every line."""
        got = self.poll()
        return sum(1 for c in containers if len(got.get(c.id[:12], ())) >= LINES)


class Scraper(threading.Thread):
    """Scrapes /metrics twice a second; remembers which container names it saw."""

    def __init__(self, agent: AgentProcess) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.seen: set[str] = set()
        self.scrapes = 0
        self.failures = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                samples = self.agent.metrics().select("container_last_seen")
            except OSError:
                self.failures += 1
                continue
            self.scrapes += 1
            self.seen.update(s.labels.get("name", "") for s in samples)


def churn(runner: ContainerRunner, count: int, seconds: float) -> list[Container]:
    """Start ``count`` containers evenly over ``seconds``; each is removed as soon as it exited."""
    started = time.monotonic()
    made: list[Container] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        delay = started + i * seconds / count - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the churn, not waiting for a result
        c = runner.run(cmd=["sh", "-c", SCRIPT], purpose=PURPOSE)
        with lock:
            made.append(c)
        docker("wait", c.id, timeout=120)
        runner.remove(c)

    with ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(one, i) for i in range(count)]:
            future.result()
    return made


def route_of(m: Any, needle: str) -> str:
    routes = [s.labels["route"] for s in m.select("lookout_route_up") if needle in s.labels["route"]]
    assert len(routes) == 1, routes
    return str(routes[0])


def settled(agent: AgentProcess, needle: str) -> bool:
    """The route acknowledged every byte of every file it reads (lag 0, nothing queued)."""
    m = agent.metrics()
    route = route_of(m, needle)
    return m.value("lookout_log_lag_bytes", route=route) == 0 and m.value("lookout_route_queue_depth", route=route) == 0


def test_container_churn_every_line_no_stale_series_resources_back(
        docker_engine: DockerEngine, agent: AgentFactory, containers: ContainerRunner, tmp_path: Path) -> None:
    out = Output(tmp_path / "out.ndjson")
    a = agent("--route", f"file://{out.path}?filter.name=lookout-test-{PURPOSE}-*")
    assert a.proc is not None
    pid = a.proc.pid
    root = docker_engine.root_dir

    # Warm-up: what the agent builds on first use exists before the baseline: the same churn, smaller, and a burst
    # large enough that the reader reads ahead and starts its chunk worker processes (their pipes, shared memory
    # and the pages of it they touch are the agent's for good).
    burst = containers.run(cmd=["sh", "-c", f'seq 1 {BURST} | sed "s/^/$HOSTNAME /"'], purpose=PURPOSE)
    warm = churn(containers, WARMUP_CONTAINERS, 3)
    wait_for(lambda: out.complete(warm) == len(warm) and out.count(burst) == BURST,
             timeout=120, message="the warm-up containers' lines",
             describe=lambda: f"lines per container: {[out.count(c) for c in [burst, *warm]]}")
    # The gauges are refreshed every 5 s and start at 0: settled also needs them to show the burst container's file
    # (it stays, exited, until the end), or the base would be read before any file was counted.
    def warm_settled() -> float | None:
        m = a.metrics()
        files = m.value("lookout_log_files_watched", route=route_of(m, str(out.path)))
        return files if settled(a, str(out.path)) and files >= 1 else None

    base_files = wait_for(warm_settled, timeout=60, message="settled after the warm-up, the burst's file counted")
    base, base_dirs, base_children = usage(pid), container_dirs(root), len(children(pid))

    scraper = Scraper(a)
    scraper.start()
    t0 = time.monotonic()
    try:
        made = churn(containers, CHURN_CONTAINERS, CHURN_SECONDS)
    finally:
        scraper.done.set()
    took = time.monotonic() - t0
    peak = usage(pid)

    wait_for(lambda: out.complete(made) == len(made), timeout=120, interval=0.5,
             message=f"every line of {len(made)} containers",
             describe=lambda: f"{out.complete(made)} complete; incomplete: "
                              f"{[(c.name, out.count(c)) for c in made if out.count(c) < LINES][:10]}")

    def files_back() -> bool:
        m = a.metrics()
        return settled(a, str(out.path)) and m.value("lookout_log_files_watched",
                                                     route=route_of(m, str(out.path))) <= base_files

    wait_for(files_back, timeout=60, message="the route settled and closed the removed containers' files",
             describe=lambda: f"files watched at the warm-up: {base_files}; now: "
                              + a.metrics().describe(None, route=route_of(a.metrics(), str(out.path)))
                              + "\nlog files open: " + str(open_logs(pid)))
    removed = {c.name for c in made} | {c.name for c in warm}
    removed_ids = {c.id for c in made} | {c.id for c in warm}

    def no_stale_series() -> bool:
        m = a.metrics()
        return not [s for s in m if s.labels.get("name") in removed or any(i in s.labels.get("id", "")
                                                                           for i in removed_ids)]

    wait_for(no_stale_series, timeout=30, message="no series of a removed container on /metrics",
             describe=lambda: "\n".join(s.line() for s in a.metrics() if s.labels.get("name") in removed)[:2000])

    def back() -> Usage | None:
        now = usage(pid)
        return None if within(now, base, container_dirs(root) - base_dirs) else now

    after = wait_for(back, timeout=90, interval=1.0, message="fds, inotify watches, threads and RSS back within 10 %",
                     describe=lambda: f"baseline {base}; now {usage(pid)}; "
                                      f"{within(usage(pid), base, container_dirs(root) - base_dirs)}; open: "
                                      f"{fd_kinds(pid)}; child processes {base_children} -> {len(children(pid))}")

    got = out.poll()
    for c in [*warm, *made]:
        numbers = got.get(c.id[:12], Counter())
        assert sorted(numbers) == list(range(1, LINES + 1)), \
            f"{c.name}: missing {sorted(set(range(1, LINES + 1)) - set(numbers))[:20]}"
        assert max(numbers.values()) == 1, f"{c.name}: repeated {[n for n, k in numbers.items() if k > 1][:20]}"
        assert out.names[c.id[:12]] == {c.name}, f"{c.name}: records under {out.names[c.id[:12]]}"
    m = a.metrics()
    assert m.total("lookout_log_files_lost_total") == 0
    seen = len(scraper.seen & {c.name for c in made})
    assert scraper.scrapes > took and seen > 0, "the scrapes during the churn saw the containers while they lived"
    print(f"churn: {len(made)} containers x {LINES} lines in {took:.0f}s ({scraper.scrapes} scrapes, "
          f"{scraper.failures} failed, {seen} of the containers seen on /metrics while alive); "
          f"baseline {base}; peak {peak}; after {after}; other sessions' container dirs "
          f"{container_dirs(root) - base_dirs:+d}; child processes {base_children} -> {len(children(pid))}")


def open_logs(pid: int) -> list[str]:
    """The container log files the agent holds open (a deleted one ends in " (deleted)")."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "-json.log" in target:
                out.append(target)
    return out

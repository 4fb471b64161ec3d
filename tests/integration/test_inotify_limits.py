"""Issue #15: inotify limits exhausted. The agent runs in a user namespace of its own (``unshare --user
--map-root-user``: root mapped to root, so it still reads Docker's files), whose per-namespace limits
``/proc/sys/user/max_inotify_instances`` and ``max_inotify_watches`` are set low before it starts. They bound
the agent only (the kernel charges the namespace's own counts), so no other process on the machine is affected and
nothing needs restoring: the limits vanish with the namespace.

With no inotify instance, or with the watch limit reached, the agent falls back to polling, says so once, counts it
in ``lookout_log_watch_fallbacks_total{reason}`` and still delivers every line, also across rotations.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.docker import Container, ContainerRunner
from tests.helpers.wait import wait_for
from tests.integration.test_logs_docker import Ndjson, numbers, settled
from tests.integration.test_state_faults import events

pytestmark = pytest.mark.docker

LINES = 6000
# ~0.5 MB of json-file log in 64 KiB files, all kept (max-file 20): a polled route must follow every rotation.
ROTATE = ("--log-opt", "max-size=64k", "--log-opt", "max-file=20")
WRITER = f"i=1; while [ $i -le {LINES} ]; do seq $i $((i+499)); i=$((i+500)); sleep 0.05; done"


class LimitedAgent(AgentProcess):
    """The agent in a user namespace whose inotify limit ``knob`` (a file of /proc/sys/user) is ``value``."""

    def __init__(self, workdir: Path, extra_args: list[str], knob: str, value: int) -> None:
        super().__init__(workdir, extra_args)
        self.knob, self.value = knob, value

    def command(self) -> list[str]:
        inner = f"echo {self.value} > /proc/sys/user/{self.knob} && exec {shlex.join(super().command())}"
        return ["unshare", "--user", "--map-root-user", "sh", "-c", inner]


def can_limit() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare (util-linux)"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
                            "echo 1 > /proc/sys/user/max_inotify_instances"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"per-namespace inotify limits cannot be set: {probe.stderr.strip()}"


@pytest.fixture
def limited(tmp_path: Path) -> object:
    why = can_limit()
    if why:
        pytest.skip(why)
    started: list[AgentProcess] = []

    def start(knob: str, value: int, route: str) -> AgentProcess:
        agent = LimitedAgent(tmp_path / f"agent-{knob}", ["--route", route], knob, value)
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        agent.stop()


def all_lines(out: Ndjson, c: Container) -> bool:
    return sorted(numbers(out.of(c))) == list(range(1, LINES + 1))


@pytest.mark.parametrize(("knob", "value", "reason", "event"), [
    ("max_inotify_instances", 0, "no_instance", "log_watch_unavailable"),
    ("max_inotify_watches", 1, "watch_limit", "log_watch_limit_reached"),
], ids=["instances", "watches"])
def test_exhausted_inotify_falls_back_to_polling_says_it_once_counts_it_and_delivers_everything(
        knob: str, value: int, reason: str, event: str, limited: object, containers: ContainerRunner,
        tmp_path: Path) -> None:
    purpose = f"inotify{reason.replace('_', '')}"
    out = Ndjson(tmp_path / "out.ndjson")
    agent = limited(knob, value, f"file://{out.path}?filter.name=lookout-test-{purpose}-*")  # type: ignore[operator]
    # Containers that appear after the agent started: found by rescans, their rotations by listing their directories.
    writers = [containers.run(*ROTATE, cmd=["sh", "-c", WRITER], purpose=purpose) for _ in range(3)]
    settled(agent, str(out.path), writers)
    for c in writers:
        wait_for(lambda c=c: all_lines(out, c), timeout=30, message=f"every line of {c.name}",
                 describe=lambda c=c: f"got {len(out.of(c))} records, {len(set(numbers(out.of(c))))} distinct")
        assert len(out.of(c)) == LINES, "each line once"
        assert len(list(Path(c.inspect()["LogPath"]).parent.glob("*-json.log.*"))) >= 3, "the writer rotated"
    m = agent.metrics()
    assert m.value("lookout_log_watch_fallbacks_total", reason=reason) >= 1
    assert m.value("lookout_log_files_lost_total", route=next(iter({s.labels["route"]
                   for s in m.select("lookout_log_files_lost_total")}))) == 0
    said = events(agent, event)
    assert len(said) == 1 and said[0]["level"] == "warning", said
    if reason == "no_instance":
        assert "max_user_instances" in str(said[0]["hint"])
        assert m.value("lookout_log_watch_fallbacks_total", reason="no_instance") == 1
    else:
        assert "max_user_watches" in str(said[0]["hint"])
    assert agent.alive() and not out.bad

"""Issue #12: cAdvisor's --docker-only, --raw-cgroup-prefix-allowlist and --disable-root-cgroup-stats on the real
agent, the real kernel's cgroups and a real Docker container.

A systemd service's cgroup is a raw cgroup. So that the test does not depend on what the host runs, it makes one:
an empty ``/system.slice/lookout-test-<pid>.service`` in every cgroup hierarchy (as systemd does with accounting
on), removed at teardown. Without the flags the agent reports it; with --docker-only it does not, and serves the
test container and ``/``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import kernel
from tests.helpers.agent import AgentProcess
from tests.helpers.deps import unavailable
from tests.helpers.docker import ContainerRunner, DockerEngine
from tests.helpers.metrics import Metrics
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker

_CONTAINER = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def service_cgroup() -> Iterator[str]:
    """``/system.slice/lookout-test-<pid>.service`` made in every hierarchy (v1: each controller's; v2: the one);
    removed, with ``/system.slice`` where the test made it, at teardown."""
    cgroup = f"/system.slice/lookout-test-{os.getpid()}.service"
    base = kernel.CGROUP_ROOT
    if kernel.cgroup_version() == 2:
        hierarchies = [base]
    else:  # the controllers' mounts, once each (cpu and cpuacct may be one hierarchy behind two names)
        seen: dict[str, Path] = {}
        for d in sorted(base.iterdir()):
            if (d / "cgroup.procs").exists():
                seen.setdefault(os.path.realpath(d), d)
        hierarchies = list(seen.values())
    made: list[Path] = []
    try:
        for hierarchy in hierarchies:
            for path in (hierarchy / "system.slice", hierarchy / cgroup.lstrip("/")):
                if not path.is_dir():
                    path.mkdir()
                    made.append(path)
    except OSError as exc:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        unavailable(f"cannot make a cgroup under {base} to stand for a systemd service ({exc.strerror})")
    try:
        yield cgroup
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()


def ids(m: Metrics) -> set[str]:
    return {s.labels["id"] for s in m.select("container_last_seen")}


def scrape_with(agent: AgentProcess, cgroup: str) -> Metrics:
    def seen() -> Metrics | None:
        m = agent.metrics()
        return m if cgroup in ids(m) else None

    return wait_for(seen, timeout=15, message=f"{cgroup} in {agent.url}/metrics",
                    describe=lambda: "\n".join(sorted(ids(agent.metrics()))))


def test_docker_only_serves_the_containers_and_the_root_and_no_raw_cgroup(
        agent: Callable[..., AgentProcess], containers: ContainerRunner, docker_engine: DockerEngine,
        service_cgroup: str) -> None:
    c = containers.run(purpose="docker-only", cmd=["sleep", "3600"])
    cg = docker_engine.expected_cgroup(c)

    everything = scrape_with(agent(), service_cgroup)  # the made service is a raw cgroup the agent finds
    assert cg in ids(everything) and "/" in ids(everything)

    m = scrape_with(agent("--docker-only"), cg)
    served = ids(m)
    assert "/" in served and service_cgroup not in served
    raw = sorted(i for i in served - {"/"} if not _CONTAINER.search(i.rsplit("/", 1)[-1]))
    assert raw == [], f"raw cgroups served with --docker-only: {raw}"
    assert not [i for i in served if i.startswith("/system.slice/") and not _CONTAINER.search(i)]
    assert m.value("lookout_containers", runtime="raw") == 1  # the root alone
    assert m.select("container_last_seen", id=cg, name=c.name)
    assert m.total("container_cpu_usage_seconds_total", id="/") > 0  # the root keeps its stats
    assert m.value("container_memory_usage_bytes", id=cg) > 0

    # The allowlist brings the service back (with --docker-only, as cAdvisor's whitelist), and / without stats.
    m = scrape_with(agent("--docker-only", "--raw-cgroup-prefix-allowlist", "/system.slice/lookout-test-",
                          "--disable-root-cgroup-stats"), service_cgroup)
    served = ids(m)
    assert {"/", cg, service_cgroup} <= served
    assert not [i for i in served - {"/", service_cgroup} if not _CONTAINER.search(i.rsplit("/", 1)[-1])]
    assert m.select("container_cpu_usage_seconds_total", id="/") == []
    assert m.select("container_fs_usage_bytes", id="/") == []
    assert m.value("machine_cpu_cores") == os.cpu_count()
    assert m.select("container_cpu_usage_seconds_total", id=cg)

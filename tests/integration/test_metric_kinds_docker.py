"""Issue #12: the optional metric kinds on a real Docker host, checked against the kernel's own files.

The agent runs with ``tcp``, ``udp`` and ``sched`` and every other optional kind this host can feed (decided by
the same check ``check-config`` runs); the kinds it cannot feed are refused by ``check-config`` with the reason.
Containers run the busybox test image and are removed at teardown.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from collectors.cgroups.parsers import parse_schedstat, parse_tcp, parse_udp
from collectors.hostkinds import unfed_kinds
from tests.helpers.agent import REPO_ROOT, AgentProcess
from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.metrics import Metrics
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker

OPTIONAL = ("tcp", "udp", "advtcp", "sched", "referenced_memory", "memory_numa", "cpuset", "hugetlb",
            "cpu_topology", "resctrl")
BASE = ("cpu", "memory", "network", "process")
UNFED = unfed_kinds(Path("/"), frozenset(OPTIONAL))
FED = [k for k in OPTIONAL if k not in UNFED]


@pytest.fixture(scope="module")
def kinds_agent(module_agent: Callable[..., AgentProcess]) -> AgentProcess:
    if {"tcp", "udp", "sched"} & UNFED.keys():
        pytest.skip(f"this host cannot feed tcp, udp or sched: {UNFED}")
    return module_agent("--enable-metrics", ",".join((*BASE, *FED)))


@pytest.fixture(scope="module")
def server(module_containers: ContainerRunner, docker_engine: DockerEngine) -> tuple[Container, str]:
    """httpd listening on 0.0.0.0:8080 (net/tcp), nc on [::]:9090 (net/tcp6), syslogd's UDP socket."""
    c = module_containers.run(purpose="kinds-server", cmd=[
        "sh", "-c", "httpd -f -p 0.0.0.0:8080 & nc -l -p 9090 & syslogd -n -R 127.0.0.1:514 & sleep 1; "
                    "logger started; wait"])
    return c, docker_engine.expected_cgroup(c)


def _container_pids(cgroup: str) -> list[int]:
    procs = Path("/sys/fs/cgroup/cpu") / cgroup.lstrip("/") / "cgroup.procs"
    if not procs.exists():
        procs = Path("/sys/fs/cgroup") / cgroup.lstrip("/") / "cgroup.procs"
    return [int(x) for x in procs.read_text().split()]


def wait_series(agent: AgentProcess, name: str, timeout: float = 15.0, **labels: str) -> Metrics:
    def found() -> Metrics | None:
        m = agent.metrics()
        return m if m.select(name, **labels) else None

    return wait_for(found, timeout, message=f"{name}{labels} on {agent.url}",
                    describe=lambda: agent.metrics().describe(name))


def test_listening_sockets_show_up_by_state_as_the_kernel_counts_them(kinds_agent: AgentProcess,
                                                                      server: tuple[Container, str]) -> None:
    c, cg = server
    pid = c.pid

    def settled() -> tuple[Metrics, dict[str, int], dict[str, float]] | None:
        """A scrape whose tcp, tcp6 and udp tables match the kernel's, once the servers listen and syslogd has
        opened its UDP socket (at its first message)."""
        m = kinds_agent.metrics()
        kernel = parse_tcp(Path(f"/proc/{pid}/net/tcp").read_bytes())
        kernel6 = parse_tcp(Path(f"/proc/{pid}/net/tcp6").read_bytes())
        kernel_udp = parse_udp(Path(f"/proc/{pid}/net/udp").read_bytes())
        got = {s.labels["tcp_state"]: int(s.value) for s in m.select("container_network_tcp_usage_total", id=cg)}
        got6 = {s.labels["tcp_state"]: int(s.value) for s in m.select("container_network_tcp6_usage_total", id=cg)}
        udp = {s.labels["udp_state"]: s.value for s in m.select("container_network_udp_usage_total", id=cg)}
        if got == kernel and got6 == kernel6 and got.get("listen") and udp.get("listen") == kernel_udp.listen >= 1:
            return m, got, udp
        return None

    m, tcp, udp = wait_for(settled, 20, message=f"the agent's socket tables of {cg} to match /proc/{pid}/net/*",
                           describe=lambda: kinds_agent.metrics().describe("container_network_tcp_usage_total",
                                                                           id=cg))
    assert tcp["listen"] == 1  # httpd on 0.0.0.0:8080
    assert m.value("container_network_tcp6_usage_total", id=cg, tcp_state="listen") == 1  # nc on [::]:9090
    assert set(udp) == {"listen", "dropped", "rxqueued", "txqueued"}  # syslogd -R's socket counted in listen
    if "advtcp" in FED:
        states = {s.labels["tcp_state"] for s in m.select("container_network_advance_tcp_stats_total", id=cg)}
        assert {"activeopens", "passiveopens", "currestab", "listendrops"} <= states and len(states) >= 90


def test_schedstat_counters_grow_and_sum_the_containers_processes(kinds_agent: AgentProcess,
                                                                   containers: ContainerRunner,
                                                                   docker_engine: DockerEngine) -> None:
    c = containers.run("--cpus", "0.3", purpose="kinds-busy",
                       cmd=["sh", "-c", "while :; do :; done & while :; do :; done & wait"])
    cg = docker_engine.expected_cgroup(c)
    m1 = wait_series(kinds_agent, "container_cpu_schedstat_run_seconds_total", id=cg)
    run1 = m1.value("container_cpu_schedstat_run_seconds_total", id=cg)
    periods1 = m1.value("container_cpu_schedstat_run_periods_total", id=cg)

    def grown() -> Metrics | None:
        m = kinds_agent.metrics()
        return m if m.value("container_cpu_schedstat_run_seconds_total", id=cg) >= run1 + 0.3 else None

    m2 = wait_for(grown, 20, message=f"container_cpu_schedstat_run_seconds_total of {cg} to grow by 0.3 s")
    assert m2.value("container_cpu_schedstat_run_periods_total", id=cg) > periods1
    assert m2.value("container_cpu_schedstat_runqueue_seconds_total", id=cg) >= 0
    # The kernel's own counters, read after the scrape: ahead of the agent's snapshot, by at most what the
    # container ran since (0.3 core x a few seconds).
    agent_run = m2.value("container_cpu_schedstat_run_seconds_total", id=cg)
    kernel_run = sum((parse_schedstat(Path(f"/proc/{pid}/schedstat").read_bytes()) or (0, 0, 0))[0]
                     for pid in _container_pids(cg)) / 1e9
    assert agent_run - 0.05 <= kernel_run <= agent_run + 3.0, (agent_run, kernel_run)


def test_the_other_kinds_this_host_feeds(kinds_agent: AgentProcess, server: tuple[Container, str]) -> None:
    _c, cg = server
    m = wait_series(kinds_agent, "container_network_tcp_usage_total", id=cg)
    if "referenced_memory" in FED:
        assert m.value("container_referenced_bytes", id=cg) > 0
    if "memory_numa" in FED:
        assert m.select("container_memory_numa_pages", id=cg, type="anon", scope="hierarchy")
    if "cpuset" in FED:
        assert m.value("container_memory_migrate", id=cg) in (0, 1)
    if "hugetlb" in FED and (Path("/sys/fs/cgroup/hugetlb") / cg.lstrip("/")).is_dir():
        sizes = {s.labels["pagesize"] for s in m.select("container_hugetlb_usage_bytes", id=cg)}
        assert sizes and all(size[-2:] in ("KB", "MB", "GB") for size in sizes), sizes
    if "cpu_topology" in FED:
        threads = m.select("machine_thread_siblings_count")
        assert len(threads) == len({s.labels["thread_id"] for s in threads}) >= 1
        assert m.select("machine_cpu_cache_capacity_bytes")


@pytest.mark.parametrize("kind", sorted(UNFED) or ["(none)"])
def test_check_config_refuses_what_this_host_cannot_feed(kind: str, tmp_path: Path) -> None:
    if kind == "(none)":
        pytest.skip("this host feeds every optional kind")
    proc = subprocess.run([sys.executable, "-m", "agent", "check-config", "--state-dir", str(tmp_path / "s"),
                           "--enable-metrics", f"cpu,{kind}"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"--enable-metrics: {kind}: {UNFED[kind]}" in proc.stderr

"""Issue #12: cAdvisor's REST API on the real agent for real Docker containers, checked against ``docker inspect``,
the container's cgroup files and /proc.

The agent runs as a subprocess with a 1 s housekeeping interval; the container runs the local busybox image
(``tests/helpers/docker.py``) and is removed at teardown. Values that keep moving (CPU time, memory, network) are
compared by waiting until the agent's last collection and the kernel agree, never by fixed sleeps.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import kernel
from tests.helpers.agent import AgentProcess
from tests.helpers.docker import IMAGE, Container, ContainerRunner, DockerEngine, docker
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker

INTERVAL = 1.0  # the agent's --housekeeping-interval
SLACK = 1.0  # one collection cycle and one request, on a busy 2-core CI machine
MiB = 1024 * 1024
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z\Z")


def get_json(agent: AgentProcess, path: str) -> Any:
    resp = agent.get(path)
    assert resp.status == 200, f"GET {path}: {resp.status} {resp.text}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    return json.loads(resp.body)


def seconds(text: str) -> float:
    """An RFC 3339 time as Go writes it (up to 9 fraction digits) to Unix seconds, to the microsecond."""
    assert RFC3339.match(text), text
    main, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(main + "+00:00").timestamp() + float("0." + (rest or "0")[:6])


def cgroup_file(cgroup: str, v1_controller: str, v1_name: str, v2_name: str) -> str:
    if kernel.cgroup_version() == 1:
        return (kernel.CGROUP_ROOT / v1_controller / cgroup.lstrip("/") / v1_name).read_text().strip()
    return (kernel.CGROUP_ROOT / cgroup.lstrip("/") / v2_name).read_text().strip()


@pytest.fixture
def limited(containers: ContainerRunner, docker_engine: DockerEngine) -> tuple[Container, str, dict[str, Any]]:
    c = containers.run("--network", docker_engine.network, "--memory", "96m", "--memory-swap", "192m", "--cpus", "0.5",
                       "--label", "com.example.team=capi", "--label", "com.example.tier=api",
                       "--env", "LOOKOUT_TEST_COLOR=green", "--env", "OTHER_SECRET=hunter2",
                       purpose="capi", cmd=["sleep", "3600"])
    return c, docker_engine.expected_cgroup(c), c.inspect()


def test_v1_docker_and_v2_stats_match_docker_inspect_and_the_cgroup(
        agent, limited: tuple[Container, str, dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    a: AgentProcess = agent("--env-metadata-allowlist", "LOOKOUT_TEST_")
    c, cg, inspect = limited

    # /api/v1.3/docker/<id>: a map keyed by the container name (the cgroup), one ContainerInfo
    def answered(path: str) -> Any:
        resp = a.get(path)
        return json.loads(resp.body) if resp.status == 200 else None

    answer = wait_for(lambda: answered(f"/api/v1.3/docker/{c.id}"), INTERVAL + SLACK + 5,
                      message=f"/api/v1.3/docker/{c.id} to know the container",
                      describe=lambda: a.get(f"/api/v1.3/docker/{c.id}").text)
    assert list(answer) == [cg]
    info = answer[cg]
    assert info["name"] == cg and info["id"] == c.id and info["namespace"] == "docker"
    assert info["aliases"] == [c.name, c.id]
    assert list(get_json(a, f"/api/v1.3/docker/{c.name}")) == [cg]  # by name too

    spec = info["spec"]
    config, host = inspect["Config"], inspect["HostConfig"]
    assert spec["labels"] == config["Labels"]
    assert spec["image"] == config["Image"] == IMAGE
    assert spec["envs"] == {"lookout_test_color": "green"}  # allowlisted, lower-cased as cAdvisor keeps them
    # --memory 96m --memory-swap 192m: bytes, as HostConfig and the cgroup's limit files say
    assert spec["memory"]["limit"] == host["Memory"] == 96 * MiB
    assert spec["memory"]["swap_limit"] == host["MemorySwap"] == 192 * MiB
    assert spec["memory"]["limit"] == int(cgroup_file(cg, "memory", "memory.limit_in_bytes", "memory.max"))
    # --cpus 0.5: quota and period in µs, as cpu.cfs_quota_us / cpu.cfs_period_us (v2: cpu.max "50000 100000")
    assert host["NanoCpus"] == 500_000_000
    if kernel.cgroup_version() == 1:
        quota = int(cgroup_file(cg, "cpu", "cpu.cfs_quota_us", ""))
        period = int(cgroup_file(cg, "cpu", "cpu.cfs_period_us", ""))
        shares = int(cgroup_file(cg, "cpu", "cpu.shares", ""))
    else:
        quota, period = map(int, cgroup_file(cg, "", "", "cpu.max").split())
        weight = int(cgroup_file(cg, "", "", "cpu.weight"))
        shares = 2 + ((weight - 1) * 262142) // 9999
    assert (spec["cpu"]["quota"], spec["cpu"]["period"]) == (quota, period) == (50000, 100000)
    assert spec["cpu"]["limit"] == shares
    assert spec["has_cpu"] and spec["has_memory"] and spec["has_network"] and spec["has_diskio"]
    # Docker's own times, to the microsecond (Go writes Docker's nanoseconds; Lookout keeps microseconds)
    assert seconds(spec["creation_time"]) == pytest.approx(seconds(inspect["Created"]), abs=2e-6)
    assert seconds(spec["start_time"]) == pytest.approx(seconds(inspect["State"]["StartedAt"]), abs=2e-6)

    (stats,) = info["stats"]  # one sample: Lookout keeps no history
    assert abs(seconds(stats["timestamp"]) - time.time()) < 30
    assert stats["cpu"]["usage"]["total"] > 0 and stats["memory"]["usage"] > 0

    # CPU time (ns) and memory (bytes) agree with the kernel's files read just before and after a collection
    def stats_now() -> dict[str, Any]:
        return get_json(a, f"/api/v2.0/stats/{c.id}?type=docker&count=1")[cg][0]

    def collected_after(moment: float) -> dict[str, Any] | None:
        sample = stats_now()
        return sample if seconds(sample["timestamp"]) > moment else None

    last: dict[str, Any] = {}
    for _attempt in range(5):  # memory may still settle right after the start
        cpu_before, memory_before, read_at = kernel.cpu_usage_seconds(cg), kernel.memory_usage_bytes(cg), time.time()
        sample = wait_for(lambda read_at=read_at: collected_after(read_at), INTERVAL + SLACK,
                          message="a collection after the kernel reading")
        cpu_after, memory_after = kernel.cpu_usage_seconds(cg), kernel.memory_usage_bytes(cg)
        last = {"sample_cpu": sample["cpu"]["usage"], "sample_memory": sample["memory"]["usage"],
                "cpu": (cpu_before, cpu_after), "memory": (memory_before, memory_after)}
        served_cpu = sample["cpu"]["usage"]["total"] / 1e9
        # 1 µs: cgroup v2 counts in microseconds; a sleeping container's memory does not move
        if (cpu_before - 1e-6 <= served_cpu <= cpu_after + 1e-6
                and min(memory_before, memory_after) <= sample["memory"]["usage"] <= max(memory_before, memory_after)):
            break
    else:
        pytest.fail(f"/api/v2.0/stats never agreed with {cg}'s cgroup files: {last}")
    assert set(sample) >= {"timestamp", "has_cpu", "cpu", "has_memory", "memory", "has_network", "network",
                           "has_diskio", "diskio", "has_processes", "processes"}
    assert sample["has_cpu"] and sample["has_memory"] and sample["has_network"]
    # cpu_inst from the last two collections, in nanocores: a sleeping container uses next to nothing
    assert 0 <= sample["cpu_inst"]["usage"]["total"] < 0.05 * 1e9
    assert sample["processes"]["process_count"] == 1

    # eth0's counters are the container's /proc/<pid>/net/dev
    pid = inspect["State"]["Pid"]
    seen: dict[str, Any] = {}

    def eth0_agrees() -> bool:
        served = get_json(a, f"/api/v2.0/stats/{c.id}?type=docker&count=1")[cg][0]["network"]["interfaces"]
        proc = kernel.net_dev(pid)["eth0"]
        seen.update(served=served, proc=proc)
        eth0 = [i for i in served if i["name"] == "eth0"]
        return bool(eth0) and (eth0[0]["rx_bytes"], eth0[0]["tx_bytes"]) == (proc["rx_bytes"], proc["tx_bytes"])

    wait_for(eth0_agrees, 4 * (INTERVAL + SLACK), message="eth0 to agree with /proc/<pid>/net/dev",
             describe=lambda: str(seen))

    # v2.0 spec and the recursive Docker listing name the same container
    spec2 = get_json(a, f"/api/v2.0/spec/{c.id[:12]}?type=docker")
    assert list(spec2) == [cg]
    assert spec2[cg]["labels"] == config["Labels"] and spec2[cg]["image"] == IMAGE
    assert spec2[cg]["memory"]["limit"] == 96 * MiB and spec2[cg]["aliases"] == [c.name, c.id]
    every = get_json(a, "/api/v2.0/stats?type=docker&recursive=true&count=1")
    assert cg in every and all(len(samples) == 1 for samples in every.values())
    assert "/" not in every  # only Docker containers

    # gone: 404 with cAdvisor's message, within a collection
    docker("rm", "-f", c.id)
    wait_for(lambda: a.get(f"/api/v1.3/docker/{c.id}").status == 404, INTERVAL + SLACK + 2,
             message="the removed container to be unknown")
    gone = a.get(f"/api/v2.0/stats/{c.id}?type=docker&count=1")
    assert gone.status == 404 and "unable to find container" in gone.text


def test_machine_and_root(agent) -> None:  # type: ignore[no-untyped-def]
    a: AgentProcess = agent()
    machine = get_json(a, "/api/v2.0/machine")
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert machine["memory_capacity"] == int(meminfo["MemTotal"].split()[0]) * 1024
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    assert machine["num_cores"] == sum(1 for line in cpuinfo if line.startswith("processor"))
    assert machine["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert machine == get_json(a, "/api/v1.3/machine")

    root = get_json(a, "/api/v1.3/containers/")
    assert root["name"] == "/" and "id" not in root
    assert root["spec"]["memory"]["limit"] == machine["memory_capacity"]  # the machine's, as cAdvisor's root
    assert any(child["name"] == "/docker" or child["name"].startswith("/system.slice")
               for child in root.get("subcontainers", []))
    (stats,) = root["stats"]
    assert stats["cpu"]["usage"]["total"] > 0
    assert a.get("/api/v1.3/containers/no/such/cgroup").status == 404

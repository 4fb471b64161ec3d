"""cAdvisor's REST API (exporters/web/cadvisor.py) on snapshots made by the real collection code from the fixture trees.

The expected key sets are cAdvisor's Go structs' JSON names, copied field by field from google/cadvisor HEAD 6a0c4f25
(the file and struct are named above each set), minus what Lookout leaves out (``LEFT_OUT``, which docs/API.md lists).
Values are checked against the fixture's own cgroup and Docker files, in cAdvisor's units (ns, µs, bytes).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.model import LiveSurface, Snapshot
from agent.rates import ContainerRates
from exporters.prometheus.exposition import Exposition
from exporters.web import cadvisor, cadvisor_json
from exporters.web.app import make_app
from tests.fixtures.trees import Tree
from tests.unit.support import Run, run_tree

ROOT = Path(__file__).resolve().parents[2]

# --- cAdvisor's JSON names ------------------------------------------------------------------------------------------

# lib/model/container.go ContainerInfo, with its embedded ContainerReference (id, name, aliases, namespace)
CONTAINER_INFO = {"id", "name", "aliases", "namespace", "subcontainers", "spec", "stats"}
# lib/model/container.go ContainerSpec
CONTAINER_SPEC = {"creation_time", "start_time", "labels", "envs", "has_cpu", "cpu", "has_memory", "memory",
                  "has_hugetlb", "has_network", "has_processes", "processes", "has_filesystem", "has_diskio",
                  "has_custom_metrics", "custom_metrics", "image"}
# lib/model/container.go CpuSpec, MemorySpec, ProcessSpec (info/v2/container.go has the same CpuSpec and MemorySpec)
CPU_SPEC = {"limit", "max_limit", "mask", "quota", "period"}
MEMORY_SPEC = {"limit", "reservation", "swap_limit"}
PROCESS_SPEC = {"limit"}
# lib/model/container.go ContainerStats
CONTAINER_STATS = {"timestamp", "cpu", "cpu_inst", "diskio", "memory", "hugetlb", "network", "filesystem",
                   "task_stats", "accelerators", "processes", "custom_metrics", "perf_stats", "perf_uncore_stats",
                   "referenced_memory", "resctrl", "cpuset", "oom_events", "health"}
# lib/model/container.go CpuStats, CpuUsage, CpuCFS, PSIStats, PSIData
CPU_STATS = {"usage", "cfs", "schedstat", "load_average", "load_d_average", "psi"}
CPU_USAGE = {"total", "per_cpu_usage", "user", "system"}
CPU_CFS = {"periods", "throttled_periods", "throttled_time", "bursts_periods", "burst_time"}
PSI_STATS = {"full", "some"}
PSI_DATA = {"total", "avg10", "avg60", "avg300"}
# lib/model/container.go MemoryStats, MemoryStatsMemoryData, MemoryEvents
MEMORY_STATS = {"usage", "max_usage", "cache", "rss", "swap", "mapped_file", "working_set", "total_active_file",
                "total_inactive_file", "file_dirty", "file_writeback", "pgscan", "pgsteal", "workingset_refault_file",
                "workingset_refault_anon", "failcnt", "kernel", "container_data", "hierarchical_data", "psi", "events"}
MEMORY_DATA = {"pgfault", "pgmajfault", "numa_stats"}
MEMORY_EVENTS = {"high", "max"}
# lib/model/container.go DiskIoStats, PerDiskStats
DISKIO_STATS = {"io_service_bytes", "io_serviced", "io_queued", "sectors", "io_service_time", "io_wait_time",
                "io_merged", "io_time", "io_cost_usage", "io_cost_wait", "io_cost_indebt", "io_cost_indelay", "psi"}
PER_DISK = {"device", "major", "minor", "stats"}
# lib/model/container.go InterfaceStats; NetworkStats (InterfaceStats inline, then interfaces, tcp, tcp6, udp, udp6,
# tcp_advanced)
INTERFACE = {"name", "rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets", "tx_errors",
             "tx_dropped"}
NETWORK_V1 = INTERFACE | {"interfaces", "tcp", "tcp6", "udp", "udp6", "tcp_advanced"}
# lib/model/container.go FsStats
FS_STATS = {"device", "type", "capacity", "usage", "base_usage", "available", "has_inodes", "inodes", "inodes_free",
            "reads_completed", "reads_merged", "sectors_read", "read_time", "writes_completed", "writes_merged",
            "sectors_written", "write_time", "io_in_progress", "io_time", "weighted_io_time"}
# lib/model/container.go ProcessStats, Health
PROCESS_STATS = {"process_count", "fd_count", "socket_count", "threads_current", "threads_max", "ulimits"}
HEALTH = {"status"}
# info/v2/container.go ContainerSpec
SPEC_V2 = {"creation_time", "start_time", "aliases", "namespace", "labels", "envs", "has_cpu", "cpu", "has_memory",
           "memory", "has_hugetlb", "has_custom_metrics", "custom_metrics", "has_processes", "processes", "has_network",
           "has_filesystem", "has_diskio", "image"}
# info/v2/container.go DeprecatedContainerStats (what /api/v2.0/stats serves: cmd/internal/api/versions.go statsAPI)
STATS_V2 = {"timestamp", "has_cpu", "cpu", "cpu_inst", "has_diskio", "diskio", "has_memory", "memory", "has_hugetlb",
            "hugetlb", "has_network", "network", "has_processes", "processes", "has_filesystem", "filesystem",
            "has_load", "load_stats", "has_custom_metrics", "custom_metrics", "perf_stats", "perf_uncore_stats",
            "referenced_memory", "resctrl"}
# info/v2/container.go NetworkStats, CpuInstStats, CpuInstUsage
NETWORK_V2 = {"interfaces", "tcp", "tcp6", "udp", "udp6", "tcp_advanced"}
CPU_INST = {"usage"}
CPU_INST_USAGE = {"total", "per_cpu_usage", "user", "system"}
# lib/model/machine.go MachineInfo, FilesystemInfo (DeviceMajor/DeviceMinor are json:"-")
MACHINE = {"timestamp", "vendor_id", "num_cores", "num_physical_cores", "num_sockets", "num_books", "num_drawers",
           "cpu_frequency_khz", "memory_capacity", "swap_capacity", "memory_by_type", "nvm", "hugepages", "machine_id",
           "system_uuid", "boot_id", "filesystems", "disk_map", "network_devices", "topology", "cloud_provider",
           "instance_type", "instance_id"}
FILESYSTEM_INFO = {"device", "capacity", "type", "inodes", "has_inodes"}

# What Lookout does not measure, by struct: never served (docs/API.md lists every one).
LEFT_OUT = {
    "ContainerSpec": {"custom_metrics"},
    "CpuSpec": {"mask"},
    # cpu_inst: cAdvisor's /api/v1.x does not serve it either (only v2 computes it)
    "ContainerStats": {"cpu_inst", "hugetlb", "task_stats", "accelerators", "custom_metrics", "perf_stats",
                       "perf_uncore_stats", "referenced_memory", "resctrl", "cpuset"},
    "CpuStats": {"schedstat", "load_average", "load_d_average"},
    "PSIData": {"avg10", "avg60", "avg300"},
    "MemoryStatsMemoryData": {"numa_stats"},
    "DiskIoStats": {"io_queued", "sectors", "io_service_time", "io_wait_time", "io_merged", "io_time"},
    "NetworkStats": {"tcp", "tcp6", "udp", "udp6", "tcp_advanced"},
    "FsStats": {"type", "base_usage", "available"},
    "ProcessStats": {"ulimits"},
    "v2.ContainerSpec": {"custom_metrics"},
    "v2.DeprecatedContainerStats": {"hugetlb", "load_stats", "custom_metrics", "perf_stats", "perf_uncore_stats",
                                    "referenced_memory", "resctrl"},
    "v2.NetworkStats": {"tcp", "tcp6", "udp", "udp6", "tcp_advanced"},
    "v2.CpuInstUsage": {"per_cpu_usage", "user", "system"},
    "MachineInfo": {"timestamp", "vendor_id", "num_books", "num_drawers", "cpu_frequency_khz", "memory_by_type", "nvm",
                    "hugepages", "disk_map", "network_devices", "topology", "cloud_provider", "instance_type",
                    "instance_id"},
    "FilesystemInfo": {"type"},
}

# Go's time.Time in encoding/json: RFC 3339 with up to nine fraction digits, trailing zeros trimmed.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z\Z")
UINT64_MAX = 18446744073709551615


def parse_time(text: str) -> float:
    assert RFC3339.match(text), text
    return datetime.fromisoformat(text).timestamp()


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture
def v2(tmp_path: Path, make_tree) -> tuple[Tree, Run]:  # type: ignore[no-untyped-def]
    """The v2 Docker (systemd driver) tree: ``api`` (4 GiB, no quota), ``worker`` (0.1 CPU, PSI, io.stat, healthy)."""
    tree = make_tree("v2_docker_systemd")
    return tree, run_tree(tree, "--env-metadata-allowlist", "APP_", tmp=tmp_path)


@pytest.fixture
def v1(tmp_path: Path, make_tree) -> tuple[Tree, Run]:  # type: ignore[no-untyped-def]
    """The v1 Docker (cgroupfs) tree: ``limited`` (--cpus 0.5 --memory 64m --memory-swap 128m), ``labels``,
    ``netshare`` (--network container:labels), raw /docker and /system.slice/ssh.service."""
    tree = make_tree("v1_docker_cgroupfs")
    return tree, run_tree(tree, tmp=tmp_path)


def read_flat(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines() if line.strip())}


def docker_config(tree: Tree, name: str) -> dict[str, Any]:
    return orjson.loads((tree.root / "var/lib/docker/containers" / tree.ids[name] / "config.v2.json").read_bytes())


# --- v1 ContainerInfo ---------------------------------------------------------------------------------------------


def test_v1_container_info_has_cadvisors_fields_for_a_docker_container_on_cgroup_v2(v2: tuple[Tree, Run]) -> None:
    tree, run = v2
    cgroup = tree.cgroups["worker"]
    info = cadvisor.v1_container(run.snapshot, cgroup, 1)
    assert set(info) == CONTAINER_INFO - {"subcontainers"}  # a leaf: no subcontainers (omitempty)
    assert info["name"] == cgroup
    assert info["id"] == tree.ids["worker"]
    assert info["aliases"] == ["worker", tree.ids["worker"]]  # container/docker/handler.go: [name, id]
    assert info["namespace"] == "docker"

    spec = info["spec"]
    assert set(spec) == CONTAINER_SPEC - LEFT_OUT["ContainerSpec"]
    assert set(spec["cpu"]) == CPU_SPEC - LEFT_OUT["CpuSpec"]
    # cpu.max "10000 100000" (µs); cpu.weight 39 -> shares 2 + (38 * 262142) // 9999 = 998 (cAdvisor's conversion)
    assert spec["cpu"] == {"limit": 998, "max_limit": 0, "quota": 10000, "period": 100000}
    # memory.max "max": cAdvisor reads it as math.MaxUint64; memory.min 0 and no swap limit are omitempty
    assert spec["memory"] == {"limit": UINT64_MAX}
    assert spec["processes"] == {}  # pids.max "max": no number to give
    assert spec["labels"] == {"com.docker.compose.project": "shop", "com.docker.compose.service": "worker"}
    assert spec["envs"] == {"app_env": "production"}  # allowlisted APP_ENV, lower-cased as cAdvisor keeps it
    assert spec["image"] == "registry.example.com/shop/worker:2.3.1"
    assert (spec["has_cpu"], spec["has_memory"], spec["has_network"], spec["has_processes"], spec["has_diskio"]) == (
        True, True, True, True, True)
    assert (spec["has_hugetlb"], spec["has_custom_metrics"]) == (False, False)
    config = docker_config(tree, "worker")
    assert config["Created"] == "2026-11-28T04:25:55.935220087Z"
    assert spec["creation_time"] == "2026-11-28T04:25:55.93522Z"  # Lookout keeps microseconds
    assert spec["start_time"] == "2026-11-28T04:25:56.029004Z"  # State.StartedAt

    (stats,) = info["stats"]
    # no writable layer measured yet; memory.events oom_kill 0 (oom_events is omitempty)
    assert set(stats) == CONTAINER_STATS - LEFT_OUT["ContainerStats"] - {"filesystem", "oom_events"}
    sample = run.sample(cgroup)
    assert parse_time(stats["timestamp"]) == pytest.approx(sample.stats.timestamp, abs=1e-6)
    files = tree.cgroup_dirs("worker")[0]

    cpu = stats["cpu"]
    assert set(cpu) == CPU_STATS - LEFT_OUT["CpuStats"]
    assert set(cpu["usage"]) == CPU_USAGE - {"per_cpu_usage"}  # v2 has no per-CPU usage (omitempty)
    assert set(cpu["cfs"]) == CPU_CFS
    assert set(cpu["psi"]) == PSI_STATS and set(cpu["psi"]["some"]) == PSI_DATA - LEFT_OUT["PSIData"]
    cpu_stat = read_flat(files / "cpu.stat")
    assert cpu["usage"] == {"total": cpu_stat["usage_usec"] * 1000, "user": cpu_stat["user_usec"] * 1000,
                            "system": cpu_stat["system_usec"] * 1000}  # ns
    assert cpu["cfs"]["throttled_time"] == cpu_stat["throttled_usec"] * 1000  # ns
    assert cpu["cfs"]["periods"] == cpu_stat["nr_periods"]
    some = re.search(r"^some .*total=(\d+)", (files / "cpu.pressure").read_text(), re.M)
    assert some is not None and cpu["psi"]["some"]["total"] == int(some.group(1))  # µs, as the kernel's

    memory = stats["memory"]
    assert set(memory) == MEMORY_STATS
    assert set(memory["container_data"]) == set(memory["hierarchical_data"]) == MEMORY_DATA - {"numa_stats"}
    assert set(memory["events"]) == MEMORY_EVENTS
    mem_stat = read_flat(files / "memory.stat")
    current = int((files / "memory.current").read_text())
    assert memory["usage"] == current
    assert memory["working_set"] == current - mem_stat["inactive_file"]  # bytes
    assert (memory["cache"], memory["rss"]) == (mem_stat["file"], mem_stat["anon"])
    assert memory["container_data"] == {"pgfault": mem_stat["pgfault"], "pgmajfault": mem_stat["pgmajfault"]}
    assert memory["events"] == {"high": 42, "max": 5}  # cAdvisor's memory.events sample

    diskio = stats["diskio"]
    assert set(diskio) <= DISKIO_STATS - LEFT_OUT["DiskIoStats"]
    assert {"io_service_bytes", "io_serviced", "psi"} <= set(diskio)
    for row in diskio["io_service_bytes"] + diskio["io_serviced"]:
        assert set(row) == PER_DISK
    io = {(r["major"], r["minor"]): r["stats"] for r in diskio["io_service_bytes"]}
    for line in (files / "io.stat").read_text().splitlines():
        dev, *pairs = line.split()
        fields = dict(p.split("=") for p in pairs)
        major, minor = map(int, dev.split(":"))
        assert io[(major, minor)] == {"Read": int(fields["rbytes"]), "Write": int(fields["wbytes"])}  # bytes

    network = stats["network"]
    assert set(network) == NETWORK_V1 - LEFT_OUT["NetworkStats"]
    assert all(set(i) == INTERFACE for i in network["interfaces"])
    # the first interface inline, as cAdvisor's libcontainer handler does "for backwards compatibility"
    assert {k: network[k] for k in INTERFACE} == network["interfaces"][0]
    assert [i["name"] for i in network["interfaces"]] == ["wlp4s0", "em1"]  # lo and docker0 skipped, as cAdvisor

    assert set(stats["processes"]) == PROCESS_STATS - LEFT_OUT["ProcessStats"] - {"threads_max"}  # pids.max "max"
    assert stats["processes"] == {"process_count": 1, "fd_count": 4, "socket_count": 1, "threads_current": 1}
    assert stats["health"] == {"status": "healthy"} and set(stats["health"]) == HEALTH


def test_v1_units_and_limits_on_cgroup_v1(v1: tuple[Tree, Run]) -> None:
    tree, run = v1
    info = cadvisor.v1_container(run.snapshot, tree.cgroups["limited"], 1)
    spec, (stats,) = info["spec"], info["stats"]
    # --cpus 0.5: cpu.cfs_quota_us 50000, cpu.cfs_period_us 100000; cpu.shares 1024
    assert spec["cpu"] == {"limit": 1024, "max_limit": 0, "quota": 50000, "period": 100000}
    # --memory 64m --memory-swap 128m: memory.limit_in_bytes, memory.memsw.limit_in_bytes (bytes); no soft limit
    assert spec["memory"] == {"limit": 64 << 20, "swap_limit": 128 << 20}
    # cpuacct.usage_percpu "692544146 659234355" (ns), cpuacct.stat user 59 / system 75 ticks of 10 ms
    assert stats["cpu"]["usage"] == {"total": 692544146 + 659234355, "per_cpu_usage": [692544146, 659234355],
                                     "user": 590_000_000, "system": 750_000_000}
    assert "psi" not in stats["cpu"] and "psi" not in stats["memory"]  # no PSI on cgroup v1
    assert stats["memory"]["usage"] == 1097728 and stats["memory"]["working_set"] == 1097728 - 32768
    # no interface but lo in its namespace: cAdvisor's zero InterfaceStats inline, no interfaces list
    assert stats["network"] == {k: 0 for k in INTERFACE} | {"name": ""}
    assert stats["health"] == {"status": ""}  # no health check

    unlimited = cadvisor.v1_container(run.snapshot, tree.cgroups["labels"], 1)["spec"]
    assert unlimited["memory"] == {"limit": UINT64_MAX}  # 9223372036854771712 in the file: unlimited
    assert "quota" not in unlimited["cpu"]  # cfs_quota_us -1 (omitempty)

    netshare = cadvisor.v1_container(run.snapshot, tree.cgroups["netshare"], 1)
    assert netshare["spec"]["has_network"] is False and "network" not in netshare["stats"][0]


def test_raw_cgroups_and_the_root(v1: tuple[Tree, Run]) -> None:
    tree, run = v1
    ssh = cadvisor.v1_container(run.snapshot, "/system.slice/ssh.service", 1)
    assert set(ssh) == {"name", "spec", "stats"}  # no id, aliases, namespace for a raw cgroup (omitempty)
    assert ssh["spec"]["creation_time"] == "2026-11-28T04:10:00Z"  # the cgroup directory's mtime (trees.CGROUP_MTIME)
    assert ssh["spec"]["start_time"] == "0001-01-01T00:00:00Z"  # Go's zero time: cAdvisor has none for raw cgroups
    assert "image" not in ssh["spec"] and "labels" not in ssh["spec"]

    root = cadvisor.v1_container(run.snapshot, "/", 1)
    # the child cgroups with containers below them: /system.slice itself has no controller files in the tree
    assert root["subcontainers"] == [{"name": "/docker"}, {"name": "/system.slice"}]
    # the machine's memory, as cAdvisor's raw handler gives the root
    assert root["spec"]["memory"] == {"limit": run.snapshot.machine.memory_bytes}
    (fs,) = root["stats"][0]["filesystem"]
    assert set(fs) <= FS_STATS - LEFT_OUT["FsStats"]
    assert {"device", "capacity", "usage", "has_inodes", "inodes", "inodes_free"} <= set(fs)
    assert fs["has_inodes"] is True and fs["device"] == "/dev/vda"

    machine = cadvisor_json.machine_info(run.snapshot)
    assert set(machine) == MACHINE - LEFT_OUT["MachineInfo"]
    assert machine["filesystems"] == [{"device": "/dev/vda", "capacity": fs["capacity"], "inodes": fs["inodes"],
                                       "has_inodes": True}]
    assert set(machine["filesystems"][0]) == FILESYSTEM_INFO - LEFT_OUT["FilesystemInfo"]
    m = run.snapshot.machine
    assert (machine["num_cores"], machine["memory_capacity"], machine["boot_id"]) == (
        m.cpu_cores, m.memory_bytes, m.boot_id)

    subtree = cadvisor.v1_subcontainers(run.snapshot, "/docker", 1)
    assert [c["name"] for c in subtree] == ["/docker", *sorted(tree.cgroups[k] for k in ("labels", "limited",
                                                                                           "netshare"))]


def test_a_docker_containers_writable_layer(v2: tuple[Tree, Run]) -> None:
    tree, run = v2
    fs_usage, collector = run.agent.fs_usage, run.agent.collector
    assert fs_usage is not None and collector is not None
    fs_usage.measure(collector.docker_containers())  # what the --fs-usage-interval thread does
    snap = run.agent.cycle()
    assert snap is not None
    cgroup = tree.cgroups["api"]
    (fs,) = cadvisor.v1_container(snap, cgroup, 1)["stats"][0]["filesystem"]
    # container/docker/fs.go: capacity of the device, usage, the layer's inodes *used* in inodes, has_inodes false
    assert set(fs) == FS_STATS - LEFT_OUT["FsStats"] - {"reads_completed", "reads_merged", "sectors_read", "read_time",
                                                        "writes_completed", "writes_merged", "sectors_written",
                                                        "write_time", "io_in_progress", "io_time", "weighted_io_time"}
    assert fs["has_inodes"] is False and fs["inodes_free"] == 0
    (stats,) = cadvisor.v2_stats(snap, {}, cgroup, cadvisor.Options())[cgroup]
    assert stats["has_filesystem"] is True and stats["filesystem"] == [fs]


def test_count_zero_answers_no_sample(v2: tuple[Tree, Run]) -> None:
    tree, run = v2
    assert "stats" not in cadvisor.v1_container(run.snapshot, tree.cgroups["api"], 0)  # omitempty
    answer = cadvisor.v2_stats(run.snapshot, {}, tree.cgroups["api"], cadvisor.Options(count=0))
    assert answer == {tree.cgroups["api"]: []}


# --- v2.0 ---------------------------------------------------------------------------------------------------------


def test_v2_stats_fields_and_cpu_inst_from_two_collections(v2: tuple[Tree, Run]) -> None:
    tree, run = v2
    cgroup = tree.cgroups["worker"]
    rates = ContainerRates()
    rates.update(run.snapshot, {})
    cpu_stat = tree.cgroup_dirs("worker")[0] / "cpu.stat"
    before = read_flat(cpu_stat)
    cpu_stat.write_text(cpu_stat.read_text().replace(f"usage_usec {before['usage_usec']}",
                                                     f"usage_usec {before['usage_usec'] + 500_000}"))
    second = run.agent.cycle()
    assert second is not None
    rates.update(second, {})
    now = next(s for s in second.containers if s.info.cgroup == cgroup)
    span = now.stats.timestamp - run.sample(cgroup).stats.timestamp

    answer = cadvisor.v2_stats(second, rates.rates, cgroup, cadvisor.Options(count=1))
    assert list(answer) == [cgroup]
    (stats,) = answer[cgroup]
    assert set(stats) == STATS_V2 - LEFT_OUT["v2.DeprecatedContainerStats"] - {"filesystem"}
    assert set(stats["cpu_inst"]) == CPU_INST
    assert set(stats["cpu_inst"]["usage"]) == CPU_INST_USAGE - LEFT_OUT["v2.CpuInstUsage"]
    # 0.5 s of CPU over the span between the two collections, in nanocores
    assert stats["cpu_inst"]["usage"]["total"] == pytest.approx(0.5 / span * 1e9, rel=1e-5)
    assert stats["cpu"]["usage"]["total"] == (before["usage_usec"] + 500_000) * 1000
    assert set(stats["network"]) == NETWORK_V2 - LEFT_OUT["v2.NetworkStats"]
    assert (stats["has_cpu"], stats["has_memory"], stats["has_network"], stats["has_diskio"],
            stats["has_processes"], stats["has_filesystem"], stats["has_hugetlb"], stats["has_load"]) == (
        True, True, True, True, True, False, False, False)
    assert stats["memory"] == cadvisor.v1_container(second, cgroup, 1)["stats"][0]["memory"]  # v1.MemoryStats

    first = cadvisor.v2_stats(run.snapshot, {}, cgroup, cadvisor.Options())
    assert "cpu_inst" not in first[cgroup][0]  # no previous collection: no rate


def test_v2_spec_fields(v2: tuple[Tree, Run]) -> None:
    tree, run = v2
    cgroup = tree.cgroups["api"]
    answer = cadvisor.v2_spec(run.snapshot, cgroup, cadvisor.Options())
    spec = answer[cgroup]
    assert set(spec) == SPEC_V2 - LEFT_OUT["v2.ContainerSpec"]
    assert spec["aliases"] == ["api", tree.ids["api"]] and spec["namespace"] == "docker"
    assert spec["memory"] == {"limit": 4 << 30}  # memory.max 4 GiB
    assert spec["cpu"] == {"limit": 2597, "max_limit": 0, "period": 100000}  # cpu.max "max 100000", weight 100
    assert set(spec["memory"]) <= MEMORY_SPEC and set(spec["cpu"]) <= CPU_SPEC
    assert set(spec["processes"]) <= PROCESS_SPEC


def test_selection_by_name_docker_id_and_recursion(v2: tuple[Tree, Run]) -> None:
    tree, run = v2
    snap = run.snapshot
    api, worker = tree.cgroups["api"], tree.cgroups["worker"]
    docker = cadvisor.Options(id_type="docker")
    every_docker = cadvisor.Options(id_type="docker", recursive=True, count=1)
    assert list(cadvisor.v2_stats(snap, {}, "/", every_docker)) == sorted([api, worker])
    for key in (tree.ids["worker"], "worker", tree.ids["worker"][:12], "/" + tree.ids["worker"]):
        assert list(cadvisor.v2_stats(snap, {}, cadvisor.container_name(key), docker)) == [worker], key
    assert list(cadvisor.v2_spec(snap, "/api", docker)) == [api]
    # type=name: the exact cgroup, or with recursive it and everything below
    assert list(cadvisor.v2_stats(snap, {}, worker, cadvisor.Options())) == [worker]
    below = cadvisor.v2_stats(snap, {}, "/system.slice", cadvisor.Options(recursive=True))
    assert set(below) == {api, worker, tree.cgroups["ssh"]}
    assert set(cadvisor.v2_stats(snap, {}, "/", cadvisor.Options(recursive=True))) == set(run.cgroups())
    # /api/v1.3/docker/<id>: a map keyed by the container name (cmd/internal/api/versions.go, v1.2 dockerAPI)
    assert list(cadvisor.v1_docker(snap, tree.ids["api"], 1)) == [api]
    assert list(cadvisor.v1_docker(snap, "", 1)) == sorted([api, worker])


@pytest.mark.parametrize(("call", "status"), [
    (lambda s: cadvisor.v1_container(s, "/nope", 1), 404),
    (lambda s: cadvisor.v1_subcontainers(s, "/nope", 1), 404),
    (lambda s: cadvisor.v1_docker(s, "f" * 64, 1), 404),
    (lambda s: cadvisor.v2_stats(s, {}, "/nope", cadvisor.Options()), 404),
    (lambda s: cadvisor.v2_stats(s, {}, "/nope", cadvisor.Options(id_type="docker")), 404),
    (lambda s: cadvisor.v2_spec(s, "/docker", cadvisor.Options(id_type="docker", recursive=True)), 400),
    (lambda s: cadvisor.v2_stats(s, {}, "/", cadvisor.Options(id_type="docker")), 409),  # "" prefixes both
])
def test_unknown_and_ambiguous_containers(v2: tuple[Tree, Run], call, status: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(cadvisor.ApiError) as err:
        call(v2[1].snapshot)
    assert err.value.status == status


def test_go_time() -> None:
    assert cadvisor_json.go_time(None) == cadvisor_json.go_time(0) == "0001-01-01T00:00:00Z"
    assert cadvisor_json.go_time(1795839000.0) == "2026-11-28T04:10:00Z"
    assert cadvisor_json.go_time(1795839000.5) == "2026-11-28T04:10:00.5Z"
    assert cadvisor_json.go_time(1795839000.123456) == "2026-11-28T04:10:00.123456Z"
    assert cadvisor_json.go_time(1795839000.9999996) == "2026-11-28T04:10:01Z"


def test_options_as_cadvisor_parses_them() -> None:
    assert cadvisor.Options.parse({}) == cadvisor.Options("name", 64, False)
    assert cadvisor.Options.parse({"type": "docker", "recursive": "true", "count": "-1"}) == cadvisor.Options(
        "docker", -1, True)
    assert cadvisor.Options.parse({"recursive": "1"}).recursive is False  # only "true"
    for bad in ({"type": "pod"}, {"count": "x"}, {"count": "-2"}):
        with pytest.raises(cadvisor.ApiError) as err:
            cadvisor.Options.parse(bad)
        assert err.value.status == 400


# --- over HTTP, as the agent serves it ------------------------------------------------------------------------------


async def serve(snapshot: Snapshot | None, rates: dict[str, dict[str, float | None]] | None = None) -> TestClient:
    exposition = Exposition(CollectorRegistry())
    exposition.snapshot = snapshot
    live = LiveSurface(rates=lambda: rates or {}, token=lambda: "secret")
    client = TestClient(TestServer(make_app(exposition, live)))
    await client.start_server()
    return client


async def test_http_endpoints_answer_json_without_a_token(v2: tuple[Tree, Run]) -> None:
    tree, run = v2
    snap = run.snapshot
    worker, wid = tree.cgroups["worker"], tree.ids["worker"]
    client = await serve(snap, {worker: {"cpu_cores": 0.25}})
    try:
        async def get(path: str, status: int = 200) -> Any:
            resp = await client.get(path)
            assert resp.status == status, (path, await resp.text())
            if status != 200:
                assert resp.content_type == "text/plain"
                return await resp.text()
            assert resp.content_type == "application/json"
            return orjson.loads(await resp.read())

        assert await get(f"/api/v1.3/containers{worker}") == cadvisor.v1_container(snap, worker, 1)
        assert (await get("/api/v1.3/containers/"))["name"] == "/"
        assert (await get("/api/v1.0/containers"))["name"] == "/"
        assert list(await get(f"/api/v1.3/docker/{wid}")) == [worker]
        assert list(await get(f"/api/v1.2/docker/{wid[:8]}")) == [worker]
        assert len(await get("/api/v1.3/docker/")) == 2
        assert [c["name"] for c in await get("/api/v1.1/subcontainers/system.slice")] == sorted(
            [tree.cgroups["api"], tree.cgroups["ssh"], worker])
        stats = await get(f"/api/v2.0/stats/{wid}?type=docker&count=1")
        assert list(stats) == [worker] and stats[worker][0]["cpu_inst"] == {"usage": {"total": 250_000_000}}
        assert set(await get("/api/v2.0/stats?type=docker&recursive=true&count=1")) == {tree.cgroups["api"], worker}
        assert list(await get(f"/api/v2.0/spec/{wid}?type=docker")) == [worker]
        assert await get("/api/v2.0/machine") == cadvisor_json.machine_info(snap) == await get("/api/v1.3/machine")

        assert "unknown container" in await get("/api/v1.3/containers/nope", 404)
        assert "unable to find container" in await get("/api/v1.3/docker/nope", 404)
        assert "unknown container" in await get("/api/v2.0/stats/nope?count=1", 404)
        assert "'type'" in await get("/api/v2.0/stats/?type=pod", 400)
        assert "Lookout does not serve" in await get("/api/v2.0/summary/", 404)
        assert "Lookout does not serve" in await get("/api/v1.3/events/", 404)
        # v1's optional JSON body: num_stats 0 asks for no sample
        resp = await client.get(f"/api/v1.3/containers{worker}", data=b'{"num_stats": 0}')
        assert "stats" not in orjson.loads(await resp.read())
        # Lookout's own API is untouched by these routes
        assert (await client.get(f"/api/v1/containers/{wid}")).status == 200
    finally:
        await client.close()


async def test_before_the_first_collection_the_api_says_so() -> None:
    client = await serve(None)
    try:
        for path in ("/api/v1.3/containers/", "/api/v2.0/stats/", "/api/v2.0/machine", "/api/v1.3/docker/"):
            resp = await client.get(path)
            assert resp.status == 503 and "nothing collected yet" in await resp.text(), path
    finally:
        await client.close()


# --- the docs -------------------------------------------------------------------------------------------------------


def test_docs_list_every_field_left_out() -> None:
    text = (ROOT / "docs/API.md").read_text()
    start = text.index("## cAdvisor's REST API")
    section = text[start:text.find("\n## ", start + 1) if "\n## " in text[start + 1:] else len(text)]
    missing = sorted(f"{struct}.{name}" for struct, names in LEFT_OUT.items() for name in names
                     if f"`{name}`" not in section)
    assert not missing, f"docs/API.md's cAdvisor section does not name: {missing}"


def test_every_key_served_is_a_cadvisor_key(v1: tuple[Tree, Run], v2: tuple[Tree, Run]) -> None:
    """No invented field anywhere: every key of every answer for every container of both trees is a Go JSON name."""
    go_names = set().union(CONTAINER_INFO, CONTAINER_SPEC, CPU_SPEC, MEMORY_SPEC, CONTAINER_STATS, CPU_STATS, CPU_USAGE,
                           CPU_CFS, PSI_STATS, PSI_DATA, MEMORY_STATS, MEMORY_DATA, MEMORY_EVENTS, DISKIO_STATS,
                           PER_DISK, NETWORK_V1, FS_STATS, PROCESS_STATS, HEALTH, SPEC_V2, STATS_V2, NETWORK_V2,
                           CPU_INST, CPU_INST_USAGE, MACHINE, FILESYSTEM_INFO)

    def keys(value: Any, maps: bool = False) -> set[str]:
        if isinstance(value, list):
            return set().union(*(keys(v) for v in value)) if value else set()
        if not isinstance(value, dict):
            return set()
        if maps:  # a Go map (labels, envs, per-disk stats, answers keyed by name): its keys are data
            return set().union(*(keys(v) for v in value.values())) if value else set()
        out = set(value)
        for k, v in value.items():
            out |= keys(v, maps=k in ("labels", "envs", "stats") and isinstance(v, dict))
        return out

    for _tree, run in (v1, v2):
        snap = run.snapshot
        for cgroup in run.cgroups():
            served = keys(cadvisor.v1_container(snap, cgroup, 1))
            served |= keys(cadvisor.v2_stats(snap, {cgroup: {"cpu_cores": 1.0}}, cgroup, cadvisor.Options()), True)
            served |= keys(cadvisor.v2_spec(snap, cgroup, cadvisor.Options()), True)
            assert served <= go_names, (cgroup, served - go_names)
        assert keys(cadvisor_json.machine_info(snap)) <= go_names

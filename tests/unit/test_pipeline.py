"""The whole pipeline (config -> wiring.build -> Agent.cycle -> render) on each fixture tree.

Expected values are computed by hand from the sample files with cAdvisor's rules
(/work/shared/reference/cadvisor.md sections 1-3): the comments name the file each comes from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.model import Runtime
from agent.wiring import build
from tests.fixtures import trees
from tests.fixtures.trees import Tree
from tests.unit.support import Run, config_from, parse, run_tree, series, value

NS = 1e9


@pytest.fixture
def run(tmp_path: Path, make_tree):  # type: ignore[no-untyped-def]
    def go(name: str, *flags: str) -> tuple[Tree, Run]:
        tree = make_tree(name)
        return tree, run_tree(tree, *flags, tmp=tmp_path)

    return go


def ids(run: Run) -> set[str]:
    return {lab["id"] for _n, lab, _v in parse(run.text) if "id" in lab}


# --- (a) v1 Docker cgroupfs: separate cpu and cpuacct, hybrid host --------------------------------


def test_v1_cgroupfs_containers_and_raw_cgroups(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_docker_cgroupfs")
    assert set(r.cgroups()) == {"/", "/docker", "/system.slice/ssh.service",
                                tree.cgroups["limited"], tree.cgroups["labels"], tree.cgroups["netshare"]}
    assert ids(r) == set(r.cgroups())
    for ignored in tree.ignored:  # the .mount unit has real cgroup files but is never reported
        assert ignored not in ids(r)
    assert r.snapshot.scrape_error is False and r.agent.collector.errors == {}  # type: ignore[union-attr]
    limited = r.sample(tree.cgroups["limited"]).info
    assert (limited.runtime, limited.name, limited.image) == (Runtime.DOCKER, "t1", "lookout-test-busybox")


def test_v1_limited_container_values(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_docker_cgroupfs")
    cid = tree.cgroups["limited"]
    # memory.usage_in_bytes 1097728 - memory.stat total_inactive_file 32768
    assert r.value("container_memory_working_set_bytes", id_=cid) == 1097728 - 32768
    assert r.value("container_memory_usage_bytes", id_=cid) == 1097728
    assert r.value("container_memory_cache", id_=cid) == 208896  # total_cache
    assert r.value("container_memory_rss", id_=cid) == 114688  # total_rss
    assert r.value("container_memory_kernel_usage", id_=cid) == 344064  # memory.kmem.usage_in_bytes
    assert r.value("container_memory_max_usage_bytes", id_=cid) == 4087808
    # v1's memory.stat has these too; cAdvisor leaves them at 0, Lookout reports the kernel's value
    assert r.value("container_memory_workingset_refault_file_total", id_=cid) == 171  # total_workingset_refault_file
    assert r.value("container_memory_pgscan_total", id_=cid) == 0  # no v1 source
    # cpuacct.usage_percpu "692544146 659234355 " (ns)
    assert r.series("container_cpu_usage_seconds_total", id_=cid) == [
        ({"id": cid, "image": "lookout-test-busybox", "name": "t1", "cpu": "cpu00"}, 692544146 / NS),
        ({"id": cid, "image": "lookout-test-busybox", "name": "t1", "cpu": "cpu01"}, 659234355 / NS),
    ]
    # cpuacct.stat user 59 / system 75 USER_HZ ticks
    assert r.value("container_cpu_user_seconds_total", id_=cid) == pytest.approx(0.59)
    assert r.value("container_cpu_system_seconds_total", id_=cid) == pytest.approx(0.75)
    # --cpus 0.5: cpu.cfs_quota_us 50000, cpu.cfs_period_us 100000; cpu.stat nr_periods 1413
    assert r.value("container_spec_cpu_quota", id_=cid) == 50000
    assert r.value("container_spec_cpu_period", id_=cid) == 100000
    assert r.value("container_spec_cpu_shares", id_=cid) == 1024
    assert r.value("container_cpu_cfs_periods_total", id_=cid) == 1413
    assert r.value("container_cpu_cfs_burst_periods_total", id_=cid) == 0  # cpu.stat nr_bursts 0
    assert r.value("container_spec_memory_limit_bytes", id_=cid) == 67108864
    assert r.value("container_spec_memory_swap_limit_bytes", id_=cid) == 134217728  # memsw
    assert r.value("container_spec_memory_reservation_limit_bytes", id_=cid) == 0  # soft limit unlimited
    assert r.value("container_threads_max", id_=cid) == 0  # pids.max "max"
    assert r.value("container_threads", id_=cid) == 2  # pids.current
    assert r.value("container_processes", id_=cid) == 2  # cgroup.procs
    assert r.value("container_file_descriptors", id_=cid) == 6  # 3 fds (/dev/null, 2 pipes) x 2 pids
    assert r.value("container_sockets", id_=cid) == 0
    assert r.value("container_ulimits_soft", id_=cid, ulimit="max_open_files") == 20000
    assert r.value("container_oom_events_total", id_=cid) == 0  # memory.oom_control oom_kill 0
    # Docker's own times (config.v2.json Created / State.StartedAt), not cgroup mtimes
    assert r.value("container_creation_time_seconds", id_=cid) == pytest.approx(1795839291.586790047)
    assert r.value("container_start_time_seconds", id_=cid) == pytest.approx(1795839291.685761325)
    assert r.value("container_health_state", id_=cid) == -1


def test_v1_blkio_rows_and_devices(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_docker_cgroupfs")
    cid = tree.cgroups["limited"]  # coroot's blkio.throttle.io_service_bytes / io_serviced (no _recursive)
    reads = {lab["device"]: v for lab, v in r.series("container_fs_reads_bytes_total", id_=cid)}
    assert reads == {"/dev/sda": 0, "/dev/sdb": 0, "/dev/sdc": 998632854016, "/dev/sdd": 875529547776,
                     "/dev/md1": 10238894080}
    assert r.value("container_fs_writes_total", id_=cid, device="/dev/sdd") == 27906791
    usage = {(lab["major"], lab["minor"], lab["operation"]): v
             for lab, v in r.series("container_blkio_device_usage_total", id_=cid)}
    assert len(usage) == 25  # 5 devices x Read/Write/Sync/Async/Total; the bare "Total N" line is no device
    assert usage[("9", "1", "Total")] == 10238943232
    # Idle containers: the kernel prints only "Total 0": no series.
    assert r.series("container_fs_reads_bytes_total", id_=tree.cgroups["labels"]) == []


def test_v1_unlimited_container_and_labels(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_docker_cgroupfs", "--env-metadata-allowlist", "APP_")
    cid = tree.cgroups["labels"]
    assert r.value("container_spec_memory_limit_bytes", id_=cid) == 0  # 9223372036854771712
    assert r.series("container_spec_cpu_quota", id_=cid) == []  # cpu.cfs_quota_us -1
    assert r.series("container_cpu_cfs_periods_total", id_=cid) == []
    assert r.series("container_cpu_cfs_throttled_seconds_total", id_=cid) == []
    (labels, value), = r.series("container_memory_usage_bytes", id_=cid)
    assert value == 1024000
    assert labels == {
        "id": cid, "name": "lookout-fixture-labels", "image": "lookout-test-busybox",
        "container_label_com_docker_compose_service": "web", "container_label_com_docker_compose_project": "shop",
        "container_label_maintainer_team": "payments", "container_label_version": "1.2.3",
        "container_env_APP_ENV": "production", "container_env_APP_COLOR": "blue",
    }
    assert r.value("container_sockets", id_=cid) == 1  # httpd's socket:[25090]
    assert r.value("container_file_descriptors", id_=cid) == 10  # 3 + 4 + 3


def test_v1_network_only_for_own_netns_and_root(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_docker_cgroupfs")
    # labels: cAdvisor's procnetdev sample in its netns (docker0 and lo filtered)
    labels = {lab["interface"]: v for lab, v in r.series("container_network_receive_bytes_total",
                                                          id_=tree.cgroups["labels"])}
    assert labels == {"wlp4s0": 1, "em1": 315849}
    assert r.value("container_network_transmit_packets_total", id_=tree.cgroups["labels"], interface="em1") == 1173
    assert r.value("container_network_receive_errors_total", id_=tree.cgroups["labels"], interface="wlp4s0") == 3
    assert r.value("container_network_transmit_packets_dropped_total", id_=tree.cgroups["labels"],
                   interface="wlp4s0") == 12
    # netshare: --network container:labels, same file in /proc/<pid>/net/dev, but not its netns
    assert r.series("container_network_receive_bytes_total", id_=tree.cgroups["netshare"]) == []
    # limited: its netns has only lo
    assert r.series("container_network_receive_bytes_total", id_=tree.cgroups["limited"]) == []
    # raw cgroups never; "/" from init's /proc/1/net/dev (the capture host: lo, ifb0, ifb1, eth0)
    assert r.series("container_network_receive_bytes_total", id_="/docker") == []
    assert r.series("container_network_receive_bytes_total", id_="/system.slice/ssh.service") == []
    root = {lab["interface"]: v for lab, v in r.series("container_network_receive_bytes_total", id_="/")}
    assert root == {"ifb0": 0, "ifb1": 0, "eth0": 152882534}


def test_v1_root_cgroup(run) -> None:  # type: ignore[no-untyped-def]
    _tree, r = run("v1_docker_cgroupfs")
    root = trees.HOST_V1 / "root"
    usage = int((root / "memory/memory.usage_in_bytes").read_text())
    stat = dict(line.split() for line in (root / "memory/memory.stat").read_text().splitlines())
    assert r.value("container_memory_working_set_bytes", id_="/") == usage - int(stat["total_inactive_file"])
    assert r.value("container_spec_memory_limit_bytes", id_="/") == 0
    assert r.series("container_spec_cpu_quota", id_="/") == []
    percpu = [int(v) for v in (root / "cpuacct/cpuacct.usage_percpu").read_text().split()]
    assert [v for _l, v in r.series("container_cpu_usage_seconds_total", id_="/")] == [v / NS for v in percpu]
    # statvfs of every block-device filesystem in /proc/1/mounts (/dev/vda, first mount only)
    assert [lab["device"] for lab, _v in r.series("container_fs_limit_bytes", id_="/")] == ["/dev/vda"]


def test_v1_empty_raw_cgroup_has_no_cpu_usage_series(run) -> None:  # type: ignore[no-untyped-def]
    _tree, r = run("v1_docker_cgroupfs")
    ssh = "/system.slice/ssh.service"  # per-CPU "0 0" and cpuacct.usage 0: every series skipped
    assert r.series("container_cpu_usage_seconds_total", id_=ssh) == []
    assert r.value("container_cpu_user_seconds_total", id_=ssh) == 0
    assert r.value("container_memory_working_set_bytes", id_=ssh) == 0
    # raw cgroup times come from the cgroup directories (pinned by the tree builder)
    assert r.value("container_creation_time_seconds", id_=ssh) == trees.CGROUP_MTIME
    assert r.value("container_start_time_seconds", id_=ssh) == trees.CGROUP_MTIME


def test_machine_and_version_info(run) -> None:  # type: ignore[no-untyped-def]
    _tree, r = run("v1_docker_cgroupfs")
    machine = {"boot_id": "0245632b-8e6f-4430-af9e-001beb9cd87d", "machine_id": "3d1219c7c4c5404aaa1f6d2a48adfda4",
               "system_uuid": ""}
    assert r.series("machine_cpu_cores") == [(machine, 2)]
    assert r.value("machine_memory_bytes") == 24683656 * 1024  # MemTotal kB
    assert r.value("machine_swap_bytes") == 0
    assert r.value("machine_cpu_sockets") == 1
    assert r.value("machine_scrape_error") == 0
    assert r.value("container_scrape_error") == 0
    (labels, one), = r.series("cadvisor_version_info")
    assert one == 1
    assert labels["kernelVersion"] == "6.18.44-fc-v769"
    assert labels["osVersion"] == "Debian GNU/Linux 12 (bookworm)"
    assert labels["dockerVersion"] == "Unknown"  # no Engine API (--docker-socket '')


def test_store_container_labels_false_with_allowlist(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_docker_cgroupfs", "--store-container-labels=false",
                  "--container-labels-allowlist", "com.docker.compose.service, version")
    (labels, _v), = r.series("container_memory_usage_bytes", id_=tree.cgroups["labels"])
    assert {k for k in labels if k.startswith("container_label_")} == {
        "container_label_com_docker_compose_service", "container_label_version"}
    # an allowlist alone implies --store-container-labels=false
    tree, r = run("v1_docker_cgroupfs", "--container-labels-allowlist", "maintainer-team")
    (labels, _v), = r.series("container_memory_usage_bytes", id_=tree.cgroups["labels"])
    assert {k for k in labels if k.startswith("container_label_")} == {"container_label_maintainer_team"}
    # and no env labels without an env allowlist
    assert not any(k.startswith("container_env_") for k in labels)


def test_disable_metrics(run) -> None:  # type: ignore[no-untyped-def]
    _tree, r = run("v1_docker_cgroupfs", "--disable-metrics", "network,percpu,process")
    names = {n for n, _l, _v in parse(r.text)}
    assert not any(n.startswith("container_network_") for n in names)
    assert "container_processes" not in names and "container_file_descriptors" not in names
    # percpu off: cpuacct.usage as cpu="total"
    assert {lab["cpu"] for lab, _v in r.series("container_cpu_usage_seconds_total")} == {"total"}


# --- (b) v1 Docker systemd: comounted cpu,cpuacct --------------------------------------------------


def test_v1_systemd_comounted(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_docker_systemd")
    assert set(r.cgroups()) == {"/", "/system.slice/ssh.service", tree.cgroups["io"], tree.cgroups["limited"]}
    io = tree.cgroups["io"]
    assert io == f"/system.slice/docker-{tree.ids['io']}.scope"
    assert r.sample(io).info.name == "lookout-fixture-io"
    # opencontainers' 8-CPU cpuacct.usage_percpu: cpu00..cpu07, zero-padded
    cpus = r.series("container_cpu_usage_seconds_total", id_=io)
    assert [lab["cpu"] for lab, _v in cpus] == [f"cpu0{i}" for i in range(8)]
    assert cpus[0][1] == 1564936537989058 / NS
    # cpuacct.stat user 452278264 ticks x 1e9 / USER_HZ(100)
    assert r.value("container_cpu_user_seconds_total", id_=io) == pytest.approx(4522782.64)
    assert r.value("container_cpu_system_seconds_total", id_=io) == pytest.approx(2914296.64)
    # --cpus 1.5 --pids-limit 100 --memory 256m; coroot's throttled cpu.stat (ns)
    assert r.value("container_spec_cpu_quota", id_=io) == 150000
    assert r.value("container_threads_max", id_=io) == 100
    assert r.value("container_spec_memory_limit_bytes", id_=io) == 268435456
    assert r.value("container_cpu_cfs_throttled_periods_total", id_=io) == 5583849
    assert r.value("container_cpu_cfs_throttled_seconds_total", id_=io) == pytest.approx(254005.032764376)
    assert tree.ignored[0] not in ids(r)


# --- (c) v2 Docker systemd --------------------------------------------------------------------------


def test_v2_docker_systemd(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v2_docker_systemd")
    assert set(r.cgroups()) == {"/", "/system.slice/ssh.service", tree.cgroups["api"], tree.cgroups["worker"]}
    assert tree.ignored[0] not in ids(r)
    api, worker = tree.cgroups["api"], tree.cgroups["worker"]
    # cpu.stat usage_usec x 1000 ns, always cpu="total" on v2
    assert r.series("container_cpu_usage_seconds_total", id_=api) == [
        ({"id": api, "name": "api", "image": "registry.example.com/shop/api:2.3.1",
          "container_label_com_docker_compose_service": "api", "container_label_com_docker_compose_project": "shop",
          "cpu": "total"}, 5531.521992)]
    assert r.value("container_cpu_user_seconds_total", id_=worker) == pytest.approx(3160.014031)
    # memory.current - inactive_file
    assert r.value("container_memory_working_set_bytes", id_=api) == 131047424 - 50204672
    assert r.value("container_memory_working_set_bytes", id_=worker) == 48648192 - 159744
    assert r.value("container_memory_cache", id_=api) == 50835456  # file
    assert r.value("container_memory_rss", id_=api) == 75247616  # anon
    assert r.value("container_memory_mapped_file", id_=api) == 4038656  # file_mapped
    assert r.value("container_memory_file_dirty_bytes", id_=api) == 49152
    assert r.value("container_memory_max_usage_bytes", id_=api) == 0  # no memory.peak
    assert r.value("container_memory_failcnt", id_=api) == 0
    assert r.value("container_memory_kernel_usage", id_=api) == 0
    # cpu.max "max 100000": no quota, no CFS families; "10000 100000": quota and CFS families
    assert r.series("container_spec_cpu_quota", id_=api) == []
    assert r.series("container_cpu_cfs_periods_total", id_=api) == []
    assert r.value("container_spec_cpu_period", id_=api) == 100000
    assert r.value("container_spec_cpu_quota", id_=worker) == 10000
    assert r.value("container_cpu_cfs_periods_total", id_=worker) == 809036
    assert r.value("container_cpu_cfs_throttled_periods_total", id_=worker) == 76
    assert r.value("container_cpu_cfs_throttled_seconds_total", id_=worker) == pytest.approx(0.363166)
    # cpu.weight -> shares: 100 -> 2597, 39 -> 998
    assert r.value("container_spec_cpu_shares", id_=api) == 2597
    assert r.value("container_spec_cpu_shares", id_=worker) == 998
    # memory.max 4294967296 / "max"
    assert r.value("container_spec_memory_limit_bytes", id_=api) == 4294967296
    assert r.value("container_spec_memory_limit_bytes", id_=worker) == 0
    # memory.events high 42, max 5, oom_kill 0
    assert r.value("container_memory_events_high_total", id_=worker) == 42
    assert r.value("container_memory_events_max_total", id_=worker) == 5
    assert r.value("container_oom_events_total", id_=worker) == 0
    # PSI total= µs -> s; absent files -> no series
    assert r.value("container_pressure_cpu_waiting_seconds_total", id_=worker) == pytest.approx(465.907442)
    assert r.value("container_pressure_memory_stalled_seconds_total", id_=worker) == pytest.approx(6934.649214)
    assert r.value("container_pressure_io_waiting_seconds_total", id_=worker) == pytest.approx(17657.662684)
    assert r.series("container_pressure_cpu_waiting_seconds_total", id_=api) == []
    # io.stat: Read/Write only, devices by major:minor
    usage = {(lab["device"], lab["operation"]): v for lab, v in
             r.series("container_blkio_device_usage_total", id_=worker)}
    assert usage == {("/dev/dm-0", "Read"): 11, ("/dev/dm-0", "Write"): 630538240,
                     ("/dev/dm-1", "Read"): 33, ("/dev/dm-1", "Write"): 630538241}
    assert r.value("container_fs_writes_total", id_=worker, device="/dev/dm-0") == 57111
    assert r.value("container_health_state", id_=worker) == 1  # State.Health.Status healthy
    assert r.value("container_health_state", id_=api) == -1


def test_v2_root_and_raw(run) -> None:  # type: ignore[no-untyped-def]
    _tree, r = run("v2_docker_systemd")
    # root: usage = anon + file of /sys/fs/cgroup/memory.stat; no memory.max -> no memory spec
    assert r.value("container_memory_usage_bytes", id_="/") == 790425600 + 6502666240
    assert r.value("container_memory_working_set_bytes", id_="/") == 790425600 + 6502666240 - 5307346944
    for family in ("container_spec_memory_limit_bytes", "container_spec_memory_swap_limit_bytes",
                   "container_spec_memory_reservation_limit_bytes", "container_spec_cpu_shares",
                   "container_spec_cpu_period"):
        assert r.series(family, id_="/") == [], family
    assert r.value("container_cpu_usage_seconds_total", id_="/", cpu="total") == pytest.approx(151.439967)
    # iocost io.stat at the root: rbytes/wbytes on nvme0n1, cost.* (microseconds) as cAdvisor >= 0.55 in seconds
    assert r.value("container_fs_reads_bytes_total", id_="/", device="/dev/nvme0n1") == 4085926524416
    assert r.value("container_fs_io_cost_usage_seconds_total", id_="/", device="/dev/nvme0n1") == 1532.009788
    assert r.value("container_fs_io_cost_wait_seconds_total", id_="/", device="/dev/nvme0n1") == 1477.289869
    assert r.value("container_fs_io_cost_indebt_seconds_total", id_="/", device="/dev/nvme0n1") == 0
    assert r.value("container_fs_io_cost_indelay_seconds_total", id_="/", device="/dev/nvme0n1") == 0
    # no iocost on a container's device: no cost series at all (not zeros)
    assert {lab["id"] for lab, _ in r.series("container_fs_io_cost_usage_seconds_total")} == {"/"}
    # ssh.service: cpu controller not enabled (3-key cpu.stat), no memory controller files
    ssh = "/system.slice/ssh.service"
    assert r.value("container_cpu_usage_seconds_total", id_=ssh, cpu="total") == pytest.approx(151.439967)
    assert r.series("container_memory_usage_bytes", id_=ssh) == []
    assert r.series("container_spec_cpu_shares", id_=ssh) == []
    assert r.series("container_network_receive_bytes_total", id_=ssh) == []
    assert r.value("container_processes", id_=ssh) == 1
    assert r.value("container_threads", id_=ssh) == 1  # no pids.current: cgroup.threads


# --- (d) v2 kubepods + containerd ------------------------------------------------------------------


def test_v2_kubepods_containerd(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v2_kubepods_containerd")
    assert set(r.cgroups()) == {"/", tree.cgroups["pod"], tree.cgroups["sandbox"], tree.cgroups["app"]}
    app, sandbox, pod = tree.cgroups["app"], tree.cgroups["sandbox"], tree.cgroups["pod"]
    (labels, _v), = r.series("container_memory_usage_bytes", id_=app)
    assert labels == {
        "id": app, "name": trees.APP, "image": "docker.io/library/nginx:1.25",
        "pod": "web-7d4b9c8f5-x2x9q", "namespace": "shop", "container": "nginx",
        "container_label_io_kubernetes_pod_name": "web-7d4b9c8f5-x2x9q",
        "container_label_io_kubernetes_pod_namespace": "shop",
        "container_label_io_kubernetes_pod_uid": trees.POD_UID,
        "container_label_io_kubernetes_container_name": "nginx",
    }
    assert r.sample(app).info.runtime is Runtime.CONTAINERD
    # containerd's sandbox: container="" (containerd/cri#922); it owns the pod's netns
    (labels, _v), = r.series("container_memory_usage_bytes", id_=sandbox)
    assert (labels["container"], labels["pod"], labels["namespace"], labels["name"]) == (
        "", "web-7d4b9c8f5-x2x9q", "shop", trees.SANDBOX)
    assert "container_label_io_kubernetes_container_name" not in labels
    net = {lab["interface"] for lab, _v in r.series("container_network_receive_bytes_total", id_=sandbox)}
    assert net == {"wlp4s0", "em1"}
    assert r.series("container_network_receive_bytes_total", id_=app) == []  # shares the sandbox's netns
    # the pod cgroup: raw, pod and namespace from /var/log/pods/<ns>_<pod>_<uid> (uid "_" -> "-")
    (labels, _v), = r.series("container_cpu_usage_seconds_total", id_=pod)
    assert labels == {"id": pod, "pod": "web-7d4b9c8f5-x2x9q", "namespace": "shop", "container": "",
                      "cpu": "total"}
    assert r.series("container_network_receive_bytes_total", id_=pod) == []
    # cpu.weight 39 -> 998 shares; the pause container's weight 1 -> 2
    assert r.value("container_spec_cpu_shares", id_=app) == 998
    assert r.value("container_spec_cpu_shares", id_=sandbox) == 2


# --- (e) v1 kubepods cgroupfs + CRI-O ---------------------------------------------------------------


def test_v1_kubepods_crio(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_kubepods_crio")
    assert set(r.cgroups()) == {"/", tree.cgroups["pod"], tree.cgroups["app"], tree.cgroups["sandbox"]}
    assert tree.ignored[0] not in ids(r)  # crio-conmon-<id>
    app, sandbox = tree.cgroups["app"], tree.cgroups["sandbox"]
    assert r.sample(app).info.runtime is Runtime.CRIO
    (labels, _v), = r.series("container_memory_usage_bytes", id_=app)
    assert (labels["pod"], labels["namespace"], labels["container"], labels["image"]) == (
        trees.CRIO_POD, trees.CRIO_NS, "api", "quay.io/example/api:1.4")
    assert labels["container_label_io_kubernetes_pod_name"] == trees.CRIO_POD
    # CRI-O's sandbox carries container="POD" (io.kubernetes.container.name)
    (labels, _v), = r.series("container_memory_usage_bytes", id_=sandbox)
    assert labels["container"] == "POD"
    assert {lab["interface"] for lab, _v in r.series("container_network_receive_bytes_total", id_=sandbox)} == {
        "wlp4s0", "em1"}
    assert r.series("container_network_receive_bytes_total", id_=app) == []
    # blkio.throttle.io_service_bytes_recursive with Discard rows
    ops = [lab["operation"] for lab, _v in r.series("container_blkio_device_usage_total", id_=app, device="/dev/sda")]
    assert ops == ["Read", "Write", "Sync", "Async", "Discard", "Total"]
    assert r.value("container_fs_reads_bytes_total", id_=app, device="/dev/sdb") == 4223325184
    (labels, _v), = r.series("container_memory_usage_bytes", id_=tree.cgroups["pod"])
    assert (labels["pod"], labels["namespace"], labels["container"]) == (trees.CRIO_POD, trees.CRIO_NS, "")


# --- (f) v2 podman ---------------------------------------------------------------------------------


def test_v2_podman(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v2_podman")
    assert set(r.cgroups()) == {"/", tree.cgroups["web"], tree.cgroups["rootless"]}
    for ignored in tree.ignored:  # the nested "container" cgroups and libpod-conmon
        assert ignored not in ids(r)
    web = tree.cgroups["web"]
    info = r.sample(web).info
    assert (info.runtime, info.name, info.image) == (Runtime.PODMAN, "web", "docker.io/library/nginx:latest")
    # its processes live in the nested cgroup: network from that pid's netns, as cAdvisor (inspect pid)
    assert {lab["interface"] for lab, _v in r.series("container_network_receive_bytes_total", id_=web)} == {
        "wlp4s0", "em1"}
    assert r.value("container_processes", id_=web) == 1
    assert r.value("container_sockets", id_=web) == 1
    assert r.value("container_memory_usage_bytes", id_=web) == 131047424
    # rootless: no containers.json on the host -> id only, runtime still podman
    rootless = r.sample(tree.cgroups["rootless"]).info
    assert (rootless.runtime, rootless.name, rootless.container_id) == (Runtime.PODMAN, "", trees.PODMAN_ROOTLESS)


def test_v2_podman_labels_env_and_state_from_libpod(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v2_podman", "--env-metadata-allowlist", "LOOKOUT_TEST_")
    web = tree.cgroups["web"]
    (labels, _v), = r.series("container_memory_usage_bytes", id_=web)
    assert labels == {
        "id": web, "name": "web", "image": "docker.io/library/nginx:latest",
        "container_label_io_podman_compose_project": "shop", "container_label_com_example_tier": "front",
        "container_label_maintainer": "web team", "container_label_restartcount": "2",
        "container_env_lookout_test_color": "teal",  # cAdvisor's Podman handler lower-cases the key
    }
    info = r.sample(web).info
    # libpod's state: started 2024-11-28T04:24:52.5Z, created 04:24:51.02Z, pid 600
    assert (info.started_at, info.created_at, info.pid) == (1732767892.5, 1732767891.02, 600)
    assert r.value("container_start_time_seconds", id_=web) == 1732767892.5


def test_podman_and_crio_writable_layers(run) -> None:  # type: ignore[no-untyped-def]
    for name, key in (("v2_podman", "web"), ("v1_kubepods_crio", "app")):
        tree, r = run(name)
        cgroup = tree.cgroups[key]
        assert r.series("container_fs_usage_bytes", id_=cgroup) == []  # not measured yet
        fs_usage, collector = r.agent.fs_usage, r.agent.collector
        assert fs_usage is not None and collector is not None
        fs_usage.measure(collector.layered_containers())  # what the --fs-usage-interval thread does
        snap = r.agent.cycle()
        assert snap is not None
        used = value(r.agent.renderer.render(snap), "container_fs_usage_bytes", id_=cgroup)
        assert used >= trees.WRITTEN_BYTES, name


def test_v1_kubepods_crio_env_allowlist(run) -> None:  # type: ignore[no-untyped-def]
    tree, r = run("v1_kubepods_crio", "--env-metadata-allowlist", "LOOKOUT_TEST_",
                  "--container-labels-allowlist", "io.kubernetes.pod.name")
    (labels, _v), = r.series("container_memory_usage_bytes", id_=tree.cgroups["app"])
    assert labels["container_env_LOOKOUT_TEST_TIER"] == "api"
    assert not [k for k in labels if k.startswith("container_env_") and k != "container_env_LOOKOUT_TEST_TIER"]
    assert [k for k in labels if k.startswith("container_label_")] == ["container_label_io_kubernetes_pod_name"]


# --- all trees -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(trees.BUILDERS))
def test_every_tree_renders_valid_exposition(run, name: str) -> None:  # type: ignore[no-untyped-def]
    _tree, r = run(name)
    samples = parse(r.text)
    assert samples
    assert r.agent.collector.errors == {}  # type: ignore[union-attr]
    assert r.value("container_scrape_error") == 0
    # OpenMetrics rendering of the same snapshot parses too
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    om = r.agent.renderer.render(r.snapshot, openmetrics=True) + "# EOF\n"
    assert list(om_parse(om))


def test_a_host_root_without_cgroups_is_counted_shown_and_not_ready(tmp_path: Path) -> None:
    """A wrong --host-root: each cycle counts an error, /metrics says container_scrape_error 1 (and no made-up
    machine_* zeros), and readiness names the reason; liveness is not readiness."""
    empty = tmp_path / "not-a-host"
    empty.mkdir()
    agent = build(config_from(["--host-root", str(empty), "--docker-socket", "", "--state-dir", str(tmp_path / "s")]))
    assert "cgroups" in agent.problems() or "collection" in agent.problems()
    for _ in range(2):
        snapshot = agent.cycle()
        assert snapshot is not None and snapshot.scrape_error
    assert agent.errors()["cgroups"] == 2
    problems = agent.problems()
    assert set(problems) == {"cgroups"} and str(empty) in problems["cgroups"] and "--host-root" in problems["cgroups"]
    text = agent.renderer.render(snapshot)
    assert value(text, "container_scrape_error") == 1 and value(text, "machine_scrape_error") == 1
    assert not series(text, "machine_cpu_cores")
    own = agent.telemetry.registry.get_sample_value("lookout_collector_errors_total", {"collector": "cgroups"})
    assert own == 2


def test_ready_only_after_the_first_collection(tmp_path: Path, make_tree) -> None:  # type: ignore[no-untyped-def]
    agent = build(config_from(make_tree("v1_docker_cgroupfs").args(state_dir=tmp_path / "state")))
    assert agent.problems() == {"collection": "the first collection has not finished"}
    agent.cycle()
    assert agent.problems() == {}

"""The metric kinds beyond the defaults: refused with the reason where they cannot be fed (check-config, run)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import main
from agent.config import ConfigError
from agent.model import ContainerStats, SchedStats, UdpStats
from agent.options import DEFAULT_DISABLED_METRICS, UNSERVED_METRICS
from collectors.cgroups import parsers as p
from collectors.hostkinds import unfed_kinds
from collectors.procstats import ProcKinds, ProcKindsWanted
from exporters.prometheus.optional_getters import ADVANCED_TCP
from tests.fixtures.trees import Tree
from tests.unit.support import Run, config_from, parse, run_tree

MakeTree = Callable[[str], Tree]


def problems(tree: Tree, *flags: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config_from(tree.args(*flags))
    return err.value.problems


@pytest.mark.parametrize("kind", sorted(UNSERVED_METRICS))
def test_kinds_lookout_never_serves_are_refused_by_name_with_the_reason(make_tree: MakeTree, kind: str) -> None:
    tree = make_tree("v2_docker_systemd")
    found = problems(tree, "--enable-metrics", f"cpu,{kind}")
    assert found == [f"--enable-metrics: {kind}: {UNSERVED_METRICS[kind]}"]
    assert kind in DEFAULT_DISABLED_METRICS


def test_each_reason_says_what_is_missing() -> None:
    assert "perf events" in UNSERVED_METRICS["perf_event"]
    assert "custom application metrics" in UNSERVED_METRICS["app"]
    assert "netlink" in UNSERVED_METRICS["cpuLoad"] and "container_tasks_state" in UNSERVED_METRICS["cpuLoad"]


def test_v2_host_refuses_cpuset_and_a_host_without_resctrl_refuses_resctrl(make_tree: MakeTree) -> None:
    tree = make_tree("v2_docker_systemd")
    found = problems(tree, "--enable-metrics", "cpu,cpuset,resctrl")
    assert len(found) == 2, found
    assert found[0].startswith("--enable-metrics: cpuset: ") and "cgroup v2 does not have" in found[0]
    assert found[1] == (f"--enable-metrics: resctrl: no resctrl filesystem is mounted at {tree.root}/sys/fs/resctrl "
                        "(it needs Intel RDT or AMD PQoS and mount -t resctrl resctrl /sys/fs/resctrl)")


def test_v1_host_without_a_hugetlb_mount_refuses_hugetlb(make_tree: MakeTree) -> None:
    tree = make_tree("v1_docker_cgroupfs")
    (found,) = problems(tree, "--enable-metrics", "hugetlb")
    assert found == (f"--enable-metrics: hugetlb: no cgroup v1 hugetlb hierarchy is mounted (no cgroup mount with the "
                     f"hugetlb option in {tree.root}/proc/1/mountinfo)")


def test_proc_kinds_need_their_proc_files(make_tree: MakeTree) -> None:
    tree = make_tree("v2_docker_systemd")
    proc1 = tree.root / "proc/1"
    found = problems(tree, "--enable-metrics", "tcp,udp,advtcp,sched")
    assert f"--enable-metrics: tcp: {proc1}/net/tcp is missing" in found
    assert f"--enable-metrics: udp: {proc1}/net/udp is missing" in found
    assert f"--enable-metrics: advtcp: {proc1}/net/netstat and {proc1}/net/snmp are missing" in found
    assert any(p.startswith("--enable-metrics: sched: the kernel keeps no per-task scheduler") for p in found)


def test_kinds_left_on_by_disable_metrics_are_turned_off_and_listed_not_refused(make_tree: MakeTree) -> None:
    tree = make_tree("v2_docker_systemd")
    c = config_from(tree.args("--disable-metrics", "percpu"))
    assert {"app", "cpuLoad", "perf_event", "cpuset", "resctrl", "tcp"} <= c.metrics_unfed.keys()
    assert c.metrics_unfed.keys() <= c.disabled_metrics
    assert c.metric_enabled("cpu") and not c.metric_enabled("cpuset")


def test_defaults_pass_untouched(make_tree: MakeTree) -> None:
    c = config_from(make_tree("v1_docker_cgroupfs").args())
    assert c.disabled_metrics == DEFAULT_DISABLED_METRICS and not c.metrics_unfed


def test_check_config_names_the_kinds_it_turned_off(make_tree: MakeTree, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree("v2_docker_systemd")
    assert main(["check-config", *tree.args("--disable-metrics", "percpu", state_dir=tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "lookout: metric kind resctrl is not collected on this host: no resctrl filesystem" in out
    assert f"lookout: metric kind perf_event is not collected on this host: {UNSERVED_METRICS['perf_event']}" in out
    assert main(["check-config", *tree.args("--enable-metrics", "cpu,cpuset", state_dir=tmp_path / "s")]) == 2
    assert "--enable-metrics: cpuset: " in capsys.readouterr().err


def test_referenced_memory_refused_when_no_other_process_can_be_read(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for pid in ("1", "50"):
        (tmp_path / "proc" / pid).mkdir(parents=True)
        (tmp_path / "proc" / pid / "cmdline").write_bytes(b"/sbin/init\0")
        (tmp_path / "proc" / pid / "smaps_rollup").write_text("Referenced:  4 kB\n")
    assert unfed_kinds(tmp_path, frozenset({"referenced_memory"})) == {}
    real_open = open

    def deny(path: object, *args: object, **kwargs: object) -> object:
        if str(path).endswith("smaps_rollup"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", deny)
    (why,) = unfed_kinds(tmp_path, frozenset({"referenced_memory"})).values()
    assert why.startswith(f"{tmp_path}/proc/<pid>/smaps_rollup of other processes cannot be read (permission denied")


# --- families, labels and values on the kinds trees ------------------------------------------------------------

ALL_V1 = "cpu,memory,network,hugetlb,memory_numa,cpuset,tcp,udp,advtcp,sched,referenced_memory,cpu_topology"
ALL_V2 = ALL_V1.replace(",cpuset", "")

# cAdvisor's families for these kinds (lib/metrics/prometheus.go, prometheus_machine.go): type and extra labels.
CADVISOR = {
    "container_cpu_schedstat_run_seconds_total": ("counter", ()),
    "container_cpu_schedstat_runqueue_seconds_total": ("counter", ()),
    "container_cpu_schedstat_run_periods_total": ("counter", ()),
    "container_hugetlb_failcnt": ("counter", ("pagesize",)),
    "container_hugetlb_usage_bytes": ("gauge", ("pagesize",)),
    "container_hugetlb_max_usage_bytes": ("gauge", ("pagesize",)),
    "container_memory_migrate": ("gauge", ()),
    "container_memory_numa_pages": ("gauge", ("type", "scope", "node")),
    "container_network_tcp_usage_total": ("gauge", ("tcp_state",)),
    "container_network_tcp6_usage_total": ("gauge", ("tcp_state",)),
    "container_network_udp_usage_total": ("gauge", ("udp_state",)),
    "container_network_udp6_usage_total": ("gauge", ("udp_state",)),
    "container_network_advance_tcp_stats_total": ("gauge", ("tcp_state",)),
    "container_referenced_bytes": ("gauge", ()),
    "machine_cpu_cache_capacity_bytes": ("gauge", ("node_id", "core_id", "type", "level")),
    "machine_thread_siblings_count": ("gauge", ("node_id", "core_id", "thread_id")),
    "machine_node_memory_capacity_bytes": ("gauge", ("node_id",)),
    "machine_node_hugepages_count": ("gauge", ("node_id", "page_size")),
    "machine_node_distance": ("gauge", ("node_id", "target_node_id")),
    "machine_dimm_count": ("gauge", ("type",)),
    "machine_dimm_capacity_bytes": ("gauge", ("type",)),
}
TCP_STATES = ["established", "synsent", "synrecv", "finwait1", "finwait2", "timewait", "close", "closewait",
              "lastack", "listen", "closing"]
# cAdvisor's 99 tcp_state values of container_network_advance_tcp_stats_total, in its order.
_CADVISOR_ADVTCP = (
    "rtoalgorithm rtomin rtomax maxconn activeopens passiveopens attemptfails estabresets currestab insegs outsegs "
    "retranssegs inerrs outrsts incsumerrors embryonicrsts syncookiessent syncookiesrecv syncookiesfailed "
    "prunecalled rcvpruned ofopruned outofwindowicmps lockdroppedicmps tw twrecycled twkilled tcptimewaitoverflow "
    "tcptimeouts tcpspuriousrtos tcplossprobes tcplossproberecovery tcprenorecoveryfail tcpsackrecoveryfail "
    "tcprenofailures tcpsackfailures tcplossfailures delayedacks delayedacklocked delayedacklost listenoverflows "
    "listendrops tcphphits tcppureacks tcphpacks tcprenorecovery tcpsackrecovery tcpsackreneging tcpfackreorder "
    "tcpsackreorder tcprenoreorder tcptsreorder tcpfullundo tcppartialundo tcpdsackundo tcplossundo tcpfastretrans "
    "tcpslowstartretrans tcplostretransmit tcpretransfail tcprcvcollapsed tcpdsackoldsent tcpdsackofosent "
    "tcpdsackrecv tcpdsackoforecv tcpabortondata tcpabortonclose tcpabortonmemory tcpabortontimeout "
    "tcpabortonlinger tcpabortfailed tcpmemorypressures tcpmemorypressureschrono tcpsackdiscard tcpdsackignoredold "
    "tcpdsackignorednoundo tcpmd5notfound tcpmd5unexpected tcpmd5failure tcpsackshifted tcpsackmerged "
    "tcpsackshiftfallback tcpbacklogdrop pfmemallocdrop tcpminttldrop tcpdeferacceptdrop ipreversepathfilter "
    "tcpreqqfulldocookies tcpreqqfulldrop tcpfastopenactive tcpfastopenactivefail tcpfastopenpassive "
    "tcpfastopenpassivefail tcpfastopenlistenoverflow tcpfastopencookiereqd tcpsynretrans tcporigdatasent "
    "pawsactive pawsestab"
)
CADVISOR_ADVTCP = _CADVISOR_ADVTCP.split()
BASE = {"id", "name", "image", "boot_id", "machine_id", "system_uuid"}


@pytest.fixture
def kinds_run(make_tree: MakeTree, tmp_path: Path) -> Callable[[str, str], Run]:
    def run(name: str, kinds: str) -> Run:
        return run_tree(make_tree(name), "--enable-metrics", kinds, tmp=tmp_path)
    return run


def _families(text: str) -> dict[str, tuple[str, set[str]]]:
    """Family name as exposed -> (type, label names), after prometheus_client's parser accepted the text."""
    list(text_string_to_metric_families(text))
    out: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            out[name] = (kind, set())
    for name, labels, _value in parse(text):
        out[name][1].update(labels)
    return out


@pytest.mark.parametrize(("tree", "kinds"), [("v1_kinds", ALL_V1), ("v2_kinds", ALL_V2)])
def test_families_names_types_and_labels_are_cadvisors(kinds_run: Callable[[str, str], Run], tree: str,
                                                        kinds: str) -> None:
    r = kinds_run(tree, kinds)
    found = _families(r.text)
    # OpenMetrics too (gauges named *_total included)
    list(om_families(r.agent.renderer.render(r.snapshot, openmetrics=True) + "# EOF\n"))  # the server adds it
    expected = dict(CADVISOR)
    if tree == "v2_kinds":
        for name in ("container_memory_migrate", "container_hugetlb_max_usage_bytes"):  # no cgroup v2 file
            expected.pop(name)
    for name, (kind, extra) in expected.items():
        assert name in found, name
        assert found[name][0] == kind, name
        assert set(extra) <= found[name][1] and found[name][1] - set(extra) <= BASE | {
            k for k in found[name][1] if k.startswith("container_label_")}, (name, found[name][1])
        assert r.series(name), name
    if tree == "v2_kinds":  # no cgroup v2 file: no sample (the family is announced, as every enabled one)
        assert not r.series("container_memory_migrate") and not r.series("container_hugetlb_max_usage_bytes")
    states = [lab["tcp_state"] for lab, _ in r.series("container_network_advance_tcp_stats_total", id_="/")]
    assert states == [s for s in CADVISOR_ADVTCP if s in states] and len(states) >= 90  # cAdvisor's names and order
    assert set(ADVANCED_TCP) == set(CADVISOR_ADVTCP) and len(ADVANCED_TCP) == 99


def test_default_kinds_read_and_serve_none_of_them(make_tree: MakeTree, tmp_path: Path) -> None:
    r = run_tree(make_tree("v1_kinds"), tmp=tmp_path)
    assert not set(_families(r.text)) & (CADVISOR.keys() - {"machine_dimm_count", "machine_dimm_capacity_bytes"})
    assert set(_families(r.text)) >= {"machine_dimm_count", "machine_dimm_capacity_bytes"}  # EDAC: always read
    for sample in r.snapshot.containers:
        s = sample.stats
        assert (s.hugetlb, s.numa, s.memory_migrate, s.tcp, s.udp, s.tcp_advanced, s.sched, s.referenced_bytes) == (
            None, None, None, None, None, None, None, None)
    assert r.snapshot.machine.topology is None
    assert r.agent.collector is not None and r.agent.collector.proc_kinds is None


def _proc(tree: Tree, pid: int, name: str) -> bytes:
    return (tree.root / "proc" / str(pid) / name).read_bytes()


@pytest.mark.parametrize(("name", "kinds"), [("v1_kinds", ALL_V1), ("v2_kinds", ALL_V2)])
def test_sockets_container_values(make_tree: MakeTree, tmp_path: Path, name: str, kinds: str) -> None:
    tree = make_tree(name)
    r = run_tree(tree, "--enable-metrics", kinds, tmp=tmp_path)
    cid = tree.cgroups["sockets"]
    # httpd on 0.0.0.0:80 and an nc client connected to 127.0.0.1:8080 (v4); httpd on [::]:8081, nc -ll on
    # [::]:8080 and its accepted (v4-mapped) end (v6); syslogd's UDP socket.
    tcp = {lab["tcp_state"]: v for lab, v in r.series("container_network_tcp_usage_total", id_=cid)}
    assert list(tcp) == TCP_STATES and (tcp["listen"], tcp["established"], sum(tcp.values())) == (1, 1, 2)
    tcp6 = {lab["tcp_state"]: v for lab, v in r.series("container_network_tcp6_usage_total", id_=cid)}
    assert (tcp6["listen"], tcp6["established"], sum(tcp6.values())) == (2, 1, 3)
    udp = {lab["udp_state"]: v for lab, v in r.series("container_network_udp_usage_total", id_=cid)}
    assert udp == {"listen": 1, "dropped": 0, "rxqueued": 0, "txqueued": 0}
    assert r.value("container_network_advance_tcp_stats_total", id_=cid, tcp_state="maxconn") == -1
    assert r.value("container_network_advance_tcp_stats_total", id_=cid, tcp_state="currestab") == 2
    # sched: the 9 processes' schedstat summed, in seconds
    sched = [p.parse_schedstat(_proc(tree, pid, "schedstat")) for pid in tree.pids["sockets"]]
    assert r.value("container_cpu_schedstat_run_seconds_total", id_=cid) == pytest.approx(
        sum(s[0] for s in sched if s) / 1e9)
    assert r.value("container_cpu_schedstat_runqueue_seconds_total", id_=cid) == pytest.approx(
        sum(s[1] for s in sched if s) / 1e9)
    assert r.value("container_cpu_schedstat_run_periods_total", id_=cid) == sum(s[2] for s in sched if s)
    referenced = sum(p.parse_referenced_kb(_proc(tree, pid, "smaps_rollup")) for pid in tree.pids["sockets"])
    assert r.value("container_referenced_bytes", id_=cid) == referenced * 1024 > 0
    # the other containers' processes have no schedstat or smaps in the tree: no series, not zeros
    other = tree.cgroups["io" if name == "v1_kinds" else "api"]
    assert not r.series("container_cpu_schedstat_run_seconds_total", id_=other)
    assert not r.series("container_referenced_bytes", id_=other)


def test_v1_hugetlb_numa_and_cpuset(kinds_run: Callable[[str, str], Run]) -> None:
    r = kinds_run("v1_kinds", ALL_V1)
    cid = next(c for c in r.cgroups() if "docker-452f" in c)
    # two 2MB pages held, the reservation limit hit once (.rsvd. files preferred, as cAdvisor)
    assert r.value("container_hugetlb_usage_bytes", id_=cid, pagesize="2MB") == 4194304
    assert r.value("container_hugetlb_max_usage_bytes", id_=cid, pagesize="2MB") == 4194304
    assert r.value("container_hugetlb_failcnt", id_=cid, pagesize="2MB") == 1
    assert r.value("container_hugetlb_usage_bytes", id_=cid, pagesize="1GB") == 0
    assert r.value("container_memory_migrate", id_=cid) == 0
    numa = {(lab["type"], lab["scope"], lab["node"]): v for lab, v in r.series("container_memory_numa_pages", id_=cid)}
    assert numa == {("file", "container", "0"): 1, ("anon", "container", "0"): 119,
                    ("unevictable", "container", "0"): 0, ("file", "hierarchy", "0"): 1,
                    ("anon", "hierarchy", "0"): 119, ("unevictable", "hierarchy", "0"): 0}
    io = r.sample(next(c for c in r.cgroups() if c.endswith(".scope") and "docker-452f" not in c))
    assert io.stats.hugetlb is None and io.stats.memory_migrate is None  # no hugetlb or cpuset dir: no series


def test_v2_hugetlb_and_numa_in_pages(kinds_run: Callable[[str, str], Run]) -> None:
    r = kinds_run("v2_kinds", ALL_V2)
    cid = next(c for c in r.cgroups() if "docker-452f" in c)
    assert r.value("container_hugetlb_usage_bytes", id_=cid, pagesize="2MB") == 4194304
    assert r.value("container_hugetlb_failcnt", id_=cid, pagesize="2MB") == 2  # hugetlb.2MB.events max
    assert not r.series("container_hugetlb_max_usage_bytes")  # v2 keeps no maximum: no series, not 0
    page = os.sysconf("SC_PAGE_SIZE")
    numa = {(lab["type"], lab["node"]): v
            for lab, v in r.series("container_memory_numa_pages", id_=cid, scope="hierarchy")}
    assert numa == {("file", "0"): 1367764992 // page, ("file", "1"): 0, ("anon", "0"): 193236992 // page,
                    ("anon", "1"): 4096 // page, ("unevictable", "0"): 0, ("unevictable", "1"): 0}
    assert not r.series("container_memory_numa_pages", scope="container")  # v2 counts only the subtree


def test_machine_topology_and_dimms(kinds_run: Callable[[str, str], Run]) -> None:
    r = kinds_run("v1_kinds", ALL_V1)
    caches = {(lab["node_id"], lab["core_id"], lab["type"], lab["level"]): v
              for lab, v in r.series("machine_cpu_cache_capacity_bytes")}
    # two cores with their own L1d, L1i and L2; the L3 is shared by both, the node's (core_id "")
    assert caches == {
        **{(("0", c, "Data", "1")): 32768 for c in "01"}, **{("0", c, "Instruction", "1"): 32768 for c in "01"},
        **{("0", c, "Unified", "2"): 524288 for c in "01"}, ("0", "", "Unified", "3"): 16777216}
    assert {(lab["core_id"], lab["thread_id"]): v for lab, v in r.series("machine_thread_siblings_count")} == {
        ("0", "0"): 1, ("1", "1"): 1}
    assert r.value("machine_node_memory_capacity_bytes", node_id="0") == 24683792 * 1024
    assert {lab["page_size"]: v for lab, v in r.series("machine_node_hugepages_count")} == {"2048": 0, "1048576": 0}
    assert r.value("machine_node_distance", node_id="0", target_node_id="0") == 10
    # cAdvisor's EDAC sample: mc0/dimm0 789 MiB DDR4, mc0/dimm1 456 + mc1/dimm0 123 MiB NVRAM; fakes skipped
    assert r.value("machine_dimm_count", type="Unbuffered-DDR4") == 1
    assert r.value("machine_dimm_capacity_bytes", type="Non-volatile-RAM") == (456 + 123) * 1024 * 1024
    assert not r.series("machine_cpu_books") and not r.series("machine_cpu_drawers")  # x86: no books, no series


def test_topology_off_by_default_but_dimms_always(make_tree: MakeTree, tmp_path: Path) -> None:
    r = run_tree(make_tree("v1_kinds"), tmp=tmp_path)
    assert not r.series("machine_cpu_cache_capacity_bytes") and not r.series("machine_node_distance")
    assert r.value("machine_dimm_count", type="Unbuffered-DDR4") == 1


def test_sched_keeps_the_counts_of_exited_processes(tmp_path: Path) -> None:
    for pid, line in ((10, "100 10 1"), (11, "200 20 2")):
        (tmp_path / "proc" / str(pid)).mkdir(parents=True)
        (tmp_path / "proc" / str(pid) / "schedstat").write_text(line + "\n")
    kinds = ProcKinds(tmp_path, ProcKindsWanted(sched=True))
    stats = ContainerStats(0.0)
    kinds.read_sched(stats, "/c", [10, 11])
    assert stats.sched == SchedStats(300, 30, 3)
    (tmp_path / "proc/11/schedstat").unlink()  # pid 11 exited
    (tmp_path / "proc/10/schedstat").write_text("150 15 2\n")
    kinds.read_sched(stats, "/c", [10, 11])
    assert stats.sched == SchedStats(350, 35, 4)  # 150 + pid 11's last 200
    kinds.read_sched(stats, "/c", [10])
    assert stats.sched == SchedStats(350, 35, 4)
    kinds.begin_cycle({"/other"})  # the cgroup is gone: its counts are forgotten
    empty = ContainerStats(0.0)
    kinds.read_sched(empty, "/c", [])
    assert empty.sched is None


def test_udp_queues_follow_the_kernel_column_order() -> None:
    # cAdvisor's testdata/procnetudp: "0000000A:0000000B" is tx_queue:rx_queue (the kernel's header says so);
    # cAdvisor reads it as rx:tx (rxqueued 10, txqueued 11), Lookout as the kernel prints it.
    data = (b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
            b"pointer drops             \n"
            b"  1: 00000000:07D3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 16583 2 "
            b"ffff8800b4549400 0         \n"
            b"  21: 00000000:A841 00000000:0000 07 0000000A:0000000B 00:00000000 00000000  1000        0 114299623 2 "
            b"ffff880338477800 4     \n")
    assert p.parse_udp(data) == UdpStats(listen=2, dropped=4, rx_queued=11, tx_queued=10)


def test_hugepage_size_names() -> None:
    assert [p.hugepage_size_name(n) for n in ("hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB", "x")] == [
        "2MB", "1GB", "64KB", None]


def _put_resctrl(root: Path, groups: dict[str, list[int]]) -> None:
    """A resctrl filesystem as Documentation/arch/x86/resctrl.rst lays it out: two L3 monitoring domains; each
    group's ``tasks`` and ``mon_data/mon_L3_<id>/{llc_occupancy,mbm_total_bytes,mbm_local_bytes}``."""
    base = root / "sys/fs/resctrl"
    (base / "info/L3_MON").mkdir(parents=True)
    (base / "info/L3_MON/mon_features").write_text("llc_occupancy\nmbm_total_bytes\nmbm_local_bytes\n")
    for i, (group, tasks) in enumerate({"": [], **groups}.items()):
        d = base / group
        d.mkdir(parents=True, exist_ok=True)
        (d / "tasks").write_text("".join(f"{t}\n" for t in tasks))
        for domain in (0, 1):
            m = d / f"mon_data/mon_L3_0{domain}"
            m.mkdir(parents=True)
            (m / "llc_occupancy").write_text(f"{16234000 + 1000 * i + domain}\n")
            (m / "mbm_total_bytes").write_text(f"{3355443200 + i}\n")
            (m / "mbm_local_bytes").write_text(f"{16789000 + i}\n")


def test_resctrl_reads_groups_that_hold_exactly_a_containers_threads(make_tree: MakeTree, tmp_path: Path) -> None:
    tree = make_tree("v2_kinds")
    sockets = tree.pids["sockets"]
    _put_resctrl(tree.root, {"mon_groups/web": sockets, "mon_groups/partial": [*tree.pids["api"], 99999]})
    r = run_tree(tree, "--enable-metrics", "cpu,resctrl", tmp=tmp_path)
    cid = tree.cgroups["sockets"]
    assert {lab["node_id"]: v for lab, v in r.series("container_llc_occupancy_bytes", id_=cid)} == {
        "0": 16234000 + 1000, "1": 16234000 + 1001}
    assert r.value("container_memory_bandwidth_bytes", id_=cid, node_id="1") == 3355443201
    assert r.value("container_memory_bandwidth_local_bytes", id_=cid, node_id="0") == 16789001
    assert r.value("container_llc_occupancy_bytes", id_="/", node_id="0") == 16234000  # the resctrl root
    # a group with other tasks besides a container's is not the container's; no group, no series (never created)
    assert not r.series("container_llc_occupancy_bytes", id_=tree.cgroups["api"])
    assert not r.series("container_llc_occupancy_bytes", id_=tree.cgroups["worker"])
    assert not (tree.root / "sys/fs/resctrl/mon_groups" / "cadvisor-").exists()


def test_resctrl_unavailable_counter_gives_no_series(make_tree: MakeTree, tmp_path: Path) -> None:
    tree = make_tree("v2_kinds")
    _put_resctrl(tree.root, {"mon_groups/web": tree.pids["sockets"]})
    (tree.root / "sys/fs/resctrl/mon_groups/web/mon_data/mon_L3_01/mbm_total_bytes").write_text("Unavailable\n")
    r = run_tree(tree, "--enable-metrics", "cpu,resctrl", tmp=tmp_path)
    assert not r.series("container_memory_bandwidth_bytes", id_=tree.cgroups["sockets"])
    assert r.series("container_memory_bandwidth_bytes", id_="/")

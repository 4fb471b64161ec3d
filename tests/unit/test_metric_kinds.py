"""The metric kinds beyond the defaults: refused with the reason where they cannot be fed (check-config, run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import DEFAULT_DISABLED_METRICS, UNSERVED_METRICS, ConfigError
from collectors.hostkinds import unfed_kinds
from tests.fixtures.trees import Tree
from tests.unit.support import config_from

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

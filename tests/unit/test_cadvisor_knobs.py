"""cAdvisor's knobs for what is collected (issue #12): --docker-only, --raw-cgroup-prefix-allowlist,
--disable-root-cgroup-stats, and --storage-duration (accepted, without effect).

Semantics from google/cadvisor HEAD 6a0c4f25: lib/container/raw/factory.go ``CanHandleAndAccept`` (``/`` always; a
non-empty whitelist keeps only raw cgroups with one of its prefixes, with or without --docker_only; else every raw
cgroup unless --docker_only) and lib/container/raw/handler.go ``GetStats`` (nil stats for ``/``, its spec stays).
The fixture trees are those of test_pipeline.py; "never read" is checked by recording every file the cycle opens,
every directory it lists and every path it stats.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import STORAGE_DURATION_NOTE, ConfigError
from agent.model import Runtime
from collectors.discovery import RawFilter, reported
from exporters.web import cadvisor, cadvisor_json
from tests.fixtures.trees import BUILDERS, Tree
from tests.unit.support import Run, config_from, parse, run_tree


class Touched:
    """Paths the collection opened, listed or stat()ed (the walk's scandir/lstat are discovery, not reads)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        for name in ("open", "listdir", "stat", "readlink"):
            real = getattr(os, name)

            def spy(path, *args, _real=real, **kwargs):  # type: ignore[no-untyped-def]
                self.paths.append(os.fsdecode(path))
                return _real(path, *args, **kwargs)

            monkeypatch.setattr(os, name, spy)

    def of(self, directories: list[Path]) -> list[str]:
        """The directories themselves and the files directly in them (a raw cgroup's subdirectories may be
        containers, which are read)."""
        names = {str(d) for d in directories}
        return [p for p in self.paths if p in names or (os.path.dirname(p) in names and not os.path.isdir(p))]

    def below(self, directories: list[Path]) -> list[str]:
        prefixes = tuple(str(d) + "/" for d in directories)
        return [p for p in self.paths if p.startswith(prefixes) or p in {str(d) for d in directories}]


def cgroup_pids(tree: Tree, cgroup: str) -> set[int]:
    pids: set[int] = set()
    for d in tree.cgroup_dirs(cgroup):
        try:
            pids.update(int(line) for line in (d / "cgroup.procs").read_text().split())
        except FileNotFoundError:
            continue
    return pids


def run(tree: Tree, tmp_path: Path, *flags: str) -> Run:
    return run_tree(tree, *flags, tmp=tmp_path)


def ids(r: Run) -> set[str]:
    return {lab["id"] for _n, lab, _v in parse(r.text) if "id" in lab}


@pytest.fixture(params=sorted(BUILDERS))
def tree_name(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


# --- --docker-only --------------------------------------------------------------------------------------------------


def test_docker_only_keeps_runtime_containers_and_the_root_and_never_reads_raw_cgroups(
        tree_name: str, make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree(tree_name)
    everything = run(tree, tmp_path)
    raw = {s.info.cgroup for s in everything.snapshot.containers if s.info.runtime is Runtime.RAW} - {"/"}
    runtime = {s.info.cgroup for s in everything.snapshot.containers if s.info.runtime is not Runtime.RAW}
    assert runtime, "every fixture tree has runtime containers"

    touched = Touched(monkeypatch)
    only = run(tree, tmp_path, "--docker-only")
    monkeypatch.undo()
    assert set(only.cgroups()) == runtime | {"/"}
    assert ids(only) == runtime | {"/"}
    assert kept_series(only) == {line for line in kept_series(everything) if dict(line[1])["id"] in runtime | {"/"}}
    # no file of a dropped raw cgroup was opened (nor its directory stat()ed), nor any of its processes' /proc entries
    for cgroup in raw:
        directories = tree.cgroup_dirs(cgroup)
        assert directories, cgroup
        assert touched.of(directories) == [], cgroup
        own = cgroup_pids(tree, cgroup) - {pid for c in runtime | {"/"} for pid in cgroup_pids(tree, c)}
        assert touched.below([tree.root / "proc" / str(pid) for pid in own]) == [], cgroup
    assert only.agent.collector.errors == {}  # type: ignore[union-attr]


def kept_series(r: Run) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every container series but container_last_seen (the collection's time) and the root's filesystems (statvfs of
    the real host's mounts: they change between two collections)."""
    return {(n, tuple(sorted(lab.items())), v) for n, lab, v in parse(r.text)
            if "id" in lab and n != "container_last_seen" and not (lab["id"] == "/" and n.startswith("container_fs_"))}


def test_docker_only_drops_pod_cgroups_and_slices_but_not_cri_containers(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree("v2_kubepods_containerd")
    r = run(tree, tmp_path, "--docker-only")
    assert tree.cgroups["pod"] not in r.cgroups()
    kept = [s.info for s in r.snapshot.containers if s.info.cgroup != "/"]
    assert kept and all(info.runtime is Runtime.CONTAINERD and info.pod for info in kept)


# --- --raw-cgroup-prefix-allowlist ----------------------------------------------------------------------------------


@pytest.mark.parametrize("docker_only", [False, True])
def test_prefix_allowlist_keeps_only_matching_raw_cgroups(make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                          docker_only: bool) -> None:
    """cAdvisor applies its whitelist with or without --docker_only: a non-empty list is the set of raw cgroups kept."""
    tree = make_tree("v1_docker_cgroupfs")
    touched = Touched(monkeypatch)
    r = run(tree, tmp_path, "--raw-cgroup-prefix-allowlist", "/system.slice/", *(["--docker-only"] * docker_only))
    monkeypatch.undo()
    containers = {tree.cgroups[k] for k in ("limited", "labels", "netshare")}
    assert set(r.cgroups()) == {"/", "/system.slice/ssh.service"} | containers
    assert touched.of(tree.cgroup_dirs("/docker")) == []  # the parent of the containers is not read
    ssh = r.sample("/system.slice/ssh.service").stats
    assert ssh.cpu is not None and ssh.memory is not None


def test_prefixes_are_plain_string_prefixes_of_the_cgroup_name() -> None:
    keep = RawFilter(prefixes=("/system.slice",)).keeps
    assert keep("/system.slice") and keep("/system.slice/ssh.service") and keep("/system.slice2")
    assert not keep("/user.slice") and keep("/")
    slash = RawFilter(prefixes=("/system.slice/",)).keeps
    assert not slash("/system.slice") and slash("/system.slice/cron.service")
    assert RawFilter().keeps("/user.slice") and not RawFilter(docker_only=True).keeps("/user.slice")
    assert RawFilter(docker_only=True).keeps("/")


def test_reported_is_sorted_and_filters_only_raw_cgroups() -> None:
    cid = "b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f"
    found = {"/", "/docker", f"/docker/{cid}", "/system.slice", "/system.slice/ssh.service",
             f"/system.slice/docker-{cid}.scope", "/system.slice/var-lib-docker-x.mount"}
    assert [r.cgroup for r in reported(found)] == sorted(found - {"/system.slice/var-lib-docker-x.mount"})
    assert [r.cgroup for r in reported(found, RawFilter(docker_only=True))] == [
        "/", f"/docker/{cid}", f"/system.slice/docker-{cid}.scope"]
    assert [r.cgroup for r in reported(found, RawFilter(prefixes=("/system.slice/s",)))] == [
        "/", f"/docker/{cid}", f"/system.slice/docker-{cid}.scope", "/system.slice/ssh.service"]


# --- --disable-root-cgroup-stats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v1_docker_cgroupfs", "v2_docker_systemd"])
def test_disable_root_cgroup_stats_keeps_the_roots_spec_and_the_machine(make_tree, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        name: str) -> None:
    tree = make_tree(name)
    before = run(tree, tmp_path)
    touched = Touched(monkeypatch)
    r = run(tree, tmp_path, "--disable-root-cgroup-stats")
    monkeypatch.undo()
    root = r.sample("/").stats
    assert (root.cpu, root.memory, root.blkio, root.network, root.filesystems, root.pressure, root.processes,
            root.oom_kills) == (None,) * 8
    assert root.spec == before.sample("/").stats.spec
    families = {n for n, lab, _v in parse(r.text) if lab.get("id") == "/"}
    # as cAdvisor's Prometheus collector for a container without stats: creation/start time and the spec families;
    # Lookout also keeps container_last_seen and container_health_state (-1), which it writes for every container
    # the cycle saw (cAdvisor's come with the stats)
    assert families == {n for n, lab, _v in parse(before.text) if lab.get("id") == "/" and (
        n.startswith("container_spec_") or n in ("container_start_time_seconds", "container_creation_time_seconds",
                                                 "container_last_seen", "container_health_state"))}
    assert "container_cpu_usage_seconds_total" not in families and "container_fs_usage_bytes" not in families
    machine = {(n, v) for n, _lab, v in parse(r.text) if n.startswith("machine_")}
    assert machine == {(n, v) for n, _lab, v in parse(before.text) if n.startswith("machine_")}
    # the other containers are untouched
    assert ({line for line in kept_series(r) if dict(line[1])["id"] != "/"}
            == {line for line in kept_series(before) if dict(line[1])["id"] != "/"})
    # nothing of the root's usage was read: no stats file of the root cgroup, no /proc/1/net/dev, no statvfs
    stats_files = ("memory.stat", "cpu.stat", "cpuacct.usage_percpu", "io.stat", "blkio.throttle.io_service_bytes",
                   "cgroup.procs", "memory.usage_in_bytes", "cpu.pressure")
    root_files = [p for p in touched.paths for d in tree.cgroup_dirs("/") if p in {f"{d}/{f}" for f in stats_files}]
    assert root_files == []
    assert str(tree.root / "proc/1/net/dev") not in touched.paths
    assert str(tree.root / "proc/diskstats") not in touched.paths
    # cAdvisor's API still answers for / (no stats), and the machine (no filesystems: Lookout takes them from /)
    answer = cadvisor.v1_container(r.snapshot, "/", 1)
    assert answer["spec"]["memory"] == {"limit": r.snapshot.machine.memory_bytes}
    assert "filesystems" not in cadvisor_json.machine_info(r.snapshot)


# --- configuration --------------------------------------------------------------------------------------------------


def test_defaults_change_nothing(tmp_path: Path) -> None:
    c = config_from(["--state-dir", str(tmp_path)])
    assert (c.docker_only, c.raw_cgroup_prefix_allowlist, c.disable_root_cgroup_stats, c.storage_duration) == (
        False, (), False, None)


def test_flags_env_and_toml(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    c = config_from(["--state-dir", state, "--docker-only", "--raw-cgroup-prefix-allowlist", "/system.slice/,/kube",
                     "--disable-root-cgroup-stats=true", "--storage-duration", "2m"])
    assert (c.docker_only, c.raw_cgroup_prefix_allowlist, c.disable_root_cgroup_stats, c.storage_duration) == (
        True, ("/system.slice/", "/kube"), True, 120.0)
    env = {"LOOKOUT_DOCKER_ONLY": "true", "LOOKOUT_RAW_CGROUP_PREFIX_ALLOWLIST": "/system.slice/",
           "LOOKOUT_DISABLE_ROOT_CGROUP_STATS": "1", "LOOKOUT_STORAGE_DURATION": "1m"}
    c = config_from(["--state-dir", state], env)
    assert (c.docker_only, c.raw_cgroup_prefix_allowlist, c.disable_root_cgroup_stats, c.storage_duration) == (
        True, ("/system.slice/",), True, 60.0)
    assert config_from(["--state-dir", state, "--docker-only=false"], env).docker_only is False  # the flag wins
    toml = tmp_path / "lookout.toml"
    # TOML keys: the flag names; cAdvisor's underscores work as for every key
    toml.write_text('docker-only = true\nraw_cgroup_prefix_allowlist = ["/system.slice/", "/user.slice/"]\n'
                    'disable_root_cgroup_stats = true\nstorage-duration = 120\n')
    c = config_from(["--state-dir", state, "--config", str(toml)])
    assert (c.docker_only, c.raw_cgroup_prefix_allowlist, c.disable_root_cgroup_stats, c.storage_duration) == (
        True, ("/system.slice/", "/user.slice/"), True, 120.0)


def test_bad_values_are_reported_together(tmp_path: Path) -> None:
    toml = tmp_path / "lookout.toml"
    toml.write_text('docker-only = "maybe"\nraw_cgroup_prefix_whitelist = "/x"\n')
    with pytest.raises(ConfigError) as err:
        config_from(["--state-dir", str(tmp_path / "s"), "--config", str(toml), "--disable-root-cgroup-stats", "2",
                     "--raw-cgroup-prefix-allowlist", "system.slice,/user.slice", "--storage-duration", "soon"])
    problems = err.value.problems
    assert any(p.startswith("--config: docker-only in ") for p in problems)
    assert any("unknown setting 'raw_cgroup_prefix_whitelist'" in p and "(Lookout calls it "
               "raw-cgroup-prefix-allowlist)" in p for p in problems)
    assert any(p.startswith("--disable-root-cgroup-stats: ") for p in problems)
    assert "--raw-cgroup-prefix-allowlist: 'system.slice' would match no cgroup: cgroup names start with / " \
           "(e.g. '/system.slice')" in problems
    assert any(p.startswith("--storage-duration: expected a duration") for p in problems)
    assert len(problems) == 5


def test_cadvisor_spellings_are_named_in_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check-config", "--state-dir", str(tmp_path), "--docker_only", "-raw_cgroup_prefix_whitelist=/x",
            "--disable_root_cgroup_stats=true", "--storage_duration=2m", "--whitelisted_container_labels=a",
            "--no-such-flag"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for cadvisor_flag, ours in (("--docker_only", "docker-only"), ("-raw_cgroup_prefix_whitelist",
                                                                   "raw-cgroup-prefix-allowlist"),
                                ("--disable_root_cgroup_stats", "disable-root-cgroup-stats"),
                                ("--storage_duration", "storage-duration"),
                                ("--whitelisted_container_labels", "container-labels-allowlist")):
        assert f"unknown flag '{cadvisor_flag}' (Lookout spells it --{ours})" in err
    assert "unknown flag '--no-such-flag';" in err or err.rstrip().endswith("unknown flag '--no-such-flag'")


def test_storage_duration_is_accepted_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--state-dir", str(tmp_path), "--storage-duration", "2m"]) == 0
    assert f"lookout: {STORAGE_DURATION_NOTE}\n" in capsys.readouterr().out
    assert main(["check-config", "--state-dir", str(tmp_path)]) == 0
    assert "storage-duration" not in capsys.readouterr().out


def test_storage_duration_changes_nothing_collected(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree("v2_docker_systemd")
    plain, with_flag = run(tree, tmp_path), run(tree, tmp_path, "--storage-duration", "2m")
    assert plain.cgroups() == with_flag.cgroups()
    assert {n for n, _l, _v in parse(plain.text)} == {n for n, _l, _v in parse(with_flag.text)}

"""HostReader.add_process_stats: exact descriptor counts every cycle, socket counts kept between recounts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from agent.model import ProcessStats
from collectors import host
from collectors.host import SOCKET_RECOUNT_CYCLES, HostReader

LIMITS = b"Limit                     Soft Limit           Hard Limit           Units\n" \
         b"Max open files            1024                 4096                 files\n"


def make_pid(root: Path, pid: int, files: int, sockets: int) -> None:
    fd = root / "proc" / str(pid) / "fd"
    fd.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(fd):
        (fd / name).unlink()
    for i in range(files):
        (fd / str(i)).symlink_to(f"/var/log/file{i}")
    for i in range(files, files + sockets):
        (fd / str(i)).symlink_to(f"socket:[{1000 + i}]")
    (root / "proc" / str(pid) / "limits").write_bytes(LIMITS)


def cycle(reader: HostReader, pids: list[int]) -> ProcessStats:
    reader.begin_cycle()
    proc = ProcessStats()
    reader.add_process_stats(proc, pids)
    return proc


def test_first_cycle_counts_everything(tmp_path: Path) -> None:
    make_pid(tmp_path, 10, files=5, sockets=3)
    make_pid(tmp_path, 11, files=2, sockets=1)
    proc = cycle(HostReader(tmp_path), [10, 11, 99])  # 99 has exited
    assert (proc.file_descriptors, proc.sockets, proc.ulimit_nofile) == (11, 4, 1024)


def test_fake_tree_is_not_trusted_for_fd_sizes(tmp_path: Path) -> None:
    for pid in (10, 11, 12):
        make_pid(tmp_path, pid, files=5, sockets=3)
    reader = HostReader(tmp_path)
    assert cycle(reader, [10]).file_descriptors == 8
    assert reader.fd_size_counts is None  # one disagreement may be a race
    assert cycle(reader, [10, 11, 12]).file_descriptors == 24
    assert reader.fd_size_counts is False  # an ext4/tmpfs directory's size is not its entry count


def test_changed_descriptor_count_recounts_sockets_at_once(tmp_path: Path) -> None:
    make_pid(tmp_path, 10, files=5, sockets=3)
    reader = HostReader(tmp_path)
    cycle(reader, [10])
    make_pid(tmp_path, 10, files=5, sockets=7)
    proc = cycle(reader, [10])
    assert (proc.file_descriptors, proc.sockets) == (12, 7)


def test_same_count_other_kinds_is_recounted_within_the_cadence(tmp_path: Path) -> None:
    pids = list(range(100, 100 + SOCKET_RECOUNT_CYCLES))
    for pid in pids:
        make_pid(tmp_path, pid, files=5, sockets=3)
    reader = HostReader(tmp_path)
    cycle(reader, pids)
    for pid in pids:
        make_pid(tmp_path, pid, files=6, sockets=2)  # same number of descriptors, one socket fewer
    seen = []
    for _ in range(SOCKET_RECOUNT_CYCLES):
        proc = cycle(reader, pids)
        assert proc.file_descriptors == 8 * len(pids)  # always exact
        seen.append(proc.sockets)
    # Staggered by pid: one process per cycle here, and all of them within the cadence.
    assert seen == [3 * len(pids) - i for i in range(1, SOCKET_RECOUNT_CYCLES + 1)]
    assert cycle(reader, pids).sockets == 2 * len(pids)


def test_new_and_reused_pids(tmp_path: Path) -> None:
    make_pid(tmp_path, 10, files=1, sockets=1)
    reader = HostReader(tmp_path)
    cycle(reader, [10])
    make_pid(tmp_path, 20, files=0, sockets=4)
    assert cycle(reader, [10, 20]).sockets == 5  # a new process is counted at once
    cycle(reader, [20])  # 10 exited: forgotten after a cycle without it
    make_pid(tmp_path, 10, files=0, sockets=2)  # a new process reusing pid 10, same descriptor count
    assert cycle(reader, [10, 20]).sockets == 6


def test_fd_size_counts_when_procfs_reports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a procfs whose fd-dir size is the count, the cached cycles do one stat per process."""
    make_pid(tmp_path, 10, files=5, sockets=3)
    real_stat, real_listdir = os.stat, os.listdir

    def procfs_stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        st = real_stat(path, *args, **kwargs)
        if str(path).endswith("/fd"):
            return os.stat_result((*st[:6], len(real_listdir(path)), *st[7:]))
        return st

    monkeypatch.setattr(host.os, "stat", procfs_stat)
    listed = []
    monkeypatch.setattr(host.os, "listdir", lambda path: listed.append(path) or real_listdir(path))
    reader = HostReader(tmp_path)
    assert cycle(reader, [10]).sockets == 3
    assert reader.fd_size_counts is True
    listed.clear()
    cycles = [cycle(reader, [10]) for _ in range(SOCKET_RECOUNT_CYCLES - 1)]
    assert all((p.file_descriptors, p.sockets) == (8, 3) for p in cycles)
    assert len(listed) <= 1  # only the cycle where pid 10 is due lists the directory
    make_pid(tmp_path, 10, files=1, sockets=1)
    assert (lambda p: (p.file_descriptors, p.sockets))(cycle(reader, [10])) == (2, 1)


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = platform.release().split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


@pytest.mark.skipif(not _kernel_at_least(6, 2), reason="stat(/proc/<pid>/fd).st_size counts fds since Linux 6.2")
def test_real_procfs_fd_size() -> None:
    # A child that says when it is done starting (a program opens and closes files while it starts: `sleep`
    # was seen with 3 descriptors, then 4) and then holds still.
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; print('ready', flush=True); time.sleep(30)"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        reader = HostReader(Path("/"))
        first = cycle(reader, [child.pid])
        assert reader.fd_size_counts is True
        assert [cycle(reader, [child.pid]).file_descriptors for _ in range(3)] == [first.file_descriptors] * 3
    finally:
        child.kill()
        child.wait()


def test_nofile_limit_is_reread_within_the_cadence(tmp_path: Path) -> None:
    make_pid(tmp_path, 10, files=1, sockets=0)
    reader = HostReader(tmp_path)
    assert cycle(reader, [10]).ulimit_nofile == 1024
    (tmp_path / "proc/10/limits").write_bytes(LIMITS.replace(b"1024  ", b"65536 "))
    seen = [cycle(reader, [10]).ulimit_nofile for _ in range(SOCKET_RECOUNT_CYCLES)]
    assert seen[-1] == 65536 and set(seen) <= {1024, 65536}

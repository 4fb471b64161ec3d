"""The root container's filesystems: statvfs per mounted block device and its /proc/diskstats counters."""

from __future__ import annotations

import os
from pathlib import Path

from agent.model import ContainerInfo, ContainerStats, DiskStats
from collectors.host import HostFilesystems
from exporters.prometheus.table import FAMILIES


def _host(tmp_path: Path, diskstats: str) -> Path:
    root = tmp_path / "host"
    (root / "proc/1").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "proc/1/mounts").write_text("/dev/sdz1 / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n"
                                        "/dev/sdz2 /data xfs rw 0 0\n/dev/sdz9 /missing xfs rw 0 0\n")
    (root / "proc/diskstats").write_text(diskstats)
    return root


def test_each_filesystem_gets_its_devices_diskstats(tmp_path: Path) -> None:
    dev = os.stat(tmp_path).st_dev
    line = f"{os.major(dev):4d} {os.minor(dev):7d} sdz1 100 2 800 30 50 1 400 20 3 45 60 0 0 0 0\n"
    root = _host(tmp_path, "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0\n" + line)
    fss = HostFilesystems(root).stats()
    assert [f.device for f in fss] == ["/dev/sdz1", "/dev/sdz2"]  # /missing cannot be statvfs'd: skipped
    want = DiskStats(reads=100, reads_merged=2, sectors_read=800, read_ms=30, writes=50, writes_merged=1,
                     sectors_written=400, write_ms=20, in_progress=3, io_ms=45, weighted_io_ms=60)
    assert all(f.disk == want for f in fss)  # both mount points live on the test's file system

    stats = ContainerStats(timestamp=0.0, filesystems=fss)
    info = ContainerInfo(cgroup="/")
    served = {f.name: f.get(info, stats) for f in FAMILIES if f.name.startswith("container_fs_")}
    assert served["container_fs_read_seconds_total"] == [(',device="/dev/sdz1"', 0.03), (',device="/dev/sdz2"', 0.03)]
    assert served["container_fs_io_time_weighted_seconds_total"][0] == (',device="/dev/sdz1"', 0.06)
    assert served["container_fs_io_current"][1] == (',device="/dev/sdz2"', 3)
    assert served["container_fs_sector_writes_total"][0][1] == 400
    assert served["container_fs_reads_total"] == [(',device="/dev/sdz1"', 100), (',device="/dev/sdz2"', 100)]


def test_no_diskstats_no_io_series(tmp_path: Path) -> None:
    root = _host(tmp_path, "")
    fss = HostFilesystems(root).stats()
    assert fss and all(f.disk is None for f in fss)
    stats = ContainerStats(timestamp=0.0, filesystems=fss)
    served = {f.name: f.get(ContainerInfo(cgroup="/"), stats) for f in FAMILIES}
    assert served["container_fs_io_time_seconds_total"] == [] and served["container_fs_reads_total"] == []
    assert served["container_fs_usage_bytes"]  # statvfs still served

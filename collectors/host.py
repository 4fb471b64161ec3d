"""Host-level facts from procfs and sysfs under ``--host-root``: machine info, network, processes, filesystems."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from agent.model import FilesystemStats, InterfaceStats, MachineInfo, ProcessStats
from collectors.cgroups.parsers import parse_net_dev, parse_nofile_soft
from collectors.cgroups.reader import read_file
from collectors.diskstats import parse_diskstats
from collectors.topology import count_ids, read_dimms, read_topology

# Filesystems that hold no user data, never reported for the root cgroup.
_PSEUDO_FS = frozenset({"tmpfs", "devtmpfs", "overlay", "squashfs", "nsfs", "proc", "sysfs", "cgroup",
                        "cgroup2", "autofs", "fuse.lxcfs"})


def _text(path: Path) -> str:
    """The file's text (bytes that are not UTF-8 replaced: one damaged file must not cost the rest), or ""."""
    try:
        return path.read_bytes().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def read_machine_info(host_root: Path, topology: bool = False) -> MachineInfo:
    """The machine facts; ``topology`` (the ``cpu_topology`` kind) adds the NUMA nodes, cores and caches."""
    info = MachineInfo()
    cpuinfo = _text(host_root / "proc/cpuinfo")
    processors, sockets, cores = 0, set(), set()
    books, drawers = set(), set()  # s390x
    physical = "0"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        elif key == "physical id":
            physical = value
            sockets.add(value)
        elif key == "core id":
            cores.add((physical, value))
        elif key == "book id":
            books.add(value)
        elif key == "drawer id":
            drawers.add(value)
    root = str(host_root).rstrip("/")
    info.cpu_cores = processors or os.cpu_count() or 0
    # cpuinfo without "physical id"/"core id" (arm64, s390x): sysfs topology, as cAdvisor falls back to.
    info.cpu_sockets = len(sockets) or count_ids(root, "physical_package_id") or 1
    info.cpu_physical_cores = len(cores) or count_ids(root, "core_id") or info.cpu_cores
    info.cpu_books = len(books) or count_ids(root, "book_id")
    info.cpu_drawers = len(drawers) or count_ids(root, "drawer_id")
    info.dimms = read_dimms(root)
    if topology:
        info.topology = read_topology(root)
    for line in _text(host_root / "proc/meminfo").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "SwapTotal"):
            words = value.split()
            if not words or not (words[0].isascii() and words[0].isdigit()):
                continue  # damaged: no number
            amount = int(words[0]) * 1024
            if key == "MemTotal":
                info.memory_bytes = amount
            else:
                info.swap_bytes = amount
    info.boot_id = _text(host_root / "proc/sys/kernel/random/boot_id")
    info.machine_id = _text(host_root / "etc/machine-id") or _text(host_root / "var/lib/dbus/machine-id")
    info.system_uuid = _text(host_root / "sys/class/dmi/id/product_uuid")
    info.kernel_version = _text(host_root / "proc/sys/kernel/osrelease") or platform.release()
    for line in _text(host_root / "etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            info.os_version = line.partition("=")[2].strip('"')
    return info


SOCKET_RECOUNT_CYCLES = 6  # a process's sockets are recounted at least every this many cycles


class HostReader:
    """Per-process procfs reads: a container's network namespace, descriptors and limits.

    Counting sockets costs a readlink per descriptor, the largest per-container cost of a cycle. A
    process's socket count is therefore kept between cycles and recounted when its descriptor count
    changes, when the process is new, and otherwise every ``SOCKET_RECOUNT_CYCLES`` cycles (staggered by
    pid, so each cycle recounts about the same share). The descriptor count itself is exact every cycle.
    The soft descriptor limit (``/proc/<pid>/limits``) is re-read on the same cadence.

    Since Linux 6.2, ``stat(/proc/<pid>/fd).st_size`` is the number of open descriptors, one syscall
    instead of reading the whole directory. Whether ``<host-root>/proc`` does this is checked once
    against a directory listing (older kernels report 0; a fake tree on disk reports its block size);
    otherwise the directory is listed every cycle.
    """

    def __init__(self, host_root: Path) -> None:
        self.proc = str(host_root / "proc")
        self.fd_size_counts: bool | None = None  # None: not decided yet
        self._fd_size_misses = 0
        self._cycle = 0
        self._sockets: dict[int, tuple[int, int]] = {}  # pid -> (descriptors, sockets) when last counted
        self._nofile: dict[int, int | None] = {}  # pid -> soft RLIMIT_NOFILE, re-read on the same cadence
        self._seen: set[int] = set()

    def begin_cycle(self) -> None:
        """Called once per housekeeping cycle: forget processes not seen in the previous one."""
        self._cycle += 1
        for pid in self._sockets.keys() - self._seen:
            del self._sockets[pid]
        for pid in self._nofile.keys() - self._seen:
            del self._nofile[pid]
        self._seen = set()

    def network(self, pid: int) -> list[InterfaceStats] | None:
        data = read_file(f"{self.proc}/{pid}/net/dev")
        return parse_net_dev(data) if data is not None else None

    def _probe_fd_size(self, base: str, listed: int) -> None:
        """Decide once whether the fd directory's size is the descriptor count: yes on the first process
        (with descriptors) where both agree, no after three that disagree (a process may open or close
        one between the two calls; a fake tree or an older kernel disagrees every time)."""
        try:
            size = os.stat(base).st_size
        except OSError:
            return
        if listed <= 0:
            return
        if size == listed:
            self.fd_size_counts = True
        else:
            self._fd_size_misses += 1
            if self._fd_size_misses >= 3:
                self.fd_size_counts = False

    def add_process_stats(self, proc: ProcessStats, pids: list[int]) -> None:
        """File descriptors and sockets summed over the pids, and the first pid's nofile soft limit."""
        fds = sockets = 0
        cache = self._sockets
        for pid in pids:
            base = f"{self.proc}/{pid}/fd"
            known = cache.get(pid)
            due = known is None or (self._cycle + pid) % SOCKET_RECOUNT_CYCLES == 0
            names: list[str] | None = None
            try:
                if self.fd_size_counts and not due:
                    count = os.stat(base).st_size
                else:
                    names = os.listdir(base)
                    count = len(names)
                    if self.fd_size_counts is None:
                        self._probe_fd_size(base, count)
            except OSError:
                continue  # exited
            self._seen.add(pid)
            fds += count
            if known is not None and not due and known[0] == count:
                sockets += known[1]
                continue
            if names is None:
                try:
                    names = os.listdir(base)
                except OSError:
                    continue
            found = 0
            for name in names:
                try:
                    if os.readlink(f"{base}/{name}").startswith("socket:"):
                        found += 1
                except OSError:
                    continue
            cache[pid] = (count, found)
            sockets += found
        proc.file_descriptors = fds
        proc.sockets = sockets
        if pids:
            first = pids[0]
            if first in self._nofile and (self._cycle + first) % SOCKET_RECOUNT_CYCLES:
                proc.ulimit_nofile = self._nofile[first]
            else:
                limits = read_file(f"{self.proc}/{first}/limits")
                proc.ulimit_nofile = self._nofile[first] = parse_nofile_soft(limits) if limits else None


class HostFilesystems:
    """statvfs of every block-device filesystem of the host (the root cgroup's container_fs_*)."""

    def __init__(self, host_root: Path) -> None:
        self.host_root = host_root
        # Strings, not Paths: mounts() runs every cycle, and a Path interns its parts (checkpoints.write_atomic).
        self._root = str(host_root)
        self._mounts_file = str(host_root / "proc/1/mounts")
        self._diskstats = str(host_root / "proc/diskstats")

    def mounts(self) -> list[tuple[str, str]]:
        """(device, host-root-prefixed mount point), first mount of each device."""
        data = read_file(self._mounts_file) or read_file("/proc/self/mounts") or b""
        seen: dict[str, str] = {}
        for line in data.decode(errors="replace").splitlines():
            fields = line.split()
            if len(fields) < 3 or fields[2] in _PSEUDO_FS or not fields[0].startswith("/dev/"):
                continue
            mountpoint = fields[1].replace("\\040", " ")
            relative = mountpoint.lstrip("/")
            seen.setdefault(fields[0], os.path.join(self._root, relative) if relative else self._root)
        return list(seen.items())

    def stats(self) -> list[FilesystemStats]:
        """statvfs of each filesystem, with its device's /proc/diskstats counters (matched by the mount point's
        st_dev, so /dev/mapper names and renamed devices need no lookup)."""
        out = []
        disks = parse_diskstats(read_file(self._diskstats) or b"")
        for device, path in self.mounts():
            try:
                st = os.statvfs(path)
                dev = os.stat(path).st_dev
            except OSError:
                continue
            out.append(FilesystemStats(device, (st.f_blocks - st.f_bfree) * st.f_frsize,
                                       st.f_blocks * st.f_frsize, st.f_files, st.f_ffree,
                                       disks.get((os.major(dev), os.minor(dev)))))
        return out

    def device_of(self, path: Path | str) -> tuple[str, int]:
        """The device holding ``path`` and its capacity in bytes (longest matching mount point)."""
        best, best_len = "", -1
        target = str(path)
        for device, mountpoint in self.mounts():
            prefix = mountpoint.rstrip("/") + "/"
            if (target + "/").startswith(prefix) and len(prefix) > best_len:
                best, best_len = device, len(prefix)
        try:
            st = os.statvfs(path)
            capacity = st.f_blocks * st.f_frsize
        except OSError:
            capacity = 0
        return best, capacity


def disk_usage(paths: list[str]) -> tuple[int, int]:
    """(bytes, inodes) used under ``paths``, like ``du``: allocated blocks, hard links counted once."""
    total = inodes = 0
    seen: set[tuple[int, int]] = set()
    stack = [p for p in paths if p]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                inodes += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total, inodes

"""Generate a synthetic host root for ``lookout run --host-root <root> --docker-socket ''``.

The tree holds everything the agent reads, in the kernel's real formats:

- ``proc/1/mountinfo`` with the cgroup mounts (v1: one hierarchy per controller cpu, cpuacct,
  memory, blkio, pids plus the usual others; v2: one cgroup2 mount), ``proc/1/mounts``,
  ``proc/1/net/dev``, ``proc/{cpuinfo,meminfo}``, ``proc/sys/kernel/...``, ``etc/{machine-id,os-release}``,
  ``sys/class/dmi/id/product_uuid`` and ``sys/dev/block/<maj:min>`` links;
- ``sys/fs/cgroup/...``: the root cgroup, ``/docker``, ``/system.slice/<unit>.service`` raw cgroups
  (``--services``, each with two processes that have ``proc/<pid>/{limits,cgroup,fd/}``) and N containers
  at ``/docker/<64 hex>`` (``--systemd``: ``/system.slice/docker-<id>.scope``),
  every stats and spec file the v1 and v2 readers open (plus ``cgroup.procs`` with the container's pids);
- ``proc/<pid>/{net/dev,limits,cgroup,fd/}`` for every container pid (fd entries are symlinks,
  some of them ``socket:[inode]``);
- ``var/lib/docker/containers/<id>/{config.v2.json,hostconfig.json}`` (names, images, labels resolve
  without the Engine API), ``var/lib/docker/image/overlay2/layerdb/mounts/<id>/mount-id`` and a small
  writable layer under ``var/lib/docker/overlay2/<mount-id>/diff`` for the filesystem-usage walk.
- with ``--kinds``, also what the optional metric kinds read: ``hugetlb.*``, ``memory.numa_stat`` and (v1)
  ``cpuset.memory_migrate`` per cgroup; ``schedstat``, ``smaps_rollup`` and ``net/{tcp,tcp6,udp,udp6,netstat,
  snmp}`` per pid (the socket tables and MIB files are the capture host's, ``tests/fixtures/data/host-kinds``);
  ``sys/devices/system/{cpu,node}`` topology with caches and ``sys/kernel/mm/hugepages``.

Values are deterministic (``--seed``) and differ per container. Sample file shapes follow
/work/shared/reference/cadvisor.md section 7 and a 6.x kernel's cgroup v1 files on this host.

Usage: ``python bench/synthetic_tree.py --version 1 --containers 1000 --out /tmp/lookout-v1``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

UNLIMITED_V1 = 9223372036854771712
PAGE = 4096
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids")
# Other v1 hierarchies a real host mounts; the agent ignores them, the directories exist for realism.
V1_OTHER = ("cpuset", "devices", "freezer", "net_cls,net_prio", "perf_event", "hugetlb")
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
# (major, minor, name, sysfs device path)
BLOCK_DEVICES = (
    (8, 0, "sda", "../../devices/pci0000:00/0000:00:10.0/host0/target0:0:0/0:0:0:0/block/sda"),
    (253, 0, "dm-0", "../../devices/virtual/block/dm-0"),
)
SERVICES = ("containerd", "docker", "ssh", "cron", "systemd-journald", "systemd-logind", "systemd-udevd",
            "rsyslog", "dbus", "chrony")
IMAGES = ("nginx:1.25-alpine", "redis:7.2", "postgres:16", "registry.example.com/shop/api:2.14.3",
          "registry.example.com/shop/worker:2.14.3", "grafana/grafana:10.4.2", "prom/node-exporter:v1.8.0",
          "docker.io/library/python:3.12-slim", "ghcr.io/example/ingest:sha-4f2c1e9", "busybox:1.36")


@dataclass(frozen=True)
class Options:
    version: int
    containers: int
    cpus: int = 8
    procs: int = 2  # pids per container
    fds: int = 24  # fds per pid
    sockets: int = 6  # of which sockets
    labels: int = 6  # Docker labels per container
    services: int = 10  # raw system.slice/*.service cgroups
    systemd: bool = False  # container cgroups as /system.slice/docker-<id>.scope
    seed: int = 42
    kinds: bool = False  # also the files of the optional metric kinds (hugetlb, numa, /proc tables, topology)


def _w(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _files(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        _w(d / name, text)


def container_id(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(64))


# --- cgroup v1 file contents -------------------------------------------------------------


def v1_memory_stat(rng: random.Random, usage: int, limit: int) -> str:
    cache = rng.randrange(0, usage // 2 + 1, PAGE)
    rss = max(usage - cache, 0) // PAGE * PAGE
    active_file = cache // 2 // PAGE * PAGE
    inactive_file = cache - active_file
    vals = {
        "cache": cache, "rss": rss, "rss_huge": rss // 4 // 2097152 * 2097152, "shmem": 0,
        "mapped_file": cache // 8 // PAGE * PAGE, "dirty": rng.randrange(0, 64) * PAGE, "writeback": 0,
        "workingset_refault_anon": 0, "workingset_refault_file": rng.randrange(0, 5000), "swap": 0,
        "swapcached": 0, "pgpgin": rng.randrange(10**4, 10**8), "pgpgout": rng.randrange(10**4, 10**8),
        "pgfault": rng.randrange(10**5, 10**9), "pgmajfault": rng.randrange(0, 10**4),
        "inactive_anon": rss - rss // 64 // PAGE * PAGE, "active_anon": rss // 64 // PAGE * PAGE,
        "inactive_file": inactive_file, "active_file": active_file, "unevictable": 0,
    }
    lines = [f"{k} {v}" for k, v in vals.items()]
    lines.append(f"hierarchical_memory_limit {limit}")
    lines.append(f"hierarchical_memsw_limit {limit if limit == UNLIMITED_V1 else 2 * limit}")
    lines += [f"total_{k} {v}" for k, v in vals.items()]
    return "\n".join(lines) + "\n"


def blkio_table(rng: random.Random, scale: int, devices: int) -> str:
    lines, grand = [], 0
    for major, minor, _name, _path in BLOCK_DEVICES[:devices]:
        read, write = rng.randrange(0, scale), rng.randrange(0, scale)
        sync = write // 3
        for op, v in (("Read", read), ("Write", write), ("Sync", sync), ("Async", read + write - sync),
                      ("Discard", 0), ("Total", read + write)):
            lines.append(f"{major}:{minor} {op} {v}")
        grand += read + write
    lines.append(f"Total {grand}")
    return "\n".join(lines) + "\n"


def v1_cgroup(rng: random.Random, cpus: int, pids: list[int], quota: int, mem_limit: int,
              threads: int) -> dict[str, dict[str, str]]:
    """Per controller: file name -> content, for one v1 cgroup."""
    usage_ns = rng.randrange(10**9, 10**14)
    split = [rng.random() + 0.05 for _ in range(cpus)]
    percpu = [int(usage_ns * s / sum(split)) for s in split]
    user_ticks = usage_ns // 10**7 * 6 // 10
    procs = "".join(f"{pid}\n" for pid in pids)
    periods = rng.randrange(0, 10**7) if quota > 0 else 0
    throttled = periods // rng.randrange(20, 200) if periods else 0
    mem_usage = rng.randrange(8 << 20, 2 << 30, PAGE)
    devs = rng.choice((0, 1, 2))
    return {
        "cpu": {
            "cgroup.procs": procs,
            "tasks": procs,
            "cpu.shares": f"{rng.choice((1024, 1024, 1024, 512, 2048))}\n",
            "cpu.cfs_quota_us": f"{quota}\n",
            "cpu.cfs_period_us": "100000\n",
            "cpu.cfs_burst_us": "0\n",
            "cpu.stat": f"nr_periods {periods}\nnr_throttled {throttled}\n"
                        f"throttled_time {throttled * rng.randrange(10**5, 10**7)}\nnr_bursts 0\nburst_time 0\n",
            "notify_on_release": "0\n",
        },
        "cpuacct": {
            "cgroup.procs": procs,
            "tasks": procs,
            "cpuacct.usage": f"{usage_ns}\n",
            "cpuacct.usage_percpu": " ".join(map(str, percpu)) + " \n",
            "cpuacct.stat": f"user {user_ticks}\nsystem {usage_ns // 10**7 - user_ticks}\n",
            "cpuacct.usage_all": "cpu user system\n" + "".join(f"{i} {v * 6 // 10} {v * 4 // 10}\n"
                                                               for i, v in enumerate(percpu)),
            "notify_on_release": "0\n",
        },
        "memory": {
            "cgroup.procs": procs,
            "tasks": procs,
            "memory.stat": v1_memory_stat(rng, mem_usage, mem_limit),
            "memory.usage_in_bytes": f"{mem_usage}\n",
            "memory.max_usage_in_bytes": f"{mem_usage + rng.randrange(0, 64 << 20, PAGE)}\n",
            "memory.limit_in_bytes": f"{mem_limit}\n",
            "memory.memsw.limit_in_bytes": f"{mem_limit if mem_limit == UNLIMITED_V1 else 2 * mem_limit}\n",
            "memory.soft_limit_in_bytes": f"{UNLIMITED_V1}\n",
            "memory.failcnt": "0\n",
            "memory.kmem.usage_in_bytes": f"{rng.randrange(1 << 20, 64 << 20, PAGE)}\n",
            "memory.use_hierarchy": "1\n",
            "memory.oom_control": f"oom_kill_disable 0\nunder_oom 0\noom_kill {rng.choice((0, 0, 0, 1))}\n",
            "notify_on_release": "0\n",
        },
        "blkio": {
            "cgroup.procs": procs,
            "tasks": procs,
            "blkio.throttle.io_service_bytes": blkio_table(rng, 10**10, devs),
            "blkio.throttle.io_service_bytes_recursive": blkio_table(rng, 10**10, devs),
            "blkio.throttle.io_serviced": blkio_table(rng, 10**6, devs),
            "blkio.throttle.io_serviced_recursive": blkio_table(rng, 10**6, devs),
            "notify_on_release": "0\n",
        },
        "pids": {
            "cgroup.procs": procs,
            "tasks": procs,
            "pids.current": f"{threads}\n",
            "pids.max": rng.choice(("max\n", "max\n", "4096\n")),
            "pids.events": "max 0\n",
            "notify_on_release": "0\n",
        },
    }


# --- cgroup v2 file contents -------------------------------------------------------------


def v2_memory_stat(rng: random.Random, usage: int) -> str:
    file = rng.randrange(0, usage // 2 + 1, PAGE)
    anon = max(usage - file, 0) // PAGE * PAGE
    active_file = file // 2 // PAGE * PAGE
    vals = {
        "anon": anon, "file": file, "kernel": rng.randrange(1 << 20, 32 << 20, PAGE),
        "kernel_stack": rng.randrange(4, 64) * 16384, "pagetables": rng.randrange(16, 4096) * PAGE,
        "sec_pagetables": 0, "percpu": rng.randrange(0, 64) * 8, "sock": 0, "vmalloc": 0, "shmem": 0,
        "zswap": 0, "zswapped": 0, "file_mapped": file // 8 // PAGE * PAGE,
        "file_dirty": rng.randrange(0, 64) * PAGE, "file_writeback": 0, "swapcached": 0,
        "anon_thp": anon // 4 // 2097152 * 2097152, "file_thp": 0, "shmem_thp": 0,
        "inactive_anon": anon - anon // 64 // PAGE * PAGE, "active_anon": anon // 64 // PAGE * PAGE,
        "inactive_file": file - active_file, "active_file": active_file, "unevictable": 0,
        "slab_reclaimable": rng.randrange(1 << 18, 1 << 22), "slab_unreclaimable": rng.randrange(1 << 16, 1 << 20),
        "slab": 0, "workingset_refault_anon": 0, "workingset_refault_file": rng.randrange(0, 5000),
        "workingset_activate_anon": 0, "workingset_activate_file": rng.randrange(0, 500),
        "workingset_restore_anon": 0, "workingset_restore_file": 0, "workingset_nodereclaim": 0,
        "pgscan": rng.randrange(0, 10**5), "pgsteal": rng.randrange(0, 10**5), "pgscan_kswapd": 0,
        "pgscan_direct": 0, "pgscan_khugepaged": 0, "pgsteal_kswapd": 0, "pgsteal_direct": 0,
        "pgsteal_khugepaged": 0, "pgfault": rng.randrange(10**5, 10**9), "pgmajfault": rng.randrange(0, 10**4),
        "pgrefill": 0, "pgactivate": rng.randrange(0, 10**5), "pgdeactivate": 0, "pglazyfree": 0,
        "pglazyfreed": 0, "zswpin": 0, "zswpout": 0, "zswpwb": 0, "thp_fault_alloc": rng.randrange(0, 500),
        "thp_collapse_alloc": rng.randrange(0, 100), "thp_swpout": 0, "thp_swpout_fallback": 0,
    }
    vals["slab"] = vals["slab_reclaimable"] + vals["slab_unreclaimable"]
    return "".join(f"{k} {v}\n" for k, v in vals.items())


def psi(rng: random.Random, full: bool = True) -> str:
    some = rng.randrange(0, 10**10)
    avg = f"avg10={rng.random():.2f} avg60={rng.random():.2f} avg300={rng.random():.2f}"
    return f"some {avg} total={some}\nfull {avg} total={some * 9 // 10 if full else 0}\n"


def io_stat(rng: random.Random, devices: int) -> str:
    lines = []
    for major, minor, _name, _path in BLOCK_DEVICES[:devices]:
        lines.append(f"{major}:{minor} rbytes={rng.randrange(0, 10**10)} wbytes={rng.randrange(0, 10**10)} "
                     f"rios={rng.randrange(0, 10**6)} wios={rng.randrange(0, 10**6)} dbytes=0 dios=0")
    return "\n".join(lines) + ("\n" if lines else "")


def v2_cgroup(rng: random.Random, pids: list[int], quota: int, mem_limit: int, threads: int,
              is_root: bool = False) -> dict[str, str]:
    usage_us = rng.randrange(10**6, 10**11)
    user = usage_us * 6 // 10
    procs = "".join(f"{pid}\n" for pid in pids)
    periods = rng.randrange(0, 10**7) if quota > 0 else 0
    throttled = periods // rng.randrange(20, 200) if periods else 0
    mem_usage = rng.randrange(8 << 20, 2 << 30, PAGE)
    files = {
        "cgroup.controllers": V2_CONTROLLERS + "\n",
        "cgroup.subtree_control": "cpu io memory pids\n" if is_root else "",
        "cgroup.procs": procs,
        "cgroup.threads": procs,
        "cgroup.events": "populated 1\nfrozen 0\n",
        "cpu.stat": f"usage_usec {usage_us}\nuser_usec {user}\nsystem_usec {usage_us - user}\n"
                    f"core_sched.force_idle_usec 0\nnr_periods {periods}\nnr_throttled {throttled}\n"
                    f"throttled_usec {throttled * rng.randrange(100, 10**4)}\nnr_bursts 0\nburst_usec 0\n",
        "memory.stat": v2_memory_stat(rng, mem_usage),
        "io.stat": io_stat(rng, rng.choice((0, 1, 2))),
        "cpu.pressure": psi(rng),
        "memory.pressure": psi(rng),
        "io.pressure": psi(rng),
    }
    if not is_root:
        files.update({
            "cpu.max": f"{quota if quota > 0 else 'max'} 100000\n",
            "cpu.weight": f"{rng.choice((100, 100, 100, 50, 200))}\n",
            "memory.current": f"{mem_usage}\n",
            "memory.peak": f"{mem_usage + rng.randrange(0, 64 << 20, PAGE)}\n",
            "memory.max": "max\n" if mem_limit == UNLIMITED_V1 else f"{mem_limit}\n",
            "memory.min": "0\n",
            "memory.low": "0\n",
            "memory.high": "max\n",
            "memory.swap.current": "0\n",
            "memory.swap.max": "max\n",
            "memory.events": f"low 0\nhigh {rng.choice((0, 0, 3))}\nmax {rng.choice((0, 0, 1))}\n"
                             f"oom {rng.choice((0, 0, 1))}\noom_kill 0\noom_group_kill 0\n",
            "pids.current": f"{threads}\n",
            "pids.max": rng.choice(("max\n", "max\n", "4096\n")),
            "pids.peak": f"{threads + 2}\n",
        })
    return files


# --- the optional metric kinds (--kinds) --------------------------------------------------

KINDS_DATA = Path(__file__).resolve().parents[1] / "tests/fixtures/data/host-kinds"
HUGEPAGE_SIZES = (("2MB", 2048), ("1GB", 1048576))


def kinds_templates() -> dict[str, str]:
    """A real container's socket tables and MIB counters, and a real smaps_rollup (the capture host's)."""
    pid = (KINDS_DATA / "containers/sockets/pids").read_text().split()[0]
    base = KINDS_DATA / "containers/sockets/proc" / pid
    out = {f"net/{n}": (base / "net" / n).read_text() for n in ("tcp", "tcp6", "udp", "udp6", "netstat", "snmp")}
    out["smaps_rollup"] = (base / "smaps_rollup").read_text()
    return out


def kinds_pid_files(rng: random.Random, templates: dict[str, str]) -> dict[str, str]:
    referenced = rng.randrange(256, 1 << 20)
    files = {name: text for name, text in templates.items() if name.startswith("net/")}
    files["smaps_rollup"] = templates["smaps_rollup"].replace("Referenced:         1520 kB",
                                                              f"Referenced:     {referenced:>8} kB")
    run = rng.randrange(10**6, 10**13)
    files["schedstat"] = f"{run} {run // rng.randrange(2, 50)} {rng.randrange(10, 10**7)}\n"
    return files


def v1_kinds_files(rng: random.Random) -> dict[str, dict[str, str]]:
    """Per v1 controller: the files of hugetlb, memory_numa and cpuset for one cgroup."""
    file_pages, anon_pages = rng.randrange(0, 1 << 18), rng.randrange(0, 1 << 18)
    numa = "".join(f"{prefix}{name}={v} N0={v}\n" for prefix in ("", "hierarchical_") for name, v in (
        ("total", file_pages + anon_pages), ("file", file_pages), ("anon", anon_pages), ("unevictable", 0)))
    hugetlb: dict[str, str] = {}
    for size, _kb in HUGEPAGE_SIZES:
        for rsvd in ("", ".rsvd"):
            prefix = f"hugetlb.{size}{rsvd}"
            hugetlb.update({f"{prefix}.usage_in_bytes": "0\n", f"{prefix}.max_usage_in_bytes": "0\n",
                            f"{prefix}.failcnt": "0\n", f"{prefix}.limit_in_bytes": f"{UNLIMITED_V1}\n"})
        hugetlb[f"hugetlb.{size}.numa_stat"] = "total=0 N0=0\nhierarchical_total=0 N0=0\n"
    return {"memory": {"memory.numa_stat": numa}, "cpuset": {"cpuset.memory_migrate": "0\n"}, "hugetlb": hugetlb}


def v2_kinds_files(rng: random.Random) -> dict[str, str]:
    anon, file = rng.randrange(0, 1 << 30, PAGE), rng.randrange(0, 1 << 30, PAGE)
    keys = ("anon", "file", "kernel_stack", "pagetables", "sec_pagetables", "shmem", "file_mapped", "file_dirty",
            "file_writeback", "swapcached", "anon_thp", "file_thp", "shmem_thp", "inactive_anon", "active_anon",
            "inactive_file", "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable",
            "workingset_refault_anon", "workingset_refault_file", "workingset_activate_anon",
            "workingset_activate_file", "workingset_restore_anon", "workingset_restore_file",
            "workingset_nodereclaim")
    values = {"anon": anon, "file": file, "active_anon": anon, "inactive_file": file}
    files = {"memory.numa_stat": "".join(f"{k} N0={values.get(k, 0)}\n" for k in keys)}
    for size, _kb in HUGEPAGE_SIZES:
        files.update({f"hugetlb.{size}.current": "0\n", f"hugetlb.{size}.rsvd.current": "0\n",
                      f"hugetlb.{size}.events": "max 0\n", f"hugetlb.{size}.events.local": "max 0\n",
                      f"hugetlb.{size}.max": "max\n", f"hugetlb.{size}.rsvd.max": "max\n",
                      f"hugetlb.{size}.numa_stat": "total=0 N0=0\n"})
    return files


def kinds_host_files(root: Path, cpus: int, templates: dict[str, str]) -> None:
    """The machine's topology (one node, one thread per core, L1d/L1i/L2 per core, a shared L3), huge page
    sizes, and init's schedstat and network tables."""
    cpu = root / "sys/devices/system/cpu"
    all_map = f"{(1 << cpus) - 1:x}"
    _files(cpu, {"online": f"0-{cpus - 1}\n", "possible": f"0-{cpus - 1}\n"})
    for i in range(cpus):
        _files(cpu / f"cpu{i}/topology", {"core_id": f"{i}\n", "physical_package_id": "0\n",
                                          "thread_siblings_list": f"{i}\n"})
        for index, (level, kind, size, shared) in enumerate((
                (1, "Data", "32K", f"{1 << i:x}"), (1, "Instruction", "32K", f"{1 << i:x}"),
                (2, "Unified", "512K", f"{1 << i:x}"), (3, "Unified", "16384K", all_map))):
            _files(cpu / f"cpu{i}/cache/index{index}", {"id": f"{i if level < 3 else 0}\n", "level": f"{level}\n",
                                                       "type": kind + "\n", "size": size + "\n",
                                                       "shared_cpu_map": shared + "\n"})
    node = root / "sys/devices/system/node/node0"
    _files(node, {"meminfo": "Node 0 MemTotal:       65536000 kB\n", "distance": "10\n"})
    for i in range(cpus):
        os.symlink(f"../../cpu/cpu{i}", node / f"cpu{i}")
    for _size, kb in HUGEPAGE_SIZES:
        _files(node / f"hugepages/hugepages-{kb}kB", {"nr_hugepages": "0\n"})
        _files(root / f"sys/kernel/mm/hugepages/hugepages-{kb}kB", {"nr_hugepages": "0\n"})
    _files(root / "proc/1", {"schedstat": "171875063 82655911 2264\n"})
    _files(root / "proc/1/net", {n[4:]: t for n, t in templates.items() if n.startswith("net/")})


# --- /proc and Docker --------------------------------------------------------------------

LIMITS = """Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             unlimited            unlimited            processes 
Max open files            {nofile}              {nofile}              files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       96364                96364                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
"""  # noqa: W291 (the kernel pads every row with trailing spaces)

NET_HEADER = ("Inter-|   Receive                                                |  Transmit\n"
              " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
              "colls carrier compressed\n")


def net_dev(rng: random.Random, names: tuple[str, ...]) -> str:
    lines = [NET_HEADER]
    for name in names:
        if name == "lo":
            b, pk = rng.randrange(0, 10**6), rng.randrange(0, 10**4)
            rx = tx = (b, pk, 0, 0)
        else:
            rx = (rng.randrange(0, 10**11), rng.randrange(0, 10**8), 0, rng.randrange(0, 10))
            tx = (rng.randrange(0, 10**11), rng.randrange(0, 10**8), 0, 0)
        lines.append(f"{name:>6}: {rx[0]:>8} {rx[1]:>7} {rx[2]:>4} {rx[3]:>4}    0     0          0         0 "
                     f"{tx[0]:>8} {tx[1]:>7} {tx[2]:>4} {tx[3]:>4}    0     0       0          0\n")
    return "".join(lines)


def proc_pid(proc: Path, pid: int, rng: random.Random, fds: int, sockets: int, cgroup_lines: str,
             net: str | None, kinds: dict[str, str] | None = None) -> None:
    d = proc / str(pid)
    (d / "net").mkdir(parents=True, exist_ok=True)
    for name, text in (kinds or {}).items():
        _w(d / name, text)
    fd_dir = d / "fd"
    fd_dir.mkdir(exist_ok=True)
    if net is not None:
        _w(d / "net/dev", net)
    _w(d / "limits", LIMITS.format(nofile=rng.choice((1048576, 1048576, 65536))))
    _w(d / "cgroup", cgroup_lines)
    # all 52 fields of a 6.x kernel's line (the agent does not read it; psutil, for instance, needs 37 or more)
    _w(d / "stat", f"{pid} (app) S 1 {pid} {pid} 0 -1 4194560 1535 0 0 0 3 1 0 0 20 0 1 0 {pid * 10} 12345678 890 "
                   "18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
    targets = ["/dev/null", "pipe:[1001]", "pipe:[1002]"]
    for i in range(fds):
        if i < len(targets):
            target = targets[i]
        elif i < len(targets) + sockets:
            target = f"socket:[{rng.randrange(10**5, 10**7)}]"
        else:
            target = f"/app/data/file{i}.db"
        os.symlink(target, fd_dir / str(i))


def docker_files(docker: Path, cid: str, index: int, pid: int, rng: random.Random, labels: int,
                 created: float) -> None:
    d = docker / "containers" / cid
    d.mkdir(parents=True, exist_ok=True)
    name = f"bench-{index:04d}"
    image = IMAGES[index % len(IMAGES)]
    lab = {
        "com.docker.compose.project": f"stack{index % 20}",
        "com.docker.compose.service": f"svc{index % 50}",
        "com.docker.compose.container-number": str(index // 50 + 1),
        "com.docker.compose.version": "2.27.0",
        "org.opencontainers.image.version": f"1.{index % 7}.{index % 13}",
        "maintainer": "team-platform@example.com",
    }
    extra = {f"example.com/label-{i}": f"value-{index}-{i}" for i in range(max(labels - len(lab), 0))}
    lab = dict(list({**lab, **extra}.items())[:labels])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{rng.randrange(10**9):09d}Z"
    mount_id = f"{rng.getrandbits(256):064x}"
    config = {
        "StreamConfig": {},
        "State": {"Running": True, "Paused": False, "Restarting": False, "OOMKilled": False,
                  "RemovalInProgress": False, "Dead": False, "Pid": pid, "ExitCode": 0, "Error": "",
                  "StartedAt": stamp, "FinishedAt": "0001-01-01T00:00:00Z", "Health": None},
        "ID": cid,
        "Created": stamp,
        "Managed": False,
        "Path": "/docker-entrypoint.sh",
        "Args": ["serve", "--port", "8080"],
        "Config": {"Hostname": cid[:12], "Domainname": "", "User": "", "AttachStdin": False,
                   "AttachStdout": False, "AttachStderr": False, "ExposedPorts": {"8080/tcp": {}},
                   "Tty": False, "OpenStdin": False, "StdinOnce": False,
                   "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           f"APP_INSTANCE={index}", "APP_ENV=production", "LANG=C.UTF-8"],
                   "Cmd": ["serve", "--port", "8080"], "Image": image, "Volumes": None, "WorkingDir": "/app",
                   "Entrypoint": ["/docker-entrypoint.sh"], "OnBuild": None, "Labels": lab},
        "Image": f"sha256:{rng.getrandbits(256):064x}",
        "NetworkSettings": {"Bridge": "", "SandboxID": f"{rng.getrandbits(256):064x}", "HairpinMode": False,
                            "Networks": {"bridge": {"IPAddress": f"172.17.{index // 250}.{index % 250 + 2}",
                                                    "Gateway": "172.17.0.1", "IPPrefixLen": 16}},
                            "Ports": {"8080/tcp": None}},
        "LogPath": str(Path("/var/lib/docker/containers") / cid / f"{cid}-json.log"),
        "Name": f"/{name}",
        "Driver": "overlay2",
        "OS": "linux",
        "RestartCount": 0,
        "HasBeenStartedBefore": True,
        "HasBeenManuallyStopped": False,
        "MountPoints": {},
        "AppArmorProfile": "docker-default",
    }
    host = {"Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
            "NetworkMode": "default" if index % 25 else "host", "PortBindings": {},
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}, "AutoRemove": False,
            "CgroupnsMode": "private", "Dns": [], "IpcMode": "private", "Cgroup": "", "PidMode": "",
            "Privileged": False, "ReadonlyRootfs": False, "ShmSize": 67108864, "Runtime": "runc",
            "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "PidsLimit": None}
    _w(d / "config.v2.json", json.dumps(config))
    _w(d / "hostconfig.json", json.dumps(host))
    _w(d / "hostname", cid[:12] + "\n")
    _w(d / f"{cid}-json.log", "")
    layerdb = docker / "image/overlay2/layerdb/mounts" / cid
    layerdb.mkdir(parents=True, exist_ok=True)
    _w(layerdb / "mount-id", mount_id)
    diff = docker / "overlay2" / mount_id / "diff"
    (diff / "tmp").mkdir(parents=True, exist_ok=True)
    (diff / "app/data").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        _w(diff / "app/data" / f"file{i}.db", "x" * rng.randrange(100, 20000))
    _w(diff / "tmp/app.pid", f"{pid}\n")


# --- host files ------------------------------------------------------------------------


def cpuinfo(cpus: int) -> str:
    blocks = []
    for i in range(cpus):
        blocks.append(
            f"processor\t: {i}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
            f"model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nstepping\t: 6\ncpu MHz\t\t: 2000.000\n"
            f"cache size\t: 49152 KB\nphysical id\t: 0\nsiblings\t: {cpus}\ncore id\t\t: {i // 2}\n"
            f"cpu cores\t: {max(cpus // 2, 1)}\napicid\t\t: {i}\ninitial apicid\t: {i}\nfpu\t\t: yes\n"
            "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
            "sse sse2 ht syscall nx lm constant_tsc rep_good nopl xtopology cpuid pni pclmulqdq ssse3 fma cx16 "
            "sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm avx2\n"
            "bogomips\t: 4000.00\nclflush size\t: 64\ncache_alignment\t: 64\n"
            "address sizes\t: 46 bits physical, 57 bits virtual\npower management:\n"
        )
    return "\n".join(blocks) + "\n"


MEMINFO = """MemTotal:       65842332 kB
MemFree:        12371236 kB
MemAvailable:   40211892 kB
Buffers:          982340 kB
Cached:         25123400 kB
SwapCached:            0 kB
Active:         28123308 kB
Inactive:       20431212 kB
SwapTotal:       8388604 kB
SwapFree:        8388604 kB
Dirty:              1204 kB
Writeback:             0 kB
AnonPages:      21452100 kB
Mapped:          2231880 kB
Shmem:            412300 kB
Slab:            3312220 kB
PageTables:       142300 kB
CommitLimit:    41309768 kB
Committed_AS:   52310212 kB
VmallocTotal:   34359738367 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def mountinfo(version: int) -> str:
    lines = [
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,discard",
        "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
        "24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw",
        "25 22 0:5 / /dev rw,nosuid,relatime shared:8 - devtmpfs udev rw,size=32892308k,mode=755",
    ]
    if version == 2:
        lines.append("26 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
                     "rw,nsdelegate,memory_recursiveprot")
    else:
        lines.append("26 24 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:3 - tmpfs tmpfs ro,mode=755")
        n = 27
        for name in ("systemd",):
            lines.append(f"{n} 26 0:{n} / /sys/fs/cgroup/{name} rw,nosuid,nodev,noexec,relatime shared:{n} - "
                         f"cgroup cgroup rw,xattr,name=systemd")
            n += 1
        for ctrl in (*V1_CONTROLLERS, *V1_OTHER):
            lines.append(f"{n} 26 0:{n} / /sys/fs/cgroup/{ctrl} rw,nosuid,nodev,noexec,relatime shared:{n} - "
                         f"cgroup cgroup rw,{ctrl}")
            n += 1
    lines.append("90 22 254:1 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/sda1 rw,discard")
    return "\n".join(lines) + "\n"


def host_files(root: Path, opts: Options, rng: random.Random) -> None:
    proc = root / "proc"
    _files(proc, {"cpuinfo": cpuinfo(opts.cpus), "meminfo": MEMINFO})
    _files(proc / "sys/kernel", {"osrelease": "6.1.0-21-amd64\n"})
    _files(proc / "sys/kernel/random", {"boot_id": "3f1c2a9e-5b7d-4e8f-9a10-2b3c4d5e6f70\n"})
    _files(proc / "1", {
        "mountinfo": mountinfo(opts.version),
        "mounts": "/dev/sda1 / ext4 rw,relatime,discard 0 0\nproc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
                  "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
                  "tmpfs /run tmpfs rw,nosuid,nodev,size=6584236k,mode=755 0 0\n",
        "limits": LIMITS.format(nofile=1048576),
        "cgroup": "0::/init.scope\n" if opts.version == 2 else "1:name=systemd:/init.scope\n",
    })
    _files(proc / "1/net", {"dev": net_dev(rng, ("lo", "eth0", "eth1", "docker0", "veth1a2b3c4"))})
    _files(root / "etc", {"machine-id": "5d3b7d1f0c2a4e6b8f9a1c3e5d7f9b2a\n",
                          "os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                                        'VERSION_ID="12"\nID=debian\n'})
    _files(root / "sys/class/dmi/id", {"product_uuid": "ec2a1f3b-9d4e-4c5f-8a6b-7c8d9e0f1a2b\n"})
    blk = root / "sys/dev/block"
    blk.mkdir(parents=True, exist_ok=True)
    for major, minor, _name, target in BLOCK_DEVICES:
        os.symlink(target, blk / f"{major}:{minor}")


# --- the tree ---------------------------------------------------------------------------


def generate(out: Path, opts: Options, force: bool = False) -> dict[str, object]:
    """Write the tree under ``out``; returns a summary (paths, counts)."""
    if out.exists():
        if not force and any(out.iterdir()):
            raise SystemExit(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(opts.seed)
    host_files(out, opts, rng)
    templates = kinds_templates() if opts.kinds else {}
    if opts.kinds:
        kinds_host_files(out, opts.cpus, templates)
    cg = out / "sys/fs/cgroup"
    proc = out / "proc"
    docker = out / "var/lib/docker"
    created0 = time.time() - 86400 * 3

    parent = "/system.slice" if opts.systemd else "/docker"
    raw = ["/", "/system.slice", "/user.slice", "/init.scope", *(f"/system.slice/{s}.service"
                                                                  for s in SERVICES[:opts.services])]
    if not opts.systemd:
        raw.append("/docker")
    if opts.services > len(SERVICES):
        raw += [f"/system.slice/extra-{i}.service" for i in range(opts.services - len(SERVICES))]

    def write_cgroup(path: str, pids: list[int], quota: int, limit: int, threads: int) -> None:
        sub = path.lstrip("/")
        if opts.version == 1:
            for ctrl, files in v1_cgroup(rng, opts.cpus, pids, quota, limit, threads).items():
                if path == "/" and ctrl == "pids":  # the v1 root has no pids.current / pids.max
                    files.pop("pids.current")
                    files.pop("pids.max")
                _files(cg / ctrl / sub, files)
            for other in V1_OTHER:
                _files(cg / other / sub, {"cgroup.procs": "".join(f"{p}\n" for p in pids)})
            _files(cg / "systemd" / sub, {"cgroup.procs": "".join(f"{p}\n" for p in pids)})
            if opts.kinds:
                for ctrl, files in v1_kinds_files(rng).items():
                    _files(cg / ctrl / sub, files)
        else:
            _files(cg / sub, v2_cgroup(rng, pids, quota, limit, threads, is_root=path == "/"))
            if opts.kinds and path != "/":
                _files(cg / sub, v2_kinds_files(rng))

    next_pid = 1000
    service_rng = random.Random(opts.seed + 1)
    for path in raw:
        pids = [1] if path == "/init.scope" else []
        if path.endswith(".service"):
            pids = list(range(next_pid, next_pid + 2))
            next_pid += 2
            # A service's processes have /proc entries like a container's (the agent counts their descriptors
            # too), in the host's network namespace (no net/dev of their own is read for a raw cgroup).
            if opts.version == 2:
                lines = f"0::{path}\n"
            else:
                lines = "".join(f"{n}:{c}:{path}\n" for n, c in enumerate(
                    ("name=systemd", *V1_OTHER, *V1_CONTROLLERS)[::-1], start=1))
            for pid in pids:  # their own generator: the containers' values stay those of earlier trees
                proc_pid(proc, pid, service_rng, opts.fds, opts.sockets, lines, None)
        if path == "/":
            pids = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # kernel threads live in the root cgroup
        write_cgroup(path, pids, -1, UNLIMITED_V1, len(pids) * 3)

    ids = []
    next_pid = 100000
    for i in range(opts.containers):
        cid = container_id(rng)
        ids.append(cid)
        cgroup = f"/system.slice/docker-{cid}.scope" if opts.systemd else f"/docker/{cid}"
        pids = list(range(next_pid, next_pid + opts.procs))
        next_pid += opts.procs + 3
        quota = rng.choice((-1, -1, 50000, 100000, 200000))
        limit = rng.choice((UNLIMITED_V1, 256 << 20, 512 << 20, 1 << 30, 4 << 30))
        write_cgroup(cgroup, pids, quota, limit, opts.procs * rng.randrange(1, 40))
        if opts.version == 2:
            cgroup_lines = f"0::{cgroup}\n"
        else:
            cgroup_lines = "".join(f"{n}:{c}:{cgroup}\n" for n, c in enumerate(
                ("name=systemd", *V1_OTHER, *V1_CONTROLLERS)[::-1], start=1))
        net = net_dev(rng, ("lo", "eth0"))
        for pid in pids:
            proc_pid(proc, pid, rng, opts.fds, opts.sockets, cgroup_lines, net,
                     kinds_pid_files(rng, templates) if opts.kinds else None)
        docker_files(docker, cid, i, pids[0], rng, opts.labels, created0 + i * 7.0)

    summary = {"root": str(out), "version": opts.version, "containers": opts.containers, "raw_cgroups": len(raw),
               "cpus": opts.cpus, "pids_per_container": opts.procs, "fds_per_pid": opts.fds,
               "labels_per_container": opts.labels, "parent": parent, "first_id": ids[0] if ids else "",
               "kinds_files": opts.kinds}
    _w(out / "TREE.json", json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", type=int, choices=(1, 2), required=True, help="cgroup version")
    ap.add_argument("--containers", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=8, help="CPUs (cpuacct.usage_percpu width, cpuinfo)")
    ap.add_argument("--procs", type=int, default=2, help="pids per container")
    ap.add_argument("--fds", type=int, default=24, help="open fds per pid")
    ap.add_argument("--sockets", type=int, default=6, help="of which sockets")
    ap.add_argument("--labels", type=int, default=6, help="Docker labels per container")
    ap.add_argument("--services", type=int, default=10, help="raw system.slice/*.service cgroups")
    ap.add_argument("--systemd", action="store_true", help="containers at /system.slice/docker-<id>.scope")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--kinds", action="store_true", help="also the files the optional metric kinds read")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)
    opts = Options(args.version, args.containers, args.cpus, args.procs, args.fds, args.sockets, args.labels,
                   args.services, args.systemd, args.seed, args.kinds)
    started = time.perf_counter()
    summary = generate(args.out, opts, args.force)
    print(json.dumps(summary), f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Would psutil replace Lookout's hand-written /proc reading? Measured on a synthetic tree, in one process.

psutil was declared as a dependency and never imported. This measures the three places where it could take over:

1. the cycle's per-process reads (``HostReader.add_process_stats``: descriptor count, sockets, nofile limit) with
   ``psutil.Process(pid).num_fds()`` instead of the hand-written count: the collector's thread CPU per cycle, blocks
   of cycles interleaved A/B in one process (as spec_cache_ab.py), so the machine's drift stays out of the difference;
2. machine info (``collectors.host.read_machine_info``) against psutil's cpu_count / virtual_memory / swap_memory
   with ``psutil.PROCFS_PATH`` pointed at the tree: the values each gives, and the time per call;
3. the agent's own process metrics (prometheus_client's ``ProcessCollector``, read per scrape) against a psutil
   ``oneshot()`` of the same facts: time per call.

psutil needs ``<procfs>/stat`` (boot time, for every ``Process``) which the agent itself never reads; it is written
into the tree here if missing. psutil is no dependency of Lookout since this measurement (``pip install psutil``).

    python bench/synthetic_tree.py --version 1 --containers 1000 --services 300 --out /tmp/lookout-v1
    python bench/experiments/psutil_ab.py /tmp/lookout-v1 --blocks 8 --cycles 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psutil
from prometheus_client import CollectorRegistry, ProcessCollector

from agent.logconfig import configure_logging
from agent.model import ProcessStats
from agent.wiring import build
from collectors.cgroups.parsers import parse_nofile_soft
from collectors.cgroups.reader import read_file
from collectors.host import SOCKET_RECOUNT_CYCLES, HostReader, read_machine_info
from tests.unit.support import config_from


def per_call_us(fn: Callable[[], object], n: int) -> float:
    fn()
    c0 = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - c0) / n * 1e6


def psutil_process_stats(reader: HostReader) -> Callable[[ProcessStats, list[int]], None]:
    """``HostReader.add_process_stats`` with psutil counting the descriptors (``Process(pid).num_fds()``: a Process
    object per pid, which reads ``<procfs>/<pid>/stat`` for its identity, and a listing of its fd directory); the
    sockets (same cadence and cache) and the nofile limit as the agent does them, because psutil has neither: no
    socket count short of parsing the netns' /proc/net tables (``net_connections``), and ``rlimit`` is the prlimit
    syscall on the real pid (not ``PROCFS_PATH``; it needs CAP_SYS_RESOURCE for another user's process, which the
    agent's systemd unit does not grant)."""

    def add(proc: ProcessStats, pids: list[int]) -> None:
        fds = sockets = 0
        cache = reader._sockets
        for pid in pids:
            try:
                count = psutil.Process(pid).num_fds()
            except psutil.Error:
                continue
            reader._seen.add(pid)
            fds += count
            known = cache.get(pid)
            due = known is None or (reader._cycle + pid) % SOCKET_RECOUNT_CYCLES == 0
            if known is not None and not due and known[0] == count:
                sockets += known[1]
                continue
            base = f"{reader.proc}/{pid}/fd"
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
            if first in reader._nofile and (reader._cycle + first) % SOCKET_RECOUNT_CYCLES:
                proc.ulimit_nofile = reader._nofile[first]
            else:
                limits = read_file(f"{reader.proc}/{first}/limits")
                proc.ulimit_nofile = reader._nofile[first] = parse_nofile_soft(limits) if limits else None

    return add


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", type=Path)
    ap.add_argument("--blocks", type=int, default=8, help="blocks per variant, interleaved")
    ap.add_argument("--cycles", type=int, default=6, help="cycles per block")
    args = ap.parse_args()
    configure_logging("warning", "console")
    proc = args.tree / "proc"
    if not (proc / "stat").exists():
        (proc / "stat").write_text("cpu  1 0 1 1 0 0 0 0 0 0\nbtime 1795000000\n")
    psutil.PROCFS_PATH = str(proc)  # process-global: every psutil call in this process now reads the tree

    # 2. machine info
    ours = read_machine_info(args.tree)
    print("machine info (tree's /proc):")
    print(f"  hand-written: cores {ours.cpu_cores}, physical {ours.cpu_physical_cores}, sockets {ours.cpu_sockets}, "
          f"memory {ours.memory_bytes}, swap {ours.swap_bytes}; "
          f"{per_call_us(lambda: read_machine_info(args.tree), 300):.0f} µs/call")
    try:
        theirs = (psutil.cpu_count(), psutil.cpu_count(logical=False), psutil.virtual_memory().total,
                  psutil.swap_memory().total)
        cost = per_call_us(lambda: (psutil.cpu_count(), psutil.cpu_count(logical=False), psutil.virtual_memory(),
                                    psutil.swap_memory()), 300)
        print(f"  psutil:       cores {theirs[0]} (sysconf: this machine's), physical {theirs[1]} (/sys of this "
              f"machine), sockets - (none), memory {theirs[2]}, swap {theirs[3]}; {cost:.0f} µs/call")
    except Exception as exc:  # e.g. swap_memory wants <procfs>/vmstat
        print(f"  psutil:       fails on the tree: {type(exc).__name__}: {exc}")

    with tempfile.TemporaryDirectory() as state:
        agent = build(config_from(["--host-root", str(args.tree), "--docker-socket", "", "--state-dir", state]))
        collector = agent.build_collector()
        assert collector is not None
        snap = collector.collect()
        pids = sum((s.stats.processes.processes for s in snap.containers if s.stats.processes), 0)
        host = collector.host
        shipped = host.add_process_stats
        variants = {"hand-written": shipped, "psutil num_fds": psutil_process_stats(host)}
        per: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.blocks):
            for name, fn in variants.items():
                host.add_process_stats = fn  # type: ignore[method-assign]
                collector.collect()
                for _ in range(args.cycles):
                    c0 = time.thread_time()
                    collector.collect()
                    per[name].append(time.thread_time() - c0)
        host.add_process_stats = shipped  # type: ignore[method-assign]
        print(f"\n1. collect() thread CPU per cycle, {len(snap.containers)} cgroups, {pids} processes:")
        for name, values in per.items():
            ms = sorted(v * 1000 for v in values)
            print(f"  {name:>15}: p50 {statistics.median(ms):6.1f} ms, p10-p90 {ms[len(ms) // 10]:.1f}-"
                  f"{ms[len(ms) * 9 // 10]:.1f} ms over {len(ms)} cycles")
        some = [int(p) for p in os.listdir(proc) if p.isdigit() and (proc / p / "fd").is_dir()][:200]
        base = str(proc)
        listing = per_call_us(lambda: [len(os.listdir(f"{base}/{p}/fd")) for p in some], 20) / len(some)
        with_psutil = per_call_us(lambda: [psutil.Process(p).num_fds() for p in some], 20) / len(some)
        print(f"  per process: os.listdir(fd) {listing:.1f} µs, psutil.Process(pid).num_fds() {with_psutil:.1f} µs")

    # 3. the agent's own process metrics, per scrape
    psutil.PROCFS_PATH = "/proc"
    registry = CollectorRegistry()
    collector_pc = ProcessCollector(registry=registry)
    me = psutil.Process()

    def own_with_psutil() -> object:
        with me.oneshot():
            return (me.cpu_times(), me.memory_info(), me.create_time(), me.num_fds(),
                    me.rlimit(psutil.RLIMIT_NOFILE))

    ours_us = per_call_us(lambda: list(collector_pc.collect()), 2000)
    print(f"\n3. own process metrics: prometheus_client ProcessCollector {ours_us:.0f} µs/scrape, "
          f"psutil oneshot {per_call_us(own_with_psutil, 2000):.0f} µs/scrape")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

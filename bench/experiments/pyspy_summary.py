"""Summarize a py-spy ``--format raw`` profile (collapsed stacks) of the agent: inclusive and self shares.

    python bench/experiments/pyspy_summary.py bench/results/profile-steady-logging-shipped-*.txt [--cpu-pct 3.4]

Each stack's leaf is an on-CPU sample (py-spy records only active threads without ``--idle``). With ``--cpu-pct``
(the agent's CPU % of one core over the same window), shares are also given as CPU ms per second.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# Leaf frames that are waits py-spy's --nonblocking sampling reports as active: the event loop in epoll_wait and
# idle executor threads in their queue's futex (with them, a 2.7 % agent showed 5.5 % of samples; without, 2.8 %).
WAITS = ("EpollSelector.select (selectors.py", "_worker (concurrent/futures/thread.py")
# Functions whose inclusive share tells where the time goes (matched as "name (file" in a frame).
KEYS = [
    "reader (agent/pipeline.py", "read_batch (agent/pipeline.py", "fill (agent/pipeline.py",
    "_read_source (agent/pipeline.py", "_resolve (agent/pipeline.py", "_refresh_files (agent/pipeline.py",
    "_open_new_files (agent/pipeline.py", "read (collectors/logs/files.py", "replaced (collectors/logs/files.py",
    "_decode (agent/pipeline.py", "_prefetch (agent/pipeline.py", "update_gauges (agent/pipeline.py",
    "_unopened_lag (agent/pipeline.py", "encode (agent/pipeline.py", "sender (agent/pipeline.py",
    "send (exporters/syslog/transport.py", "_wait_acknowledged (exporters/syslog/transport.py",
    "flusher (agent/pipeline.py", "flush (collectors/logs/checkpoints.py", "discover (agent/pipeline.py",
    "scan (collectors/logs/sources.py", "update_sources (agent/pipeline.py", "sync (collectors/logs/sources.py",
    "_run (collectors/logs/sources.py", "cycle (agent/wiring.py", "housekeeping (agent/runtime.py",
    "to_thread (", "_worker (concurrent/futures/thread.py", "run_forever (asyncio/base_events.py",
    "_run_once (asyncio/base_events.py", "select (selectors.py", "wait_for (asyncio/tasks.py",
    "_handle_request (aiohttp", "fs_usage_loop (agent/runtime.py", "run (agent/docker", "collect (",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--cpu-pct", type=float, default=0.0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--keep-waits", action="store_true", help="count the WAITS leaf frames as CPU too")
    args = ap.parse_args()
    total = 0
    incl: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    for line in Path(args.raw).read_text().splitlines():
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if not args.keep_waits and frames[-1].startswith(WAITS):
            waits[frames[-1]] += count
            total -= count
            continue
        leaf[frames[-1]] += count
        if frames and frames[0].startswith(("thread", "process")):
            threads[frames[0]] += count
        seen = set()
        for key in KEYS:
            if any(key in f for f in frames) and key not in seen:
                seen.add(key)
                incl[key] += count
    ms = args.cpu_pct * 10 / total if args.cpu_pct and total else 0.0  # CPU ms per second per sample

    def show(title: str, counts: Counter[str], limit: int) -> None:
        print(f"\n{title} ({total} samples)")
        for k, v in counts.most_common(limit):
            extra = f"  {v * ms:6.2f} ms/s" if ms else ""
            print(f"{v:6d}  {v / total * 100:5.1f} %{extra}  {k}")

    show("inclusive, by function of interest", incl, len(KEYS))
    show("self (leaf frames)", leaf, args.top)
    show("threads", threads, 20)
    print(f"\nleft out as waits: {dict(waits)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

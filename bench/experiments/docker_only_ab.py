"""A/B of --docker-only in one process, blocks of cycles interleaved (as spec_cache_ab.py).

Builds the agent on a synthetic tree as ``lookout run`` does, then alternates blocks of housekeeping cycles (collect,
then publish: render and gzip) with every raw cgroup reported and with ``--docker-only``'s filter, and prints the
thread CPU of each step per cycle, the cgroups reported and the series served. One process and interleaved blocks
keep the machine's drift (large on this shared VM) out of the difference; bench_metrics.py gives the whole agent.

    python bench/synthetic_tree.py --version 1 --containers 1000 --services 300 --out /tmp/lookout-v1
    python bench/experiments/docker_only_ab.py /tmp/lookout-v1 --blocks 8 --cycles 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.logconfig import configure_logging
from agent.wiring import build
from collectors.discovery import RawFilter
from tests.unit.support import config_from


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", type=Path)
    ap.add_argument("--blocks", type=int, default=8, help="blocks per variant, interleaved")
    ap.add_argument("--cycles", type=int, default=5, help="measured cycles per block (after one to settle)")
    args = ap.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as state:
        agent = build(config_from(["--host-root", str(args.tree), "--docker-socket", "", "--state-dir", state]))
        collector = agent.build_collector()
        assert collector is not None
        everything = collector.options
        variants = {"every raw cgroup": everything,
                    "--docker-only": dataclasses.replace(everything, raw=RawFilter(docker_only=True))}
        per: dict[str, dict[str, list[float]]] = {name: {"collect": [], "publish": [], "cycle": []}
                                                  for name in variants}
        shape: dict[str, tuple[int, int]] = {}
        for _ in range(args.blocks):
            for name, options in variants.items():
                collector.options = options
                snap = collector.collect()  # settles the caches (limit files, sockets) for this variant's cgroups
                agent.exposition.publish(snap, agent.renderer.chunks)
                for _ in range(args.cycles):
                    c0 = time.thread_time()
                    snap = collector.collect()
                    c1 = time.thread_time()
                    agent.exposition.publish(snap, agent.renderer.chunks)
                    c2 = time.thread_time()
                    per[name]["collect"].append(c1 - c0)
                    per[name]["publish"].append(c2 - c1)
                    per[name]["cycle"].append(c2 - c0)
                text = agent.renderer.render(snap)
                shape[name] = (len(snap.containers), sum(1 for line in text.splitlines() if line[:1] not in ("#", "")))
                del text
    print(f"{args.tree}: thread CPU ms per cycle, p50 [p10-p90] over {args.blocks * args.cycles} cycles per variant")
    for name, steps in per.items():
        cells = []
        for step, values in steps.items():
            ms = sorted(v * 1000 for v in values)
            cells.append(f"{step} {statistics.median(ms):6.1f} [{ms[len(ms) // 10]:.1f}-{ms[len(ms) * 9 // 10]:.1f}]")
        cgroups, series = shape[name]
        print(f"  {name:>16}: {cgroups} cgroups, {series} series; " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

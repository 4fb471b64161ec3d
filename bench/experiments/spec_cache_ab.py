"""A/B of the limit-file cache (collectors.cgroups.reader.SpecCache) in one process, blocks interleaved.

Builds the collector on a synthetic tree as ``lookout run`` does, then alternates blocks of cycles with
``SPEC_REFRESH_CYCLES = 1`` (every cgroup's limit files read every cycle, as before the cache) and the
shipped value, and prints the thread CPU of ``Collector.collect`` per cycle for each. Interleaving in one
process keeps the machine's drift (±15-25 % between runs here) out of the difference.

    python bench/synthetic_tree.py --version 1 --containers 1000 --out /tmp/lookout-v1
    python bench/experiments/spec_cache_ab.py /tmp/lookout-v1 --blocks 10 --cycles 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.logconfig import configure_logging
from agent.wiring import build
from collectors.cgroups import reader
from tests.unit.support import config_from


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", type=Path)
    ap.add_argument("--blocks", type=int, default=10, help="blocks per variant, interleaved")
    ap.add_argument("--cycles", type=int, default=6, help="cycles per block (a multiple of the refresh cycles)")
    args = ap.parse_args()
    configure_logging("warning", "console")
    shipped = reader.SPEC_REFRESH_CYCLES
    with tempfile.TemporaryDirectory() as state:
        agent = build(config_from(["--host-root", str(args.tree), "--docker-socket", "", "--state-dir", state]))
        collector = agent.build_collector()
        assert collector is not None
        collector.collect()
        per: dict[str, list[float]] = {"every cycle": [], f"every {shipped} cycles": []}
        for _ in range(args.blocks):
            for label, every in (("every cycle", 1), (f"every {shipped} cycles", shipped)):
                reader.SPEC_REFRESH_CYCLES = every
                collector.collect()  # the first cycle of a block settles the new cadence
                for _ in range(args.cycles):
                    c0 = time.thread_time()
                    collector.collect()
                    per[label].append(time.thread_time() - c0)
    for label, values in per.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{label:>16}: collect CPU p50 {statistics.median(ms):6.1f} ms, mean {statistics.fmean(ms):6.1f} ms,"
              f" p10-p90 {ms[len(ms) // 10]:.1f}-{ms[len(ms) * 9 // 10]:.1f} ms over {len(ms)} cycles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What each optional metric kind costs per 1,000 containers (issue #12), on the synthetic trees with ``--kinds``.

For each cgroup version it generates one tree that holds the files of every kind (bench/synthetic_tree.py
``--kinds``) and builds one agent per configuration, exactly as ``lookout run`` does: the default kinds, the
default kinds plus one extra kind (for each kind), and all of them. It then runs their housekeeping cycles
round-robin, one cycle of each configuration per round in a shuffled order, so that the machine's drift hits every
configuration alike, and reports each one's median and least thread CPU per cycle (collect, then render + gzip =
publish) and the series it serves. Machine info (``cpu_topology``) is read once per 5 minutes, not every cycle:
its read is in the first cycle, reported apart.

    python bench/bench_kinds.py                    # v1 and v2, 1,000 containers, 12 rounds
    python bench/bench_kinds.py --versions 2 --containers 200 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl
from synthetic_tree import Options, generate

KINDS = ("hugetlb", "memory_numa", "cpuset", "tcp", "udp", "advtcp", "sched", "referenced_memory", "cpu_topology")


def defaults() -> list[str]:
    bl.ensure_repo_importable()
    from agent.options import DEFAULT_DISABLED_METRICS, METRIC_KINDS

    return sorted(METRIC_KINDS - DEFAULT_DISABLED_METRICS)


def measure(tree: Path, state: Path, configs: dict[str, list[str]], rounds: int) -> dict[str, object]:
    bl.ensure_repo_importable()
    from bench_metrics import _config

    from agent.logconfig import configure_logging
    from agent.wiring import build

    configure_logging("warning", "console")
    agents = {}
    first: dict[str, float] = {}
    for name, enabled in configs.items():
        agent = build(_config(tree, state, ["--enable-metrics", ",".join(enabled)]))  # type: ignore[arg-type]
        collector = agent.build_collector()
        assert collector is not None
        c0 = time.thread_time()
        agent.exposition.publish(collector.collect(), agent.renderer.chunks)  # cold: machine info, caches
        first[name] = time.thread_time() - c0
        agents[name] = (agent, collector)
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    series: dict[str, int] = {}
    order = list(agents)
    shuffle = random.Random(12)
    for r in range(rounds):
        print(f"  round {r + 1}/{rounds}", file=sys.stderr)
        shuffle.shuffle(order)  # no configuration always runs right after the one that read the most files
        for name in order:
            agent, collector = agents[name]
            c0 = time.thread_time()
            snap = collector.collect()
            c1 = time.thread_time()
            agent.exposition.publish(snap, agent.renderer.chunks)
            c2 = time.thread_time()
            rows[name].append((c1 - c0, c2 - c1))
            if r == 0:
                series[name] = bl.count_series(agent.exposition.body(False, False))
    out: dict[str, object] = {}
    for name, samples in rows.items():
        collect = statistics.median(c for c, _ in samples) * 1000
        publish = statistics.median(p for _, p in samples) * 1000
        cycle = statistics.median(c + p for c, p in samples) * 1000
        fastest = min(c + p for c, p in samples) * 1000  # the least disturbed cycle: other load only adds
        out[name] = {"collect_cpu_ms": round(collect, 1), "publish_cpu_ms": round(publish, 1),
                     "cycle_cpu_ms": round(cycle, 1), "min_cycle_cpu_ms": round(fastest, 1),
                     "first_cycle_cpu_ms": round(first[name] * 1000, 1),
                     "series": series[name], "errors": dict(agents[name][1].errors)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", default="1,2")
    ap.add_argument("--containers", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=12, help="round-robin rounds (one cycle per configuration)")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    base = defaults()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lookout-kinds-"))
    results: dict[str, dict[str, object]] = {}
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        for version in (int(v) for v in args.versions.split(",")):
            tag = f"v{version}"
            tree, state = workdir / f"tree-{tag}", workdir / f"state-{tag}"
            state.mkdir(parents=True, exist_ok=True)
            print(f"[{tag}] tree with {args.containers} containers", file=sys.stderr)
            generate(tree, Options(version, args.containers, kinds=True), force=True)
            kinds = [k for k in KINDS if not (version == 2 and k == "cpuset")]  # refused on v2
            configs = {"default": base, **{k: [*base, k] for k in kinds}, "all": [*base, *kinds]}
            results[tag] = measure(tree, state, configs, args.rounds)
            shutil.rmtree(tree, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    doc = {"benchmark": "kinds", "machine": bl.machine(), "loadavg_at_start": load_at_start, "started": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "duration_s": round(time.time() - started, 1),
        "params": {k: str(v) for k, v in vars(args).items()}, "results": results}
    path = bl.write_json("kinds", doc)
    for tag, out in results.items():
        d = out["default"]
        rows = []
        for name, m in out.items():
            rows.append([name, f"{m['collect_cpu_ms']:.1f}", f"{m['publish_cpu_ms']:.1f}", f"{m['cycle_cpu_ms']:.1f}",
                         f"{m['cycle_cpu_ms'] - d['cycle_cpu_ms']:+.1f}",  # type: ignore[operator]
                         f"{m['min_cycle_cpu_ms']:.1f}",
                         f"{m['min_cycle_cpu_ms'] - d['min_cycle_cpu_ms']:+.1f}",  # type: ignore[operator]
                         f"{m['first_cycle_cpu_ms']:.1f}", str(m["series"]),
                         f"{m['series'] - d['series']:+d}"])  # type: ignore[operator]
        print(f"\n[{tag}] {args.containers} containers, thread CPU per cycle "
              f"(median of {args.rounds} round-robin rounds)")
        print(bl.table(rows, ["kinds", "collect ms", "render+gzip ms", "cycle ms", "Δ cycle", "min cycle ms",
                              "Δ min", "1st cycle ms", "series", "Δ series"]))
    print(f"\nJSON: {path}")
    print(json.dumps({"machine": doc["machine"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What each optional metric kind costs per 1,000 containers (issue #12), on the synthetic trees with ``--kinds``.

For each cgroup version it generates one tree that holds the files of every kind (bench/synthetic_tree.py
``--kinds``), then runs bench_metrics' in-process cycle (collect, then render + gzip = publish) with the default
kinds, with the default kinds plus one extra kind, for each kind, and with all of them, in interleaved rounds.
It reports the warm cycles' thread CPU (median over the rounds' medians) and the series each adds. Machine info
(``cpu_topology``) is read once per 5 minutes, not every cycle: its read is the first cycle's extra cost.

    python bench/bench_kinds.py                    # v1 and v2, 1,000 containers, 3 rounds of 6 cycles
    python bench/bench_kinds.py --versions 2 --containers 200 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl
from bench_metrics import in_process
from synthetic_tree import Options, generate

KINDS = ("hugetlb", "memory_numa", "cpuset", "tcp", "udp", "advtcp", "sched", "referenced_memory", "cpu_topology")


def defaults() -> list[str]:
    bl.ensure_repo_importable()
    from agent.config import DEFAULT_DISABLED_METRICS, METRIC_KINDS

    return sorted(METRIC_KINDS - DEFAULT_DISABLED_METRICS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", default="1,2")
    ap.add_argument("--containers", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=6, help="in-process cycles per run (the first is cold)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the configurations")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    base = defaults()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lookout-kinds-"))
    results: dict[str, dict[str, object]] = {}
    started = time.time()
    try:
        for version in (int(v) for v in args.versions.split(",")):
            tag = f"v{version}"
            tree, state = workdir / f"tree-{tag}", workdir / f"state-{tag}"
            state.mkdir(parents=True, exist_ok=True)
            generate(tree, Options(version, args.containers, kinds=True), force=True)
            kinds = [k for k in KINDS if not (version == 2 and k == "cpuset")]  # refused on v2
            configs = {"default": base, **{k: [*base, k] for k in kinds}, "all": [*base, *kinds]}
            runs: dict[str, list[dict[str, object]]] = {name: [] for name in configs}
            for r in range(args.rounds):
                for name, enabled in configs.items():
                    print(f"[{tag}] round {r + 1}/{args.rounds}: {name}", file=sys.stderr)
                    runs[name].append(in_process(tree, state, args.cycles, ["--enable-metrics", ",".join(enabled)]))
            out: dict[str, object] = {}
            for name, rows in runs.items():
                def med(part: str, key: str, rows: list[dict[str, object]] = rows) -> float:
                    return round(statistics.median(row[part][key]["p50"] if part == "warm_ms" else row[part][key]
                                                   for row in rows), 1)  # type: ignore[index]
                out[name] = {"collect_cpu_ms": med("warm_ms", "collect_cpu"),
                             "publish_cpu_ms": med("warm_ms", "publish_cpu"),
                             "cycle_cpu_ms": med("warm_ms", "cycle_cpu"),
                             "first_collect_cpu_ms": med("first_cycle_ms", "collect_cpu"),
                             "series": rows[-1]["series"], "text_bytes": rows[-1]["text_bytes"],
                             "errors": rows[-1]["errors"]}
            results[tag] = out
            shutil.rmtree(tree, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    doc = {"benchmark": "kinds", "machine": bl.machine(), "started": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "params": {k: str(v) for k, v in vars(args).items()},
        "results": results}
    path = bl.write_json("kinds", doc)
    for tag, out in results.items():
        d = out["default"]
        rows = []
        for name, m in out.items():
            rows.append([name, f"{m['collect_cpu_ms']:.1f}", f"{m['publish_cpu_ms']:.1f}", f"{m['cycle_cpu_ms']:.1f}",
                         f"{m['cycle_cpu_ms'] - d['cycle_cpu_ms']:+.1f}",  # type: ignore[operator]
                         f"{m['first_collect_cpu_ms'] - d['first_collect_cpu_ms']:+.1f}",  # type: ignore[operator]
                         str(m["series"]), f"{m['series'] - d['series']:+d}"])  # type: ignore[operator]
        print(f"\n[{tag}] {args.containers} containers, warm-cycle thread CPU (median of {args.rounds} rounds)")
        print(bl.table(rows, ["kinds", "collect ms", "render+gzip ms", "cycle ms", "Δ cycle", "Δ 1st collect",
                              "series", "Δ series"]))
    print(f"\nJSON: {path}")
    print(json.dumps({"machine": doc["machine"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

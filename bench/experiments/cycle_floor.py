"""Where a housekeeping cycle's CPU goes, against the floor of its system calls, in one process (issue #12).

Builds the agent on a synthetic tree as ``lookout run`` does, records every file a collection opens and every
directory it lists (by wrapping ``os.open``, ``os.listdir``, ``os.scandir`` and ``os.readlink`` for one cycle), then
alternates, in blocks:

- the cycle itself (collect, then publish: render + gzip of the text format), thread CPU per step;
- the floor: the same opens + one read + close, the same listings and readlinks, with no parsing (what any Python
  agent reading the same files pays; the kernel's share of it is most of it);
- render alone (the text format's chunks, consumed) and gzip alone (of the same text).

The difference between the collect step and the floor is parsing and the building of the stats; render and gzip are
the exposition's. Prints medians of thread CPU ms per cycle.

    python bench/synthetic_tree.py --version 1 --containers 1000 --out /tmp/lookout-v1
    python bench/experiments/cycle_floor.py /tmp/lookout-v1 --blocks 6 --cycles 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

from agent.logconfig import configure_logging
from agent.wiring import build
from exporters.prometheus.exposition import compress_chunks
from tests.unit.support import config_from


def record(fn: Callable[[], Any]) -> tuple[list[str], list[str], list[str]]:
    """The files opened, directories listed and links read while ``fn`` runs."""
    opened: list[str] = []
    listed: list[str] = []
    links: list[str] = []
    real_open, real_listdir, real_scandir, real_readlink = os.open, os.listdir, os.scandir, os.readlink

    def rec_open(path: Any, *a: Any, **k: Any) -> int:
        opened.append(os.fsdecode(path))
        return real_open(path, *a, **k)

    def rec_listdir(path: Any = ".") -> list[Any]:
        listed.append(os.fsdecode(path))
        return real_listdir(path)

    def rec_scandir(path: Any = ".") -> Any:
        listed.append(os.fsdecode(path))
        return real_scandir(path)

    def rec_readlink(path: Any, *a: Any, **k: Any) -> Any:
        links.append(os.fsdecode(path))
        return real_readlink(path, *a, **k)

    os.open, os.listdir, os.scandir, os.readlink = rec_open, rec_listdir, rec_scandir, rec_readlink  # type: ignore[assignment]
    try:
        fn()
    finally:
        os.open, os.listdir, os.scandir, os.readlink = real_open, real_listdir, real_scandir, real_readlink
    return opened, listed, links


def floor(opened: list[str], listed: list[str], links: list[str]) -> None:
    """The system calls of a cycle with nothing done with the bytes."""
    o, r, c = os.open, os.read, os.close
    for path in opened:
        try:
            fd = o(path, os.O_RDONLY)
        except OSError:
            continue
        with contextlib.suppress(OSError):
            r(fd, 65536)
        c(fd)
    for path in listed:
        with contextlib.suppress(OSError):
            os.listdir(path)
    for path in links:
        with contextlib.suppress(OSError):
            os.readlink(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", type=Path)
    ap.add_argument("--blocks", type=int, default=6, help="blocks, each step measured in turn")
    ap.add_argument("--cycles", type=int, default=4, help="measured cycles per block (after one to settle)")
    args = ap.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as state:
        agent = build(config_from(["--host-root", str(args.tree), "--docker-socket", "", "--state-dir", state]))
        collector = agent.build_collector()
        assert collector is not None
        render = agent.renderer.chunks
        snap = collector.collect()
        agent.exposition.publish(snap, render)
        opened, listed, links = record(collector.collect)
        kinds = Counter(Path(p).name if p.split("/")[-2:-1] != ["fd"] else "fd/*" for p in opened)
        print(f"one collection: {len(opened)} opens, {len(listed)} listings, {len(links)} readlinks; "
              f"{len(snap.containers)} cgroups")
        print("files opened most:", ", ".join(f"{name} {n}" for name, n in kinds.most_common(12)))
        steps: dict[str, list[float]] = {k: [] for k in ("collect", "publish", "floor", "render", "gzip")}
        clock = time.thread_time
        for _ in range(args.blocks):
            collector.collect()
            for _ in range(args.cycles):
                c0 = clock()
                snap = collector.collect()
                c1 = clock()
                agent.exposition.publish(snap, render)
                c2 = clock()
                steps["collect"].append(c1 - c0)
                steps["publish"].append(c2 - c1)
            for _ in range(args.cycles):
                c0 = clock()
                floor(opened, listed, links)
                steps["floor"].append(clock() - c0)
            for _ in range(args.cycles):
                c0 = clock()
                chunks = list(render(snap, False))
                c1 = clock()
                compress_chunks(iter(chunks))
                c2 = clock()
                steps["render"].append(c1 - c0)
                steps["gzip"].append(c2 - c1)
        print(f"{'step':<10} {'p50 ms':>8} {'min ms':>8}")
        for name, values in steps.items():
            print(f"{name:<10} {statistics.median(values) * 1e3:>8.1f} {min(values) * 1e3:>8.1f}")
        p50 = {k: statistics.median(v) * 1e3 for k, v in steps.items()}
        print(f"cycle (collect + publish) {p50['collect'] + p50['publish']:.1f} ms; collect above the floor "
              f"{p50['collect'] - p50['floor']:.1f} ms (parsing, stats); publish = render {p50['render']:.1f} + "
              f"gzip {p50['gzip']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

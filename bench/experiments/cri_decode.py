"""Decode (and syslog-encode) µs per line of the routes bench's records as json-file and as CRI, in one process.

The same records ``bench/bench_routes.py`` writes, in chunks of ``READ_CHUNK`` bytes cut at line ends as the tailer
reads them; each step timed over every chunk, best of ``--repeat`` passes. ``--baseline REV`` also times the
decoders of that git revision (loaded from ``git show``) in the same process, interleaved, so the machine's drift
stays out of the difference. ``--profile`` prints cProfile's top functions of the CRI decode + encode.

    flock /tmp/lookout-bench.lock python bench/experiments/cri_decode.py --lines 200000 --baseline HEAD
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_routes import bench_records, cri_line, json_file_line  # noqa: E402

from agent.model import ContainerInfo, LogSource, Segment  # noqa: E402
from collectors.logs import decoders  # noqa: E402
from collectors.logs.files import READ_CHUNK  # noqa: E402
from exporters.syslog.format import SyslogEncoder, SyslogFormat  # noqa: E402


def chunks(data: bytes, size: int = READ_CHUNK) -> list[tuple[bytes, int]]:
    out, pos = [], 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + size) + 1 or len(data)
        out.append((data[pos:end], pos))
        pos = end
    return out


def module_at(rev: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:collectors/logs/decoders.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"decoders_{rev}")
    exec(compile(source, f"{rev}:collectors/logs/decoders.py", "exec"), module.__dict__)
    return module


def timed(step: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", help="git revision whose decoders are timed too")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    recs = list(bench_records(args.lines))
    data = {"json-file": chunks(b"".join(json_file_line(*r) for r in recs)),
            "cri": chunks(b"".join(cri_line(*r) for r in recs))}
    src = LogSource("/x/0.log", "8:1:ab", ContainerInfo(cgroup="", container_id="", name="bench", pod="bench-0",
                                                        namespace="bench", container="bench"), "node")
    encoder = SyslogEncoder(SyslogFormat(framing="lf"))
    mods = {"now": decoders} | ({f"@{args.baseline}": module_at(args.baseline)} if args.baseline else {})

    def decode(cls: type, fmt: str) -> Callable[[], list[Any]]:
        def run() -> list[Any]:
            dec = cls()
            return [dec.decode(chunk, offset).records for chunk, offset in data[fmt]]
        return run

    results: dict[str, float] = {}
    for name, mod in mods.items():  # identical output first
        for fmt, cls in (("json-file", mod.JsonFileDecoder), ("cri", mod.CriDecoder)):
            assert decode(cls, fmt)() == decode(getattr(decoders, cls.__name__), fmt)(), (name, fmt)
    for _ in range(2):  # two interleaved rounds; the best of each is kept
        for name, mod in mods.items():
            for fmt, cls in (("json-file", mod.JsonFileDecoder), ("cri", mod.CriDecoder)):
                key = f"{fmt} decode {name}"
                results[key] = min(results.get(key, float("inf")), timed(decode(cls, fmt), args.repeat))
    for fmt in ("json-file", "cri"):
        records = decode(decoders.JsonFileDecoder if fmt == "json-file" else decoders.CriDecoder, fmt)()
        results[f"{fmt} syslog encode"] = timed(lambda r=records: [encoder.encode([Segment(src, x)]) for x in r],
                                                args.repeat)
    print(f"{args.lines:,} lines; chunks: json-file {len(data['json-file'])}, cri {len(data['cri'])}; "
          f"best of {args.repeat} x 2")
    for key, seconds in results.items():
        print(f"  {key:28s} {seconds / args.lines * 1e6:7.3f} µs/line")
    if args.profile:
        records_cri = decode(decoders.CriDecoder, "cri")()
        prof = cProfile.Profile()
        prof.enable()
        decode(decoders.CriDecoder, "cri")()
        [encoder.encode([Segment(src, x)]) for x in records_cri]
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

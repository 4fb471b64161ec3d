"""/metrics at scale on synthetic host trees (issue #2): CPU per housekeeping cycle, scrape latency, RSS.

For each cgroup version (default v1 and v2) it generates a synthetic host root with N containers
(bench/synthetic_tree.py), then

(a) in-process: builds the agent from a ``Config`` exactly as ``lookout run`` does and runs the
    housekeeping cycle several times, measuring thread CPU and wall time of each step: collect,
    render (text), publish (encode), and what the first scrape after a snapshot adds (gzip of the
    text; OpenMetrics render + gzip, which is what Prometheus asks for); plus one writable-layer
    usage walk (``FsUsage.measure``);
(b) as a process (``python -m agent run --host-root <tree> --docker-socket ''``):
    - CPU phase: short housekeeping interval, agent utime+stime from /proc/<pid>/stat over
      ``--cpu-cycles`` cycles (cycle count read from the agent's own
      ``lookout_collection_duration_seconds_count``), RSS after them; optionally a py-spy profile;
    - scrape phase: ``--housekeeping-interval 10s``, ``--scrapes`` sequential scrapes per mode
      (text, text+gzip, Prometheus' own Accept headers = OpenMetrics+gzip) on one keep-alive
      connection: p50/p95/max, the first scrape after each new snapshot separately, payload size,
      series count, agent RSS (VmRSS, VmHWM) and agent CPU per scrape.

Prints tables and writes bench/results/metrics-<timestamp>.json (and metrics-latest.json).

    python bench/bench_metrics.py                       # v1 and v2, 1,000 containers
    python bench/bench_metrics.py --versions 2 --containers 200 --scrapes 50 --profile
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl
from synthetic_tree import Options, generate

TARGET_SCRAPE_P50_MS = 50.0
TARGET_CYCLE_CPU_MS = 300.0
TARGET_RSS_MB = 80.0


# --- (a) in-process ------------------------------------------------------------------------------


def _config(tree: Path, state_dir: Path, extra: list[str]) -> object:
    import argparse as ap

    from agent.config import load_config
    from agent.options import add_arguments

    parser = ap.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--host-root", str(tree), "--docker-socket", "", "--state-dir", str(state_dir),
                              "--log-level", "warning", *extra])
    return load_config(args, environ={})


def in_process(tree: Path, state_dir: Path, cycles: int, extra: list[str]) -> dict[str, object]:
    """Step-by-step replica of ``Agent.cycle`` plus what the first scrapes after a snapshot cost."""
    bl.ensure_repo_importable()
    from agent.logconfig import configure_logging
    from agent.wiring import build

    configure_logging("warning", "console")
    agent = build(_config(tree, state_dir, extra))  # type: ignore[arg-type]
    collector = agent.build_collector()
    assert collector is not None, "no cgroups found in the tree"
    renderer, exposition = agent.renderer, agent.exposition
    # Exposition.publish(snapshot, render) renders + compresses (current); publish(snapshot, text,
    # render_om) only stores the text rendered by the caller (before commit 394e91d).
    streaming = len(inspect.signature(exposition.publish).parameters) == 2

    def publish(snap: object) -> None:
        if streaming:
            exposition.publish(snap, renderer.chunks)  # type: ignore[arg-type]
        else:
            exposition.publish(snap, renderer.render(snap),  # type: ignore[arg-type,call-arg]
                               lambda s: renderer.render(s, openmetrics=True))

    def render_only(snap: object) -> int:
        if hasattr(renderer, "chunks"):
            return sum(len(c) for c in renderer.chunks(snap))  # type: ignore[arg-type]
        return len(renderer.render(snap))  # type: ignore[arg-type]

    clock = time.thread_time
    steps: list[dict[str, float]] = []
    sizes: dict[str, int] = {}
    names = ("collect", "render_only", "publish", "first_scrape_text_gzip", "first_scrape_om_gzip",
             "scrape_text_plain")
    for _ in range(cycles):
        marks = [(clock(), time.perf_counter())]
        snap = collector.collect()
        marks.append((clock(), time.perf_counter()))
        text_chars = render_only(snap)  # measured apart: not part of the cycle
        marks.append((clock(), time.perf_counter()))
        publish(snap)
        marks.append((clock(), time.perf_counter()))
        text_gz = exposition.body(False, True)
        marks.append((clock(), time.perf_counter()))
        om_gz = exposition.body(True, True)
        marks.append((clock(), time.perf_counter()))
        text = exposition.body(False, False)
        marks.append((clock(), time.perf_counter()))
        row = {}
        for i, name in enumerate(names):
            row[f"{name}_cpu"] = marks[i + 1][0] - marks[i][0]
            row[f"{name}_wall"] = marks[i + 1][1] - marks[i][1]
        row["cycle_cpu"] = row["collect_cpu"] + row["publish_cpu"]
        row["cycle_wall"] = row["collect_wall"] + row["publish_wall"]
        steps.append(row)
        sizes = {"containers": len(snap.containers), "text_chars": text_chars, "text_bytes": len(text),
                 "text_gzip_bytes": len(text_gz), "om_gzip_bytes": len(om_gz), "series": bl.count_series(text)}
        del text, text_gz, om_gz, snap

    # The real entry point, for comparison with the step-by-step replica above.
    real = []
    for _ in range(max(cycles // 2, 2)):
        c0 = clock()
        agent.cycle()
        real.append(clock() - c0)

    fs_cpu = None
    if agent.fs_usage is not None:
        c0 = clock()
        agent.fs_usage.measure(collector.docker_containers())
        fs_cpu = clock() - c0

    warm = steps[1:] if len(steps) > 1 else steps

    def agg(key: str, rows: list[dict[str, float]]) -> dict[str, float]:
        return bl.summary_ms([r[key] for r in rows])

    keys = [k for k in steps[0] if k.endswith(("_cpu", "_wall"))]
    result = {
        "cycles": cycles,
        "exposition_api": "publish(snapshot, render)" if streaming else "publish(snapshot, text, render_om)",
        "first_cycle_ms": {k: round(steps[0][k] * 1000, 1) for k in keys},
        "warm_ms": {k: agg(k, warm) for k in keys},
        "agent_cycle_cpu_ms": bl.summary_ms(real),
        "fs_usage_walk_cpu_ms": round(fs_cpu * 1000, 1) if fs_cpu is not None else None,
        "errors": dict(collector.errors),
        **sizes,
    }
    del agent, collector
    gc.collect()
    return result


# --- (b) as a process ----------------------------------------------------------------------------


def cpu_phase(tree: Path, state_dir: Path, workdir: Path, n_cycles: int, interval: str, extra: list[str],
              prom_scrapes: int, profile: float, tag: str) -> dict[str, object]:
    """CPU per cycle without scrapes, then with one Prometheus-style scrape per cycle; optional py-spy."""
    from agent.params import parse_duration

    args = ["--host-root", str(tree), "--docker-socket", "", "--state-dir", str(state_dir),
            "--housekeeping-interval", interval, "--fs-usage-interval", "1h", "--log-level", "warning", *extra]
    out: dict[str, object] = {"interval": interval}
    with bl.running_agent(args, workdir / f"agent-cpu-{tag}.log") as agent:
        first = agent.wait_for_snapshot(cycles=2)  # the first cycle parses every config.v2.json: skip it
        out["rss_kb_after_2_cycles"] = bl.memory_kb(agent.pid)
        c0 = agent.counters()
        cpu0, t0 = bl.cpu_seconds(agent.pid), time.monotonic()
        per_cycle_wall = first["collection_sum"] / max(first["collection_count"], 1)
        period = parse_duration(interval) + per_cycle_wall
        time.sleep(period * n_cycles)
        c1 = agent.counters()
        cpu1, t1 = bl.cpu_seconds(agent.pid), time.monotonic()
        cycles = c1["collection_count"] - c0["collection_count"]
        out.update({
            "cycles": int(cycles),
            "window_s": round(t1 - t0, 2),
            "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_per_cycle_ms": round((cpu1 - cpu0) / cycles * 1000, 1) if cycles else None,
            "wall_per_cycle_ms": round((c1["collection_sum"] - c0["collection_sum"]) / cycles * 1000, 1)
            if cycles else None,
            "render_wall_per_cycle_ms": round((c1["render_sum"] - c0["render_sum"]) / cycles * 1000, 1)
            if cycles else None,
            "rss_kb": bl.memory_kb(agent.pid),
            "note": "the window includes one text+gzip scrape (reading the cycle counter)",
        })

        # Prometheus cadence: one scrape with Prometheus' headers per housekeeping period, so (nearly)
        # every scrape is the first one after a new snapshot, as with a real Prometheus whose
        # scrape_interval equals the housekeeping interval.
        headers = bl.SCRAPE_MODES["prometheus (openmetrics+gzip)"]
        fresh, stale = [], []
        last = bl.self_metrics(agent.scraper.get("/metrics", headers)[2], True).get("collection_count")
        cpu2 = bl.cpu_seconds(agent.pid)
        for _ in range(prom_scrapes):
            time.sleep(period)
            elapsed, _, body, _ = agent.scraper.get("/metrics", headers)
            count = bl.self_metrics(body, True).get("collection_count")
            (fresh if count != last else stale).append(elapsed)
            last = count
        cpu3 = bl.cpu_seconds(agent.pid)
        last_count = agent.counters()["collection_count"]
        first_count = c1["collection_count"]
        cpu_after_counter = bl.cpu_seconds(agent.pid)
        scraped_cycles = last_count - first_count
        out["prometheus_cadence"] = {
            "scrapes": prom_scrapes,
            "fresh": bl.summary_ms(fresh),
            "not_fresh": bl.summary_ms(stale),
            "cycles": int(scraped_cycles),
            "cpu_per_cycle_ms": round((cpu_after_counter - cpu2) / scraped_cycles * 1000, 1)
            if scraped_cycles else None,
            "cpu_s": round(cpu3 - cpu2, 3),
            "rss_kb": bl.memory_kb(agent.pid),
        }
        if profile > 0:
            out["profile"] = py_spy(agent, profile, tag, period, headers)
    return out


def py_spy(agent: bl.AgentProcess, seconds: float, tag: str, period: float,
           headers: dict[str, str]) -> dict[str, object]:
    """Sample the agent (housekeeping + Prometheus-cadence scrapes) with py-spy; hotspot shares."""
    exe = shutil.which("py-spy")
    if exe is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    bl.RESULTS.mkdir(parents=True, exist_ok=True)
    raw = bl.RESULTS / f"profile-{tag}.txt"
    speedscope = bl.RESULTS / f"profile-{tag}.speedscope.json"
    common = ["--pid", str(agent.pid), "--duration", str(int(seconds)), "--rate", "200", "--function",
              "--nonblocking"]
    for fmt, path in (("raw", raw), ("speedscope", speedscope)):
        spy = subprocess.Popen([exe, "record", *common, "--format", fmt, "-o", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while spy.poll() is None:  # keep Prometheus-style scrapes going while sampling
            time.sleep(period)
            agent.scraper.get("/metrics", headers)
        if spy.returncode != 0 or not path.exists():
            return {"error": (spy.stderr.read() if spy.stderr else "")[-500:]}
    text = raw.read_text()
    return {"raw": str(raw), "speedscope": str(speedscope), "seconds": seconds,
            "cycle": bl.collapsed_hotspots(text, "cycle (agent/wiring.py"),
            "scrape": bl.collapsed_hotspots(text, "body (exporters/prometheus/http.py"),
            "all": bl.collapsed_hotspots(text, "")}


def scrape_phase(tree: Path, state_dir: Path, workdir: Path, n: int, extra: list[str], tag: str,
                 cpu_per_cycle_ms: float | None) -> dict[str, object]:
    args = ["--host-root", str(tree), "--docker-socket", "", "--state-dir", str(state_dir),
            "--housekeeping-interval", "10s", "--log-level", "warning", *extra]
    out: dict[str, object] = {"interval": "10s", "modes": {}}
    with bl.running_agent(args, workdir / f"agent-scrape-{tag}.log") as agent:
        agent.wait_for_snapshot()
        out["rss_kb_after_first_snapshot"] = bl.memory_kb(agent.pid)
        # Sizes and series from one scrape of each form.
        _, _, text, _ = agent.scraper.get("/metrics")
        _, _, text_gz, _ = agent.scraper.get("/metrics", bl.SCRAPE_MODES["text+gzip"])
        _, _, om_gz, hdrs = agent.scraper.get("/metrics", bl.SCRAPE_MODES["prometheus (openmetrics+gzip)"])
        out["payload"] = {"text_bytes": len(text), "text_gzip_bytes": len(text_gz), "om_gzip_bytes": len(om_gz),
                          "om_bytes": len(bl.gunzip(om_gz)), "series": bl.count_series(text),
                          "om_content_type": hdrs.get("content-type", "")}
        del text, text_gz, om_gz
        for mode, headers in bl.SCRAPE_MODES.items():
            gzipped = "Accept-Encoding" in headers
            times, fresh, steady = [], [], []
            last_count = None
            cpu0, c_start = bl.cpu_seconds(agent.pid), None
            for _ in range(n):
                elapsed, status, body, _ = agent.scraper.get("/metrics", headers)
                if status != 200:
                    raise RuntimeError(f"/metrics returned {status}")
                count = bl.self_metrics(body, gzipped).get("collection_count")
                c_start = count if c_start is None else c_start
                times.append(elapsed)
                (fresh if last_count is not None and count != last_count else steady).append(elapsed)
                last_count = count
                del body
            cpu1 = bl.cpu_seconds(agent.pid)
            cycles = (last_count or 0) - (c_start or 0)
            background = cycles * (cpu_per_cycle_ms or 0) / 1000
            out["modes"][mode] = {  # type: ignore[index]
                "all": bl.summary_ms(times),
                "first_after_new_snapshot": bl.summary_ms(fresh),
                "cached": bl.summary_ms(steady),
                "agent_cpu_s": round(cpu1 - cpu0, 3),
                "cycles_during": int(cycles),
                "agent_cpu_per_scrape_ms": round((cpu1 - cpu0 - background) / n * 1000, 2),
            }
        out["rss_kb_after_scrapes"] = bl.memory_kb(agent.pid)
    return out


# --- report --------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict[str, dict[str, object]]) -> str:
    lines = []
    rows = []
    for tag, r in results.items():
        ip = r.get("in_process")
        if not isinstance(ip, dict):
            continue
        w = ip["warm_ms"]
        rows.append([tag, ip["containers"], ip["series"], f"{ip['text_bytes'] / 1e6:.1f}",
                     ip["first_cycle_ms"]["cycle_cpu"], w["collect_cpu"]["p50"], w["publish_cpu"]["p50"],
                     w["cycle_cpu"]["p50"], w["render_only_cpu"]["p50"], w["first_scrape_text_gzip_cpu"]["p50"],
                     w["first_scrape_om_gzip_cpu"]["p50"], w["scrape_text_plain_cpu"]["p50"],
                     ip["fs_usage_walk_cpu_ms"]])
    if rows:
        lines.append("In-process, thread CPU ms per step (p50 over warm cycles). cycle = collect + publish "
                     "(what the housekeeping thread does); render = chunks alone, measured apart; "
                     "+X = first scrape of that form after a new snapshot")
        lines.append(bl.table(rows, ["tree", "cgroups", "series", "MB", "1st cycle", "collect", "publish",
                                     "cycle", "(render)", "+text gz", "+OM gz", "+text plain", "fs walk"]))
    rows = []
    for tag, r in results.items():
        cp = r.get("cpu_phase")
        if not isinstance(cp, dict):
            continue
        pc = cp["prometheus_cadence"]
        rows.append([tag, cp["interval"], cp["cycles"], cp["cpu_per_cycle_ms"], cp["wall_per_cycle_ms"],
                     cp["render_wall_per_cycle_ms"], pc["cycles"], pc["cpu_per_cycle_ms"],
                     pc["fresh"].get("p50", "-"), pc["fresh"].get("p95", "-"), pc["fresh"].get("n", 0),
                     round(bl.mb(pc["rss_kb"]["VmRSS"]), 1), round(bl.mb(pc["rss_kb"]["VmHWM"]), 1)])
    if rows:
        lines.append("\nAgent process, CPU phase (/proc/<pid>/stat utime+stime per cycle); then one "
                     "Prometheus-style scrape (OpenMetrics+gzip) per housekeeping period")
        lines.append(bl.table(rows, ["tree", "interval", "cycles", "CPU ms/cycle", "wall ms/cycle",
                                     "render wall ms", "cycles", "CPU ms/cycle+scrape", "fresh scrape p50",
                                     "p95", "n", "RSS MB", "HWM MB"]))
    rows = []
    for tag, r in results.items():
        sp = r.get("scrape_phase")
        if not isinstance(sp, dict):
            continue
        for mode, m in sp["modes"].items():
            fresh = m["first_after_new_snapshot"]
            rows.append([tag, mode, m["all"]["n"], m["all"]["p50"], m["all"]["p95"], m["all"]["max"],
                         fresh.get("p50", "-"), fresh.get("n", 0), m["agent_cpu_per_scrape_ms"]])
    if rows:
        lines.append("\nAgent process, sequential scrapes of /metrics (ms), housekeeping every 10 s")
        lines.append(bl.table(rows, ["tree", "mode", "n", "p50", "p95", "max", "fresh p50", "fresh n",
                                     "agent CPU ms/scrape"]))
        rows = []
        for tag, r in results.items():
            sp = r.get("scrape_phase")
            if not isinstance(sp, dict):
                continue
            p = sp["payload"]
            rows.append([tag, p["series"], f"{p['text_bytes'] / 1e6:.1f}", f"{p['text_gzip_bytes'] / 1e6:.2f}",
                         f"{p['om_gzip_bytes'] / 1e6:.2f}", round(bl.mb(sp["rss_kb_after_first_snapshot"]["VmRSS"]), 1),
                         round(bl.mb(sp["rss_kb_after_scrapes"]["VmRSS"]), 1),
                         round(bl.mb(sp["rss_kb_after_scrapes"]["VmHWM"]), 1)])
        lines.append("\nPayload and memory")
        lines.append(bl.table(rows, ["tree", "series", "text MB", "text gz MB", "OM gz MB", "RSS MB 1st snap",
                                     "RSS MB after scrapes", "HWM MB"]))
    rows = []
    for tag, r in results.items():
        ip, cp, sp = r.get("in_process"), r.get("cpu_phase"), r.get("scrape_phase")
        if isinstance(sp, dict):
            for mode in ("text", "prometheus (openmetrics+gzip)"):
                p50 = sp["modes"][mode]["all"]["p50"]
                rows.append([tag, f"scrape p50, back-to-back ({mode})", f"{p50} ms",
                             f"<= {TARGET_SCRAPE_P50_MS:.0f} ms", verdict(p50 <= TARGET_SCRAPE_P50_MS)])
        if isinstance(cp, dict) and cp["prometheus_cadence"]["fresh"]:
            p50 = cp["prometheus_cadence"]["fresh"]["p50"]
            rows.append([tag, "scrape p50, Prometheus cadence (fresh snapshot)", f"{p50} ms",
                         f"<= {TARGET_SCRAPE_P50_MS:.0f} ms", verdict(p50 <= TARGET_SCRAPE_P50_MS)])
        if isinstance(cp, dict) and cp.get("cpu_per_cycle_ms") is not None:
            v = cp["cpu_per_cycle_ms"]
            rows.append([tag, "CPU per cycle (process, no scrapes)", f"{v} ms", f"<= {TARGET_CYCLE_CPU_MS:.0f} ms",
                         verdict(v <= TARGET_CYCLE_CPU_MS)])
            v = cp["prometheus_cadence"]["cpu_per_cycle_ms"]
            if v is not None:
                rows.append([tag, "CPU per cycle (process, + 1 Prometheus scrape)", f"{v} ms",
                             f"<= {TARGET_CYCLE_CPU_MS:.0f} ms", verdict(v <= TARGET_CYCLE_CPU_MS)])
        elif isinstance(ip, dict):
            v = ip["warm_ms"]["cycle_cpu"]["p50"]
            rows.append([tag, "CPU per cycle (in-process)", f"{v} ms", f"<= {TARGET_CYCLE_CPU_MS:.0f} ms",
                         verdict(v <= TARGET_CYCLE_CPU_MS)])
        if isinstance(cp, dict):
            mb = bl.mb(max(cp["rss_kb"]["VmRSS"], cp["prometheus_cadence"]["rss_kb"]["VmRSS"]))
            rows.append([tag, "agent RSS, Prometheus-only clients (VmRSS)", f"{mb:.1f} MB",
                         f"<= {TARGET_RSS_MB:.0f} MB", verdict(mb <= TARGET_RSS_MB)])
            mb = bl.mb(cp["prometheus_cadence"]["rss_kb"]["VmHWM"])
            rows.append([tag, "  same, peak (VmHWM)", f"{mb:.1f} MB", f"<= {TARGET_RSS_MB:.0f} MB",
                         verdict(mb <= TARGET_RSS_MB)])
        if isinstance(sp, dict):
            mb = bl.mb(sp["rss_kb_after_scrapes"]["VmRSS"])
            n = sum(m["all"]["n"] for m in sp["modes"].values())
            rows.append([tag, f"agent RSS after {n} back-to-back scrapes (VmRSS)", f"{mb:.1f} MB",
                         f"<= {TARGET_RSS_MB:.0f} MB", verdict(mb <= TARGET_RSS_MB)])
    if rows:
        lines.append("\nTargets (issue #2)")
        lines.append(bl.table(rows, ["tree", "metric", "measured", "target", "result"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", default="1,2", help="cgroup versions to run, e.g. 1,2")
    ap.add_argument("--containers", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=8, help="CPUs in the synthetic tree (per-CPU series)")
    ap.add_argument("--services", type=int, default=10,
                    help="raw /system.slice/*.service cgroups in the synthetic tree (e.g. 300 with --agent-args "
                         "--docker-only)")
    ap.add_argument("--cycles", type=int, default=8, help="in-process cycles")
    ap.add_argument("--cpu-cycles", type=int, default=15, help="cycles in the process CPU window")
    ap.add_argument("--cpu-interval", default="1s", help="housekeeping interval in the CPU phase")
    ap.add_argument("--scrapes", type=int, default=200, help="back-to-back scrapes per mode")
    ap.add_argument("--prom-scrapes", type=int, default=12,
                    help="Prometheus-cadence scrapes (one per housekeeping period) in the CPU phase")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="py-spy the agent for this long after the CPU window (needs py-spy)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: inprocess,cpu,scrape")
    ap.add_argument("--workdir", type=Path, help="where trees and logs go (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    ap.add_argument("--agent-args", default="", help="extra agent flags, space separated")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    extra = args.agent_args.split()
    bl.ensure_repo_importable()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lookout-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, object]] = {}
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        for version in (int(v) for v in args.versions.split(",")):
            tag = f"v{version}"
            tree = workdir / f"tree-{tag}"
            state = workdir / f"state-{tag}"
            state.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            summary = generate(tree, Options(version, args.containers, cpus=args.cpus, services=args.services),
                               force=True)
            took = time.perf_counter() - t0
            print(f"[{tag}] tree, {args.containers} containers and {args.services} services in {took:.1f} s: {tree}",
                  file=sys.stderr)
            r: dict[str, object] = {"tree": summary}
            results[tag] = r
            if "inprocess" not in skip:
                print(f"[{tag}] in-process, {args.cycles} cycles", file=sys.stderr)
                r["in_process"] = in_process(tree, state, args.cycles, extra)
            if "cpu" not in skip:
                print(f"[{tag}] process CPU phase, {args.cpu_cycles} cycles at {args.cpu_interval}", file=sys.stderr)
                r["cpu_phase"] = cpu_phase(tree, state, workdir, args.cpu_cycles, args.cpu_interval, extra,
                                           args.prom_scrapes, args.profile, tag)
            if "scrape" not in skip:
                print(f"[{tag}] process scrape phase, {args.scrapes} scrapes x {len(bl.SCRAPE_MODES)} modes",
                      file=sys.stderr)
                cp = r.get("cpu_phase")
                r["scrape_phase"] = scrape_phase(tree, state, workdir, args.scrapes, extra, tag,
                                                 cp.get("cpu_per_cycle_ms") if isinstance(cp, dict) else None)
            if not args.keep:
                shutil.rmtree(tree, ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    doc = {"benchmark": "metrics", "machine": bl.machine(), "loadavg_at_start": load_at_start, "started": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "duration_s": round(time.time() - started, 1),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {"scrape_p50_ms": TARGET_SCRAPE_P50_MS, "cycle_cpu_ms": TARGET_CYCLE_CPU_MS,
                    "rss_mb": TARGET_RSS_MB},
        "results": results}
    path = bl.write_json("metrics", doc)
    print(report(results))
    for tag, r in results.items():
        prof = (r.get("cpu_phase") or {}).get("profile")  # type: ignore[union-attr]
        if isinstance(prof, dict) and "cycle" in prof:
            for part in ("all", "cycle", "scrape"):
                hs = prof[part]
                print(f"\n[{tag}] py-spy, {part}: {hs['samples']} samples")
                print(bl.table([[h["function"], f"{h['share']:.1%}"] for h in hs["inclusive"]],
                               ["inclusive", "share"]))
                print(bl.table([[h["function"], f"{h['share']:.1%}"] for h in hs["self"]], ["self", "share"]))
    print(f"\nJSON: {path}")
    print(json.dumps({"machine": doc["machine"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

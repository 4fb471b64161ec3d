"""Steady state on the real host (issue #2): N idle Docker containers, the agent, a real Prometheus.

1. starts ``--containers`` idle containers (``docker run -d --name lookout-bench-<i> --label
   lookout.bench=1 <image> sleep 3600``); leftovers of an earlier run (same label) are removed first;
2. starts the agent on the real host (``python -m agent run --housekeeping-interval 10s``, Docker API
   on the default socket, a temporary state dir, a free loopback port);
3. starts the real ``prometheus`` scraping it every ``--scrape-interval`` (temporary config and TSDB
   on a free loopback port) and waits until the target is up and the agent sees every container;
4. after ``--warmup`` seconds, samples the agent's utime+stime and VmRSS from /proc every
   ``--sample`` seconds for ``--duration`` seconds: CPU % of one core = ΔCPU / Δwall;
5. asks Prometheus for its view of the target (scrape duration, samples per scrape, up);
6. tears everything down: Prometheus, the agent, every container carrying ``lookout.bench=1``, the
   temporary directories. This also happens on errors, Ctrl-C, SIGTERM and when ``--max-runtime``
   is exceeded.

    python bench/bench_steady.py                 # 100 containers, 3 min window
    python bench/bench_steady.py --containers 20 --duration 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib as bl

LABEL = "lookout.bench=1"
NAME_PREFIX = "lookout-bench-"
TARGET_CPU_PCT = 1.0
TARGET_RSS_MB = 80.0


class Aborted(Exception):
    pass


def _raise(signum: int, _frame: object) -> None:
    raise Aborted(f"signal {signum}")


def docker(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {res.stderr.strip()}")
    return res.stdout.strip()


def remove_bench_containers() -> int:
    """Remove every container labelled lookout.bench=1 (only ours: the label is this benchmark's)."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).split()
    for i in range(0, len(ids), 50):
        docker("rm", "-f", *ids[i:i + 50], timeout=300, check=False)
    return len(ids)


def start_containers(n: int, image: str, workers: int) -> list[str]:
    def run(i: int) -> str:
        return docker("run", "-d", "--name", f"{NAME_PREFIX}{i}", "--label", LABEL, "--label",
                      f"lookout.bench.index={i}", image, "sleep", "3600")

    pool = ThreadPoolExecutor(workers)
    try:
        return list(pool.map(run, range(n)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: finish the running ones, start no more


def prom_query(port: int, query: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.loads(resp.read())
    return doc.get("data", {}).get("result", [])


def prom_value(port: int, query: str) -> float | None:
    result = prom_query(port, query)
    if not result:
        return None
    return float(result[0]["value"][1])  # type: ignore[index]


def prom_targets(port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10) as resp:
        return json.loads(resp.read())["data"]["activeTargets"]


def start_prometheus(binary: str, workdir: Path, agent_port: int, interval: str) -> tuple[subprocess.Popen[bytes], int]:
    port = bl.free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  scrape_timeout: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: lookout\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{agent_port}']\n"
    )
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc, port


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def lookout_containers(body: bytes) -> dict[str, float]:
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("lookout_containers{"):
            runtime = line.split('runtime="', 1)[1].split('"', 1)[0]
            out[runtime] = float(line.rsplit(" ", 1)[1])
    return out


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    result: dict[str, object] = {}
    t0 = time.monotonic()
    leftovers = remove_bench_containers()
    if leftovers:
        print(f"removed {leftovers} leftover bench containers", file=sys.stderr)
    print(f"starting {args.containers} containers from {args.image}", file=sys.stderr)
    ids = start_containers(args.containers, args.image, args.workers)
    result["containers_started"] = len(ids)
    result["container_start_s"] = round(time.monotonic() - t0, 1)
    result["containers_running_on_host"] = len(docker("ps", "-q").split())

    agent = bl.AgentProcess(["--housekeeping-interval", args.interval, "--state-dir", str(workdir / "state"),
                             *args.agent_args.split()], bl.free_port(), workdir / "agent.log")
    prom: subprocess.Popen[bytes] | None = None
    try:
        agent.start()
        agent.wait_for_snapshot(timeout=120)
        prom, prom_port = start_prometheus(args.prometheus, workdir, agent.port, args.scrape_interval)
        deadline = time.monotonic() + 120
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            _, _, body, hdrs = agent.scraper.get("/metrics", bl.GZIP)
            seen = lookout_containers(bl.gunzip(body) if hdrs.get("content-encoding") == "gzip" else body)
            up = None
            with contextlib.suppress(OSError, ValueError, KeyError):
                up = prom_value(prom_port, 'up{job="lookout"}')
            if seen.get("docker", 0) >= args.containers and up == 1.0:
                break
            time.sleep(1)
        else:
            raise TimeoutError(f"agent saw {seen}, Prometheus up={up}; agent log:\n{agent.log_tail()}")
        agent.scraper.close()  # from here on only Prometheus scrapes the agent
        result["agent_sees"] = seen
        print(f"agent sees {seen}; Prometheus is scraping; warming up {args.warmup:.0f} s", file=sys.stderr)
        time.sleep(args.warmup)

        pid = agent.pid
        samples = []
        start_cpu, start_wall = bl.cpu_seconds(pid), time.monotonic()
        end = start_wall + args.duration
        while True:
            now = time.monotonic()
            mem = bl.memory_kb(pid)
            samples.append({"t": round(now - start_wall, 2), "cpu_s": round(bl.cpu_seconds(pid) - start_cpu, 3),
                            "rss_kb": mem["VmRSS"], "hwm_kb": mem["VmHWM"]})
            if now >= end:
                break
            time.sleep(min(args.sample, max(end - now, 0.05)))
        cpu_s = bl.cpu_seconds(pid) - start_cpu
        wall = time.monotonic() - start_wall
        mem = bl.memory_kb(pid)
        window = f"{int(wall)}s"
        job = 'job="lookout"'
        duration = f"scrape_duration_seconds{{{job}}}[{window}]"
        prom_view = {
            "scrape_duration_avg_ms": prom_value(prom_port, f"avg_over_time({duration})"),
            "scrape_duration_max_ms": prom_value(prom_port, f"max_over_time({duration})"),
            "samples_scraped": prom_value(prom_port, f"scrape_samples_scraped{{{job}}}"),
            "up_min": prom_value(prom_port, f"min_over_time(up{{{job}}}[{window}])"),
            "scrapes_in_window": prom_value(prom_port, f"count_over_time(up{{{job}}}[{window}])"),
        }
        for key in ("scrape_duration_avg_ms", "scrape_duration_max_ms"):
            if prom_view[key] is not None:
                prom_view[key] = round(prom_view[key] * 1000, 2)  # type: ignore[operator]
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            target = prom_targets(prom_port)[0]
            prom_view["last_error"] = target.get("lastError", "")
            prom_view["health"] = target.get("health")
        counters = agent.counters()
        rss_values = [s["rss_kb"] for s in samples]
        result.update({
            "window_s": round(wall, 1),
            "agent_cpu_s": round(cpu_s, 3),
            "agent_cpu_pct_of_one_core": round(cpu_s / wall * 100, 3),
            "rss_mb": {"end": round(bl.mb(mem["VmRSS"]), 1), "max_sampled": round(bl.mb(max(rss_values)), 1),
                       "min_sampled": round(bl.mb(min(rss_values)), 1), "hwm": round(bl.mb(mem["VmHWM"]), 1)},
            "agent_cycles_total": counters.get("collection_count"),
            "agent_cycle_wall_avg_ms": round(counters["collection_sum"] / counters["collection_count"] * 1000, 1)
            if counters.get("collection_count") else None,
            "agent_render_wall_avg_ms": round(counters["render_sum"] / counters["render_count"] * 1000, 1)
            if counters.get("render_count") else None,
            "prometheus": prom_view,
            "samples": samples,
        })
    finally:
        stop(prom)
        agent.stop()
    return result


def report(r: dict[str, object]) -> str:
    rss = r["rss_mb"]
    prom = r["prometheus"]
    rows = [
        ["containers (bench / agent sees docker)", f"{r['containers_started']} / {r['agent_sees'].get('docker')}"],  # type: ignore[union-attr]
        ["window", f"{r['window_s']} s"],
        ["agent CPU (% of one core)", f"{r['agent_cpu_pct_of_one_core']} %"],
        ["agent CPU seconds in window", r["agent_cpu_s"]],
        ["agent RSS end / max / HWM (MB)", f"{rss['end']} / {rss['max_sampled']} / {rss['hwm']}"],  # type: ignore[index]
        ["cycle wall avg (agent's histogram)", f"{r['agent_cycle_wall_avg_ms']} ms"],
        ["render wall avg", f"{r['agent_render_wall_avg_ms']} ms"],
        ["Prometheus scrape duration avg / max",
         f"{prom['scrape_duration_avg_ms']} / {prom['scrape_duration_max_ms']} ms"],  # type: ignore[index]
        ["Prometheus samples per scrape", prom["samples_scraped"]],  # type: ignore[index]
        ["Prometheus scrapes in window, min(up)", f"{prom['scrapes_in_window']}, {prom['up_min']}"],  # type: ignore[index]
    ]
    out = [bl.table(rows, ["steady state", "value"])]
    targets = [
        ["agent CPU", f"{r['agent_cpu_pct_of_one_core']} %", f"<= {TARGET_CPU_PCT} %",
         "PASS" if r["agent_cpu_pct_of_one_core"] <= TARGET_CPU_PCT else "FAIL"],  # type: ignore[operator]
        ["agent RSS (max sampled)", f"{rss['max_sampled']} MB", f"<= {TARGET_RSS_MB:.0f} MB",  # type: ignore[index]
         "PASS" if rss["max_sampled"] <= TARGET_RSS_MB else "FAIL"],  # type: ignore[index]
    ]
    out.append("\nTargets (issue #2)")
    out.append(bl.table(targets, ["metric", "measured", "target", "result"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--duration", type=float, default=180.0, help="measurement window, seconds")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds between Prometheus up and the window")
    ap.add_argument("--sample", type=float, default=5.0, help="CPU/RSS sampling period, seconds")
    ap.add_argument("--interval", default="10s", help="agent --housekeeping-interval")
    ap.add_argument("--scrape-interval", default="10s", help="Prometheus scrape_interval")
    ap.add_argument("--image", default="lookout-test-busybox")
    ap.add_argument("--workers", type=int, default=4, help="parallel docker run")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--agent-args", default="", help="extra agent flags, space separated")
    ap.add_argument("--max-runtime", type=float, default=0.0,
                    help="abort and clean up after this many seconds (default: duration + warmup + 600)")
    args = ap.parse_args(argv)
    bl.ensure_repo_importable()
    limit = args.max_runtime or args.duration + args.warmup + 600
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGALRM, _raise)
    signal.alarm(int(limit))
    workdir = Path(tempfile.mkdtemp(prefix="lookout-steady-"))
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        result = run(args, workdir)
    except (Aborted, KeyboardInterrupt) as exc:
        print(f"aborted ({exc or 'interrupted'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish cleaning up even if asked again
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        removed = remove_bench_containers()
        print(f"removed {removed} bench containers", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    doc = {"benchmark": "steady", "machine": bl.machine(), "loadavg_at_start": load_at_start,
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
           "duration_s": round(time.time() - started, 1), "params": vars(args),
           "targets": {"cpu_pct": TARGET_CPU_PCT, "rss_mb": TARGET_RSS_MB}, "result": result}
    path = bl.write_json("steady", doc)
    print(report(result))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

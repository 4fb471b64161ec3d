"""Steady state on the real host (issue #2): N idle Docker containers, the agent, a real Prometheus.

Two cases, measured one after the other and printed side by side (``--cases``):

- ``idle``: the containers run ``sleep 3600``; the agent has no log route (issue #2);
- ``logging``: every container prints one line every ``--line-every`` seconds (100 containers, 5 s: 20
  lines/s in all) and the agent ships them to a real local rsyslogd over TCP
  (``--route syslog+tcp://127.0.0.1:PORT?framing=lf``, rsyslog from ``tests/helpers/rsyslog.py``); the bench
  checks that rsyslog received the lines written during the window. ``--variants`` measures the same
  containers with experiment patches (``LK_PATCH`` values of ``bench/experiments/sitecustomize.py``),
  ``--rounds`` times, interleaved; ``--profile`` runs py-spy and ``strace -c`` on each case's first shipped
  agent after its window.

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

    python bench/bench_steady.py                 # 100 containers, 3 min window, both cases
    python bench/bench_steady.py --containers 20 --duration 60
    flock /tmp/lookout-bench.lock python bench/bench_steady.py --duration 120 --cases idle,logging
    PYTHONPATH=.:bench/experiments python bench/bench_steady.py --cases logging \\
        --variants shipped,count --rounds 2 --duration 90   # A/B of experiment patches

The agent's CPU is its own utime+stime; ``tree`` adds its live children (chunk workers, forkserver).
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

sys.path.insert(0, str(bl.REPO))
from tests.helpers.rsyslog import Input, Rsyslog
from tests.helpers.rsyslog import missing as rsyslog_missing

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


def logging_command(every: float) -> list[str]:
    """One line every ``every`` seconds, numbered (busybox sh; HOSTNAME is the container's short id)."""
    loop = f'i=0; while true; do echo "lookout-bench $HOSTNAME line $i"; i=$((i+1)); sleep {every:g}; done'
    return ["sh", "-c", loop]


def start_containers(n: int, image: str, workers: int, cmd: list[str] | None = None) -> list[str]:
    cmd = cmd or ["sleep", "3600"]

    def run(i: int) -> str:
        return docker("run", "-d", "--name", f"{NAME_PREFIX}{i}", "--label", LABEL, "--label",
                      f"lookout.bench.index={i}", image, *cmd)

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
    """The query's first value; None when there is none or Prometheus does not answer (a loaded machine)."""
    try:
        result = prom_query(port, query)
    except (OSError, ValueError):
        return None
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


def measure(args: argparse.Namespace, workdir: Path, case: str, variant: str, profile: bool) -> dict[str, object]:
    """One agent (fresh state dir) on the running containers: warm-up, window, Prometheus' view, counters."""
    result: dict[str, object] = {"case": case, "variant": variant}
    run_dir = Path(tempfile.mkdtemp(prefix=f"{case}-{variant}-", dir=workdir))
    extra = [*args.agent_args.split()]
    env: dict[str, str] = {}
    if variant != "shipped":
        env["LK_PATCH"] = variant.replace("+", ",")  # e.g. onepass+syscalls
    count_file = run_dir / "counts.json"
    env["LK_COUNT_FILE"] = str(count_file)
    rsyslog: Rsyslog | None = None
    tcp: Input | None = None
    if case == "logging":
        tcp = Input("tcp")
        rsyslog = Rsyslog(run_dir / "rsyslog", [tcp]).start()
        # Only the bench's containers: other engineers' test containers on this host must not add their lines.
        extra += ["--route", f"syslog+tcp://127.0.0.1:{tcp.port}?framing=lf&filter.labels={LABEL.replace('=', ':')}"]
        result["route"] = extra[-1]
    agent = bl.AgentProcess(["--housekeeping-interval", args.interval, "--state-dir", str(run_dir / "state"),
                             *extra], bl.free_port(), run_dir / "agent.log", env=env)
    prom: subprocess.Popen[bytes] | None = None
    try:
        agent.start()
        agent.wait_for_snapshot(timeout=120)
        prom, prom_port = start_prometheus(args.prometheus, run_dir, agent.port, args.scrape_interval)
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
        print(f"[{case}/{variant}] agent sees {seen}; Prometheus is scraping; warming up {args.warmup:.0f} s",
              file=sys.stderr)
        time.sleep(args.warmup)

        pid = agent.pid
        samples = []
        counts_start = read_counts(count_file)
        received_start = rsyslog.count(tcp.name) if rsyslog and tcp else 0
        start_cpu, start_wall = bl.cpu_seconds(pid), time.monotonic()
        start_tree = bl.tree_cpu_seconds(pid)
        end = start_wall + args.duration
        while True:
            now = time.monotonic()
            mem = bl.memory_kb(pid)
            samples.append({"t": round(now - start_wall, 2), "cpu_s": round(bl.cpu_seconds(pid) - start_cpu, 3),
                            "rss_kb": mem["VmRSS"], "hwm_kb": mem["VmHWM"], "tree_rss_kb": bl.tree_rss_kb(pid)})
            if now >= end:
                break
            time.sleep(min(args.sample, max(end - now, 0.05)))
        cpu_s = bl.cpu_seconds(pid) - start_cpu
        tree_s = bl.tree_cpu_seconds(pid) - start_tree
        wall = time.monotonic() - start_wall
        received = (rsyslog.count(tcp.name) - received_start) if rsyslog and tcp else 0
        counts_end = read_counts(count_file)
        mem = bl.memory_kb(pid)
        children = [(c, _comm(c)) for c in bl.descendants(pid)]
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
        with contextlib.suppress(OSError, ValueError, KeyError):
            prom_view["docker_containers_max"] = prom_value(
                prom_port, f'max_over_time(lookout_containers{{{job},runtime="docker"}}[{window}])')
        if case == "logging":
            with contextlib.suppress(OSError, ValueError, KeyError):
                prom_view["log_records_sent_rate"] = prom_value(
                    prom_port, f"sum(rate(lookout_route_records_sent_total{{{job}}}[{window}]))")
                prom_view["log_files_watched"] = prom_value(prom_port, f"sum(lookout_log_files_watched{{{job}}})")
                prom_view["log_lag_bytes_max"] = prom_value(
                    prom_port, f"max_over_time(lookout_log_lag_bytes{{{job}}}[{window}])")
        counters = agent.counters()
        rss_values = [s["rss_kb"] for s in samples]
        tree_rss = [s["tree_rss_kb"] for s in samples]
        result.update({
            "window_s": round(wall, 1),
            "agent_cpu_s": round(cpu_s, 3),
            "agent_cpu_pct_of_one_core": round(cpu_s / wall * 100, 3),
            "tree_cpu_pct_of_one_core": round(tree_s / wall * 100, 3),
            "children": children,
            "rss_mb": {"end": round(bl.mb(mem["VmRSS"]), 1), "max_sampled": round(bl.mb(max(rss_values)), 1),
                       "min_sampled": round(bl.mb(min(rss_values)), 1), "hwm": round(bl.mb(mem["VmHWM"]), 1),
                       "tree_max_sampled": round(bl.mb(max(tree_rss)), 1)},
            "agent_cycles_total": counters.get("collection_count"),
            "agent_cycle_wall_avg_ms": round(counters["collection_sum"] / counters["collection_count"] * 1000, 1)
            if counters.get("collection_count") else None,
            "agent_render_wall_avg_ms": round(counters["render_sum"] / counters["render_count"] * 1000, 1)
            if counters.get("render_count") else None,
            "prometheus": prom_view,
            "samples": samples,
        })
        if case == "logging":
            expected = args.containers * wall / args.line_every
            result["syslog_received_in_window"] = received
            result["syslog_lines_per_s"] = round(received / wall, 2)
            result["syslog_expected_per_s"] = round(expected / wall, 2)
            if received < 0.9 * expected:
                print(f"WARNING: rsyslog received {received} lines in the window, expected ~{expected:.0f}",
                      file=sys.stderr)
        if counts_start and counts_end:
            result["counts_per_s"] = count_rates(counts_start, counts_end)
        if profile:
            result["profile"] = run_profilers(pid, args.profile, run_dir, f"{case}-{variant}")
    finally:
        stop(prom)
        agent.stop()
        if rsyslog is not None:
            rsyslog.stop()
        if args.keep_logs:
            print(f"kept {run_dir}", file=sys.stderr)
    return result


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def read_counts(path: Path) -> dict[str, object] | None:
    """The experiment counters the ``count`` patch writes every second (None without that patch)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def count_rates(a: dict[str, object], b: dict[str, object]) -> dict[str, dict[str, float]]:
    """Per function: calls per second and thread CPU ms per second between two dumps of the ``count`` patch."""
    dt = float(b["t"]) - float(a["t"])  # type: ignore[arg-type]
    out = {}
    ca, cb = a["counts"], b["counts"]  # type: ignore[index]
    for key, (n1, cpu1) in cb.items():  # type: ignore[union-attr]
        n0, cpu0 = ca.get(key, (0, 0.0))  # type: ignore[union-attr]
        if n1 - n0:
            out[key] = {"calls_per_s": round((n1 - n0) / dt, 2), "cpu_ms_per_s": round((cpu1 - cpu0) * 1000 / dt, 3)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["cpu_ms_per_s"]))


def run_profilers(pid: int, seconds: float, run_dir: Path, name: str) -> dict[str, object]:
    """py-spy (raw collapsed stacks, non-blocking, on-CPU samples only), a py-spy dump, then ``strace -c -f``."""
    out: dict[str, object] = {}
    bl.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    pyspy = shutil.which("py-spy")
    if pyspy:
        raw = bl.RESULTS / f"profile-steady-{name}-{stamp}.txt"
        print(f"py-spy record {seconds:.0f} s -> {raw}", file=sys.stderr)
        subprocess.run([pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                        "--nonblocking", "--threads", "--format", "raw", "--output", str(raw)],
                       capture_output=True, timeout=seconds + 60, check=False)
        out["pyspy_raw"] = str(raw)
        dump = subprocess.run([pyspy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True,
                              timeout=60, check=False)
        (bl.RESULTS / f"profile-steady-{name}-{stamp}.dump.txt").write_text(dump.stdout + dump.stderr)
    strace = shutil.which("strace")
    if strace:
        path = bl.RESULTS / f"strace-steady-{name}-{stamp}.txt"
        print(f"strace -c -f {seconds:.0f} s -> {path}", file=sys.stderr)
        proc = subprocess.Popen([strace, "-c", "-f", "-p", str(pid), "-o", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(seconds)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        out["strace"] = str(path)
        out["strace_seconds"] = seconds
    return out


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    out: dict[str, object] = {"cases": {}}
    for case in args.cases.split(","):
        t0 = time.monotonic()
        leftovers = remove_bench_containers()
        if leftovers:
            print(f"removed {leftovers} leftover bench containers", file=sys.stderr)
        cmd = logging_command(args.line_every) if case == "logging" else None
        print(f"[{case}] starting {args.containers} containers from {args.image}: {cmd or 'sleep 3600'}",
              file=sys.stderr)
        ids = start_containers(args.containers, args.image, args.workers, cmd)
        info = {"containers_started": len(ids), "container_start_s": round(time.monotonic() - t0, 1),
                "containers_running_on_host": len(docker("ps", "-q").split()), "runs": []}
        variants = args.variants.split(",") if case == "logging" else ["shipped"]
        profiled = False
        for _round in range(args.rounds if case == "logging" else 1):
            for variant in variants:
                profile = bool(args.profile) and not profiled and variant == "shipped"
                profiled = profiled or profile
                try:
                    r = measure(args, workdir, case, variant, profile)
                except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
                    print(f"[{case}/{variant}] failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    info["runs"].append({"case": case, "variant": variant, "error": str(exc)})  # type: ignore[union-attr]
                    continue
                r["containers_started"] = len(ids)
                info["runs"].append(r)  # type: ignore[union-attr]
                print(f"[{case}/{variant}] CPU {r['agent_cpu_pct_of_one_core']} % (tree "
                      f"{r['tree_cpu_pct_of_one_core']} %), RSS max {r['rss_mb']['max_sampled']} MB"  # type: ignore[index]
                      + (f", syslog {r.get('syslog_lines_per_s')} lines/s" if case == "logging" else ""),
                      file=sys.stderr)
        out["cases"][case] = info  # type: ignore[index]
        removed = remove_bench_containers()
        print(f"[{case}] removed {removed} bench containers", file=sys.stderr)
    return out


def report(result: dict[str, object]) -> str:
    runs = [r for case in result["cases"].values() for r in case["runs"] if "error" not in r]  # type: ignore[union-attr]
    header = ["steady state"] + [f"{r['case']}/{r['variant']}" for r in runs]

    def row(label: str, fn) -> list[object]:
        cells: list[object] = [label]
        for r in runs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError):
                cells.append("-")
        return cells

    rows = [
        row("containers (bench / agent sees docker)",
            lambda r: f"{r['containers_started']} / {r['agent_sees'].get('docker')}"),
        row("window", lambda r: f"{r['window_s']} s"),
        row("agent CPU (% of one core)", lambda r: f"{r['agent_cpu_pct_of_one_core']} %"),
        row("agent + children CPU (% of one core)", lambda r: f"{r['tree_cpu_pct_of_one_core']} %"),
        row("agent CPU seconds in window", lambda r: r["agent_cpu_s"]),
        row("agent RSS end / max / HWM (MB)",
            lambda r: f"{r['rss_mb']['end']} / {r['rss_mb']['max_sampled']} / {r['rss_mb']['hwm']}"),
        row("agent + children RSS max (MB)", lambda r: r["rss_mb"]["tree_max_sampled"]),
        row("children", lambda r: ",".join(c[1] for c in r["children"]) or "none"),
        row("docker containers seen, max in window", lambda r: r["prometheus"]["docker_containers_max"]),
        row("syslog lines/s received (expected)",
            lambda r: f"{r['syslog_lines_per_s']} ({r['syslog_expected_per_s']})"),
        row("cycle wall avg (agent's histogram)", lambda r: f"{r['agent_cycle_wall_avg_ms']} ms"),
        row("render wall avg", lambda r: f"{r['agent_render_wall_avg_ms']} ms"),
        row("Prometheus scrape duration avg / max",
            lambda r: f"{r['prometheus']['scrape_duration_avg_ms']} / {r['prometheus']['scrape_duration_max_ms']} ms"),
        row("Prometheus samples per scrape", lambda r: r["prometheus"]["samples_scraped"]),
        row("Prometheus scrapes in window, min(up)",
            lambda r: f"{r['prometheus']['scrapes_in_window']}, {r['prometheus']['up_min']}"),
        row("target CPU <= 1 %", lambda r: "PASS" if r["agent_cpu_pct_of_one_core"] <= TARGET_CPU_PCT else "FAIL"),
        row("target RSS <= 80 MB", lambda r: "PASS" if r["rss_mb"]["max_sampled"] <= TARGET_RSS_MB else "FAIL"),
    ]
    out = [bl.table(rows, header)]
    for r in runs:
        counts = r.get("counts_per_s")
        if counts:
            out.append(f"\nPython-level counters ({r['case']}/{r['variant']}): calls/s, thread CPU ms/s")
            shown = [(k, v) for k, v in counts.items() if v["cpu_ms_per_s"] >= 0.005 or k.startswith("to_thread")]
            out.append(bl.table([[k, v["calls_per_s"], v["cpu_ms_per_s"]] for k, v in shown],
                                ["function", "calls/s", "CPU ms/s"]))
        if r.get("profile"):
            out.append(f"\nprofiles ({r['case']}/{r['variant']}): {r['profile']}")
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
    ap.add_argument("--cases", default="idle,logging", help="comma list of idle, logging")
    ap.add_argument("--line-every", type=float, default=5.0, help="logging case: seconds between a container's lines")
    ap.add_argument("--variants", default="shipped",
                    help="logging case: comma list of variants, each shipped or LK_PATCH values of bench/experiments "
                         "joined by + (e.g. shipped,onepass+syscalls)")
    ap.add_argument("--rounds", type=int, default=1, help="logging case: times each variant is measured, interleaved")
    ap.add_argument("--profile", type=float, default=0.0,
                    help="seconds of py-spy and then of strace -c on each case's first shipped agent, after its window")
    ap.add_argument("--keep-logs", action="store_true", help="keep the agents' and rsyslog's directories")
    ap.add_argument("--max-runtime", type=float, default=0.0,
                    help="abort and clean up after this many seconds (default: duration + warmup + 600)")
    args = ap.parse_args(argv)
    bl.ensure_repo_importable()
    if "logging" in args.cases.split(","):
        why = rsyslog_missing("tcp")
        if why:
            ap.error(f"the logging case needs rsyslog: {why}")
    n_runs = ("idle" in args.cases.split(",")) + ("logging" in args.cases.split(",")) * args.rounds * len(
        args.variants.split(","))
    limit = args.max_runtime or n_runs * (args.duration + args.warmup + 2 * args.profile + 120) + 600
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
        if not args.keep_logs:
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

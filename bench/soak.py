"""The one-hour soak (issue #15): many containers logging for an hour through two routes, sampled and plotted.

What runs, all on this host:

- ``--containers`` Docker containers (json-file, ``max-size``/``max-file`` so that each file rotates every
  few minutes) print numbered lines, ``--rate`` lines per second in all: each container writes a burst of
  ``rate / containers`` lines and sleeps a second (``echo`` is a busybox ``sh`` builtin: no fork per line);
- the agent (``python -m agent run``, a fresh state dir, ``--journal off``) with two routes, both filtered to
  the soak's containers: syslog over TCP (LF framing) to a real rsyslogd, and Elasticsearch ``_bulk`` to the
  strict stand-in of the tests (``tests/helpers/es_standin.py``) in a process of its own, answering 1 % of
  the requests 429 with ``Retry-After: 1`` and 1 % of the remaining items 429 (``es_rejected_execution``);
  the stand-in validates every request as the tests' one does but keeps only which line numbers arrived
  (an hour's documents would not fit);
- a real Prometheus scraping ``/metrics`` every ``--scrape-interval`` (5 s).

Every ``--sample`` seconds (10 s) the bench records the agent's RSS (its own, split into glibc's heap, anonymous
maps such as pymalloc's arenas, and files, from /proc/PID/smaps; and with its chunk workers),
open file descriptors, threads, CPU (% of one core over the interval, the process tree), and what each
receiver holds so far. After ``--duration`` the containers are stopped, the last line number each one wrote is
read from its own log file, and the bench waits until both receivers hold every line (``--drain`` seconds at
most): "every line delivered" means each container's lines 0..last arrived at both receivers; duplicates are
counted. The RSS slope over the last ``--slope-window`` seconds (40 min) is a least-squares fit with its
standard error; it is called flat when the fitted change over the window is within twice the residual
standard deviation (the noise of the samples themselves).

Results: ``bench/results/soak-<stamp>.json`` (all samples) and ``bench/results/soak-<stamp>.png`` (RSS, fds,
CPU and delivery rates against time). Plotting needs matplotlib (``pip install -e '.[bench]'``).

    flock /tmp/lookout-bench.lock python bench/soak.py                      # the hour
    python bench/soak.py --duration 180 --slope-window 120 --containers 10  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchlib as bl

sys.path.insert(0, str(bl.REPO))
from bench_steady import prom_value, start_prometheus, stop

from tests.helpers import docker as dk
from tests.helpers.rsyslog import Input, Rsyslog
from tests.helpers.rsyslog import missing as rsyslog_missing

LABEL = "lookout.soak=1"
NAME_PREFIX = "lookout-soak-"
LINE = re.compile(rb"soak (\d+) (\d+) ")


# --- the Elasticsearch stand-in, in a process of its own ------------------------------------------------


def standin_main(port_file: str, request_429: float, item_429: float) -> None:
    """Serve the strict ``_bulk`` stand-in with random 429s; ``GET /_soak`` answers what arrived."""
    from aiohttp import web

    from tests.helpers.es_standin import EsStandin, Fault

    class SoakStandin(EsStandin):
        """Validates as the tests' stand-in; keeps a bitmap of line numbers per container instead of documents."""

        def __init__(self) -> None:
            super().__init__()
            self.item_fault = lambda *_: 429 if random.random() < item_429 else None
            self.seen: dict[int, bytearray] = {}
            self.duplicates = 0
            self.statuses: dict[int, int] = {}
            self.items_by_status: dict[int, int] = {}
            self.foreign = 0

        def app(self) -> web.Application:
            app = super().app()
            app.router.add_get("/_soak", self.report)
            return app

        def _next_fault(self) -> Fault | None:
            fault = super()._next_fault()
            if fault is None and random.random() < request_429:
                return Fault(429, retry_after="1")
            return fault

        def _log(self, request: web.Request, status: int, size: int, items: Any = None, error: str = "",
                 at: float = 0.0) -> None:
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                for item in items or ():
                    self.items_by_status[item[3]] = self.items_by_status.get(item[3], 0) + 1

        def _apply(self, action: str, index: str, doc_id: str | None, doc: dict[str, Any] | None) -> dict[str, Any]:
            result = super()._apply(action, index, doc_id, doc)
            if result.get("status") in (200, 201):
                key = (index, result["_id"])
                self.indices[index].pop(result["_id"], None)
                self.versions.pop(key, None)
                self.writes.pop(key, None)
                self.mark((doc or {}).get("message", ""))
            return result

        def mark(self, message: str) -> None:
            match = LINE.match(message.encode())
            if match is None:
                self.foreign += 1
                return
            container, seq = int(match[1]), int(match[2])
            self.duplicates += mark_seen(self.seen, container, seq)

        async def report(self, request: web.Request) -> web.Response:
            with self.lock:
                upto = {int(k): int(v) for k, v in request.query.items() if k.isdigit()}
                return web.json_response({
                    "statuses": self.statuses, "items": self.items_by_status, "duplicates": self.duplicates,
                    "foreign": self.foreign,
                    "containers": {c: summarize(bits, upto.get(c)) for c, bits in self.seen.items()},
                })

    server = SoakStandin().start()
    Path(port_file).write_text(str(server.port))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def mark_seen(seen: dict[int, bytearray], container: int, seq: int) -> bool:
    """Set line ``seq`` of ``container`` in its bitmap; True if it was set already (a duplicate)."""
    bits = seen.setdefault(container, bytearray())
    byte, bit = divmod(seq, 8)
    if byte >= len(bits):
        bits.extend(bytes(byte - len(bits) + 1 + 4096))
    dup = bool(bits[byte] & (1 << bit))
    bits[byte] |= 1 << bit
    return dup


def summarize(bits: bytearray, last: int | None) -> dict[str, Any]:
    """How many line numbers arrived, and (given the last one written) which are missing, as ranges."""
    count = sum(bin(b).count("1") for b in bits)
    out: dict[str, Any] = {"received": count}
    if last is not None:
        missing: list[list[int]] = []
        for seq in range(last + 1):
            byte = seq >> 3
            if byte >= len(bits) or not bits[byte] & (1 << (seq & 7)):
                if missing and missing[-1][1] == seq - 1:
                    missing[-1][1] = seq
                else:
                    missing.append([seq, seq])
        out["missing"] = sum(b - a + 1 for a, b in missing)
        out["missing_ranges"] = missing[:20]
    return out


class StandinProcess:
    def __init__(self, workdir: Path, request_429: float, item_429: float) -> None:
        port_file = workdir / "standin.port"
        self.log = open(workdir / "standin.log", "wb")  # noqa: SIM115 (closed in stop)
        env = dict(os.environ, PYTHONPATH=f"{bl.REPO}{os.pathsep}{bl.REPO / 'bench'}")
        self.proc = subprocess.Popen([sys.executable, __file__, "--standin", str(port_file), str(request_429),
                                      str(item_429)], stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in did not start; see {workdir / 'standin.log'}")
            time.sleep(0.1)
        self.port = int(port_file.read_text())

    def report(self, last: dict[int, int] | None = None) -> dict[str, Any]:
        query = "&".join(f"{c}={n}" for c, n in (last or {}).items())
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_soak?{query}", timeout=60) as resp:
            doc = json.loads(resp.read())
        doc["containers"] = {int(c): v for c, v in doc["containers"].items()}
        return doc

    def stop(self) -> None:
        stop(self.proc)  # type: ignore[arg-type]
        self.log.close()


# --- rsyslog's output, read as it grows ---------------------------------------------------------------


class SyslogCount:
    """Line numbers per container in rsyslog's output file, read incrementally (the file grows to GBs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.seen: dict[int, bytearray] = {}
        self.duplicates = 0
        self.records = 0

    def update(self) -> int:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1  # a line omfile is still writing waits for the next read
        self.offset += end
        for match in re.finditer(rb'"msg":"soak (\d+) (\d+) ', data[:end]):
            container, seq = int(match[1]), int(match[2])
            self.duplicates += mark_seen(self.seen, container, seq)
            self.records += 1
        return self.records


# --- containers ---------------------------------------------------------------------------------------


def container_command(index: int, burst: int) -> list[str]:
    """``burst`` numbered lines, a second's sleep, again; ~110 bytes a line, like an access log."""
    loop = (f'i=0; while true; do j=0; while [ $j -lt {burst} ]; do '
            f'echo "soak {index} $i GET /api/v1/items?page=$i HTTP/1.1 200 1534 0.004 agent=soak-bench/1.0 ok"; '
            'i=$((i+1)); j=$((j+1)); done; sleep 1; done')
    return ["sh", "-c", loop]


def remove_soak_containers() -> None:
    ids = dk.docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    for i in range(0, len(ids), 50):
        dk.docker("rm", "-f", *ids[i:i + 50], timeout=300, check=False)


def last_written(name: str) -> int:
    """The last line number a stopped container wrote, from the newest line of its current log file."""
    path = Path(dk.docker("inspect", "-f", "{{.LogPath}}", name).stdout.strip())
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4096))
        tail = fh.read().splitlines()
    for line in reversed(tail):
        match = LINE.search(line)
        if match:
            return int(match[2])
    raise RuntimeError(f"no soak line at the end of {path}")


# --- sampling -----------------------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


_MAP = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$")


def memory_parts(pid: int) -> dict[str, float]:
    """The agent's RSS by kind of mapping (MiB), from /proc/PID/smaps: ``heap`` (glibc's main arena: blocks over
    512 bytes, trimmed once a minute), ``anon`` (anonymous maps: CPython's 1 MiB pymalloc arenas of small objects,
    and any other glibc arena), ``files`` (the interpreter, libraries, mapped files)."""
    parts = {"heap": 0, "anon": 0, "files": 0}
    kind = ""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        m = _MAP.match(line)
        if m:
            name = m.group(4).strip()
            kind = "heap" if name == "[heap]" else "anon" if not name else "files" if name.startswith("/") else ""
        elif kind and line.startswith("Rss:"):
            parts[kind] += int(line.split()[1])
    return {k: round(v / 1024, 2) for k, v in parts.items()}


def slope(points: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares y = a + b t: b per hour, its standard error, the residual sd, the fitted change."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    b = sum((t - mt) * (y - my) for t, y in points) / sxx
    a = my - b * mt
    resid = [y - (a + b * t) for t, y in points]
    sd = math.sqrt(sum(r * r for r in resid) / (n - 2))
    se = sd / math.sqrt(sxx)
    span = points[-1][0] - points[0][0]
    return {"per_hour": b * 3600, "se_per_hour": se * 3600, "residual_sd": sd, "fitted_change": b * span,
            "span_s": span, "n": n, "flat": abs(b * span) <= 2 * sd}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["rss_mb"] for s in samples], label="agent RSS")
    ax.plot(t, [s["tree_rss_mb"] for s in samples], label="with chunk workers", alpha=0.7)
    for part, label in (("heap", "of which glibc heap"), ("anon", "of which anonymous maps (pymalloc)")):
        if all(f"{part}_mb" in s for s in samples):
            ax.plot(t, [s[f"{part}_mb"] for s in samples], label=label, alpha=0.8)
    fit = result["rss_slope"]
    t0 = samples[-1]["t"] - fit["span_s"]
    window = [s for s in samples if s["t"] >= t0]
    a = sum(s["rss_mb"] for s in window) / len(window) - fit["per_hour"] / 3600 * (
        sum(s["t"] for s in window) / len(window))
    ax.plot([w["t"] / 60 for w in (window[0], window[-1])],
            [a + fit["per_hour"] / 3600 * w["t"] for w in (window[0], window[-1])], "k--",
            label=f"fit, last {fit['span_s'] / 60:.0f} min: {fit['per_hour']:+.2f} MiB/h")
    ax.set_ylabel("MiB")
    ax.legend(loc="lower right")
    ax.set_title(f"Lookout soak: {result['containers']} containers, {result['lines_per_s']:.0f} lines/s, "
                 f"{result['duration_s'] / 60:.0f} min, {result['machine'].get('cpu_model', '')}"[:110], fontsize=9)
    axes[1].plot(t, [s["fds"] for s in samples], label="agent fds")
    axes[1].plot(t, [s["threads"] for s in samples], label="agent threads")
    axes[1].set_ylabel("count")
    axes[1].legend(loc="lower right")
    axes[2].plot(t, [s["cpu_pct"] for s in samples], label="agent + workers, % of one core")
    axes[2].set_ylabel("CPU %")
    axes[2].legend(loc="lower right")
    for key, label in (("written_per_s", "read by the agent (Prometheus' view)"), ("syslog_per_s", "rsyslog received"),
                       ("es_per_s", "Elasticsearch stand-in indexed")):
        axes[3].plot(t, [s.get(key, 0) for s in samples], label=label, alpha=0.8)
    axes[3].set_ylabel("lines/s")
    axes[3].set_xlabel("minutes")
    axes[3].legend(loc="lower right")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- the run ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    dk.ensure_daemon()
    dk.ensure_image()
    remove_soak_containers()
    burst = max(1, round(args.rate / args.containers))
    tcp = Input("tcp")
    rsyslog = Rsyslog(workdir / "rsyslog", [tcp]).start()
    standin = StandinProcess(workdir, args.request_429, args.item_429)
    flt = f"filter.labels={LABEL.replace('=', ':')}"
    routes = [f"syslog+tcp://127.0.0.1:{tcp.port}?framing=lf&{flt}",
              f"elasticsearch+http://127.0.0.1:{standin.port}/soak-%Y.%m.%d?{flt}"]
    agent = bl.AgentProcess(["--housekeeping-interval", "1s", "--state-dir", str(workdir / "state"),
                             "--journal", "off", *(x for r in routes for x in ("--route", r)),
                             *args.agent_args.split()], bl.free_port(), workdir / "agent.log")
    prom = None
    samples: list[dict[str, Any]] = []
    syslog = SyslogCount(rsyslog.out(tcp.name))
    result: dict[str, Any] = {"containers": args.containers, "burst": burst, "routes": routes,
                              "machine": bl.machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        agent.start()
        agent.wait_for_snapshot(timeout=120)
        prom, prom_port = start_prometheus(args.prometheus, workdir, agent.port, args.scrape_interval)
        names = [f"{NAME_PREFIX}{i}" for i in range(args.containers)]
        for i, name in enumerate(names):
            dk.docker("run", "-d", "--name", name, "--label", LABEL, "--log-driver", "json-file",
                      "--log-opt", f"max-size={args.max_size}", "--log-opt", f"max-file={args.max_file}",
                      dk.IMAGE, *container_command(i, burst))
        print(f"{len(names)} containers logging {burst} lines/s each; sampling every {args.sample:g} s for "
              f"{args.duration:g} s", file=sys.stderr)
        pid = agent.pid
        start = time.monotonic()
        prev_t, prev_cpu = start, bl.tree_cpu_seconds(pid)
        prev_syslog = prev_es = prev_written = 0
        while True:
            time.sleep(args.sample - (time.monotonic() - start) % args.sample)
            now = time.monotonic()
            if agent.proc is not None and agent.proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {agent.proc.returncode}:\n{agent.log_tail()}")
            cpu = bl.tree_cpu_seconds(pid)
            mem = bl.memory_kb(pid)
            es = standin.report()
            es_total = sum(c["received"] for c in es["containers"].values())
            syslog_total = syslog.update()
            # What the agent's route readers decoded so far (both routes read every line), as Prometheus saw it.
            read = prom_value(prom_port, 'max(lookout_log_records_read_total{job="lookout"})')
            written = int(read) if read is not None else prev_written
            dt = now - prev_t
            sample = {"t": round(now - start, 1), "rss_mb": round(bl.mb(mem["VmRSS"]), 2),
                      "tree_rss_mb": round(bl.mb(bl.tree_rss_kb(pid)), 2), "fds": fd_count(pid),
                      "threads": threads(pid), "cpu_pct": round((cpu - prev_cpu) / dt * 100, 2),
                      "es_indexed": es_total, "syslog_received": syslog_total, "read": written,
                      "es_per_s": round((es_total - prev_es) / dt, 1),
                      "syslog_per_s": round((syslog_total - prev_syslog) / dt, 1),
                      "written_per_s": round((written - prev_written) / dt, 1),
                      "up": prom_value(prom_port, 'up{job="lookout"}'),
                      "lag_bytes": prom_value(prom_port, 'max(lookout_log_lag_bytes{job="lookout"})'),
                      **{f"{k}_mb": v for k, v in memory_parts(pid).items()}}
            samples.append(sample)
            prev_t, prev_cpu, prev_es, prev_syslog, prev_written = now, cpu, es_total, syslog_total, written
            if len(samples) % 6 == 0:
                print(json.dumps(sample), file=sys.stderr)
            if now - start >= args.duration:
                break
        wall = time.monotonic() - start
        dk.docker("stop", "-t", "1", *names, timeout=300)
        last = {i: last_written(name) for i, name in enumerate(names)}
        written_total = sum(n + 1 for n in last.values())
        print(f"stopped; {written_total} lines written; waiting for both receivers", file=sys.stderr)
        deadline = time.monotonic() + args.drain
        drained_at = None
        while time.monotonic() < deadline:
            syslog.update()
            es = standin.report(last)
            syslog_missing = sum(summarize(syslog.seen.get(c, bytearray()), n)["missing"] for c, n in last.items())
            es_missing = sum(es["containers"].get(c, {"missing": n + 1})["missing"] for c, n in last.items())
            if syslog_missing == 0 and es_missing == 0:
                drained_at = time.monotonic()
                break
            time.sleep(5)
        syslog_report = {c: summarize(syslog.seen.get(c, bytearray()), n) for c, n in last.items()}
        es = standin.report(last)
        result.update({
            "duration_s": round(wall, 1), "lines_written": written_total,
            "lines_per_s": round(written_total / wall, 1),
            "drain_s": round(drained_at - (start + wall), 1) if drained_at else None,
            "syslog": {"received": syslog.records, "duplicates": syslog.duplicates,
                       "missing": sum(r["missing"] for r in syslog_report.values()),
                       "missing_ranges": {c: r["missing_ranges"] for c, r in syslog_report.items() if r["missing"]}},
            "elasticsearch": {"indexed": sum(c["received"] for c in es["containers"].values()),
                              "duplicates": es["duplicates"], "statuses": es["statuses"], "items": es["items"],
                              "missing": sum(es["containers"].get(c, {"missing": n + 1})["missing"]
                                             for c, n in last.items()),
                              "missing_ranges": {c: v["missing_ranges"] for c, v in es["containers"].items()
                                                 if v.get("missing")}},
            "agent_counters": agent.counters(),
            "prometheus": {
                "up_min": prom_value(prom_port, f'min_over_time(up{{job="lookout"}}[{int(wall)}s])'),
                "scrapes": prom_value(prom_port, f'count_over_time(up{{job="lookout"}}[{int(wall)}s])'),
                "scrape_duration_max_s": prom_value(
                    prom_port, f'max_over_time(scrape_duration_seconds{{job="lookout"}}[{int(wall)}s])')},
        })
    finally:
        stop(prom)
        agent.stop()
        standin.stop()
        rsyslog.stop()
        if not args.keep_containers:
            remove_soak_containers()
    window = [(s["t"], s["rss_mb"]) for s in samples if s["t"] >= samples[-1]["t"] - args.slope_window]
    result["rss_slope"] = slope(window)
    result["tree_rss_slope"] = slope([(s["t"], s["tree_rss_mb"]) for s in samples
                                      if s["t"] >= samples[-1]["t"] - args.slope_window])
    result["fds"] = {"min": min(s["fds"] for s in samples), "max": max(s["fds"] for s in samples)}
    result["cpu_pct"] = {"mean": round(sum(s["cpu_pct"] for s in samples) / len(samples), 2),
                         "max": max(s["cpu_pct"] for s in samples)}
    result["rss_mb"] = {"first": samples[0]["rss_mb"], "max": max(s["rss_mb"] for s in samples),
                        "last": samples[-1]["rss_mb"]}
    for part in ("heap", "anon"):  # which part of RSS moves
        points = [(s["t"], s[f"{part}_mb"]) for s in samples
                  if f"{part}_mb" in s and s["t"] >= samples[-1]["t"] - args.slope_window]
        if len(points) > 2:
            result[f"{part}_slope"] = slope(points)
    result["samples"] = samples
    return result


def report_rows(result: dict[str, Any]) -> str:
    """The run as the markdown rows BENCHMARKS.md shows (``--summarize FILE``)."""
    samples = result["samples"]
    es, sl = result["elasticsearch"], result["syslog"]
    fit, tree = result["rss_slope"], result["tree_rss_slope"]
    minute = [s for s in samples if s["t"] <= 60]
    rows = [
        ("window", f"{result['started']}, {result['duration_s'] / 60:.0f} min, {result['containers']} containers, "
                   f"{result['lines_per_s']:,.0f} lines/s"),
        ("lines written", f"{result['lines_written']:,}"),
        ("rsyslog (syslog TCP)", f"{sl['received']:,} received, {sl['missing']} missing, "
                                 f"{sl['duplicates']} duplicates"),
        ("Elasticsearch stand-in", f"{es['indexed']:,} indexed, {es['missing']} missing, {es['duplicates']} "
                                   f"duplicates; requests {es['statuses']}, items {es['items']}"),
        ("drained after the stop", f"{result['drain_s']} s"),
        ("agent RSS", f"{minute[-1]['rss_mb'] if minute else samples[0]['rss_mb']} MiB at 1 min, "
                      f"{result['rss_mb']['max']} max, {result['rss_mb']['last']} at the end"),
        ("RSS slope, last 40 min", f"{fit['per_hour']:+.2f} ± {1.96 * fit['se_per_hour']:.2f} MiB/h (fitted change "
                                   f"{fit['fitted_change']:+.2f} MiB, residual sd {fit['residual_sd']:.2f} MiB): "
                                   f"{'flat' if fit['flat'] else 'not flat'} by the 2-sd rule"),
        *((f"of which {part}", f"{result[f'{part}_slope']['per_hour']:+.2f} MiB/h (fitted change "
                               f"{result[f'{part}_slope']['fitted_change']:+.2f} MiB)")
          for part in ("heap", "anon") if f"{part}_slope" in result),
        ("with chunk workers", f"{tree['per_hour']:+.2f} MiB/h (fitted change {tree['fitted_change']:+.2f} MiB, "
                               f"residual sd {tree['residual_sd']:.2f})"),
        ("fds", f"{result['fds']['min']}-{result['fds']['max']}"),
        ("CPU (agent + workers)", f"{result['cpu_pct']['mean']} % of one core on average, "
                                  f"{result['cpu_pct']['max']} % max"),
        ("Prometheus", f"{result['prometheus']['scrapes']:.0f} scrapes, up min {result['prometheus']['up_min']}, "
                       f"longest {result['prometheus']['scrape_duration_max_s'] * 1000:.0f} ms"),
    ]
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--standin"]:
        standin_main(argv[1], float(argv[2]), float(argv[3]))
        return 0
    if argv[:1] == ["--summarize"]:
        print(report_rows(json.loads(Path(argv[1]).read_text())))
        return 0
    if argv[:1] == ["--plot"]:  # draw a run's PNG again from its JSON: --plot FILE.json OUT.png
        plot(json.loads(Path(argv[1]).read_text()), Path(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3600)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2000, help="lines per second in all")
    parser.add_argument("--max-size", default="1m", help="json-file max-size (rotation)")
    parser.add_argument("--max-file", default="3")
    parser.add_argument("--scrape-interval", default="5s")
    parser.add_argument("--sample", type=float, default=10)
    parser.add_argument("--slope-window", type=float, default=2400)
    parser.add_argument("--drain", type=float, default=600)
    parser.add_argument("--request-429", type=float, default=0.01)
    parser.add_argument("--item-429", type=float, default=0.01)
    parser.add_argument("--agent-args", default="")
    parser.add_argument("--prometheus", default="prometheus")
    parser.add_argument("--keep-containers", action="store_true")
    parser.add_argument("--out", default="", help="results name (default soak: bench/results/soak-<stamp>.json)")
    args = parser.parse_args(argv)
    problem = rsyslog_missing("tcp")
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    name = args.out or "soak"
    with tempfile.TemporaryDirectory(prefix="lookout-soak-") as tmp:
        try:
            result = run(args, Path(tmp))
        except BaseException:
            with contextlib.suppress(OSError):
                print((Path(tmp) / "agent.log").read_text()[-4000:], file=sys.stderr)
            raise
    result["command"] = "python bench/soak.py " + " ".join(argv)
    out = bl.write_json(name, result)
    png = out.with_suffix(".png")
    plot(result, png)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    print(f"results: {out}\nplot: {png}", file=sys.stderr)
    ok = result["syslog"]["missing"] == 0 and result["elasticsearch"]["missing"] == 0 and result["rss_slope"]["flat"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

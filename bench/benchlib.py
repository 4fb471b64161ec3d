"""Helpers shared by the benchmarks: the agent as a child process, /proc accounting, scrapes, stats."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# What Prometheus 2.x sends by default: it prefers OpenMetrics and always asks for gzip.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
GZIP = {"Accept-Encoding": "gzip"}
SCRAPE_MODES = {
    "text": {},
    "text+gzip": {"Accept-Encoding": "gzip"},
    "prometheus (openmetrics+gzip)": {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"},
}


def ensure_repo_importable() -> None:
    """Import the agent from the tree this bench/ lives in (ahead of any installed copy)."""
    if sys.path[:1] != [str(REPO)]:
        sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_system_seconds(pid: int) -> tuple[float, float]:
    """utime and stime of a process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc/<pid>/stat."""
    return sum(user_system_seconds(pid))


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...), e.g. the agent's chunk workers."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children.get(child, [])
    return out


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of every live process below it, plus what its reaped children used."""
    total = 0.0
    for i, proc in enumerate([pid, *descendants(pid)]):
        try:
            with open(f"/proc/{proc}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if i == 0 else 0)
    return total / CLK_TCK


def warm_page_cache(directory: Path, mib: int) -> float:
    """Write ``mib`` MiB into a file in ``directory`` and delete it; returns the system CPU seconds it took.

    On this VM (virtio_balloon with free page reporting) the guest hands freed memory back to the host after it
    has been free a little while, and the first write into such memory is slow: 534 MiB of page cache took
    0.99 s of system time after 40 idle seconds and 0.10 s right after another such write. A benchmark whose
    agent writes hundreds of MiB would otherwise measure the hypervisor in its first run after a pause, not the
    agent. Untimed; the caller reports what it cost."""
    before = os.times()
    buf = b"\0" * (1 << 20)
    path = directory / f".warm-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(mib):
            os.write(fd, buf)
    finally:
        os.close(fd)
        path.unlink()
    return os.times().system - before.system


def tree_peak_rss_kb(pid: int) -> int:
    """The sum of VmHWM over a process and its live descendants (shared pages counted in each: an upper bound)."""
    total = 0
    for proc in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += memory_kb(proc).get("VmHWM", 0)
    return total


def mb(kib: int) -> float:
    """/proc's "kB" (KiB) in MB of 10^6 bytes, the unit of the issues' RSS targets (80 MB = 76.3 MiB)."""
    return kib * 1024 / 1e6


def tree_rss_kb(pid: int) -> int:
    """The sum of VmRSS over a process and its live descendants (shared pages counted in each: an upper bound)."""
    total = 0
    for proc in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += memory_kb(proc).get("VmRSS", 0)
    return total


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "hostname": platform.node(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    if not ms:
        return {}
    return {"n": len(ms), "p50": round(pct(ms, 50), 2), "p95": round(pct(ms, 95), 2), "max": round(max(ms), 2),
            "mean": round(statistics.fmean(ms), 2), "min": round(min(ms), 2)}


def write_json(name: str, data: object) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    latest = RESULTS / f"{name}-latest.json"
    latest.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: list[list[object]], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- scraping -------------------------------------------------------------------------------------


class Scraper:
    """Sequential GETs over one keep-alive connection, as Prometheus does; reconnects when dropped."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[float, int, bytes, dict[str, str]]:
        """(seconds from request to the body's last byte, status, body, headers)."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                started = time.perf_counter()
                self.conn.request("GET", path, headers=headers or {})
                resp = self.conn.getresponse()
                body = resp.read()
                elapsed = time.perf_counter() - started
                return elapsed, resp.status, body, {k.lower(): v for k, v in resp.getheaders()}
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


_SELF = re.compile(rb"^lookout_(collection|render)_duration_seconds_(count|sum) ([0-9.e+-]+)$", re.M)


def self_metrics(body: bytes, gzipped: bool) -> dict[str, float]:
    """The agent's own counters from the tail of a /metrics body (the last gzip member when gzipped)."""
    tail = body[-200_000:]
    if gzipped:
        text = b""
        pos = len(body)
        for _ in range(64):  # the self-metrics are the last, small gzip member
            pos = body.rfind(b"\x1f\x8b\x08", 0, pos)
            if pos < 0 or len(body) - pos > 1_000_000:
                break
            try:
                text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body[pos:])
                break
            except zlib.error:
                continue
        tail = text
    return {f"{m.group(1).decode()}_{m.group(2).decode()}": float(m.group(3)) for m in _SELF.finditer(tail)}


def count_series(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def gunzip(body: bytes) -> bytes:
    return gzip.decompress(body)


# --- the agent as a process ------------------------------------------------------------------------


@dataclass
class AgentProcess:
    args: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment (e.g. an experiment's LK_PATCH)
    scraper: Scraper = field(init=False)

    def __post_init__(self) -> None:
        self.scraper = Scraper("127.0.0.1", self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        cmd = [sys.executable, "-m", "agent", "run", "--listen", f"127.0.0.1:{self.port}", *self.args]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(self.env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait_for_snapshot(self, timeout: float = 180.0, cycles: int = 1) -> dict[str, float]:
        """Until /metrics carries container series and ``cycles`` housekeeping cycles completed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                _, status, body, hdrs = self.scraper.get("/metrics", GZIP)
            except OSError:
                time.sleep(0.2)
                continue
            gzipped = hdrs.get("content-encoding") == "gzip"
            own = self_metrics(body, gzipped)
            if gzipped and own.get("collection_count", 0) >= cycles:
                body = gunzip(body)
            if status == 200 and b"container_last_seen" in body and own.get("collection_count", 0) >= cycles:
                return own
            time.sleep(0.2)
        raise TimeoutError(f"no snapshot after {timeout:.0f} s; log:\n{self.log_tail()}")

    def counters(self) -> dict[str, float]:
        """The agent's own counters, via a gzip scrape (the cached body: cheap, as Prometheus' scrapes)."""
        _, _, body, hdrs = self.scraper.get("/metrics", GZIP)
        return self_metrics(body, hdrs.get("content-encoding") == "gzip")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        self.scraper.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def running_agent(args: list[str], log_path: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(args, free_port(), log_path)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


# --- py-spy ----------------------------------------------------------------------------------------


def collapsed_hotspots(raw: str, anchor: str, top: int = 15) -> dict[str, object]:
    """Self and inclusive sample shares per function from py-spy's ``--format raw`` (collapsed stacks).

    Only stacks that pass through ``anchor`` (e.g. ``cycle (agent/wiring.py``) count; shares are of those.
    """
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit() or anchor not in stack:
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = frames[next(i for i, f in enumerate(frames) if anchor in f):]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for f in set(frames):
            incl_counts[f] = incl_counts.get(f, 0) + count

    def ranked(counts: dict[str, int]) -> list[dict[str, object]]:
        items = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [{"function": k, "samples": v, "share": round(v / total, 3) if total else 0.0} for k, v in items]

    return {"samples": total, "self": ranked(self_counts), "inclusive": ranked(incl_counts)}

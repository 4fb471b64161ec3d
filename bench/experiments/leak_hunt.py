"""EXPERIMENT ONLY: the soak's RSS growth (issue: ~0.2 MiB/min) reproduced without Docker, under tracemalloc.

Runs the real agent (``python -m agent run``) on a synthetic host root (bench/synthetic_tree.py, ``--containers``
containers, each labelled ``lookout.soak=1``) with ``--docker-socket ''``, ``--housekeeping-interval 1s``,
``--journal off`` and the soak's two routes: syslog over TCP (LF framing) to a socket that reads and discards, and
Elasticsearch ``_bulk`` to the tests' strict stand-in (a process of its own that keeps no documents; 1 % of the
requests 429 with Retry-After: 1, 1 % of the items 429). This process writes Docker json-file logs for every
container (``--rate`` lines/s in all, ~110-byte lines), rotating as json-file does (``max-size`` 1m, ``max-file``
3), and GETs /metrics every 5 s as Prometheus would.

The agent imports bench/experiments/leak_hook/sitecustomize.py: tracemalloc (25 frames), a sample of RSS and the
traced total each minute, snapshots at ``--snapshots`` seconds, malloc_trim(0) at the end (RSS before/after), all in
``--out``. Then:

    python bench/experiments/leak_hunt.py --compare OUT/snap-A.pickle OUT/snap-B.pickle --minutes M [--rev C]

(tracebacks innermost frame first; ``--rev``: source lines as of the commit the traced agent ran).

    nice -n 19 python bench/experiments/leak_hunt.py --duration 900 --snapshots 180,480,840 --out /tmp/leak/run1

Under tracemalloc the agent cannot keep up with 2,000 lines/s on this 2-CPU VM (the ES route fell behind): the
traced runs use ``--rate 600 --max-size 300000``, which keeps the rotation pace (a file every ~3.2 min per
container); the RSS runs use the soak's numbers untraced (``--frames 0``).

Measured 2026-12-04 19:51-20:28, beside the running soak (everything here under nice 19):

- traced, fd4adb3 (``--rate 600 --max-size 300000``, snapshots at 3, 8, 12 min): the traced total stays at 25-30 MiB
  (in-flight batches make ±2 MiB of noise), but these sites grew linearly with the rotations, 3 -> 8 -> 12 min:
  the Elasticsearch sink's ``_frags`` templates (elasticsearch.py:182/184/185 at fd4adb3) 110 -> 271 -> 355 KB
  (273 -> 665 -> 865 blocks), the syslog encoder's ``_heads`` (format.py:191/192) 27 -> 63 -> 77 KB, the
  LogSources they keep (follower.py:269) 153 -> 353 -> 453 and those sources' paths and keys: ~2.7 KB per rotated
  file for the two routes, ~40 KB/min at the soak's 15 rotations/min, until the Elasticsearch cache's cap
  (4096 entries, ~4.5 h, ~11 MB) clears it. Fixed in 3fc43e0: the same sites stay at 106 KB / 26 KB / 101
  sources at 3, 8 and 12 min.
- untraced, the soak's load (``--rate 2000 --frames 0``), fd4adb3: RSS 70.55 MiB at 1 min, 70.86 at 3, 72.07
  at 5, 72.14 at 8, 72.58 at 10, 72.70 at 13, 73.90 at 17; ``malloc_trim(0)`` then: 74.0 -> 64.4 MiB (9.6 MiB of
  the RSS was free heap that glibc keeps below ``TRIM_THRESHOLD``, agent/runtime.py). The rest of the early slope
  is the heap's high-water mark (a 429 and its Retry-After make a larger transient peak now and then), which
  malloc_trim gives back: not Python objects.
- untraced, the same, 3fc43e0: 68.5 MiB at 1 min, 71.67 at 3, 72.50 at 5, 72.57 at 8, 72.80 at 10, 72.84 at 13,
  73.14 at 16; ``malloc_trim(0)``: 73.2 -> 64.8 MiB (8.4 MiB free heap). 0.06 MiB/min from 5 to 16 min against
  0.15 before, but in 16 minutes the fix's ~0.6 MB is within the allocator's steps; after the trim both are at
  64.4-64.8 MiB.

Measured again 2026-12-04 22:26-22:56, e50852c + the module splits, after the second soak still sloped +3.4 MiB/h:

- traced (``--rate 600 --max-size 300000 --duration 2400 --snapshots 300,1200,2340``, stopped after 29 min): the traced
  total 26.7-29.2 MiB (27.2 at 1 min, 29.1 at 29); 5 -> 20 min nothing grows with the rotations (the largest
  differences are in-flight batches and the /metrics decompression of a scrape in progress).
- untraced at the soak's load (``--rate 2000 --frames 0``), /proc/PID/smaps every 2 min (minutes 16-30): pymalloc's
  arenas 28.1 -> 28.3 MiB, the glibc heap 17.3-18.6 MiB, RSS 72.2 -> 72.8 MiB: flat. (Here a second glibc arena
  appears, 7-8 MiB: the hook's thread starts before ``limit_malloc_arenas``; the agent alone has one arena.)
  The third soak (BENCHMARKS 18) then put its whole slope in the glibc heap, which this synthetic run does not show.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SENT = re.compile(r'^lookout_route_records_sent_total\{route="([^"]*)"\} (\S+)', re.M)
LAG = re.compile(r'^lookout_log_lag_bytes\{[^}]*\} (\S+)', re.M)


def standin_main(port_file: str, request_429: float, item_429: float) -> None:
    """bench/soak.py's SoakStandin, smaller: validates as the tests' stand-in, keeps nothing of the documents."""
    from tests.helpers.es_standin import EsStandin, Fault

    class Standin(EsStandin):
        def __init__(self) -> None:
            super().__init__()
            self.item_fault = lambda *_: 429 if random.random() < item_429 else None

        def _next_fault(self) -> Fault | None:
            fault = super()._next_fault()
            if fault is None and random.random() < request_429:
                return Fault(429, retry_after="1")
            return fault

        def _log(self, *args: Any, **kwargs: Any) -> None:
            pass

        def _apply(self, action: str, index: str, doc_id: str | None, doc: dict[str, Any] | None) -> dict[str, Any]:
            result = super()._apply(action, index, doc_id, doc)
            if result.get("status") in (200, 201):
                key = (index, result["_id"])
                self.indices[index].pop(result["_id"], None)
                self.versions.pop(key, None)
                self.writes.pop(key, None)
            return result

    server = Standin().start()
    Path(port_file).write_text(str(server.port))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def discard_server() -> int:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            while conn.recv(1 << 16):
                pass

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(srv.getsockname()[1])


class Writer:
    """Docker json-file logs: one line ``soak <n> <seq> <padding>``, rotated at ``max_size`` into .1, .2."""

    def __init__(self, path: Path, n: int, max_size: int, max_file: int = 3) -> None:
        self.path, self.n, self.max_size, self.max_file = path, n, max_size, max_file
        self.seq = 0
        self.fh = open(path, "ab")  # noqa: SIM115

    def write(self, lines: int) -> None:
        out = []
        for _ in range(lines):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
            msg = f"soak {self.n} {self.seq} xxxxxxxxxxxxxxxxxxxxxxxxx"
            self.seq += 1
            out.append(json.dumps({"log": msg + "\n", "stream": "stdout", "time": stamp}).encode() + b"\n")
        self.fh.write(b"".join(out))
        self.fh.flush()
        if self.fh.tell() >= self.max_size:
            self.rotate()

    def rotate(self) -> None:
        self.fh.close()
        for i in range(self.max_file - 1, 0, -1):
            src = Path(f"{self.path}.{i}")
            if src.exists():
                if i + 1 >= self.max_file:
                    src.unlink()
                else:
                    src.rename(f"{self.path}.{i + 1}")
        self.path.rename(f"{self.path}.1")
        self.fh = open(self.path, "ab")  # noqa: SIM115


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the agent and the stand-in too
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    host = out / "host"
    subprocess.run([sys.executable, str(REPO / "bench/synthetic_tree.py"), "--version", "2", "--containers",
                    str(args.containers), "--out", str(host), "--force"], check=True, stdout=subprocess.DEVNULL)
    docker_root = host / "var/lib/docker"
    writers = []
    for i, cdir in enumerate(sorted((docker_root / "containers").iterdir())):
        cfg = json.loads((cdir / "config.v2.json").read_text())
        cfg["Config"]["Labels"]["lookout.soak"] = "1"
        (cdir / "config.v2.json").write_text(json.dumps(cfg))
        log = cdir / f"{cdir.name}-json.log"
        log.unlink(missing_ok=True)
        writers.append(Writer(log, i, args.max_size))

    port_file = out / "standin.port"
    port_file.unlink(missing_ok=True)
    standin = subprocess.Popen([sys.executable, __file__, "--standin", str(port_file)])
    while not port_file.exists() or not port_file.read_text():
        time.sleep(0.1)
    es_port = int(port_file.read_text())
    tcp_port = discard_server()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = s.getsockname()[1]
    for f in out.glob("snap-*.pickle"):
        f.unlink()
    (out / "samples.ndjson").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'bench/experiments/leak_hook'}:{REPO}", LK_TM_DIR=str(out),
               LK_TM_AT=args.snapshots, LK_TM_FRAMES=str(args.frames))
    cmd = [sys.executable, "-m", "agent", "run", "--listen", f"127.0.0.1:{listen}", "--host-root", str(host),
           "--docker-root", str(docker_root), "--docker-socket", "", "--housekeeping-interval", "1s",
           "--state-dir", str(out / "state"), "--journal", "off",
           "--route", f"syslog+tcp://127.0.0.1:{tcp_port}?framing=lf&filter.labels=lookout.soak:1",
           "--route", f"elasticsearch+http://127.0.0.1:{es_port}/soak-%Y.%m.%d?filter.labels=lookout.soak:1"]
    agent_log = open(out / "agent.log", "wb")  # noqa: SIM115
    agent = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=agent_log, stderr=subprocess.STDOUT)
    per = args.rate / len(writers)
    carry = [0.0] * len(writers)
    start = time.monotonic()
    next_scrape = start + 5
    next_rss = start + 60
    scrapes = failed = 0
    sent: dict[str, float] = {}
    lag = 0.0
    try:
        tick = start
        while time.monotonic() - start < args.duration:
            for i, w in enumerate(writers):
                carry[i] += per
                n = int(carry[i])
                carry[i] -= n
                w.write(n)
            now = time.monotonic()
            if now >= next_scrape:
                next_scrape += 5
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5) as r:
                        body = r.read().decode()
                    scrapes += 1
                    sent = {m[1][:6]: float(m[2]) for m in SENT.finditer(body)}
                    lag = sum(float(m[1]) for m in LAG.finditer(body))
                except OSError:
                    failed += 1
            if now >= next_rss:
                next_rss += 60
                print(json.dumps({"t": round(now - start), "rss_mib": round(rss_of(agent.pid) / 2**20, 2),
                                  "lines": sum(w.seq for w in writers), "sent": sent, "lag": lag, "scrapes": scrapes,
                                  "failed": failed}), flush=True)
            tick += 1.0
            time.sleep(max(0.0, tick - time.monotonic()))
            if agent.poll() is not None:
                raise SystemExit(f"agent exited {agent.returncode}")
        time.sleep(5)
        agent.send_signal(signal.SIGUSR2)  # malloc_trim(0), RSS before/after into samples.ndjson
        time.sleep(3)
        print(json.dumps({"final_rss_mib": round(rss_of(agent.pid) / 2**20, 2)}), flush=True)
    finally:
        agent.terminate()
        agent.wait(30)
        standin.terminate()
        standin.wait(10)


def source_line(filename: str, lineno: int, rev: str, cache: dict[str, list[str]]) -> str:
    """The line as it was at ``rev`` for a file of this repository (the traced agent ran that code; the work tree
    may have changed since), else as it is now."""
    if rev and filename.startswith(str(REPO) + "/"):
        rel = filename[len(str(REPO)) + 1:]
        if rel not in cache:
            done = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{rel}"], capture_output=True, text=True)
            cache[rel] = done.stdout.splitlines() if done.returncode == 0 else []
        lines = cache[rel]
        return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    return linecache.getline(filename, lineno).strip()


def compare(old_path: str, new_path: str, top: int, minutes: float, rev: str = "") -> None:
    old = tracemalloc.Snapshot.load(old_path)
    new = tracemalloc.Snapshot.load(new_path)
    filters = [tracemalloc.Filter(False, tracemalloc.__file__),
               tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    old, new = old.filter_traces(filters), new.filter_traces(filters)
    total_old = sum(s.size for s in old.statistics("filename"))
    total_new = sum(s.size for s in new.statistics("filename"))
    print(f"traced: {total_old} -> {total_new} ({total_new - total_old:+d} B, "
          f"{(total_new - total_old) / minutes / 1024:+.1f} KiB/min over {minutes} min)")
    cache: dict[str, list[str]] = {}
    for kind in ("lineno", "traceback"):
        print(f"\n=== top {top} by {kind} ===")
        for stat in new.compare_to(old, kind)[:top]:
            print(f"{stat.size_diff:+10d} B {stat.count_diff:+7d} blocks  now {stat.size} B in {stat.count}")
            frames = list(stat.traceback)[:25 if kind == "traceback" else 1]  # innermost first
            for frame in frames:
                print(f"    {frame.filename}:{frame.lineno}  {source_line(frame.filename, frame.lineno, rev, cache)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--standin", help=argparse.SUPPRESS)
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    ap.add_argument("--minutes", type=float, default=1.0, help="--compare: minutes between the snapshots")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--rev", default="", help="--compare: show source lines as of this commit (the traced code)")
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--duration", type=float, default=900.0)
    ap.add_argument("--snapshots", default="180,480,840")
    ap.add_argument("--frames", type=int, default=25, help="tracemalloc frames; 0: not traced (RSS only)")
    ap.add_argument("--max-size", type=int, default=1 << 20, help="json-file max-size (bytes)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/leak/run1"))
    args = ap.parse_args()
    if args.standin:
        standin_main(args.standin, 0.01, 0.01)
    elif args.compare:
        compare(*args.compare, args.top, args.minutes, args.rev)
    else:
        run(args)


if __name__ == "__main__":
    main()

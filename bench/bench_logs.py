"""Log shipping throughput: one 1,000,000-line Docker json-file log shipped into a ``file://`` route.

The log is written exactly as Docker's json-file driver writes it (``{"log":"…\\n","stream":"…","time":"…"}``,
Go's escaping: ``\\u0009`` for a tab, ``\\u003c`` for ``<``, raw UTF-8 otherwise; RFC 3339 times with the
fraction's trailing zeros dropped, so of variable length) into a fake Docker data root::

    <workdir>/docker/containers/<64 hex>/{config.v2.json,hostconfig.json,<id>-json.log}

Messages are 40-100 characters (access log, logfmt, JSON, stack trace and German/emoji text lines), 80 %
stdout and 20 % stderr, generated from a fixed seed and cached in the workdir between runs.

Each run starts the agent as a real process::

    python -m agent run --host-root <empty dir> --docker-root <workdir>/docker --docker-socket '' \\
        --state-dir <fresh dir> --route file://<out> --listen 127.0.0.1:<port>

(pinned to one CPU with ``taskset`` unless ``--cpu none``; before each run 1 GiB is written to a file and deleted,
untimed, so the first write into memory the VM gave back to its host is not charged to the agent: see
``benchlib.warm_page_cache``; ``--no-warm-up`` skips it) and measures, until
``lookout_route_records_sent_total`` (polled on /metrics) reaches the line count: wall time from spawn and
from /healthz answering, lines/s, the agent's CPU seconds (utime+stime of all its threads from
/proc/<pid>/stat), lines per CPU second and peak RSS (VmHWM). Then it checks the output: exactly one record
per input line, every line valid JSON, and time, stream, message and offset equal to the input's.

    python bench/bench_logs.py                 # 3 runs, median; JSON in bench/results/logs-*.json
    python bench/bench_logs.py --runs 1 --lines 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
from benchlib import tree_cpu_seconds, user_system_seconds, warm_page_cache

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CONTAINER_ID = "5e1f" + "0123456789abcdef" * 3 + "0badc0ffee00"
FORMAT_VERSION = 3  # bump when the generated log changes, so a cached one is rebuilt

# --- the log --------------------------------------------------------------------------------------------

_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord('"'): '\\"', ord("\\"): "\\\\", ord("<"): "\\u003c",
                 ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028", 0x2029: "\\u2029"})

PATHS = ["/api/v1/items", "/api/v1/users/me", "/healthz", "/static/app.js", "/login", "/api/v2/orders/search"]
WORDS = ["request", "finished", "cache", "miss", "retrying", "upstream", "timeout", "connection", "reset",
         "user", "session", "created", "payload", "validated", "queue", "drained", "worker", "started"]
UNICODE = ["Benutzer „müller“ angemeldet ✓", "Größe überschritten: 12 MiB", "тест пройден", "处理完成 🚀",
           "café crème — déjà vu", "naïve façade ½"]


def docker_json_string(text: str) -> str:
    return text.translate(_ESCAPES)


def rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: the fraction without trailing zeros, none at all when zero."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if not frac:
        return base + "Z"
    return f"{base}.{frac:09d}".rstrip("0") + "Z"


def message(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        text = (f'10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)} - - "GET '
                f'{rng.choice(PATHS)}?id={rng.randrange(10**6)} HTTP/1.1" {rng.choice((200, 200, 304, 404, 500))} '
                f"{rng.randrange(100, 99999)}")
    elif kind < 0.6:
        text = (f"level={rng.choice(('info', 'debug', 'warn'))} caller=server.go:{rng.randrange(1, 999)} "
                f'msg="{" ".join(rng.choices(WORDS, k=rng.randrange(2, 6)))}" took={rng.random() * 100:.2f}ms')
    elif kind < 0.8:
        text = orjson.dumps({"level": "error", "msg": " ".join(rng.choices(WORDS, k=rng.randrange(2, 5))),
                             "code": rng.randrange(1000), "ok": False}).decode()
    elif kind < 0.9:
        cls = rng.choice(WORDS).title()
        text = f"\tat com.example.{cls}.run({cls}.java:{rng.randrange(999)})"
    else:
        text = f"{rng.choice(UNICODE)} <{rng.choice(WORDS)}> & {rng.randrange(10**5)}"
    target = int(rng.triangular(40, 101, 101))  # 40-100, mean ~80
    while len(text) < target:
        text += " " + rng.choice(WORDS)
    return text[:target]


def build_root(workdir: Path, lines: int, seed: int = 1) -> Path:
    """The fake Docker root with the log (cached by line count, seed and format version)."""
    root = workdir / "docker"
    cdir = root / "containers" / CONTAINER_ID
    log_path = cdir / f"{CONTAINER_ID}-json.log"
    stamp = workdir / "generated.json"
    want = {"lines": lines, "seed": seed, "format": FORMAT_VERSION}
    if stamp.exists() and log_path.exists() and json.loads(stamp.read_text()) == want:
        return root
    shutil.rmtree(root, ignore_errors=True)
    cdir.mkdir(parents=True)
    doc = {"ID": CONTAINER_ID, "Name": "/bench-web-1", "Created": "2026-11-28T04:00:00Z",
           "Config": {"Image": "nginx:1.27", "Labels": {"team": "api", "com.example.tier": "web"},
                      "Env": ["PATH=/usr/bin"]},
           "State": {"Running": True, "Pid": 0, "StartedAt": "2026-11-28T04:00:01Z"}}
    (cdir / "config.v2.json").write_bytes(orjson.dumps(doc))
    (cdir / "hostconfig.json").write_bytes(b'{"NetworkMode":"default"}')
    rng = random.Random(seed)
    ns = 1_795_838_400 * 1_000_000_000  # 2026-11-28T04:00:00Z
    with open(log_path, "w", encoding="utf-8", newline="\n") as fh:
        chunk = []
        for i in range(lines):
            ns += rng.randrange(1, 200_000)
            if rng.random() < 0.05:
                ns -= ns % 1000  # some stamps end in zeros and get shorter
            stream = "stderr" if rng.random() < 0.2 else "stdout"
            chunk.append(f'{{"log":"{docker_json_string(message(rng))}\\n","stream":"{stream}",'
                         f'"time":"{rfc3339nano(ns)}"}}\n')
            if len(chunk) == 10_000 or i == lines - 1:
                fh.write("".join(chunk))
                chunk.clear()
    stamp.write_text(json.dumps(want))
    return root


# --- one run ---------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of the agent and every process below it (chunk workers, when it runs any), all threads."""
    return tree_cpu_seconds(pid)


def vm(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def sent(port: int) -> float:
    total = 0.0
    for line in get(f"http://127.0.0.1:{port}/metrics").decode().splitlines():
        if line.startswith("lookout_route_records_sent_total{"):
            total += float(line.rpartition(" ")[2])
    return total


def run_once(root: Path, lines: int, cpu: str, poll: float) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="lookout-bench-logs-"))
    host_root = tmp / "host"
    host_root.mkdir()
    out = tmp / "out.ndjson"
    port = free_port()
    cmd = [sys.executable, "-m", "agent", "run", "--host-root", str(host_root), "--docker-root", str(root),
           "--docker-socket", "", "--state-dir", str(tmp / "state"), "--route", f"file://{out}",
           "--listen", f"127.0.0.1:{port}"]
    if cpu != "none":
        cmd = ["taskset", "-c", cpu, *cmd]
    load_before = os.getloadavg()
    log = open(tmp / "agent.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        ready = None
        done = None
        deadline = started + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited {proc.returncode}: {(tmp / 'agent.log').read_text()[-2000:]}")
            try:
                if ready is None:
                    get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    ready = time.monotonic()
                elif sent(port) >= lines:
                    done = time.monotonic()
                    break
            except OSError:
                pass
            time.sleep(poll)
        if done is None or ready is None:
            raise RuntimeError("the agent did not ship every line within 600 s")
        cpu_s = cpu_seconds(proc.pid)
        user_s, system_s = user_system_seconds(proc.pid)  # the agent's own, not its workers'
        mem = vm(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    load_after = os.getloadavg()
    check = verify(root, out, lines)
    shutil.rmtree(tmp, ignore_errors=True)
    wall = done - started
    return {
        "lines": lines, "wall_s": round(wall, 3), "wall_from_ready_s": round(done - ready, 3),
        "startup_s": round(ready - started, 3), "lines_per_s": round(lines / wall),
        "lines_per_s_from_ready": round(lines / (done - ready)), "cpu_s": round(cpu_s, 2),
        "agent_user_s": user_s, "agent_system_s": system_s,
        "lines_per_cpu_s": round(lines / cpu_s), "peak_rss_mib": round(mem["VmHWM"] / 2**20, 1),
        "rss_at_end_mib": round(mem["VmRSS"] / 2**20, 1), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after], "output": check,
    }


def verify(root: Path, out: Path, lines: int) -> dict[str, object]:
    """Every output line valid JSON, one record per input line, time/stream/message/offset as in the input."""
    src = root / "containers" / CONTAINER_ID / f"{CONTAINER_ID}-json.log"
    expected = []
    offset = 0
    with open(src, "rb") as fh:
        for raw in fh:
            doc = orjson.loads(raw)
            expected.append((doc["time"], doc["stream"], doc["log"][:-1], offset))
            offset += len(raw)
    got = []
    bad = 0
    with open(out, "rb") as fh:
        for raw in fh:
            try:
                r = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            got.append((r["time"], r["stream"], r["message"], r["offset"]))
    first = orjson.loads(out.open("rb").readline())
    return {"records": len(got) + bad, "invalid_json": bad, "equal_to_input": got == expected,
            "output_mib": round(out.stat().st_size / 2**20, 1),
            "metadata_ok": (first["container_name"], first["image"], first["labels"]["team"])
            == ("bench-web-1", "nginx:1.27", "api")}


def cpu_model() -> str:
    with open("/proc/cpuinfo") as fh:
        return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lookout-bench-logs")
    parser.add_argument("--cpu", default="1", help="CPU to pin the agent to with taskset, or 'none'")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between /metrics polls")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/logs-*.json")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="skip writing and deleting 1 GiB before each run (see benchlib.warm_page_cache)")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    root = build_root(args.workdir, args.lines)
    log_path = root / "containers" / CONTAINER_ID / f"{CONTAINER_ID}-json.log"
    size = log_path.stat().st_size
    print(f"log: {args.lines} lines, {size / 2**20:.1f} MiB ({size / 1e6:.1f} MB) at {log_path} "
          f"(ready in {time.monotonic() - t:.1f}s)", flush=True)
    runs = []
    for i in range(args.runs):
        warm = None if args.no_warm_up else round(warm_page_cache(Path(tempfile.gettempdir()), 1024), 2)
        r = run_once(root, args.lines, args.cpu, args.poll)
        r["warm_up_system_s"] = warm
        runs.append(r)
        print(f"run {i + 1}: {r['wall_s']}s wall ({r['startup_s']}s start-up), {r['lines_per_s']:,} lines/s "
              f"({r['lines_per_s_from_ready']:,} from ready), {r['cpu_s']} CPU s "
              f"({r['agent_user_s']} user + {r['agent_system_s']} sys), "
              f"{r['lines_per_cpu_s']:,} lines/CPU s, "
              f"peak RSS {r['peak_rss_mib']} MiB, warm-up {warm} sys s, "
              f"load {r['loadavg_before']} -> {r['loadavg_after']}, "
              f"output {r['output']}", flush=True)
    keys = ("wall_s", "wall_from_ready_s", "lines_per_s", "lines_per_s_from_ready", "cpu_s", "lines_per_cpu_s",
            "peak_rss_mib")
    median = {k: statistics.median(r[k] for r in runs) for k in keys}  # type: ignore[misc]
    print("median: " + ", ".join(f"{k} {v:,}" for k, v in median.items()))
    ok = all(r["output"]["records"] == args.lines and r["output"]["invalid_json"] == 0  # type: ignore[index]
             and r["output"]["equal_to_input"] for r in runs)  # type: ignore[index]
    result = {
        "benchmark": "logs", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "warm_up": not args.no_warm_up, "lines": args.lines, "log_bytes": size,
        "cpu_pin": args.cpu,
        "median": median, "runs": runs, "verified": ok,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "cpu_model": cpu_model()},
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip(),
    }
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        body = json.dumps(result, indent=2)
        (RESULTS / f"logs-{stamp}.json").write_text(body)
        (RESULTS / "logs-latest.json").write_text(body)
        print(f"saved bench/results/logs-{stamp}.json")
    if not ok:
        print("OUTPUT CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

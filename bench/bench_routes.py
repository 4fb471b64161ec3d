"""Benchmark: 1,000,000 json-file lines shipped as RFC 5424 over TCP (octet counting) to a counting sink,
by Lookout and, in the same run on the same file and the same kind of sink, by rsyslog.

    python bench/bench_routes.py                  # 3 rounds each, interleaved; results as JSON + a table
    python bench/bench_routes.py --rounds 1 --profile   # also py-spy the Lookout run (top frames)
    python bench/bench_routes.py --cases json-file,cri,no-hostconfig --framing lf --only lookout
        # the same records from a CRI file and from a container without hostconfig.json, side by side, LF framing

- Data: a fake Docker root ``<data>/docker/containers/<64 hex>/`` with ``config.v2.json``,
  ``hostconfig.json`` and ``<id>-json.log`` (1,000,000 lines, about 160 MB, fixed seed), made once
  and reused. Read once before the runs, so both shippers read from the page cache.
- Lookout: ``python -m agent run --docker-root <data>/docker --docker-socket '' --host-root <empty>
  --state-dir <fresh> --route syslog+tcp://127.0.0.1:<sink>`` (defaults: RFC 5424, octet counting,
  batches of 10,000 records / 1 MiB, each acknowledged by the receiver's kernel before the next).
- rsyslog: ``rsyslogd -n -f <conf>`` with imfile reading the same file, mmjsonparse (``cookie=""``) on
  each line, the PRI from the stream, and omfwd over TCP with octet counting using a template that
  writes the same RFC 5424 line Lookout writes (same SD, microsecond timestamp, message without its LF).
- Cases (``--cases``, Lookout only; each run ships one source):
  ``json-file`` the container above (results name ``lookout``); ``cri`` the same records as a CRI file
  ``<data>/cri-host/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`` (``<time> <stream> F <message>``
  lines), shipped with ``--host-root <data>/cri-host`` and no Docker root (``lookout-cri``);
  ``no-hostconfig`` a second Docker root whose container has no ``hostconfig.json``, its log a hard link
  to the json-file log (``lookout-no-hostconfig``); ``ml-plain`` and ``ml-java`` a container whose log is the
  same lines with 20 % Java stack trace lines (bench/multiline_data.py), shipped by the plain route and by the
  route with ``?multiline=java&multiline_timeout=100ms`` (fewer frames: a trace is one record; the short timeout
  only lets the last line go sooner). Per-line numbers are per line read. A run that fails is recorded with its
  error.
- ``--parse json`` (#14): two more Lookout runs per round, interleaved with the others, on a third Docker root
  whose container writes the same records as JSON objects the way zap does (``{"level":"info","ts":...,
  "caller":...,"msg":"<text>","i":N}``, ``error`` on stderr): ``lookout-json-plain`` ships them with the plain
  route, ``lookout-json-parse`` with ``?parse=json`` (message from ``msg``, PRI from ``level``, the rest in a
  ``[fields@32473 ...]`` SD element). The summary gives the parse route's extra CPU per line and its lines/s over
  the plain route's (a parse route decodes in the reader: no chunk workers).
- ``--framing lf``: the route gets ``?framing=lf``, rsyslog ``TCP_Framing="traditional"``, the sink
  counts LF-terminated frames.
- The sink (a child process of its own, its CPU not counted) accepts TCP connections, counts
  octet-counted frames and reports when the first frame arrives and when the expected count is reached.
- Measured per run: wall time from spawning the shipper to the last frame at the sink; the shipper's
  CPU (utime + stime of all its threads, /proc/<pid>/stat) at that moment; peak RSS (VmHWM). Also the
  steady part (first frame -> last frame, CPU between the two) without start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from benchlib import tree_cpu_seconds, tree_peak_rss_kb
from multiline_data import events, make_multiline

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CID = "b" * 64
CID_NO_HOSTCONFIG = "c" * 64
CID_JSON = "d" * 64
CRI_NAMESPACE, CRI_POD, CRI_UID, CRI_CONTAINER = "bench", "bench-0", "0b0b0b0b-0000-4000-8000-0b0b0b0b0b0b", "bench"
LINES = 1_000_000
CONFIG_V2 = {"ID": CID, "Name": "/bench", "Config": {"Image": "bench:latest", "Labels": {"app": "bench"}, "Env": []},
             "State": {"Running": True, "Pid": 1, "StartedAt": "2026-11-28T00:00:00Z"},
             "Created": "2026-11-28T00:00:00Z"}


# --- data -----------------------------------------------------------------------------------------------


def bench_records(lines: int) -> Iterator[tuple[str, str, str]]:
    """(stream, message without its LF, RFC 3339 time) of every bench line: the same for every format (fixed seed)."""
    rng = random.Random(20261128)
    letters = string.ascii_letters + "     "
    for i in range(lines):
        n = rng.randint(20, 150)
        text = f"{i:07d} " + "".join(rng.choices(letters, k=n))
        stream = "stderr" if rng.random() < 0.1 else "stdout"
        stamp = f"2026-11-28T04:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}123456Z"
        yield stream, text, stamp


def json_file_line(stream: str, text: str, stamp: str) -> bytes:
    return orjson.dumps({"log": text + "\n", "stream": stream, "time": stamp}) + b"\n"


def cri_line(stream: str, text: str, stamp: str) -> bytes:
    """What containerd and CRI-O write: ``<RFC3339Nano> <stream> F <message>``, one full line per record."""
    return f"{stamp} {stream} F {text}\n".encode()


def _write_lines(path: Path, lines: int, render: Callable[[str, str, str], bytes]) -> None:
    with open(path, "wb") as fh:
        chunk = []
        for rec in bench_records(lines):
            chunk.append(render(*rec))
            if len(chunk) == 10_000:
                fh.write(b"".join(chunk))
                chunk = []
        fh.write(b"".join(chunk))


def _fresh(marker: Path, lines: int, *files: Path) -> bool:
    return all(f.exists() for f in files) and marker.exists() and marker.read_text() == str(lines)


def make_data(root: Path, lines: int) -> Path:
    """The fake Docker root (reused when it already holds ``lines`` lines); returns the log file."""
    cdir = root / "docker" / "containers" / CID
    log = cdir / f"{CID}-json.log"
    marker = cdir / "lines"
    if _fresh(marker, lines, log):
        return log
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "config.v2.json").write_bytes(orjson.dumps(CONFIG_V2))
    (cdir / "hostconfig.json").write_bytes(b'{"NetworkMode":"default"}')
    _write_lines(log, lines, json_file_line)
    marker.write_text(str(lines))
    return log


def json_message(i: int, stream: str, text: str, stamp: str) -> str:
    """A bench record's text as a zap-style JSON line."""
    level = "error" if stream == "stderr" else "info"
    return orjson.dumps({"level": level, "ts": 1764302400 + i / 1000, "caller": f"svc/handler.go:{i % 400}",
                         "msg": text, "i": i}).decode()


def make_json_lines(root: Path, lines: int) -> Path:
    """A Docker root whose one container writes the bench records as JSON objects (``--parse``); returns the root."""
    droot = root / "docker-json"
    cdir = droot / "containers" / CID_JSON
    log = cdir / f"{CID_JSON}-json.log"
    marker = cdir / "lines"
    if _fresh(marker, lines, log):
        return droot
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "config.v2.json").write_bytes(orjson.dumps({**CONFIG_V2, "ID": CID_JSON}))
    (cdir / "hostconfig.json").write_bytes(b'{"NetworkMode":"default"}')
    with open(log, "wb") as fh:
        chunk = []
        for i, (stream, text, stamp) in enumerate(bench_records(lines)):
            chunk.append(json_file_line(stream, json_message(i, stream, text, stamp), stamp))
            if len(chunk) == 10_000:
                fh.write(b"".join(chunk))
                chunk = []
        fh.write(b"".join(chunk))
    marker.write_text(str(lines))
    return droot


def make_no_hostconfig(root: Path, json_log: Path, lines: int) -> Path:
    """A second Docker root whose one container has ``config.v2.json`` but no ``hostconfig.json``, its log a hard
    link to the json-file case's log (the same bytes, no second copy in the page cache); returns the Docker root."""
    droot = root / "docker-no-hostconfig"
    cdir = droot / "containers" / CID_NO_HOSTCONFIG
    log = cdir / f"{CID_NO_HOSTCONFIG}-json.log"
    marker = cdir / "lines"
    if _fresh(marker, lines, log) and log.stat().st_ino == json_log.stat().st_ino:
        return droot
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "config.v2.json").write_bytes(orjson.dumps({**CONFIG_V2, "ID": CID_NO_HOSTCONFIG}))
    (cdir / "hostconfig.json").unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    try:
        os.link(json_log, log)
    except OSError:
        shutil.copyfile(json_log, log)
    marker.write_text(str(lines))
    return droot


def make_cri(root: Path, lines: int) -> Path:
    """A host root holding only ``var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`` with the same records as the
    json-file log, in the CRI format; returns the log file."""
    cdir = root / "cri-host" / "var" / "log" / "pods" / f"{CRI_NAMESPACE}_{CRI_POD}_{CRI_UID}" / CRI_CONTAINER
    log = cdir / "0.log"
    marker = root / "cri-host" / "lines"
    if _fresh(marker, lines, log):
        return log
    cdir.mkdir(parents=True, exist_ok=True)
    _write_lines(log, lines, cri_line)
    marker.write_text(str(lines))
    return log


# --- the counting sink (child process) ---------------------------------------------------------------------


def sink_main(port_file: str, expect: int, framing: str = "octet") -> None:
    """Count octet-counted (or, with ``framing="lf"``, LF-terminated) frames on every connection; print JSON events
    to stdout."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    Path(port_file).write_text(str(srv.getsockname()[1]))
    lock = threading.Lock()
    state: dict[str, Any] = {"frames": 0, "bytes": 0, "first": None, "sample": None, "done": False}

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def serve(conn: socket.socket) -> None:
        buf = b""
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            now = time.time()
            buf += data
            pos, count, end = 0, 0, len(buf)
            find = buf.find
            while framing == "lf":
                stop = find(b"\n", pos)
                if stop < 0:
                    break
                if state["sample"] is None:
                    state["sample"] = buf[pos:stop].decode("utf-8", "replace")
                pos = stop + 1
                count += 1
            while framing == "octet":
                sp = find(b" ", pos, pos + 12)
                if sp < 0:
                    break
                stop = sp + 1 + int(buf[pos:sp])
                if stop > end:
                    break
                if state["sample"] is None:
                    state["sample"] = buf[sp + 1 : stop].decode("utf-8", "replace")
                pos = stop
                count += 1
            received = pos
            buf = buf[pos:]
            with lock:
                if state["first"] is None and count:
                    state["first"] = now
                    emit({"event": "first", "at": now})
                state["frames"] += count
                state["bytes"] += received
                if state["frames"] >= expect and not state["done"]:
                    state["done"] = True
                    emit({"event": "done", "at": now, "frames": state["frames"], "bytes": state["bytes"],
                          "first": state["first"], "sample": state["sample"]})
                elif state["done"] and count:
                    emit({"event": "more", "at": now, "frames": state["frames"]})  # beyond the expected count

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# The same sink in C (compiled once with gcc when available): it costs ~0.05 µs per frame instead of the
# Python sink's ~1 µs, so on a 2-CPU machine it does not take a core away from the shipper under test.
SINK_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#define MAXC 64
static double now(void) { struct timeval tv; gettimeofday(&tv, NULL); return tv.tv_sec + tv.tv_usec / 1e6; }
int main(int argc, char **argv) {
    long long expect = atoll(argv[2]), frames = 0, bytes = 0;
    int lf = argc > 3 && strcmp(argv[3], "lf") == 0;  /* LF-terminated frames instead of octet counting */
    int srv = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(srv, (struct sockaddr *)&a, sizeof a) || listen(srv, 8)) { perror("sink"); return 1; }
    socklen_t al = sizeof a; getsockname(srv, (struct sockaddr *)&a, &al);
    FILE *pf = fopen(argv[1], "w"); fprintf(pf, "%d", ntohs(a.sin_port)); fclose(pf);
    struct pollfd fds[MAXC + 1]; long long len[MAXC + 1], rem[MAXC + 1]; int st[MAXC + 1], n = 1;
    fds[0].fd = srv; fds[0].events = POLLIN;
    static char buf[1 << 20]; char sample[400] = ""; int sampled = 0, done = 0; double first = 0;
    for (;;) {
        poll(fds, n, -1);
        if (fds[0].revents & POLLIN && n <= MAXC) {
            fds[n].fd = accept(srv, NULL, NULL); fds[n].events = POLLIN; len[n] = 0; rem[n] = 0; st[n] = 0; n++;
        }
        for (int c = 1; c < n; c++) {
            if (!(fds[c].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t got = read(fds[c].fd, buf, sizeof buf);
            if (got <= 0) { close(fds[c].fd); fds[c] = fds[n - 1]; len[c] = len[n - 1]; rem[c] = rem[n - 1];
                            st[c] = st[n - 1]; n--; c--; continue; }
            double t = now(); long long before = frames;
            for (ssize_t i = 0; lf && i < got;) {
                char *nl = memchr(buf + i, '\n', got - i);
                if (!sampled) { int k = 0;  /* the first frame, JSON-escaped */
                    for (ssize_t j = i; j < got && k < 300 && buf[j] != '\n'; j++) {
                        if (buf[j] == '"' || buf[j] == '\\') sample[k++] = '\\';
                        sample[k++] = (buf[j] >= 0 && buf[j] < 32) ? '?' : buf[j];
                    }
                    sample[k] = 0; sampled = 1; }
                if (!nl) break;
                frames++; i = nl - buf + 1;
            }
            for (ssize_t i = 0; !lf && i < got;) {
                if (st[c] == 0) {
                    char ch = buf[i++];
                    if (ch == ' ') { rem[c] = len[c]; len[c] = 0; st[c] = 1;
                                     if (!sampled) { int k = 0;  /* the first frame, JSON-escaped */
                                         for (ssize_t j = i; j < got && k < 300 && j - i < rem[c]; j++) {
                                             if (buf[j] == '"' || buf[j] == '\\') sample[k++] = '\\';
                                             sample[k++] = (buf[j] >= 0 && buf[j] < 32) ? '?' : buf[j];
                                         }
                                         sample[k] = 0; sampled = 1; } }
                    else len[c] = len[c] * 10 + (ch - '0');
                } else {
                    long long take = got - i < rem[c] ? got - i : rem[c];
                    i += take; rem[c] -= take;
                    if (rem[c] == 0) { frames++; st[c] = 0; }
                }
            }
            bytes += got;
            if (frames && !first) { first = t; printf("{\"event\": \"first\", \"at\": %.6f}\n", t); fflush(stdout); }
            if (frames >= expect && !done) {
                done = 1;
                printf("{\"event\": \"done\", \"at\": %.6f, \"frames\": %lld, \"bytes\": %lld, \"first\": %.6f, "
                       "\"sample\": \"%s\"}\n", t, frames, bytes, first, sample);
                fflush(stdout);
            } else if (done && frames > before) {
                printf("{\"event\": \"more\", \"at\": %.6f, \"frames\": %lld}\n", t, frames); fflush(stdout);
            }
        }
    }
}
"""


def sink_binary(directory: Path) -> Path | None:
    """The C sink, compiled into ``directory`` once; None without a C compiler."""
    binary = directory / "count-sink"
    source = directory / "count-sink.c"
    if binary.exists() and source.exists() and source.read_text() == SINK_C:
        return binary
    source.write_text(SINK_C)
    try:
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"no C sink ({getattr(exc, 'stderr', exc)}); using the Python sink")
        return None
    return binary


class Sink:
    binary: Path | None = None

    def __init__(self, expect: int, workdir: Path, framing: str = "octet") -> None:
        port_file = workdir / "sink.port"
        if Sink.binary is not None:
            cmd = [str(Sink.binary), str(port_file), str(expect), framing]
        else:
            cmd = [sys.executable, __file__, "sink", "--port-file", str(port_file), "--expect", str(expect),
                   "--framing", framing]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("the counting sink did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def next_event(self, shipper: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        """The sink's next event; raises when the shipper exits first or ``timeout`` passes."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("the counting sink exited")
                return dict(json.loads(line))
            if shipper.poll() is not None:
                raise RuntimeError(f"the shipper exited with {shipper.returncode} (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no event from the sink within {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --- measuring a shipper -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the shipper and every process below it (Lookout's chunk workers), all threads."""
    return tree_cpu_seconds(pid)


def peak_rss_mb(pid: int) -> float:
    """Peak RSS summed over the shipper and its worker processes (shared pages counted in each)."""
    return tree_peak_rss_kb(pid) / 1024


def measure(name: str, cmd: list[str], sink: Sink, lines: int, log_path: Path, timeout: float = 120,
            profile: Path | None = None) -> dict[str, Any]:
    with open(log_path, "ab") as log:
        started = time.time()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    spy = None
    if profile is not None:
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--rate", "200", "--threads", "--gil",
                                "--format", "raw", "--output", str(profile), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            first = sink.next_event(proc, timeout)
            cpu_first = cpu_seconds(proc.pid)
            done = sink.next_event(proc, timeout)
        except RuntimeError as exc:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{name}: {exc}; its log {log_path}:\n{tail}") from exc
        cpu_done = cpu_seconds(proc.pid)
        rss = peak_rss_mb(proc.pid)
        time.sleep(1.0)  # anything beyond the expected count (duplicates) would arrive now
        final = done["frames"]
        while True:
            try:
                final = sink.next_event(proc, 0.2)["frames"]
            except RuntimeError:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if spy is not None:
            spy.wait(30)
    assert first["event"] == "first" and done["event"] == "done", (first, done)
    wall = done["at"] - started
    steady = done["at"] - first["at"]
    return {
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "shipper": name, "lines": done["frames"], "frames_after_1s": final, "bytes_on_wire": done["bytes"],
        "wall_s": round(wall, 3), "lines_per_s": round(lines / wall), "cpu_s": round(cpu_done, 2),
        "cpu_us_per_line": round(cpu_done / lines * 1e6, 3),
        "steady_wall_s": round(steady, 3), "steady_lines_per_s": round(lines / steady) if steady > 0 else None,
        "steady_cpu_s": round(cpu_done - cpu_first, 2),
        "peak_rss_mb": round(rss, 1), "startup_s": round(first["at"] - started, 3), "sample": done["sample"],
    }


def lookout_cmd(docker_root: Path, host_root: Path | None, work: Path, port: int, framing: str,
                extra: list[str], query: str = "") -> list[str]:
    """The agent shipping everything under ``docker_root`` and ``<host_root>/var/log/pods`` (an empty host root
    when None) to the sink."""
    if host_root is None:
        host_root = work / "empty-host"
        host_root.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{probe.getsockname()[1]}"
    params = [p for p in (("framing=lf" if framing == "lf" else ""), query) if p]
    route = f"syslog+tcp://127.0.0.1:{port}" + ("?" + "&".join(params) if params else "")
    return [sys.executable, "-m", "agent", "run", "--listen", listen, "--state-dir", str(work / "state"),
            "--docker-root", str(docker_root), "--docker-socket", "", "--host-root", str(host_root),
            "--log-level", "warning", "--log-format", "json", "--route", route, *extra]


RSYSLOG_CONF = """\
global(workDirectory="{work}/rs-work" maxMessageSize="64k")
module(load="imfile")
module(load="mmjsonparse")
template(name="lookout5424" type="list") {{
  constant(value="<") property(name="$.pri") constant(value=">1 ")
  property(name="$!time" position.from="1" position.to="26") constant(value="Z {host} bench - - ")
  constant(value="[lookout@32473 container_id=\\"{cid}\\" container_name=\\"bench\\" ")
  constant(value="image=\\"bench:latest\\" stream=\\"")
  property(name="$!stream") constant(value="\\"] ")
  property(name="$!log" droplastlf="on")
}}
ruleset(name="ship") {{
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  if $!stream == "stderr" then {{ set $.pri = "11"; }} else {{ set $.pri = "14"; }}
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="{framing}"
         template="lookout5424")
}}
input(type="imfile" file="{log}" tag="bench" ruleset="ship" freshStartTail="off" addMetadata="off")
"""


def rsyslog_cmd(log: Path, work: Path, port: int, framing: str) -> list[str]:
    (work / "rs-work").mkdir(parents=True, exist_ok=True)
    for stale in (work / "rs-work").iterdir():  # imfile's state file: start from the head again
        stale.unlink()
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, host=socket.gethostname(), cid=CID, port=port, log=log,
                                        framing="traditional" if framing == "lf" else "octet-counted"))
    return ["/usr/sbin/rsyslogd", "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")]


def hotspots(raw: Path, top: int = 25) -> list[tuple[str, float]]:
    """Self time per function from py-spy's collapsed stacks (leaf frame), as a share of all samples."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        leaf = stack.split(";")[-1]
        counts[leaf] = counts.get(leaf, 0) + int(n)
        total += int(n)
    return [(k, round(100 * v / total, 1)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]


def inclusive(raw: Path, names: list[str]) -> dict[str, float]:
    """Share of samples whose stack contains each function name (inclusive time)."""
    totals = dict.fromkeys(names, 0)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        for name in names:
            if name in stack:
                totals[name] += int(n)
    return {k: round(100 * v / max(total, 1), 1) for k, v in totals.items()}


CASES = ("json-file", "cri", "no-hostconfig", "ml-plain", "ml-java")
PARSE_CASES = ("json-plain", "json-parse")  # with --parse json
CASE_QUERY = {"ml-java": "multiline=java&multiline_timeout=100ms", "json-parse": "parse=json"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("sink")
    s.add_argument("--port-file", required=True)
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--framing", choices=["octet", "lf"], default="octet")
    parser.add_argument("--data", default="/tmp/lookout-bench-routes", help="where the fake Docker root is kept")
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy the first Lookout run of each case")
    parser.add_argument("--only", choices=["lookout", "rsyslog"], default=None)
    parser.add_argument("--cases", default="json-file",
                        help=f"comma list of Lookout cases from {', '.join(CASES)} (rsyslog runs json-file only)")
    parser.add_argument("--framing", choices=["octet", "lf"], default="octet", help="RFC 6587 framing on the wire")
    parser.add_argument("--python-sink", action="store_true", help="count frames in Python, not in the C sink")
    parser.add_argument("--lookout-arg", action="append", default=[], help="extra agent flag (repeatable)")
    parser.add_argument("--parse", choices=["json"], default=None,
                        help="also ship JSON lines with the plain route and with ?parse=json (#14)")
    args = parser.parse_args()
    if args.command == "sink":
        sink_main(args.port_file, args.expect, args.framing)
        return 0
    cases = [c for c in args.cases.split(",") if c]
    if not cases or any(c not in CASES for c in cases):
        parser.error(f"--cases: a comma list of {', '.join(CASES)}")

    data = Path(args.data)
    t0 = time.monotonic()
    log = make_data(data, args.lines)
    size = log.stat().st_size
    files = {"json-file": log}
    if "cri" in cases:
        files["cri"] = make_cri(data, args.lines)
    docker_roots = {"json-file": data / "docker", "cri": data / "no-docker"}
    if "no-hostconfig" in cases:
        docker_roots["no-hostconfig"] = make_no_hostconfig(data, log, args.lines)
    if args.parse:
        cases += list(PARSE_CASES)
        docker_roots["json-plain"] = docker_roots["json-parse"] = make_json_lines(data, args.lines)
        files["json-lines"] = docker_roots["json-plain"] / "containers" / CID_JSON / f"{CID_JSON}-json.log"
    if "ml-plain" in cases or "ml-java" in cases:
        docker_roots["ml-plain"] = docker_roots["ml-java"] = make_multiline(
            data, args.lines, bench_records(args.lines), CONFIG_V2)
        files["ml"] = docker_roots["ml-plain"] / "containers" / ("d" * 64) / f"{'d' * 64}-json.log"
    print(f"data: {log} ({args.lines:,} lines, {size / 1e6:.1f} MB; ready in {time.monotonic() - t0:.1f} s)")
    if "cri" in cases:
        print(f"      {files['cri']} ({files['cri'].stat().st_size / 1e6:.1f} MB, the same records in CRI lines)")
    for path in files.values():  # into the page cache for both shippers
        with open(path, "rb") as fh:
            while fh.read(8 << 20):
                pass
    load = os.getloadavg()[0]
    print(f"load average (1 min) before the runs: {load:.2f} on {os.cpu_count()} CPUs"
          + ("  -- other work is running: numbers will be noisy" if load > 0.5 else ""))
    rsyslogd = Path("/usr/sbin/rsyslogd")
    Sink.binary = None if args.python_sink else sink_binary(data)
    print(f"sink: {Sink.binary or 'Python (bench_routes.py sink)'}; framing {args.framing}")
    # (run name, shipper, case): "lookout" is the json-file case, as in earlier results files.
    plan = [(("lookout" if case == "json-file" else f"lookout-{case}"), "lookout", case) for case in cases] \
        if args.only != "rsyslog" else []
    if args.only != "lookout" and "json-file" in cases:
        plan.append(("rsyslog", "rsyslog", "json-file"))
    if any(shipper == "rsyslog" for _, shipper, _ in plan) and not rsyslogd.exists():
        print("rsyslogd missing: Debian: apt-get install rsyslog")
        return 2
    runs: list[dict[str, Any]] = []
    profile_out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-routes-") as tmp:
        for rnd in range(args.rounds):
            for name, shipper, case in plan:
                work = Path(tmp) / f"{name}-{rnd}"
                work.mkdir()
                sink = Sink(events(args.lines) if case == "ml-java" else args.lines, work, args.framing)
                try:
                    if shipper == "lookout":
                        host_root = data / "cri-host" if case == "cri" else None
                        cmd = lookout_cmd(docker_roots[case], host_root, work, sink.port, args.framing,
                                          args.lookout_arg, CASE_QUERY.get(case, ""))
                        raw = work / "pyspy.txt" if args.profile and rnd == 0 else None
                        result = measure(name, cmd, sink, args.lines, work / "lookout.log", profile=raw)
                        if raw is not None and raw.exists():
                            profile_out[name] = {"self": hotspots(raw), "inclusive": inclusive(raw, [
                                "read_batch", "decode (collectors/logs/decoders.py", "encode (agent/pipeline.py",
                                "messages (exporters/syslog/format.py", "_wait_acknowledged", "sendall",
                                "_refresh_files", "update_gauges", "housekeeping"])}
                    else:
                        result = measure(name, rsyslog_cmd(log, work, sink.port, args.framing), sink, args.lines,
                                         work / "rsyslog.log")
                except RuntimeError as exc:  # e.g. a case the agent cannot ship yet: reported, the others go on
                    print(f"  round {rnd + 1} {name}: FAILED: {exc}", flush=True)
                    runs.append({"shipper": name, "case": case, "round": rnd + 1, "error": str(exc)})
                    continue
                finally:
                    sink.stop()
                result["shipper"], result["case"], result["round"] = name, case, rnd + 1
                runs.append(result)
                print(f"  round {rnd + 1} {name:21s}: {result['lines']:,} lines in {result['wall_s']:.2f} s = "
                      f"{result['lines_per_s']:,} lines/s; CPU {result['cpu_s']:.2f} s = "
                      f"{result['cpu_us_per_line']:.2f} µs/line; steady {result['steady_lines_per_s']:,} lines/s, "
                      f"CPU {result['steady_cpu_s']:.2f} s; peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)

    summary: dict[str, Any] = {}
    for name, _, _ in plan:
        mine = [r for r in runs if r["shipper"] == name and "error" not in r]
        if not mine:
            summary[name] = {"failed_runs": len([r for r in runs if r["shipper"] == name])}
            continue
        summary[name] = {k: statistics.median(r[k] for r in mine) for k in (
            "lines_per_s", "cpu_us_per_line", "wall_s", "cpu_s", "steady_lines_per_s", "steady_cpu_s", "peak_rss_mb")}
    ok = {name: v for name, v in summary.items() if "lines_per_s" in v}
    if "lookout" in ok and "rsyslog" in ok:
        lk, rs = ok["lookout"], ok["rsyslog"]
        summary["throughput_ratio"] = round(lk["lines_per_s"] / rs["lines_per_s"], 2)
        summary["cpu_per_line_ratio"] = round(lk["cpu_us_per_line"] / rs["cpu_us_per_line"], 2)
        summary["target_met"] = summary["throughput_ratio"] >= 1.5 and summary["cpu_per_line_ratio"] <= 1.0
    if "lookout-json-plain" in ok and "lookout-json-parse" in ok:  # --parse: the cost of parsing, per line
        plain, parsed = ok["lookout-json-plain"], ok["lookout-json-parse"]
        summary["parse_extra_cpu_us_per_line"] = round(parsed["cpu_us_per_line"] - plain["cpu_us_per_line"], 2)
        summary["parse_vs_plain_lines_per_s"] = round(parsed["lines_per_s"] / plain["lines_per_s"], 2)
        # the same pair of runs in each round, one after the other: less exposed to the shared machine's drift
        pairs = [(p, q) for p in runs for q in runs if p.get("shipper") == "lookout-json-plain"
                 and q.get("shipper") == "lookout-json-parse" and p["round"] == q["round"]
                 and "error" not in p and "error" not in q]
        summary["parse_extra_cpu_us_per_line_by_round"] = [round(q["cpu_us_per_line"] - p["cpu_us_per_line"], 2)
                                                           for p, q in pairs]
    if "lookout-ml-plain" in ok and "lookout-ml-java" in ok:  # same lines read; multiline=java's cost per line
        plain, java = ok["lookout-ml-plain"], ok["lookout-ml-java"]
        summary["ml_java_vs_plain_cpu_per_line"] = round(java["cpu_us_per_line"] / plain["cpu_us_per_line"], 2)
        summary["ml_java_extra_cpu_us_per_line"] = round(java["cpu_us_per_line"] - plain["cpu_us_per_line"], 3)
        summary["ml_java_vs_plain_lines_per_s"] = round(java["lines_per_s"] / plain["lines_per_s"], 2)
    for name in ("lookout-cri", "lookout-no-hostconfig"):
        if "lookout" in ok and name in ok:  # lines/s of the case over json-file's, same records and route
            summary[f"{name.removeprefix('lookout-')}_vs_json_file"] = round(
                ok[name]["lines_per_s"] / ok["lookout"]["lines_per_s"], 2)
    doc = {"command": " ".join([sys.executable, *sys.argv]), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "loadavg_1m_before": round(load, 2), "sink": "C" if Sink.binary else "Python", "framing": args.framing,
           "cases": cases,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                       "rsyslogd": subprocess.run([str(rsyslogd), "-v"], capture_output=True, text=True,
                                                  check=False).stdout.splitlines()[0] if rsyslogd.exists() else None},
           "data": {"lines": args.lines, "bytes": size, **({"cri_bytes": files["cri"].stat().st_size}
                                                          if "cri" in files else {})},
           "runs": runs, "summary": summary, "profile": profile_out}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"routes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    (RESULTS / "routes-latest.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(json.dumps(summary, indent=2))
    for name, prof in profile_out.items():
        print(f"py-spy self time (top), {name}:")
        for frame, share in prof["self"]:
            print(f"  {share:5.1f}%  {frame}")
        print("inclusive:", prof["inclusive"])
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())

"""Lines/s over syslog+udp into a real local rsyslogd (imudp -> mmpstrucdata -> omfile), and how many arrive.

    flock /tmp/lookout-bench.lock python bench/bench_udp_syslog.py --lines 300 3000 30000 --runs 3 [--rate N --burst N]

Each run starts a fresh rsyslogd (tests/helpers/rsyslog.py), hands ``--lines`` RFC 5424 datagrams of ~230 bytes
to ``UdpTransport.send`` as one batch (what the pipeline does with a burst), then waits until rsyslogd has
written them all or its output stops growing for 2 s. Reported: the time ``send`` took, the lines that arrived,
lines/s from the first datagram to the last line in rsyslogd's output file, and the kernel's UDP drop
counters (/proc/net/snmp RcvbufErrors, SndbufErrors) over the run. ``--rate``/``--burst`` are passed to the
transport when given (``--rate 0``: no token bucket; the loopback buffer watch stays)."""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporters.syslog.udp import UdpTransport
from tests.helpers.rsyslog import Input, Rsyslog

SD = ('[lookout@32473 container_id="3f2a9c0d3f2a9c0d3f2a9c0d3f2a9c0d3f2a9c0d3f2a9c0d3f2a9c0d3f2a9c0d" '
      'container_name="web-1" image="nginx:1.27" stream="stdout"]')


def udp_counters() -> dict[str, int]:
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}


def run(lines: int, kwargs: dict[str, float]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-udp-") as tmp:
        inp = Input("udp")
        server = Rsyslog(Path(tmp), [inp]).start()
        try:
            messages = [f"<14>1 2026-11-28T04:05:06.123456Z node-7 web-1 - - {SD} udp bench line {i:07d}".encode()
                        for i in range(lines)]
            transport = UdpTransport("127.0.0.1", inp.port, **kwargs)
            before = udp_counters()
            started = time.monotonic()
            transport.send(messages)
            sent = time.monotonic() - started
            last, last_change = 0, time.monotonic()
            while True:
                n = server.count("udp")
                now = time.monotonic()
                if n != last:
                    last, last_change = n, now
                if n >= lines or now - last_change > 2.0:
                    break
                time.sleep(0.002)
            elapsed = last_change - started  # when the last line that arrived was seen
            after = udp_counters()
            transport.close()
            return {"lines": lines, "send_s": sent, "arrived": last, "elapsed_s": elapsed,
                    "lines_per_s": last / elapsed if elapsed > 0 else 0.0,
                    "rcvbuf_errors": after["RcvbufErrors"] - before["RcvbufErrors"],
                    "sndbuf_errors": after["SndbufErrors"] - before["SndbufErrors"],
                    "refused": float(getattr(transport, "refused", 0))}
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, nargs="+", default=[300, 3000, 30000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, help="datagrams per second (0: no token bucket)")
    ap.add_argument("--burst", type=int, help="datagrams sent back to back before pacing starts")
    args = ap.parse_args()
    kwargs: dict[str, float] = {}
    accepted = inspect.signature(UdpTransport).parameters
    for name in ("rate", "burst"):
        value = getattr(args, name)
        if value is not None:
            if name not in accepted:
                sys.exit(f"this UdpTransport takes no {name}=")
            kwargs[name] = value
    print(f"UdpTransport({', '.join(f'{k}={v}' for k, v in kwargs.items()) or 'defaults'})")
    for lines in args.lines:
        for _ in range(args.runs):
            r = run(lines, kwargs)
            print(f"lines={lines:>6}  arrived={r['arrived']:>6.0f}  send={r['send_s']:.3f}s  "
                  f"to-last-line={r['elapsed_s']:.3f}s  {r['lines_per_s']:>8.0f} lines/s  "
                  f"RcvbufErrors+{r['rcvbuf_errors']:.0f} SndbufErrors+{r['sndbuf_errors']:.0f} "
                  f"refused={r['refused']:.0f}", flush=True)


if __name__ == "__main__":
    main()

"""What the journal spool (collectors/logs/journal.py) costs per entry, and how fast journalctl feeds it.

1. The spool's own work per entry: the container entries captured from a real journal
   (tests/fixtures/data/journal/docker-entries.ndjson, the 16 KiB parts left out) are handed to ``JournalSpool.handle``
   (parse, classify, json-file line, buffered write) ``--rounds`` times, flushed as after each read of journalctl's
   output; thread CPU per entry.
2. journalctl's own rate: ``journalctl -o json --all`` with the spool's fields and matches over the host's journal,
   wall and CPU time per entry printed (skipped when the host keeps no journal).

    python bench/bench_journal.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.logs.journal import FIELDS, JournalSpool, journal_present  # noqa: E402
from collectors.logs.journal_entries import matches  # noqa: E402


def spool_cost(rounds: int) -> None:
    data = (ROOT / "tests/fixtures/data/journal/docker-entries.ndjson").read_bytes().splitlines()
    lines = [line for line in data if line and len(line) < 4096]
    with tempfile.TemporaryDirectory() as tmp:
        spool = JournalSpool(Path(tmp), Path("/"), [], "head")
        start = time.thread_time()
        for _ in range(rounds):
            for line in lines:
                spool.handle(line)
            for f in spool.files.values():
                f.flush()
        spool.commit()
        took = time.thread_time() - start
    n = rounds * len(lines)
    print(f"spool: {n} entries, {took:.2f} s thread CPU, {took / n * 1e6:.1f} us/entry "
          f"({n / took:,.0f} entries/s)")


def journalctl_rate() -> None:
    if not journal_present(Path("/")):
        print("journalctl: no journal on this host, skipped")
        return
    cmd = ["journalctl", "--no-pager", "--output=json", "--all", f"--output-fields={','.join(FIELDS)}",
           *matches([])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = out.count(b"\n")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"journalctl: {n} entries ({len(out) / 2**20:.0f} MiB of JSON) in {wall:.2f} s wall, {cpu:.2f} s CPU: "
          f"{cpu / max(n, 1) * 1e6:.1f} us CPU/entry ({n / wall:,.0f} entries/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    spool_cost(args.rounds)
    journalctl_rate()


if __name__ == "__main__":
    main()

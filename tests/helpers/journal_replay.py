"""A stand-in for ``journalctl`` in unit tests of the journal spool's restart and resume logic (the integration
tests use the real one): it prints the entries of ``LOOKOUT_REPLAY_FILE`` (``journalctl -o json`` output captured
from a real journal, tests/fixtures/data/journal) as journalctl does with ``--cursor`` (the entries from the one
with that cursor on), ``--lines=0`` (none of them), ``--lines=1`` (the last) or ``--no-tail`` (all),
and appends its arguments as one JSON line to ``LOOKOUT_REPLAY_CALLS``. With ``LOOKOUT_REPLAY_DIE_AFTER=N`` it
exits with status 1 after printing N entries, the first time only (a journalctl that crashed); otherwise, with
``--follow``, it then waits to be terminated as journalctl does.

    LOOKOUT_REPLAY_FILE=entries.ndjson python tests/helpers/journal_replay.py --output=json --follow ...
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    entries = [line for line in Path(os.environ["LOOKOUT_REPLAY_FILE"]).read_text().splitlines() if line]
    calls = Path(os.environ["LOOKOUT_REPLAY_CALLS"])
    with calls.open("a") as fh:
        fh.write(json.dumps(argv) + "\n")
    start = next((a.split("=", 1)[1] for a in argv if a.startswith("--cursor=")), None)
    if start is not None:
        cursors = [json.loads(e)["__CURSOR"] for e in entries]
        entries = entries[cursors.index(start):] if start in cursors else []
    elif "--lines=0" in argv:
        entries = []
    elif "--lines=1" in argv:
        entries = entries[-1:]
    die_after = int(os.environ.get("LOOKOUT_REPLAY_DIE_AFTER", "-1"))
    died = calls.with_suffix(".died")
    for n, entry in enumerate(entries):
        if n == die_after and not died.exists():
            died.touch()
            sys.stdout.flush()
            return 1
        sys.stdout.write(entry + "\n")
    sys.stdout.flush()
    if "--follow" in argv:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

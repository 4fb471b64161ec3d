"""systemd-journald for the integration tests, on a machine with no init system.

Standard library only, so ``.ci/run`` can use it before the test dependencies are installed::

    python -m tests.helpers.journald ensure-journald

Idempotent and safe from several test sessions at once: when nothing answers on the journal's socket
(``/run/systemd/journal/socket``), ``/lib/systemd/systemd-journald`` is started standalone (a new session, so it
outlives the test session on purpose; log ``/tmp/lookout-test-journald.log``) under an exclusive lock, after
``systemd-machine-id-setup`` if ``/etc/machine-id`` is empty (journald names its directory after it). It then
writes ``/run/log/journal/<machine-id>/system.journal`` (volatile storage: no ``/var/log/journal``), which
``journalctl`` and ``systemd-cat`` use as on any host, and Docker's ``journald`` log driver writes to it.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNALD_CANDIDATES = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
JOURNALD_LOG = Path(os.environ.get("LOOKOUT_TEST_JOURNALD_LOG", "/tmp/lookout-test-journald.log"))
LOCK = Path("/tmp/lookout-test-journald.lock")


class JournaldUnavailable(Exception):
    """No usable journald; the message says why (the pytest skip reason)."""


def _log(message: str) -> None:
    print(f"[journald] {message}", file=sys.stderr, flush=True)


def answers(path: str = JOURNAL_SOCKET) -> bool:
    """A journald listens on its native socket (a datagram socket: connecting succeeds only while bound)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def journal_files() -> list[Path]:
    """The system journal files journald writes (volatile and persistent)."""
    out: list[Path] = []
    for base in (Path("/run/log/journal"), Path("/var/log/journal")):
        out += sorted(base.glob("*/system*.journal"))
    return out


def _journald() -> str | None:
    for candidate in JOURNALD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_journald(timeout: float = 30.0) -> str:
    """Make a journald answer, starting one when none does (root only); return a short description."""
    if answers() and journal_files():
        return "journald already answering"
    if os.geteuid() != 0:
        raise JournaldUnavailable("no journald answers on /run/systemd/journal/socket and one can only be started "
                                  "as root")
    binary = _journald()
    if binary is None or shutil.which("journalctl") is None:
        raise JournaldUnavailable("systemd-journald or journalctl is not installed (Debian: apt-get install systemd)")
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be starting one right now
        if answers() and journal_files():
            return "journald already answering"
        machine_id = Path("/etc/machine-id")
        if not machine_id.exists() or not machine_id.read_text().strip():
            setup = shutil.which("systemd-machine-id-setup")
            if setup is None:
                raise JournaldUnavailable("/etc/machine-id is empty and systemd-machine-id-setup is missing")
            subprocess.run([setup], check=True, capture_output=True, timeout=30)
        _log(f"no journald answers; starting {binary} (log: {JOURNALD_LOG})")
        with open(JOURNALD_LOG, "ab") as out:
            proc = subprocess.Popen([binary], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers() and journal_files():
                return f"started systemd-journald (pid {proc.pid})"
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"still running (pid {proc.pid})"
    tail = JOURNALD_LOG.read_text(errors="replace")[-3000:] if JOURNALD_LOG.exists() else ""
    raise JournaldUnavailable(f"started systemd-journald but it does not answer on {JOURNAL_SOCKET} with a journal "
                              f"file; it {state}; its log:\n{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.journald",
                                     description="Start systemd-journald for Lookout's integration tests "
                                                 "(idempotent).")
    parser.add_argument("steps", nargs="+", choices=["ensure-journald"])
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        for _step in args.steps:
            _log(ensure_journald(args.timeout))
    except (JournaldUnavailable, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

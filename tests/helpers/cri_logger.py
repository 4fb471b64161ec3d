"""A containerd logging binary that writes a container's output as the CRI plugin does, for the tests.

Without the kubelet and containerd's CRI plugin nobody writes ``/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log``
for a container started with ``ctr run``. containerd hands a container's stdout and stderr to a *logging binary*
when started with ``ctr run --log-uri binary://<this>?<log file>``: the shim runs it with the container's stdout on
fd 3, stderr on fd 4 and a pipe on fd 5 that it closes when ready (containerd's ``runtime/v2/logging``). This one
writes every line the way containerd's CRI plugin does (``internal/cri/io/logger.go``):
``<RFC 3339 nano time> <stdout|stderr> <F|P> <content>``, lines longer than ``MAX_LINE`` split into ``P`` records
and a final ``F``, output ending without a newline at EOF written as ``P``.

    python tests/helpers/cri_logger.py /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import UTC, datetime

MAX_LINE = 16384  # containerd's max_container_log_line_size default


def stamp() -> bytes:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f").encode() + b"000Z"


def pump(fd: int, stream: bytes, out: int, lock: threading.Lock) -> None:
    """Copy ``fd``'s lines into ``out`` as CRI records until EOF."""
    pending = b""
    with os.fdopen(fd, "rb", buffering=0) as src:
        while True:
            chunk = src.read(65536)
            if not chunk:
                break
            pending += chunk
            records = []
            while b"\n" in pending or len(pending) >= MAX_LINE:
                line, sep, rest = pending.partition(b"\n")
                if not sep or len(line) > MAX_LINE:
                    line, rest = pending[:MAX_LINE], pending[MAX_LINE:]
                    records.append(b"%s %s P %s\n" % (stamp(), stream, line))
                else:
                    records.append(b"%s %s F %s\n" % (stamp(), stream, line.removesuffix(b"\r")))
                pending = rest
            if records:
                with lock:
                    os.write(out, b"".join(records))
    if pending:
        with lock:
            os.write(out, b"%s %s P %s\n" % (stamp(), stream, pending))


def main() -> None:
    path = sys.argv[1]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    lock = threading.Lock()
    threads = [threading.Thread(target=pump, args=(fd, name, out, lock)) for fd, name in ((3, b"stdout"),
                                                                                        (4, b"stderr"))]
    for thread in threads:
        thread.start()
    os.close(5)  # ready: the shim starts the container now
    for thread in threads:
        thread.join()
    os.close(out)


if __name__ == "__main__":
    main()

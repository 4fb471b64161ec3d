"""The journal spool: container (and ``--journal-units``) entries of the systemd journal as Docker json-file files.

Docker's ``journald`` log driver (and Podman's, through conmon) writes a container's output to the journal instead
of a file. One reader, ``journalctl -o json --all --follow``, reads the entries of those containers and units and
writes each source's as Docker json-file lines (the journal's 16 KiB ``CONTAINER_PARTIAL_MESSAGE`` parts as
json-file partials, the stream from ``PRIORITY``, the time from ``__REALTIME_TIMESTAMP``) into its own file under
``<state-dir>/journal/{docker,podman,units}/<id or unit>/<id or unit>-json.log``, rotated as Docker rotates
(``MAX_SIZE`` per file, ``MAX_FILES`` files). The routes follow those files like any json-file source (collectors.logs
.sources scans them), so their checkpoints, filters and at-least-once delivery apply unchanged.

The reader's position is the journal's own cursor, saved in ``<state-dir>/journal/cursor`` (write_atomic) only after
the lines of every entry up to it are written and fsynced: after a crash the entries since the last save (what
journalctl printed in one go, at most ``COMMIT_INTERVAL`` seconds of them) are written to the spool a second time,
nothing is skipped. Without a saved cursor the reader starts where ``--read-from`` says: ``head``, every entry the
journal holds for the matches; ``tail``, after the journal's last entry at start. journalctl starts at the saved
entry (``--cursor``), which the reader drops, rather than after it (``--after-cursor``): systemd 252's
``--after-cursor`` skips the first matching entry when the cursor's own entry does not match.

``journalctl`` rather than the ``systemd`` Python binding: its JSON output is a documented, stable interface
(systemd's JSON export format), it needs no compiler or libsystemd headers to install, and it reads a host's journal
under ``--host-root`` with ``--root``. When it exits it is started again from the saved cursor after a backoff.
Which source an entry belongs to and its json-file line are collectors.logs.journal_entries.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import structlog

from collectors.logs.checkpoints import write_atomic
from collectors.logs.journal_entries import classify, matches, to_line, unit_identifier, unit_name

log = structlog.get_logger("lookout.logs.journal")

MAX_SIZE = 10 << 20  # a spool file is rotated when the next line would take it past this size
MAX_FILES = 5  # spool files kept per source, the live one included (Docker's max-file)
COMMIT_INTERVAL = 0.2  # seconds between cursor saves at most while entries keep coming
COMMIT_GAP = 0.02  # seconds between cursor saves at least (each costs three fsyncs)
READ_SIZE = 1 << 20
BACKOFF_MAX = 30.0
STABLE_RUN = 60.0  # a journalctl that ran this long restarts after the shortest backoff again
GONE_IDLE = 300.0  # a removed Docker container's spool is deleted once it was not written for this long
PODMAN_IDLE = 86400.0  # a Podman container's spool (whose removal is not looked for) after this long unwritten
GC_INTERVAL = 60.0
ROTATE_WAIT = 300.0  # seconds a rotation waits at most for the routes to be done with the file it deletes
CURSOR_FILE = "cursor"
KINDS = ("docker", "podman", "units")
# The fields the reader asks journalctl for (besides __CURSOR and __REALTIME_TIMESTAMP, always printed).
FIELDS = ("MESSAGE", "PRIORITY", "CONTAINER_ID_FULL", "CONTAINER_PARTIAL_MESSAGE", "_COMM", "_SYSTEMD_UNIT",
          "SYSLOG_IDENTIFIER")


class _Stopped(Exception):
    """The reader was stopped while a rotation waited for the routes."""


class SpoolFile:
    """One source's json-file files: the live ``<name>-json.log`` and its rotated ``.1`` … ``.<max_files - 1>``."""

    def __init__(self, directory: Path, name: str, max_size: int, max_files: int,
                 before_delete: Callable[[str], None] = lambda path: None) -> None:
        self.before_delete = before_delete  # told of the file a rotation is about to delete (may wait)
        self.directory = directory
        self.base = directory / f"{name}-json.log"
        self.max_size = max_size
        self.max_files = max_files
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.base, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.dirty = False
        self.used = time.monotonic()
        self.pending: list[bytes] = []

    def write(self, line: bytes) -> None:
        """Buffered until ``flush`` (the reader flushes after each read of journalctl's output)."""
        if self.size and self.size + len(line) > self.max_size:
            self.rotate()
        self.pending.append(line)
        self.size += len(line)

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            while data:
                data = data[os.write(self.fd, data):]
            self.dirty = True
            self.used = time.monotonic()

    def rotate(self) -> None:
        """As Docker's json-file: ``.N-1`` -> ``.N`` (the oldest removed), live -> ``.1``, a new live file."""
        self.flush()
        self.sync()
        name = str(self.base)
        oldest = f"{name}.{self.max_files - 1}" if self.max_files > 1 else name
        if os.path.exists(oldest):
            self.before_delete(oldest)
        os.close(self.fd)
        if self.max_files > 1:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{name}.{self.max_files - 1}")
            for n in range(self.max_files - 2, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{name}.{n}", f"{name}.{n + 1}")
            os.rename(name, f"{name}.1")
        else:
            os.unlink(name)
        self.fd = os.open(self.base, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0

    def sync(self) -> None:
        self.flush()
        if self.dirty:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self.fd)


def read_by_routes(routes: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str, source_id: str) -> bool:
    """Whether every route that ships ``source_id`` is done with ``path``, the spool file a rotation would delete, by
    the routes' acknowledged offsets (``CheckpointStore.routes()``: file keys ``<dev>:<ino>:<crc>``). A route is done
    when it acknowledged the file to its end, or holds an offset in a newer file of the source (it reads oldest
    first); it is behind when its offsets are only in files already deleted. A route with no offset in the source
    (one that filters it out, or has not begun it) does not hold the spool."""
    try:
        st = os.stat(path)
        newer = {os.stat(e.path).st_ino for e in os.scandir(os.path.dirname(path)) if e.path != path}
    except OSError:
        return True
    for files in routes.values():
        mine = [(key.split(":", 2), entry) for key, entry in files.items() if entry.get("source") == source_id]
        if not mine:
            continue
        here = [entry for parts, entry in mine if parts[:2] == [str(st.st_dev), str(st.st_ino)]]
        if here:
            if any(int(entry["offset"]) < st.st_size for entry in here):
                return False
        elif not any(len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in newer for parts, _ in mine):
            return False
    return True


def journal_present(host_root: Path) -> bool:
    """Whether the host keeps a journal (persistent ``/var/log/journal`` or volatile ``/run/log/journal``)."""
    for base in ("var/log/journal", "run/log/journal"):
        with contextlib.suppress(OSError):
            for sub in os.scandir(host_root / base):
                if sub.is_dir() and any(n.endswith(".journal") for n in os.listdir(sub.path)):
                    return True
    return False


class JournalSpool:
    """The journal reader and the spool it writes; ``run`` is its thread, ``stop`` ends it."""

    def __init__(self, root: Path, host_root: Path, units: Iterable[str], read_from: str, *,
                 docker_root: Path | None = None, journalctl: str = "journalctl", max_size: int = MAX_SIZE,
                 max_files: int = MAX_FILES, on_restart: Callable[[], None] = lambda: None,
                 on_skipped: Callable[[], None] = lambda: None,
                 finished: Callable[[str, str], bool] = lambda path, source_id: True,
                 rotate_wait: float = ROTATE_WAIT) -> None:
        self.root = root
        self.host_root = host_root
        self.units: dict[str, str] = {}
        for unit in units:
            self.units[unit_name(unit)] = self.units[unit_identifier(unit)] = unit_name(unit)
        self.read_from = read_from
        self.docker_root = docker_root
        self.journalctl = journalctl
        self.max_size = max_size
        self.max_files = max_files
        self.on_restart = on_restart
        self.on_skipped = on_skipped
        self.finished = finished  # (spool file, source id) -> every route that ships the source is done with it
        self.rotate_wait = rotate_wait
        self._gave_up: set[str] = set()  # sources whose last rotation wait timed out
        self.cursor_path = root / CURSOR_FILE
        self.files: dict[tuple[str, str], SpoolFile] = {}
        self.entries = 0  # entries written to the spool
        self.restarts = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = ""  # the cursor of the last entry handled, not yet saved
        self._gc_due = time.monotonic() + GC_INTERVAL
        self.cursor = self._load_cursor()
        for kind in KINDS:
            (root / kind).mkdir(parents=True, exist_ok=True)

    def _load_cursor(self) -> str:
        try:
            return self.cursor_path.read_text().strip()
        except OSError:
            return ""

    # --- the command ---

    def _base(self) -> list[str]:
        cmd = [self.journalctl, "--no-pager"]
        if self.host_root != Path("/"):
            cmd.append(f"--root={self.host_root}")
        return cmd

    def command(self) -> list[str]:
        cmd = [*self._base(), "--output=json", "--all", "--follow", f"--output-fields={','.join(FIELDS)}"]
        if self.cursor:
            # From the saved entry on, that one dropped by ``handle``: journalctl 252's --after-cursor skips one more
            # entry than the cursor's when that entry does not match (a unit no longer asked for, the tail cursor).
            cmd.append(f"--cursor={self.cursor}")
        elif self.read_from == "tail":
            cmd.append("--lines=0")
        else:
            cmd.append("--no-tail")
        return cmd + matches(self.units.values())

    def _tail_cursor(self) -> str:
        """The cursor of the journal's last entry now ("" for an empty journal), where ``tail`` starts."""
        try:
            out = subprocess.run([*self._base(), "--output=json", "--lines=1", "--output-fields=MESSAGE"],
                                 capture_output=True, timeout=60, check=False).stdout
            return str(orjson.loads(out.splitlines()[-1])["__CURSOR"]) if out.strip() else ""
        except (OSError, subprocess.SubprocessError, orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return ""

    # --- entries ---

    def handle(self, raw: bytes) -> None:
        """One line of journalctl's output: its entry's json-file line into its source's spool file."""
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.on_skipped()
            log.warning("journal_entry_unreadable", line=raw[:200].decode("utf-8", "replace"))
            return
        if not isinstance(entry, dict):
            self.on_skipped()
            return
        cursor = entry.get("__CURSOR")
        if cursor == self.cursor:  # the saved entry itself, where --cursor starts: already spooled
            return
        source = classify(entry, self.units)
        line = to_line(entry) if source is not None else None
        if source is not None and line is None:
            self.on_skipped()
            log.warning("journal_entry_skipped", why="no MESSAGE or __REALTIME_TIMESTAMP", cursor=cursor)
        elif source is not None and line is not None:
            spool = self.files.get(source)
            if spool is None:
                sid = f"journal:{source[0]}:{source[1]}"
                spool = self.files[source] = SpoolFile(self.root / source[0] / source[1], source[1], self.max_size,
                                                       self.max_files, lambda path: self._wait_read(path, sid))
            spool.write(line)
            self.entries += 1
        if isinstance(cursor, str):  # only once the entry's line is written: a failed write is read again
            self._pending = cursor

    def _wait_read(self, path: str, source_id: str) -> None:
        """Hold the reader (journalctl waits on its pipe; the journal keeps the entries) until every route that ships
        the source is done with the spool file a rotation would delete, at most ``rotate_wait`` seconds: a route
        stuck longer loses the file, as with a json-file rotated away unread (counted by the route), and so do its
        next ones until it is found done at a rotation again."""
        deadline = time.monotonic() + self.rotate_wait
        waited = False
        while not self.finished(path, source_id):
            if self._stop.is_set():
                raise _Stopped
            if source_id in self._gave_up or time.monotonic() >= deadline:
                # Once given up on, a source's rotations wait no more until its routes are found done in time: a
                # route that stopped for good must not stall every container's journal at each rotation.
                if source_id not in self._gave_up:
                    log.warning("journal_spool_rotated_unread", source=source_id, file=path, waited=self.rotate_wait)
                self._gave_up.add(source_id)
                return
            if not waited:
                log.info("journal_spool_waiting", source=source_id, file=path)
                waited = True
            self._stop.wait(0.1)
        self._gave_up.discard(source_id)

    def commit(self) -> None:
        """Every spool file written to is fsynced, then the cursor of the last entry handled is saved."""
        if not self._pending:
            return
        for spool in self.files.values():
            spool.sync()
        write_atomic(self.cursor_path, self._pending.encode())
        self.cursor, self._pending = self._pending, ""
        if len(self.files) > 256:  # the descriptors of idle sources are closed; they are opened again on need
            idle = sorted(self.files, key=lambda k: self.files[k].used)[: len(self.files) - 128]
            for key in idle:
                self.files.pop(key).close()

    # --- the thread ---

    def run(self) -> None:
        """Read the journal until ``stop``: journalctl is started again (from the saved cursor) whenever it exits."""
        backoff = 1.0
        if not self.cursor and self.read_from == "tail":
            self._pending = self._tail_cursor()
            self.commit()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                rc, errors = self._read_once()
                self.commit()
            except _Stopped:  # stopped while a rotation waited for the routes: the entries before it are written
                self.commit()
                break
            except OSError as exc:  # the spool or the cursor cannot be written (a full disk): read again later
                rc, errors = None, f"spool not written: {exc}"
                for spool in self.files.values():
                    with contextlib.suppress(OSError):
                        spool.close()
                self.files.clear()
                self._pending = ""
            if self._stop.is_set():
                break
            if time.monotonic() - started > STABLE_RUN:
                backoff = 1.0
            self.restarts += 1
            self.on_restart()
            log.warning("journal_reader_restarted", exit_code=rc, stderr=errors[-1000:], backoff=backoff,
                        cursor=self.cursor)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX)
        for spool in self.files.values():
            spool.close()
        self.files.clear()

    def _read_once(self) -> tuple[int | None, str]:
        # journalctl gets SIGTERM when this thread's process dies (setpriv --pdeathsig, util-linux): a killed agent
        # leaves no journalctl following the journal for nobody.
        setpriv = shutil.which("setpriv")
        prefix = [setpriv, "--pdeathsig=TERM", "--"] if setpriv else []
        try:
            proc = self._proc = subprocess.Popen([*prefix, *self.command()], stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            return None, str(exc)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        buf, errors = b"", b""
        last_commit = time.monotonic()
        open_fds = [out, err]
        try:
            while out in open_fds and not self._stop.is_set():
                ready, _, _ = select.select(open_fds, [], [], COMMIT_GAP if self._pending else 1.0)
                if err in ready:
                    chunk = os.read(err, 65536)
                    errors = (errors + chunk)[-4096:]
                    if not chunk:
                        open_fds.remove(err)
                drained = not ready
                if out in ready:
                    chunk = os.read(out, READ_SIZE)
                    if not chunk:
                        open_fds.remove(out)
                    drained = len(chunk) < READ_SIZE
                    buf += chunk
                    lines = buf.split(b"\n")
                    buf = lines.pop()
                    for raw in lines:
                        if raw:
                            self.handle(raw)
                    for spool in self.files.values():
                        spool.flush()
                now = time.monotonic()
                # Saved once journalctl has printed all it had (a burst is written), but not more often than every
                # COMMIT_GAP, and every COMMIT_INTERVAL under a steady stream: a crash writes again at most that much.
                since = now - last_commit
                if self._pending and (since >= COMMIT_INTERVAL or (drained and since >= COMMIT_GAP)):
                    self.commit()
                    last_commit = now
                if now >= self._gc_due:
                    self._gc_due = now + GC_INTERVAL
                    self.collect_garbage()
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            self._proc = None
        return proc.returncode, errors.decode("utf-8", "replace")

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()

    def collect_garbage(self) -> None:
        """Delete the spool of a container that is gone: a Docker container whose directory under the Docker root
        was removed, once its spool was not written for ``GONE_IDLE``; a Podman container's after ``PODMAN_IDLE``.
        The routes drain a deleted file they hold open, as they drain a removed container's json-file."""
        now = time.time()
        for kind, idle in (("docker", GONE_IDLE), ("podman", PODMAN_IDLE)):
            try:
                entries = list(os.scandir(f"{self.root}/{kind}"))  # strings: a Path interns its parts
            except OSError:
                continue
            for entry in entries:
                if kind == "docker" and (self.docker_root is None
                                         or os.path.exists(f"{self.docker_root}/containers/{entry.name}")):
                    continue
                try:
                    mtime = max(os.stat(f.path).st_mtime for f in os.scandir(entry.path))
                except (OSError, ValueError):
                    mtime = 0.0
                if now - mtime < idle:
                    continue
                spool = self.files.pop((kind, entry.name), None)
                if spool is not None:
                    spool.close()
                shutil.rmtree(entry.path, ignore_errors=True)
                log.info("journal_spool_removed", kind=kind, container_id=entry.name)

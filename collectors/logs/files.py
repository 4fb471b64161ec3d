"""File identity and forward reading of one log file.

Identity is (device, inode) plus a CRC of the file's first line (at most 256 bytes), computed
once that line is complete: a reused inode with different content is a different file, and the
key never changes as the file grows or is renamed by rotation. ``Tail`` reads large chunks with
``pread`` and returns only complete lines; an unterminated last line is left for later.
"""

from __future__ import annotations

import os
import zlib

FINGERPRINT_MAX = 256
FIRST_LINE_MAX = 1 << 17  # a Docker partial (16 KiB) or CRI line with every character escaped fits
READ_CHUNK = 1 << 20


def fingerprint(fd: int) -> str | None:
    """CRC32 of the first line (capped at 256 bytes); None until that line is complete."""
    head = os.pread(fd, FINGERPRINT_MAX, 0)
    end = head.find(b"\n")
    if end < 0:
        if len(head) < FINGERPRINT_MAX:
            return None
        end = FINGERPRINT_MAX
    return f"{zlib.crc32(head[:end]):08x}"


def file_key(st: os.stat_result, fp: str) -> str:
    return f"{st.st_dev}:{st.st_ino}:{fp}"


class Tail:
    """One open log file; ``offset`` is where the next read starts."""

    __slots__ = ("begun", "fd", "fp", "ino", "key", "offset", "order", "path", "size", "truncated")

    def __init__(self, path: str, fd: int, key: str, ino: int, offset: int, fp: str | None = None) -> None:
        self.path = path
        self.fd = fd
        self.key = key
        self.fp = fp  # the first line's CRC the file was opened with (None: not checked for truncation)
        self.ino = ino
        self.offset = offset
        self.size = 0
        self.order = ""  # the first record's time, normalized (see first_line); "" if unknown
        self.begun = False  # read from at least once
        self.truncated = False  # found truncated in place (copytruncate) by a read, which started over at 0

    def first_line(self, limit: int = FIRST_LINE_MAX) -> bytes:
        """The file's first line without its newline (b"" if it is longer than ``limit`` or unreadable)."""
        try:
            head = os.pread(self.fd, limit, 0)
        except OSError:
            return b""
        end = head.find(b"\n")
        return head[:end] if end >= 0 else b""

    @classmethod
    def open(cls, path: str) -> Tail | None:
        """Open ``path`` and identify it; None if it is gone or has no complete first line yet."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            fp = fingerprint(fd)
        except OSError:
            os.close(fd)
            return None
        if fp is None:
            os.close(fd)
            return None
        tail = cls(path, fd, file_key(st, fp), st.st_ino, 0, fp)
        tail.size = st.st_size
        return tail

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, limit: int = READ_CHUNK) -> tuple[bytes, int, int]:
        """(complete lines, their start offset, bytes skipped as an over-long line)."""
        st = os.fstat(self.fd)
        self.size = st.st_size
        if st.st_size < self.offset or (st.st_size > self.offset > 0 and self.fp is not None
                                        and fingerprint(self.fd) != self.fp):
            # copytruncate: the file was truncated in place (and, when it is not shorter, written past the old
            # offset again before this read: its first line is another); start over
            self.offset = 0
            self.truncated = True
        elif st.st_size == self.offset:
            return b"", self.offset, 0  # nothing new: no read
        # No more than the file holds now: pread allocates the whole ``limit`` and shrinks it to what it read, and a
        # 1 MiB block made and cut back for every few lines fragmented the heap over an hour (BENCHMARKS 18).
        data = os.pread(self.fd, min(limit, st.st_size - self.offset), self.offset)
        if not data:
            return b"", self.offset, 0
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) < limit:
                return b"", self.offset, 0  # the last line is still being written
            return self._skip_long_line(limit)
        start = self.offset
        self.offset += end + 1
        self.begun = True
        return data[: end + 1], start, 0

    def peek(self, offset: int, limit: int = READ_CHUNK) -> bytes:
        """The complete lines ``read`` would return from ``offset`` if the file stays as it is (b"" if there are
        none yet, or the first line is longer than ``limit``); reads ahead without moving anything."""
        available = os.fstat(self.fd).st_size - offset  # no more than there is (see ``read``)
        if available <= 0:
            return b""
        data = os.pread(self.fd, min(limit, available), offset)
        end = data.rfind(b"\n")
        return data[: end + 1] if end >= 0 else b""

    def _skip_long_line(self, limit: int) -> tuple[bytes, int, int]:
        """A physical line longer than the read buffer: skip it up to its newline (counted by the caller)."""
        pos = self.offset + limit
        while True:
            data = os.pread(self.fd, limit, pos)
            if not data:
                return b"", self.offset, 0  # no newline yet: wait for the writer to finish it
            idx = data.find(b"\n")
            if idx >= 0:
                skipped = pos + idx + 1 - self.offset
                self.offset = pos + idx + 1
                self.begun = True
                return b"", self.offset, skipped
            pos += len(data)

    def replaced(self) -> bool:
        """True when ``path`` no longer names this file (renamed by rotation, or deleted)."""
        try:
            return os.stat(self.path).st_ino != self.ino
        except OSError:
            return True

    def drained(self) -> bool:
        """No complete line left to read in the file as it is now. ``size`` is as of the last read: a removed
        container's last lines may have come after it, and its directory's deletion may be seen before them."""
        try:
            self.size = os.fstat(self.fd).st_size
            return self.size <= self.offset or (self.size - self.offset < READ_CHUNK and not self.peek(self.offset))
        except OSError:
            return True

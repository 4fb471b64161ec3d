"""``file:///path`` and ``stdout://`` routes: NDJSON appended and flushed, one write per batch."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Sequence

import structlog

from agent.model import DeliveryResult, Payload, Segment
from exporters.logs.ndjson import NdjsonEncoder

log = structlog.get_logger("lookout.file")


class FileSink:
    """Appends each batch with one ``write`` (O_APPEND); a batch is acknowledged once written."""

    def __init__(self, path: str, fields_key: str = "") -> None:
        self.path = path
        self.encoder = NdjsonEncoder(fields_key)
        self._fd = -1

    def encode(self, segments: Sequence[Segment]) -> Payload:
        return Payload(self.encoder.encode(segments), sum(len(s.records) for s in segments))

    def offload_spec(self) -> tuple[str, None]:
        """How a chunk worker encodes for this sink (agent.logs.offload): the same NDJSON, appended as bytes."""
        return ("ndjson", None)

    def _write(self, payload: bytes) -> None:
        if self._fd < 0:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._fd = self._open()
        view = memoryview(payload)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            os.close(self._fd)  # reopen next time (e.g. the file was removed or the disk filled)
            self._fd = -1
            raise

    def _open(self) -> int:
        """Open for appending. A regular file that does not end with a newline holds a line torn by a crash or a
        full disk (the batch is sent again whole): end that line first, so the records after it stay intact."""
        flags = os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, os.O_RDWR | flags, 0o644)
        except PermissionError:  # write-only for us: append without looking back
            return os.open(self.path, os.O_WRONLY | flags, 0o644)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                os.write(fd, b"\n")
                log.warning("route_file_torn_line_ended", path=self.path, offset=st.st_size)
        except OSError:
            os.close(fd)
            raise
        return fd

    async def send(self, payload: Payload) -> DeliveryResult:
        assert isinstance(payload.data, bytes), "a file payload is one buffer"
        await asyncio.to_thread(self._write, payload.data)
        return DeliveryResult(delivered=payload.count)

    async def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StdoutSink(FileSink):
    def __init__(self, fields_key: str = "") -> None:
        super().__init__("", fields_key)

    def _write(self, payload: bytes) -> None:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()

    async def close(self) -> None:
        return None

"""The rendered /metrics: the latest snapshot held by ``Exposition``, compressed once per snapshot and format.

No aiohttp here: the agent builds its parts (and starts shipping logs) before the HTTP server's imports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from isal import igzip, isal_zlib
from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition

from agent.model import Snapshot

GZIP_WBITS = 16 + 15  # a gzip header and trailer around the deflate stream
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OM_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


STREAM_INPUT = 1 << 16  # compressed bytes fed to the decompressor per step of an uncompressed scrape
STREAM_OUTPUT = 1 << 20  # at most this much decompressed text per step (one write to the socket)


@dataclass(frozen=True, slots=True)
class Compressed:
    """One gzip member and the length of the text inside it (the Content-Length of a plain scrape)."""

    body: bytes
    text_bytes: int


def compress_chunks(chunks: Iterable[str]) -> Compressed:
    """One gzip member from text chunks, compressed as they come (ISA-L: ~6x zlib's speed at level 1)."""
    comp = isal_zlib.compressobj(1, isal_zlib.DEFLATED, GZIP_WBITS)
    parts = []
    size = 0
    for chunk in chunks:
        data = chunk.encode()
        size += len(data)
        parts.append(comp.compress(data))
        del data
    parts.append(comp.flush())
    return Compressed(b"".join(parts), size)


def decompress_pieces(body: bytes) -> Iterator[bytes]:
    """The text inside a gzip ``body`` in pieces of at most ``STREAM_OUTPUT`` bytes, never all at once."""
    decomp = isal_zlib.decompressobj(GZIP_WBITS)
    view = memoryview(body)
    for start in range(0, len(body), STREAM_INPUT):
        data: bytes = view[start:start + STREAM_INPUT]  # type: ignore[assignment]
        while data:
            piece = decomp.decompress(data, STREAM_OUTPUT)
            if piece:
                yield piece
            data = decomp.unconsumed_tail
    tail = decomp.flush()
    if tail:
        yield tail


class Exposition:
    """The latest snapshot and its rendered forms, swapped in whole by the housekeeping task.

    Only the gzip-compressed exposition is kept (a 1,000-container host's text is ~36 MB, its gzip ~4
    MB); Prometheus always asks for gzip, and other clients get it decompressed piece by piece.

    ``publish`` pre-renders the formats clients asked for since the previous publish (Prometheus asks
    for OpenMetrics, ``curl`` for text), or the previous publish's formats when nobody scraped in
    between (a scrape interval longer than the housekeeping interval). Before any scrape that is
    text. A format nobody asked for recently is rendered on its first request and kept the same way.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.snapshot: Snapshot | None = None
        self._gzip: dict[bool, Compressed] = {}
        self._render: Callable[[Snapshot, bool], Iterable[str]] | None = None
        self._lock = threading.Lock()
        self._asked: set[bool] = set()  # formats requested since the last publish (True: OpenMetrics)
        self._eager: frozenset[bool] = frozenset({False})

    @property
    def eager_formats(self) -> frozenset[bool]:
        """The formats the last ``publish`` rendered (True: OpenMetrics, False: text)."""
        return self._eager

    def asked(self, openmetrics: bool) -> None:
        """A client asked for this format: the next ``publish`` renders it ahead of the next scrape."""
        with self._lock:
            self._asked.add(openmetrics)

    def publish(self, snapshot: Snapshot, render: Callable[[Snapshot, bool], Iterable[str]]) -> None:
        """Render and compress ``snapshot`` in the formats clients ask for (in the caller's thread), then swap."""
        with self._lock:
            formats = frozenset(self._asked) or self._eager
            self._asked.clear()
        bodies = {}
        for openmetrics in sorted(formats):
            body = compress_chunks(render(snapshot, openmetrics))
            bodies[openmetrics] = body
            with self._lock:
                # Let the previous body of this format go now rather than after every format is done: a
                # scrape in between gets this snapshot's body, as consistent as the previous one.
                if openmetrics in self._gzip:
                    self._gzip[openmetrics] = body
        with self._lock:
            self.snapshot = snapshot
            self._gzip = bodies
            self._render = render
            self._eager = formats

    def compressed(self, openmetrics: bool) -> Compressed | None:
        """The container metrics of the latest snapshot in one format, gzipped (rendered now if not yet)."""
        with self._lock:
            body = self._gzip.get(openmetrics)
            if body is None:
                if self._render is None or self.snapshot is None:
                    return None
                body = self._gzip[openmetrics] = compress_chunks(self._render(self.snapshot, openmetrics))
            return body

    def own(self, openmetrics: bool) -> bytes:
        """The agent's self-metrics; in OpenMetrics they end with ``# EOF``."""
        if openmetrics:
            return om_exposition.generate_latest(self.registry)
        return text_exposition.generate_latest(self.registry)

    def body(self, openmetrics: bool, compress: bool) -> bytes:
        """Container metrics (cached) + self metrics as one bytes object (tests, benchmarks; the /metrics
        handler writes the parts one after another instead). gzip members concatenate into one stream."""
        cached = self.compressed(openmetrics)
        own = self.own(openmetrics)
        if compress:
            return (cached.body if cached else b"") + igzip.compress(own, 1)
        return (b"".join(decompress_pieces(cached.body)) if cached else b"") + own

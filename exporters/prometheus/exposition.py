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
    """One gzip member, kept as the compressor's output pieces, and the length of the text inside it (the
    Content-Length of a plain scrape). Never joined: a ~4 MB body joined while its pieces are alive doubled the
    peak of every publish, and a scrape writes the pieces one after the other anyway."""

    parts: tuple[bytes, ...]
    size: int  # compressed bytes, the Content-Length of a gzip scrape
    text_bytes: int

    @property
    def body(self) -> bytes:
        """The whole member as one bytes object (tests, benchmarks)."""
        return b"".join(self.parts)


def compress_chunks(chunks: Iterable[str]) -> Compressed:
    """One gzip member from text chunks, compressed as they come (ISA-L: ~6x zlib's speed at level 1)."""
    comp = isal_zlib.compressobj(1, isal_zlib.DEFLATED, GZIP_WBITS)
    parts = []
    size = 0
    for chunk in chunks:
        data = chunk.encode()
        size += len(data)
        part = comp.compress(data)
        del data
        if part:
            parts.append(part)
    parts.append(comp.flush())
    return Compressed(tuple(parts), sum(map(len, parts)), size)


def decompress_pieces(parts: Iterable[bytes]) -> Iterator[bytes]:
    """The text inside a gzip member given as pieces, at most ``STREAM_OUTPUT`` bytes at a time, never all at
    once."""
    decomp = isal_zlib.decompressobj(GZIP_WBITS)
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(part), STREAM_INPUT):
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
    """The latest snapshot and its rendered forms, set by the housekeeping task's ``publish``.

    Only the gzip-compressed exposition is kept (a 1,000-container host's text is ~36 MB, its gzip ~4
    MB); Prometheus always asks for gzip, and other clients get it decompressed piece by piece.

    ``publish`` pre-renders the formats clients asked for since the previous publish (Prometheus asks
    for OpenMetrics, ``curl`` for text), or the previous publish's formats when nobody scraped in
    between (a scrape interval longer than the housekeeping interval). Before any scrape that is
    text. A format nobody asked for recently is rendered on its first request and kept the same way.

    A render that raises (a bug) is not retried for that snapshot and format: the error reaches the publish's
    caller (or the one scrape that rendered on demand), and later scrapes get the self-metrics alone, so the
    agent's own health stays scrapable and scrapes do not each repeat a failing render.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.snapshot: Snapshot | None = None
        self._gzip: dict[bool, Compressed] = {}
        self._render: Callable[[Snapshot, bool], Iterable[str]] | None = None
        self._lock = threading.Lock()  # the fields above and below: held briefly, never while rendering
        # One memory-heavy step at a time: a housekeeping cycle's collection and publish (``exclusive``) or a
        # scrape's on-demand render. Each holds a few MB of transient objects, and Prometheus' first OpenMetrics
        # scrape rendering during a collection raised the agent's peak RSS by both (~4 MB at 1,000 containers).
        # Always taken before ``_lock``, never inside it; reentrant, as a cycle publishes while it holds it.
        self._rendering = threading.RLock()
        self._failed: set[bool] = set()  # formats whose render raised for the current snapshot
        self._asked: set[bool] = set()  # formats requested since the last publish (True: OpenMetrics)
        self._eager: frozenset[bool] = frozenset({False})

    @property
    def eager_formats(self) -> frozenset[bool]:
        """The formats the last ``publish`` rendered (True: OpenMetrics, False: text)."""
        return self._eager

    def exclusive(self) -> threading.RLock:
        """Hold while collecting the snapshot to publish: a scrape that must render waits until it is done."""
        return self._rendering

    def asked(self, openmetrics: bool) -> None:
        """A client asked for this format: the next ``publish`` renders it ahead of the next scrape."""
        with self._lock:
            self._asked.add(openmetrics)

    def publish(self, snapshot: Snapshot, render: Callable[[Snapshot, bool], Iterable[str]]) -> None:
        """Make ``snapshot`` the latest and render and compress it in the formats clients ask for, in the caller's
        thread; scrapes wait for those bodies (see ``compressed``)."""
        with self._rendering:
            with self._lock:
                formats = frozenset(self._asked) or self._eager
                self._asked.clear()
                # The previous snapshot and its bodies go before the new bodies are built, not after: at 1,000
                # containers they are ~4 MB each, held beside the new ones at the peak of every cycle. A scrape
                # in the meantime waits for this publish (``compressed``) and gets the new snapshot's body.
                self.snapshot = snapshot
                self._render = render
                self._gzip = {}
                self._failed = set()
                self._eager = formats
            error: Exception | None = None
            for openmetrics in sorted(formats):
                try:
                    body = compress_chunks(render(snapshot, openmetrics))
                except Exception as exc:  # kept: the other format is still rendered, then this is raised
                    with self._lock:
                        self._failed.add(openmetrics)
                    error = error or exc
                    continue
                with self._lock:
                    self._gzip[openmetrics] = body
            if error is not None:
                raise error

    def ready(self, openmetrics: bool) -> Compressed | None:
        """The latest snapshot's body in this format if it is rendered, without waiting or rendering (cheap
        enough for the event loop: a scrape needs a thread only when it must wait or render)."""
        with self._lock:
            return self._gzip.get(openmetrics)

    def compressed(self, openmetrics: bool) -> Compressed | None:
        """The container metrics of the latest snapshot in one format, gzipped (rendered now if not yet; while a
        publish renders, after it, which may have rendered this format already)."""
        body = self.ready(openmetrics)
        if body is not None or self._render is None:  # before the first publish there is nothing to wait for
            return body
        with self._rendering:
            with self._lock:
                body = self._gzip.get(openmetrics)
                snapshot, render = self.snapshot, self._render
                if openmetrics in self._failed:
                    return None
            if body is not None or snapshot is None:
                return body
            try:
                body = compress_chunks(render(snapshot, openmetrics))
            except Exception:
                with self._lock:
                    self._failed.add(openmetrics)
                raise
            with self._lock:  # only publish changes the snapshot, under _rendering, which this holds
                self._gzip[openmetrics] = body
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
        return (b"".join(decompress_pieces(cached.parts)) if cached else b"") + own

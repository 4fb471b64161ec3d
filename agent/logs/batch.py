"""A route's batch: the records read (decoded segments, or chunks a worker already encoded), the file offsets it
acknowledges once delivered, and its payload once encoded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent.model import LogSource, Payload, Segment
from collectors.logs.follower import Acks


@dataclass(slots=True)
class EncodedSegment:
    """A chunk of one file that a chunk worker decoded and encoded (agent.logs.offload): only its payload and count
    come back. ``first_offset`` is where its first record starts (the chunk's start: nothing was held)."""

    source: LogSource
    payload: bytes
    count: int
    first_offset: int
    truncated: int = 0


@dataclass
class Batch:
    segments: list[Segment | EncodedSegment] = field(default_factory=list)
    count: int = 0
    started: float = 0.0
    # the offsets to acknowledge once sent
    acks: Acks = field(default_factory=dict)
    payload: Payload | None = None
    size: int = 0

    def merge(self, other: Batch) -> None:
        self.segments += other.segments
        self.count += other.count
        self.size += other.size
        self.acks.update(other.acks)  # later offsets of the same file replace earlier ones

    def split(self, limit: int) -> Batch:
        """Keep the first ``limit`` records and return the rest as a new batch.

        One read decodes a whole chunk (up to 1 MiB of lines), so a batch can overshoot the route's
        ``batch=`` count; the receiver must still get at most ``limit`` records per request. This batch
        acknowledges each file only up to the first record that moved to the rest (never past a record
        still being joined); the rest carries the original acknowledgements. A chunk encoded by a worker
        cannot be cut: it moves whole, or stays whole when it comes first (only stream sinks, whose receivers
        see no requests, take such chunks)."""
        rest = Batch(started=time.monotonic(), acks=dict(self.acks))
        kept: list[Segment | EncodedSegment] = []
        room = limit
        for seg in self.segments:
            if isinstance(seg, EncodedSegment):
                if room >= seg.count or not kept:
                    kept.append(seg)
                    room = max(room - seg.count, 0)
                else:
                    rest.segments.append(seg)
                    room = 0
                continue
            if room >= len(seg.records):
                kept.append(seg)
                room -= len(seg.records)
                continue
            fields = seg.fields
            if room > 0:
                kept.append(Segment(seg.source, seg.records[:room], None if fields is None else fields[:room]))
            rest.segments.append(Segment(seg.source, seg.records[room:], None if fields is None else fields[room:]))
            room = 0
        moved_from: dict[str, int] = {}  # file key -> lowest offset of a record that moved
        for seg in rest.segments:
            key = seg.source.file_key
            # a joined record carries its first part's (earlier) offset
            low = seg.first_offset if isinstance(seg, EncodedSegment) else min(r[3] for r in seg.records)
            moved_from[key] = min(low, moved_from.get(key, low))
        for key, low in moved_from.items():
            if key in self.acks:
                path, offset, sid, tail = self.acks[key]
                self.acks[key] = (path, min(offset, low), sid, tail)
        kept_count = sum(count_of(seg) for seg in kept)
        rest.count = self.count - kept_count
        moved = rest.count / self.count if self.count else 0.0
        rest.size = int(self.size * moved)
        self.segments, self.count, self.size = kept, kept_count, self.size - rest.size
        return rest


def count_of(seg: Segment | EncodedSegment) -> int:
    return seg.count if isinstance(seg, EncodedSegment) else len(seg.records)


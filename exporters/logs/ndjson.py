"""The normalized log record as one JSON object per line (the file://, stdout:// and http:// body).

Fields: ``time`` (runtime timestamp, RFC 3339 UTC, up to ns), ``stream``, ``message`` (without the
trailing newline), ``container_id``, ``container_name``, ``image``, ``labels``, ``pod``,
``namespace``, ``container`` (Kubernetes, when known), ``host``, ``file``, ``offset`` and
``truncated`` (only when the line was cut at ``--max-line-bytes``).
The per-source part is serialized once per source and spliced into every record.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from agent.model import LogRecord, LogSource


def record_dict(record: LogRecord) -> dict[str, object]:
    """The normalized record as a dict (tests, and sinks that add fields)."""
    return orjson.loads(encode([record]))


def source_fragment(source: LogSource) -> bytes:
    info = source.container
    meta: dict[str, object] = {
        "container_id": info.container_id,
        "container_name": info.name,
        "image": info.image,
        "labels": info.labels,
    }
    if info.pod:
        meta["pod"] = info.pod
        meta["namespace"] = info.namespace
        meta["container"] = info.container
    meta["host"] = source.host
    meta["file"] = source.path
    return orjson.dumps(meta)[1:-1]


class NdjsonEncoder:
    def __init__(self) -> None:
        self._fragments: dict[int, tuple[LogSource, bytes]] = {}

    def fragment(self, source: LogSource) -> bytes:
        cached = self._fragments.get(id(source))
        if cached is None or cached[0] is not source:
            if len(self._fragments) > 4096:
                self._fragments.clear()
            cached = self._fragments[id(source)] = (source, source_fragment(source))
        return cached[1]

    def encode(self, records: Sequence[LogRecord]) -> bytes:
        dumps = orjson.dumps
        out = []
        frag_source: LogSource | None = None
        frag = b""
        for r in records:
            if r.source is not frag_source:
                frag_source = r.source
                frag = self.fragment(r.source)
            head = {"time": r.time, "stream": r.stream, "message": r.message}
            tail = {"offset": r.offset, "truncated": True} if r.truncated else {"offset": r.offset}
            out.append(dumps(head)[:-1] + b"," + frag + b"," + dumps(tail)[1:] + b"\n")
        return b"".join(out)


def encode(records: Sequence[LogRecord]) -> bytes:
    return NdjsonEncoder().encode(records)

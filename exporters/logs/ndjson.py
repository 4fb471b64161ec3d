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

from agent.model import LogRecord, LogSource, Segment


def record_dict(source: LogSource, record: LogRecord) -> dict[str, object]:
    """The normalized record as a dict (tests, and sinks that add fields)."""
    out: dict[str, object] = orjson.loads(NdjsonEncoder().encode([Segment(source, [record])]))
    return out


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


def _json_str(text: str) -> bytes:
    """A JSON string body; runtime timestamps and stream names are plain ASCII and need no escaping."""
    if text.isascii() and '"' not in text and "\\" not in text and text.isprintable():
        return text.encode()
    return orjson.dumps(text)[1:-1]


class NdjsonEncoder:
    """One template per source: only the time, stream, message and offset are formatted per record."""

    def __init__(self) -> None:
        self._templates: dict[int, tuple[LogSource, bytes, bytes]] = {}

    def _template(self, source: LogSource) -> tuple[bytes, bytes]:
        cached = self._templates.get(id(source))
        if cached is None or cached[0] is not source:
            if len(self._templates) > 4096:
                self._templates.clear()
            frag = source_fragment(source).replace(b"%", b"%%")
            plain = b'{"time":"%s","stream":"%s","message":%s,' + frag + b',"offset":%d}\n'
            cut = b'{"time":"%s","stream":"%s","message":%s,' + frag + b',"offset":%d,"truncated":true}\n'
            cached = self._templates[id(source)] = (source, plain, cut)
        return cached[1], cached[2]

    def encode(self, segments: Sequence[Segment]) -> bytes:
        dumps = orjson.dumps
        out: list[bytes] = []
        for seg in segments:
            plain, cut = self._template(seg.source)
            out.extend(
                (cut if truncated else plain) % (_json_str(time), _json_str(stream), dumps(message), offset)
                for time, stream, message, offset, truncated in seg.records
            )
        return b"".join(out)

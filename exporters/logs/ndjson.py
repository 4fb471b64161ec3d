"""The normalized log record as one JSON object per line (the file://, stdout:// and http:// body).

Fields: ``time`` (runtime timestamp, RFC 3339 UTC, up to ns), ``stream``, ``message`` (without the
trailing newline), ``container_id``, ``container_name``, ``image``, ``labels``, ``pod``,
``namespace``, ``container`` (Kubernetes, when known), ``host``, ``file``, ``offset`` and
``truncated`` (only when the line was cut at ``--max-line-bytes``).
The per-source part is serialized once per source and spliced into every record.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

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
    """One template per source: only the time, stream, message and offset are formatted per record.

    A segment whose times need no escaping and whose records are not truncated (the usual case) takes a leaner
    loop with the stream baked into one template per stream (``_encode_plain``); any other segment takes the
    general loop. Both write the same bytes."""

    def __init__(self) -> None:
        self._templates: dict[int, tuple[LogSource, bytes, bytes, dict[str, bytes]]] = {}

    def _template(self, source: LogSource) -> tuple[bytes, bytes, dict[str, bytes]]:
        cached = self._templates.get(id(source))
        if cached is None or cached[0] is not source:
            if len(self._templates) > 4096:
                self._templates.clear()
            frag = source_fragment(source).replace(b"%", b"%%")
            plain = b'{"time":"%s","stream":"%s","message":%s,' + frag + b',"offset":%d}\n'
            cut = b'{"time":"%s","stream":"%s","message":%s,' + frag + b',"offset":%d,"truncated":true}\n'
            by_stream = {stream: b'{"time":"%s","stream":"' + stream.encode() + b'","message":%s,' + frag
                         + b',"offset":%d}\n' for stream in ("stdout", "stderr")}
            cached = self._templates[id(source)] = (source, plain, cut, by_stream)
        return cached[1], cached[2], cached[3]

    def encode(self, segments: Sequence[Segment]) -> bytes:
        dumps = orjson.dumps
        out: list[bytes] = []
        for seg in segments:
            plain, cut, by_stream = self._template(seg.source)
            lines = _encode_plain(seg.records, by_stream)
            if lines is not None:
                out += lines
                continue
            out.extend(
                (cut if truncated else plain) % (_json_str(time), _json_str(stream), dumps(message), offset)
                for time, stream, message, offset, truncated in seg.records
            )
        return b"".join(out)


_TIME = itemgetter(0)
_TRUNCATED = itemgetter(4)


def _encode_plain(records: Sequence[LogRecord], by_stream: dict[str, bytes]) -> list[bytes] | None:
    """The lines of a segment with no truncated record and only times that need no escaping, with the stream
    baked into the template; None for any other segment (the caller's per-record loop writes the same bytes).

    The times are checked once, joined: the joined string passes ``_json_str``'s plain test exactly when every
    time does. Anything unexpected (a stream without a template, a value of the wrong type) also returns None,
    so the loop handles it, or raises, as it always did."""
    try:
        joined = "".join(map(_TIME, records))
        if (any(map(_TRUNCATED, records)) or not joined.isascii() or '"' in joined or "\\" in joined
                or not joined.isprintable()):
            return None
        dumps = orjson.dumps
        # A comprehension, not map(): each orjson.dumps result is freed right away (orjson allocates ~1 KiB per
        # call and shrinks it; thousands of them alive at once made the same work ~4x slower in glibc malloc).
        return [by_stream[stream] % (time.encode(), dumps(message), offset)
                for time, stream, message, offset, _truncated in records]
    except (KeyError, TypeError):
        return None

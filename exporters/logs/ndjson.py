"""The normalized log record as one JSON object per line (the file://, stdout:// and http:// body).

Fields: ``time`` (runtime timestamp, RFC 3339 UTC, up to ns), ``stream``, ``message`` (without the
trailing newline), ``container_id``, ``container_name``, ``image``, ``labels``, ``pod``,
``namespace``, ``container`` (Kubernetes, when known), ``host``, ``file``, ``offset`` and
``truncated`` (only when the line was cut at ``--max-line-bytes``).
The per-source part is serialized once per source and spliced into every record.

A route that processes records (agent.logs.process) adds, per record that has them, ``log`` (``{"level": ...}``,
the level as the application wrote it) and its fields under the route's ``fields_key`` (default ``fields``:
``labels`` is the container's labels here).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import orjson

from agent.model import ContainerInfo, Fields, LogRecord, LogSource, Segment

DEFAULT_FIELDS_KEY = "fields"
# Keys of a record that parsed fields may not be put under.
RESERVED_KEYS = frozenset({"time", "stream", "message", "container_id", "container_name", "image", "labels", "pod",
                           "namespace", "container", "host", "file", "offset", "truncated", "log"})


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


_SPLICE_KEY = b'"container_id":'


class _Line(msgspec.Struct, gc=False, omit_defaults=True):
    """One output line for msgspec's ``encode_lines``. ``container_id`` carries the whole per-source part,
    pre-encoded: its value and every key after it (``"<id>","container_name":…,"file":"…"``). msgspec writes a
    ``Raw`` value verbatim, so the source's fragment is copied into each line, never re-escaped. ``truncated`` is
    left out when False (``omit_defaults``), as the format wants."""

    time: str
    stream: str
    message: str
    container_id: msgspec.Raw
    offset: int
    truncated: bool = False


_ENCODER = msgspec.json.Encoder()


class NdjsonEncoder:
    """A segment is encoded by one msgspec ``encode_lines`` call over light structs that share the source's
    pre-encoded part (``_Line``): no bytes object per record and one output buffer. Anything msgspec refuses (a
    value of the wrong type, a lone surrogate) takes the per-record template loop (``_careful``), which writes
    the same bytes for every record msgspec takes, and raises as it always did for the rest."""

    def __init__(self, fields_key: str = "") -> None:
        # By container metadata object, host and file name, not by LogSource (one per file): see ``_source``.
        self._sources: dict[tuple[int, str, str], tuple[ContainerInfo, bytes, bytes, msgspec.Raw]] = {}
        key = fields_key or DEFAULT_FIELDS_KEY
        if key in RESERVED_KEYS:
            raise ValueError(f"fields_key: {key!r} is a field of every NDJSON record (use another name, e.g. fields)")
        self.fields_key = b',"' + key.encode() + b'":'

    def _source(self, source: LogSource) -> tuple[bytes, bytes, msgspec.Raw]:
        """The source's pre-encoded part and templates, cached by what they are made of: the file a rotation opens
        under the live file's name takes the same entry (keyed by each file's ``LogSource``, the cache grew with
        every rotation and kept the rotated files' sources until it reached its cap)."""
        info = source.container
        key = (id(info), source.host, source.path)
        cached = self._sources.get(key)
        if cached is None or cached[0] is not info:
            if len(self._sources) > 4096:
                self._sources.clear()
            frag = source_fragment(source)
            assert frag.startswith(_SPLICE_KEY)
            raw = msgspec.Raw(frag[len(_SPLICE_KEY):])
            frag = frag.replace(b"%", b"%%")
            plain = b'{"time":"%s","stream":"%s","message":%s,' + frag + b',"offset":%d}\n'
            cut = b'{"time":"%s","stream":"%s","message":%s,' + frag + b',"offset":%d,"truncated":true}\n'
            cached = self._sources[key] = (info, plain, cut, raw)
        return cached[1], cached[2], cached[3]

    def encode(self, segments: Sequence[Segment]) -> bytes:
        out: list[bytes] = []
        for seg in segments:
            plain, cut, raw = self._source(seg.source)
            if seg.fields is not None:
                out.append(self._with_fields(seg.records, seg.fields, plain, cut))
                continue
            try:
                out.append(_ENCODER.encode_lines([_Line(time, stream, message, raw, offset, truncated)
                                                  for time, stream, message, offset, truncated in seg.records]))
            except (TypeError, ValueError, UnicodeEncodeError):
                out.append(_careful(seg.records, plain, cut))
        return out[0] if len(out) == 1 else b"".join(out)


    def _with_fields(self, records: Sequence[LogRecord], fields: Sequence[Fields | None], plain: bytes,
                     cut: bytes) -> bytes:
        """The records through the source's templates, each with its level and fields when it has them."""
        dumps = orjson.dumps
        key = self.fields_key
        plain_x, cut_x = plain[:-2] + b"%s}\n", cut[:-2] + b"%s}\n"
        out = []
        for (time, stream, message, offset, truncated), extra in zip(records, fields, strict=True):
            row = (_json_str(time), _json_str(stream), dumps(message), offset)
            if extra is None:
                out.append((cut if truncated else plain) % row)
                continue
            level, _severity, values = extra
            more = b',"log":{"level":' + dumps(level) + b"}" if level else b""
            if values:
                more += key + dumps(values, option=orjson.OPT_NON_STR_KEYS)
            out.append((cut_x if truncated else plain_x) % (*row, more))
        return b"".join(out)


def _json_str(text: str) -> bytes:
    """A JSON string body; runtime timestamps and stream names are plain ASCII and need no escaping."""
    if text.isascii() and '"' not in text and "\\" not in text and text.isprintable():
        return text.encode()
    return orjson.dumps(text)[1:-1]


def _careful(records: Sequence[LogRecord], plain: bytes, cut: bytes) -> bytes:
    """The records one by one through the source's templates."""
    dumps = orjson.dumps
    return b"".join((cut if truncated else plain) % (_json_str(time), _json_str(stream), dumps(message), offset)
                    for time, stream, message, offset, truncated in records)

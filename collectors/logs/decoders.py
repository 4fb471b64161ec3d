"""Decoders for Docker json-file and CRI log lines, with partial-line joining and the line size cap.

Pure and batch-oriented: ``decode(chunk, base_offset)`` takes a run of complete ``\\n``-terminated
lines and returns the finished records. A record split over several lines (Docker's 16 KiB
partials without a trailing newline; CRI ``P`` tags up to the ``F`` line) is held per stream
until its last part arrives; ``safe_offset`` tells how far a checkpoint may advance without
losing a held part. Bad lines are counted and reported with their offset, never fatal.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from operator import itemgetter

import msgspec
import orjson

from agent.model import LogRecord
from collectors.logs.multiline import Multiline

DEFAULT_MAX_LINE_BYTES = 1 << 20
_STREAMS = frozenset({"stdout", "stderr"})
_STREAM_NAMES = {"stdout": "stdout", "stderr": "stderr"}
_MESSAGE, _TRUNCATED = itemgetter(2), itemgetter(4)  # of a record
_PLUS_ONE = (1).__add__
_FIRST = itemgetter(0)
_CRI_STREAMS = {b"stdout": "stdout", b"stderr": "stderr"}
# A CRI line as ``CriDecoder``'s fast path takes it: a time of printable ASCII without spaces, the stream, the F tag
# without ":tags", a space and the content (possibly empty); with re.M, one match per whole line at most.
_CRI_FULL = re.compile(r"^([!-~]*) (stdout|stderr) F (.*)$", re.M)


class _Line(msgspec.Struct, gc=False):
    """A json-file line as the fast path decodes it: a struct, not a dict with three key strings, untracked by the
    cyclic GC; a missing or non-string field fails the whole chunk over to the careful path. Other keys (Docker's
    ``attrs`` with ``--log-opt labels``) are ignored, as the careful path ignores them."""

    log: str
    stream: str
    time: str


_LINES = msgspec.json.Decoder(_Line)  # ``decode_lines``: a chunk straight from the file, no array built


class _Pending:
    __slots__ = ("file", "offset", "parts", "size", "time", "truncated")

    def __init__(self, time: str, offset: int, file: str) -> None:
        self.time = time
        self.offset = offset
        self.file = file
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False


# One escape in a JSON text, matched left to right so an escaped backslash is never read as the start of the next
# escape: a UTF-16 surrogate pair, a lone surrogate (the only 6-byte match), or any other escape.
_ESCAPE = re.compile(rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[dD][89a-fA-F][0-9a-fA-F]{2}|.)",
                     re.S)


def _lone_surrogate_to_fffd(match: re.Match[bytes]) -> bytes:
    escape = match.group()
    return b"\\ufffd" if len(escape) == 6 else escape


def _repaired(line: bytes) -> bytes | None:
    """``line`` with invalid UTF-8 and escaped lone surrogates (``"\\udc80"``) replaced by U+FFFD, as Go's
    encoding/json writes them and as the CRI path decodes; None when there is nothing to replace. For lines orjson
    refused only: a clean line never pays for it."""
    fixed = line.decode("utf-8", "replace").encode()
    if b"\\u" in fixed:
        fixed = _ESCAPE.sub(_lone_surrogate_to_fffd, fixed)
    return None if fixed == line else fixed


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes."""
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def to_utc(stamp: str) -> str:
    """RFC 3339 with any offset to UTC ``Z``, keeping every fraction digit (CRI writes local time)."""
    if stamp.endswith("Z") or len(stamp) < 6:
        return stamp
    main, sign, offset = stamp[:-6], stamp[-6], stamp[-5:]
    if sign not in "+-" or offset[2] != ":":
        return stamp
    base, dot, frac = main.partition(".")
    shifted = _shifted(base, sign, offset)
    if shifted is None:
        return stamp
    return shifted + (dot + frac if dot else "") + "Z"


@lru_cache(maxsize=256)
def _shifted(base: str, sign: str, offset: str) -> str | None:
    """``base`` (to the second) moved by the UTC offset; None if either is no time. Cached: a chunk's lines share
    their seconds, and parsing one costs more than the rest of the line."""
    try:
        moment = datetime.fromisoformat(base).replace(tzinfo=UTC)
        delta = timedelta(hours=int(offset[:2]), minutes=int(offset[3:]))
    except ValueError:
        return None
    moment = moment - delta if sign == "+" else moment + delta
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def time_order_key(line: bytes, fmt: str) -> str:
    """A key that sorts raw log lines of either format by their runtime timestamp (UTC, nanoseconds padded);
    "" if the line has none."""
    try:
        if fmt == "json-file":
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                fixed = _repaired(line)  # bad bytes in the message need not hide the time
                if fixed is None:
                    raise
                doc = orjson.loads(fixed)
            stamp = doc.get("time") if isinstance(doc, dict) else None
        else:
            stamp = line.split(b" ", 1)[0].decode("ascii")
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return ""
    if not isinstance(stamp, str):
        return ""
    stamp = to_utc(stamp)
    main, _, frac = stamp[:-1].partition(".")
    if not stamp.endswith("Z") or len(main) != 19 or not (frac.isdigit() or not frac):
        return ""
    return f"{main}.{frac[:9].ljust(9, '0')}"


class Decoded:
    """What one ``decode`` call produced: (time, stream, message, offset, truncated) tuples and errors."""

    __slots__ = ("errors", "records", "truncated")

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.errors: list[tuple[int, str]] = []
        self.truncated = 0


class _Joiner:
    """Per-stream partial joining and the ``max_line_bytes`` cap, shared by both formats; then, when the source has
    a multiline mode (``multiline``, collectors.logs.multiline), the joining of an event's lines."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.pending: dict[str, _Pending] = {}
        # Identity of the file being decoded, so held parts know which file's checkpoint they pin.
        self.file = ""
        self.multiline: Multiline | None = None

    def safe_offset(self, end_offset: int, file: str = "") -> int:
        """Where ``file``'s checkpoint may point: before the first part of any record still being joined, and
        before the first line of any multiline event still held."""
        offsets = [p.offset for p in self.pending.values() if p.file == file]
        multiline = self.multiline
        if multiline is not None and multiline.held:
            held = multiline.safe_offset(file)
            if held is not None:
                offsets.append(held)
        return min(offsets) if offsets else end_offset

    def decode(self, chunk: bytes, base_offset: int) -> Decoded:
        """The records of ``chunk`` (complete lines from ``base_offset``) finished so far. With a multiline mode, an
        empty chunk means the file ``file`` ended: the events held from it are finished."""
        multiline = self.multiline
        if multiline is None:
            return self._decode(chunk, base_offset)
        if not chunk:
            out = Decoded()
            out.records = multiline.flush(self.file)
            return out
        out = self._decode(chunk, base_offset)
        before = multiline.truncated
        out.records = multiline.feed(out.records, self.file)
        out.truncated += multiline.truncated - before
        return out

    def _decode(self, chunk: bytes, base_offset: int) -> Decoded:
        raise NotImplementedError

    def _part(self, out: Decoded, time: str, stream: str, text: str, offset: int, last: bool) -> None:
        pending = self.pending.get(stream)
        limit = self.max_line_bytes
        if pending is None:
            if last:
                size = len(text)
                if size * 4 > limit and _utf8_len(text) > limit:
                    out.records.append((time, stream, _cut_utf8(text, limit), offset, True))
                    out.truncated += 1
                else:
                    out.records.append((time, stream, text, offset, False))
                return
            pending = self.pending[stream] = _Pending(time, offset, self.file)
        if not pending.truncated:
            size = _utf8_len(text)
            if pending.size + size > limit:
                pending.parts.append(_cut_utf8(text, limit - pending.size))
                pending.size = limit
                pending.truncated = True  # the rest of this line is skipped
            else:
                pending.parts.append(text)
                pending.size += size
        if last:
            del self.pending[stream]
            out.records.append((pending.time, stream, "".join(pending.parts), pending.offset, pending.truncated))
            if pending.truncated:
                out.truncated += 1


class JsonFileDecoder(_Joiner):
    """Docker json-file: ``{"log": "...\\n", "stream": "stdout", "time": "..."}`` per line."""

    def _decode(self, chunk: bytes, base_offset: int) -> Decoded:
        out = Decoded()
        lines = chunk.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        if not self.pending:
            try:
                fast = self._decode_fast(_LINES.decode_lines(chunk), lines, base_offset)
            except (msgspec.DecodeError, UnicodeDecodeError):  # invalid JSON or UTF-8, a line not three strings
                fast = None
            if fast is not None:
                out.records = fast
                return out
        try:
            # One orjson call for the whole chunk; a bad line anywhere falls back to line by line.
            docs = orjson.loads(b"[" + b",".join(lines) + b"]")
            if len(docs) != len(lines):
                docs = None
        except orjson.JSONDecodeError:
            docs = None
        records = out.records
        append = records.append
        pending = self.pending
        fast_chars = self.max_line_bytes // 4  # below this many characters no UTF-8 text can exceed the cap
        offset = base_offset
        for i, line in enumerate(lines):
            start = offset
            offset += len(line) + 1
            if docs is not None:
                doc = docs[i]
            else:
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    # Bad bytes inside a string (a raw invalid byte, an escaped lone surrogate): U+FFFD in their
                    # place and the record delivered. Any other fault stays an error with orjson's reason.
                    fixed = _repaired(line)
                    try:
                        if fixed is None:
                            raise exc
                        doc = orjson.loads(fixed)
                    except orjson.JSONDecodeError:
                        out.errors.append((start, f"invalid JSON: {exc}" if line.strip() else "empty line"))
                        continue
            if type(doc) is not dict:
                out.errors.append((start, "not a JSON object"))
                continue
            text = doc.get("log", "")  # Docker omits an empty "log"
            stream = doc.get("stream")
            time = doc.get("time")
            if type(text) is not str or type(time) is not str or type(stream) is not str or stream not in _STREAMS:
                out.errors.append((start, "missing or invalid log, stream or time"))
                continue
            if text[-1:] == "\n":
                if stream not in pending and len(text) <= fast_chars:
                    append((time, stream, text[:-1], start, False))
                else:
                    self._part(out, time, stream, text[:-1], start, True)
            else:
                self._part(out, time, stream, text, start, False)
        return out


    def _decode_fast(self, docs: list[_Line], lines: list[bytes], base_offset: int) -> list[LogRecord] | None:
        """The records of a chunk whose every line is a complete, well-formed record under the size cap, built
        by one comprehension and checked afterwards; None when any line is not, and the caller decodes the
        chunk line by line instead (partials, errors, truncation). The same records as the loop.

        Checked for every line, as the loop does: an object with a ``log`` string that ends in ``\\n`` and
        has at most ``max_line_bytes // 4`` characters, ``stream`` stdout or stderr, and a string ``time``;
        and nothing held from an earlier chunk (checked by the caller). The fifth field, the record's
        ``truncated`` flag, is built as "log does not end in a newline": False for every record that passes."""
        lengths = list(map(len, lines))
        # ``decode_lines`` skips blank lines and reads a line holding two values ("{...} {...}") as two: with no
        # blank line, every line gave at least one value, so equal counts mean exactly one value per line.
        if len(docs) != len(lines) or (lengths and not min(lengths)) or any(map(bytes.isspace, lines)):
            return None
        offsets = accumulate(map(_PLUS_ONE, lengths), initial=base_offset)
        try:
            # KeyError for a stream other than stdout and stderr; records share the two stream strings.
            records = [(doc.time, _STREAM_NAMES[doc.stream], (text := doc.log)[:-1], offset,
                        text[-1:] != "\n") for doc, offset in zip(docs, offsets, strict=False)]
            if any(map(_TRUNCATED, records)):
                return None
        except KeyError:
            return None
        fast_chars = self.max_line_bytes // 4
        # A line holds at least as many bytes as its text has characters: only a long line needs counting.
        if lengths and max(lengths) > fast_chars and max(map(len, map(_MESSAGE, records))) >= fast_chars:
            return None
        return records


class CriDecoder(_Joiner):
    """CRI: ``<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <content>`` per line."""

    def _decode(self, chunk: bytes, base_offset: int) -> Decoded:
        out = Decoded()
        if not self.pending:
            fast = self._decode_fast(chunk, base_offset)
            if fast is not None:
                out.records = fast
                return out
        lines = chunk.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        offset = base_offset
        part = self._part
        append = out.records.append
        pending = self.pending
        fast_chars = self.max_line_bytes // 4  # below this many characters no UTF-8 text can exceed the cap
        for line in lines:
            start = offset
            offset += len(line) + 1
            fields = line.split(b" ", 3)
            stream = _CRI_STREAMS.get(fields[1]) if len(fields) >= 3 else None
            if stream is None:
                out.errors.append((start, "not a CRI log line" if line.strip() else "empty line"))
                continue
            tag = fields[2]
            last = tag != b"P" and tag[:2] != b"P:"  # the tag before any ":tags"
            time = fields[0].decode("ascii", "replace")
            if time[-1:] != "Z":
                time = to_utc(time)
            # The runtime already stripped the line's own newline (and a \r before it): keep the rest.
            text = fields[3].decode("utf-8", "replace") if len(fields) == 4 else ""
            if last and stream not in pending and len(text) <= fast_chars:
                append((time, stream, text, start, False))
            else:
                part(out, time, stream, text, start, last)
        return out

    def _decode_fast(self, chunk: bytes, base_offset: int) -> list[LogRecord] | None:
        """The records of a chunk whose every line is a complete ``F`` line with an ASCII time (one regex over the
        chunk decoded once, no call per line); None when any line is not, or could be cut at ``max_line_bytes``,
        and the caller decodes the chunk line by line (partials, tags, errors, truncation). The same records as
        the loop: the chunk is split at ASCII bytes only (space, newline), where decoding it whole with
        ``errors="replace"`` gives what decoding each field does. Called with nothing held."""
        lines = chunk.split(b"\n")
        if lines.pop():
            return None  # not newline-terminated
        found = _CRI_FULL.findall(chunk.decode("utf-8", "replace"))
        # Each match is one whole line, so as many matches as lines means every line matched.
        if len(found) != len(lines):
            return None
        lengths = list(map(_PLUS_ONE, map(len, lines)))
        if len(chunk) > self.max_line_bytes and max(lengths) > self.max_line_bytes:
            return None
        offsets = accumulate(lengths, initial=base_offset)
        streams = _STREAM_NAMES
        if ("\n".join(map(_FIRST, found)) + "\n").count("Z\n") == len(found):  # every time in UTC already
            return [(t, streams[s], c, o, False) for (t, s, c), o in zip(found, offsets, strict=False)]
        utc = to_utc
        return [(utc(t), streams[s], c, o, False) for (t, s, c), o in zip(found, offsets, strict=False)]

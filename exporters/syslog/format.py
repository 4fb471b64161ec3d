"""RFC 5424 and RFC 3164 messages from log records, with RFC 6587 framing; pure functions.

- PRI from the stream: stdout -> <facility>.info, stderr -> <facility>.err.
- RFC 5424: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - - [lookout@32473 ...] MSG``; TIMESTAMP is the
  record's own time in UTC with microseconds; APP-NAME is printable ASCII, at most 48 characters;
  SD-PARAM values escape ``"``, ``\\`` and ``]`` as RFC 5424 §6.3.3 requires. 32473 is the
  enterprise number RFC 5612 reserves for documentation, used until Lookout has its own.
- RFC 3164: ``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`` with a TAG of at most 32 characters.
- A record that a route's processing parsed (agent.logs.process) takes the PRI severity of its level when known,
  and (RFC 5424) its level and fields in a second SD element, ``[fields@32473 level="warn" key="value" ...]``:
  PARAM-NAMEs are 1 to 32 printable US-ASCII characters but ``=``, space, ``]`` and ``"`` (others become ``_``),
  values are strings (others as JSON) escaped as above. A message cut to fit keeps its fields; fields that alone
  would not fit are left out.
- Octet counting (``LEN SP MSG``) lets a message hold any byte, so a container cannot forge a second
  record; LF framing replaces embedded newlines with spaces for the same reason.
- Messages longer than ``max_message_bytes`` are cut at a UTF-8 boundary and marked
  (``truncated="true"`` in the SD, or a trailing ``...`` in RFC 3164) and counted by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import orjson

from agent.model import RFC3339_UTC, ContainerInfo, LogSource, Segment, utc_now_rfc3339

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "solaris-cron": 15,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
SEVERITY = {"stdout": 6, "stderr": 3}  # info, err
SD_ID = "lookout@32473"
FIELDS_SD_ID = "fields@32473"
_SD_START = f" - - [{SD_ID} ".encode()  # where the origin's SD element begins in an RFC 5424 header
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_NOT_TAG = re.compile(r"[^A-Za-z0-9_.\-/]")
_NOT_SD_NAME = re.compile(r'[^\x21-\x7e]|[="\]]')
_SD_ESCAPE = str.maketrans({'"': '\\"', "\\": "\\\\", "]": "\\]"})
_TEMPLATE_FIELD = re.compile(r"\{([a-z_]+)(?::([^}]*))?\}")
_TIME, _STREAM, _MESSAGE, _CUT = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(4)  # of a record
_FIRST_26, _AT_19, _LAST = itemgetter(slice(26)), itemgetter(slice(19, 20)), itemgetter(slice(-1, None))


def printusascii(text: str, limit: int) -> str:
    """A header field: printable US-ASCII only (others become ``_``), at most ``limit`` characters."""
    cleaned = _NOT_PRINTUSASCII.sub("_", text)[:limit]
    return cleaned or "-"


def sd_escape(value: str) -> str:
    return value.translate(_SD_ESCAPE)


_SD_NAMES: dict[str, str] = {}


def sd_name(key: str) -> str:
    """An SD-PARAM name (RFC 5424 §6.3.3): 1 to 32 printable US-ASCII characters but ``=``, space, ``]``, ``"``."""
    name = _SD_NAMES.get(key)
    if name is None:
        if len(_SD_NAMES) > 4096:
            _SD_NAMES.clear()
        name = _SD_NAMES[key] = _NOT_SD_NAME.sub("_", key)[:32] or "_"
    return name


def _json_text(value: object) -> str:
    """A field that is not a string or an int, as JSON writes it (``1.5``, ``true``, ``["a","b"]``)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def fields_sd(level: str, values: dict[str, object]) -> str:
    """The ``[fields@32473 ...]`` SD element of a record's level and fields ("" when it has neither)."""
    parts = [f'[{FIELDS_SD_ID} level="{sd_escape(level)}"' if level else f"[{FIELDS_SD_ID}"]
    names = _SD_NAMES
    for key, value in values.items():  # this loop is most of a parsed record's cost: no call per string
        kind = type(value)
        text: str = value if kind is str else str(value) if kind is int else _json_text(value)  # type: ignore[assignment]
        if '"' in text or "\\" in text or "]" in text:
            text = text.translate(_SD_ESCAPE)
        parts.append(f'{names.get(key) or sd_name(str(key))}="{text}"')
    return " ".join(parts) + "]" if len(parts) > 1 or level else ""


def timestamp_5424(time: str) -> str:
    """RFC 3339 UTC with exactly six fraction digits (RFC 5424 allows at most six); the NILVALUE ``-`` for a
    time that is not RFC 3339 UTC (a damaged log file), so the message still parses and nothing is lost."""
    if not RFC3339_UTC.match(time):
        return "-"
    base, _dot, frac = time.rstrip("Z").partition(".")
    return f"{base}.{(frac + '000000')[:6]}Z"


def timestamp_3164(time: str) -> str:
    """``Mmm dd hh:mm:ss`` (space-padded day), from the record's UTC time; for a time that is not RFC 3339 UTC,
    the current time, as RFC 3164 §4.3.2 has a relay stamp a message that lacks a valid TIMESTAMP."""
    if not RFC3339_UTC.match(time):
        time = utc_now_rfc3339()
    return f"{_MONTHS[int(time[5:7]) - 1]} {int(time[8:10]):2d} {time[11:19]}"


def cut_utf8(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, never splitting a UTF-8 sequence."""
    if len(data) <= limit:
        return data
    cut = data[:limit]
    # Drop a trailing partial sequence: back up over continuation bytes to the lead byte.
    i = len(cut)
    while i > 0 and (cut[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i > 0 and cut[i - 1] >= 0xC0:
        lead = cut[i - 1]
        need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        if len(cut) - (i - 1) < need:
            cut = cut[: i - 1]
    return cut


def render_tag(template: str, source: LogSource, stream: str) -> str:
    """The APP-NAME/TAG template: ``{container_name}``, ``{container_id}``, ``{image}``, ``{pod}``,
    ``{namespace}``, ``{container}``, ``{host}``, ``{stream}``, ``{label:KEY}``."""
    info = source.container

    def field(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name == "label":
            return info.labels.get(arg or "", "")
        return {
            "container_name": info.name, "name": info.name, "container_id": info.container_id[:12],
            "image": info.image, "pod": info.pod, "namespace": info.namespace, "container": info.container,
            "host": source.host, "stream": stream,
        }.get(name, match.group(0))

    return _TEMPLATE_FIELD.sub(field, template)


@dataclass(frozen=True, slots=True)
class SyslogFormat:
    rfc: str = "rfc5424"  # or rfc3164
    framing: str = "octet"  # octet | lf | none (UDP, RELP: the transport frames)
    facility: int = 1
    hostname: str = ""  # empty: the record's host
    tag: str = "{container_name}"
    max_message_bytes: int = 65536


class SyslogEncoder:
    """Encodes segments to framed messages; ``last_truncated`` counts cut messages of the last call."""

    def __init__(self, fmt: SyslogFormat) -> None:
        self.fmt = fmt
        # By container metadata object, host and stream (what a head is made of), not by LogSource (one per file):
        # see ``_head``.
        self._heads: dict[tuple[int, str, str], tuple[ContainerInfo, bytes, bytes]] = {}
        self.last_truncated = 0

    def _head(self, source: LogSource, stream: str) -> tuple[bytes, bytes]:
        """(prefix up to TIMESTAMP, suffix from HOSTNAME through SD) for one source and stream. Cached by the
        container's metadata object, host and stream, which is all a head is made of: keyed by each file's
        ``LogSource``, the cache grew with every rotation and kept the rotated files' sources until its cap."""
        info = source.container
        key = (id(info), source.host, stream)
        cached = self._heads.get(key)
        if cached is not None and cached[0] is info:
            return cached[1], cached[2]
        if len(self._heads) > 8192:
            self._heads.clear()
        fmt = self.fmt
        pri = fmt.facility * 8 + SEVERITY.get(stream, 5)
        host = printusascii(fmt.hostname or source.host, 255)
        tag = render_tag(fmt.tag, source, stream)
        if fmt.rfc == "rfc3164":
            tag = _NOT_TAG.sub("_", tag)[:32] or "lookout"
            pid = f"[{info.pid}]" if info.pid else ""
            prefix = f"<{pri}>".encode()
            suffix = f" {host} {tag}{pid}: ".encode()
        else:
            params = [f'container_id="{sd_escape(info.container_id)}"',
                      f'container_name="{sd_escape(info.name)}"',
                      f'image="{sd_escape(info.image)}"', f'stream="{stream}"']
            if info.pod:
                params += [f'pod="{sd_escape(info.pod)}"', f'namespace="{sd_escape(info.namespace)}"',
                           f'container="{sd_escape(info.container)}"']
            sd = " ".join(params)
            if fmt.framing == "lf" and "\n" in sd:
                sd = sd.replace("\n", " ")  # as in messages: a newline would end the frame
            prefix = f"<{pri}>1 ".encode()
            suffix = f" {host} {printusascii(tag, 48)} - - [{SD_ID} {sd}] ".encode()
        self._heads[key] = (info, prefix, suffix)
        return prefix, suffix

    def messages(self, segments: Sequence[Segment]) -> list[bytes]:
        """Unframed messages, one per record, each within ``max_message_bytes``."""
        out: list[bytes] = []
        truncated = 0
        for seg in segments:
            fast = self._fast(seg, framed=False)
            if fast is None:
                fast, cut = self._careful(seg)
                truncated += cut
            out += fast
        self.last_truncated = truncated
        return out

    def _careful(self, seg: Segment) -> tuple[list[bytes], int]:
        """One segment's unframed messages record by record, truncating where needed; and how many were cut."""
        fmt = self.fmt
        limit = fmt.max_message_bytes
        lf = fmt.framing == "lf"
        is_3164 = fmt.rfc == "rfc3164"
        stamp = timestamp_3164 if is_3164 else timestamp_5424
        out = []
        truncated = 0
        fields = seg.fields
        pris = [b"<%d>" % (fmt.facility * 8 + sev) if is_3164 else b"<%d>1 " % (fmt.facility * 8 + sev)
                for sev in range(8)]
        for i, (time, stream, message, _offset, cut) in enumerate(seg.records):
            prefix, suffix = self._head(seg.source, stream)
            sd = b""
            extra = None if fields is None else fields[i]
            if extra is not None:
                level, severity, values = extra
                if 0 <= severity < 8:
                    prefix = pris[severity]
                if not is_3164:
                    text = fields_sd(level, values)
                    sd = (text.replace("\n", " ") if lf else text).encode("utf-8", "surrogateescape")
            if lf and "\n" in message:
                message = message.replace("\n", " ")
            body = message.encode("utf-8", "surrogateescape")
            stamped = stamp(time).encode()
            msg = prefix + stamped + (suffix[:-1] + sd + b" " if sd else suffix) + body
            if len(msg) > limit or cut:
                msg, was_cut = self._truncate(prefix, stamped, suffix, body, limit, is_3164, sd, cut)
                truncated += was_cut or cut
            out.append(msg)
        return out, truncated

    def _fast(self, seg: Segment, framed: bool) -> list[bytes] | None:
        """RFC 5424: one segment's messages (``framed``: with their octet count or LF) from one bytes template per
        stream, when no record is truncated upstream or too long here; None otherwise, and for RFC 3164, and
        ``_careful`` makes the same bytes record by record.

        Timestamps: when every time has exactly one ``.``, at 19, and one ``Z``, at its end (checked once on the
        joined times; Docker's and the CRI's ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``, Go's with trailing zeros
        dropped too), ``timestamp_5424(t)`` is ``t.replace("Z", "000000")[:26] + "Z"`` (just ``t[:26] + "Z"``
        with all nine digits) and the ``Z`` is baked into the template; otherwise each time goes through
        ``timestamp_5424``. Anything unexpected (a time or message of the wrong type, a lone
        surrogate) also returns None, so ``_careful`` handles it, or raises, as it always did."""
        fmt = self.fmt
        records = seg.records
        if fmt.rfc != "rfc5424" or not records:
            return None
        if seg.fields is not None:
            return self._fast_fields(seg, framed)
        try:
            if any(map(_CUT, records)):
                return None
            times = list(map(_TIME, records))
            joined = "".join(times)
            n = len(times)
            # Every time has one "." and one "Z" (counted on the joined times) and they are at 19 and 29, so every
            # time is 30 characters (the usual CRI and Docker form); or, checked per time, at 19 and at its end.
            one_each = joined.count(".") == n and joined.count("Z") == n
            nine_digits = (one_each and len(joined) == 30 * n and joined[19::30] == "." * n
                           and joined[29::30] == "Z" * n)
            plain = nine_digits or (one_each and "".join(map(_AT_19, times)) == "." * n
                                    and "".join(map(_LAST, times)) == "Z" * n)
            octet = framed and fmt.framing == "octet"
            end = b"\n" if framed and fmt.framing == "lf" else b""
            zulu = b"Z" if plain else b""
            templates: dict[str, bytes] = {}
            fixed: dict[str, int] = {}  # bytes of prefix, suffix and a baked-in Z
            for stream in set(map(_STREAM, records)):
                prefix, suffix = self._head(seg.source, stream)
                template = prefix.replace(b"%", b"%%") + b"%s" + zulu + suffix.replace(b"%", b"%%") + b"%s" + end
                templates[stream] = b"%d " + template if octet else template
                fixed[stream] = len(prefix) + len(zulu) + len(suffix)
            if not plain:
                stamps: Iterable[str] = map(timestamp_5424, times)
            elif nine_digits:
                stamps = map(_FIRST_26, times)
            else:  # Go's RFC3339Nano drops trailing zeros: pad, then cut to microseconds
                stamps = map(_FIRST_26, map(str.replace, times, repeat("Z"), repeat("000000")))
            messages: Iterable[str] = map(_MESSAGE, records)
            if fmt.framing == "lf":
                messages = [m.replace("\n", " ") for m in messages]
            rows = zip(map(_STREAM, records), stamps, messages, strict=True)
            utf8, escape = "utf-8", "surrogateescape"
            if octet:
                out = [templates[s] % (fixed[s] + len(sb := st.encode()) + len(b := m.encode(utf8, escape)), sb, b)
                       for s, st, m in rows]
            else:
                out = [templates[s] % (st.encode(), m.encode(utf8, escape)) for s, st, m in rows]
        except (AttributeError, TypeError, UnicodeError):
            return None
        # A frame is longer than its message: only a frame over the limit needs the careful path's exact check.
        if max(map(len, out)) - len(end) > fmt.max_message_bytes:
            return None
        return out

    def _fast_fields(self, seg: Segment, framed: bool) -> list[bytes] | None:
        """RFC 5424 messages of a processed segment (agent.logs.process): the bytes ``_careful`` makes, without its
        header lookup per record; None when a record was cut upstream or is too long here (``_careful`` then)."""
        fmt = self.fmt
        records, fields = seg.records, seg.fields
        if fields is None:
            return None
        try:
            if any(map(_CUT, records)):
                return None
            lf = fmt.framing == "lf"
            octet = framed and fmt.framing == "octet"
            end = b"\n" if framed and lf else b""
            heads = {stream: self._head(seg.source, stream) for stream in set(map(_STREAM, records))}
            pris = [b"<%d>1 " % (fmt.facility * 8 + severity) for severity in range(8)]
            limit, match, utf8, escape = fmt.max_message_bytes, RFC3339_UTC.match, "utf-8", "surrogateescape"
            out = []
            for (time, stream, message, _offset, _cut), extra in zip(records, fields, strict=True):
                prefix, suffix = heads[stream]
                if extra is not None:
                    level, severity, values = extra
                    if 0 <= severity < 8:
                        prefix = pris[severity]
                    sd = fields_sd(level, values)
                    if sd:
                        suffix = suffix[:-1] + (sd.replace("\n", " ") if lf else sd).encode(utf8, escape) + b" "
                if lf and "\n" in message:
                    message = message.replace("\n", " ")
                # timestamp_5424 of the usual nanosecond time is its first 26 characters and the Z
                stamp = time[:26] + "Z" if len(time) == 30 and match(time) else timestamp_5424(time)
                msg = prefix + stamp.encode() + suffix + message.encode(utf8, escape)
                if len(msg) > limit:
                    return None
                out.append(b"%d %s" % (len(msg), msg) if octet else msg + end)
        except (AttributeError, TypeError, UnicodeError, ValueError):
            return None
        return out

    @staticmethod
    def _truncate(prefix: bytes, stamp: bytes, suffix: bytes, body: bytes, limit: int,
                  is_3164: bool, sd: bytes = b"", cut: bool = False) -> tuple[bytes, bool]:
        """The message cut to ``limit`` and marked; ``sd``: the record's fields element (after the origin's);
        ``cut``: the record was cut upstream (--max-line-bytes), so it is marked even when it fits."""
        if is_3164:
            marker = b"..."
            room = limit - len(prefix) - len(stamp) - len(suffix) - len(marker)
            if not cut and len(prefix + stamp + suffix + body) <= limit:
                return prefix + stamp + suffix + body, False
            return prefix + stamp + suffix + cut_utf8(body, max(room, 0)) + marker, True
        marked = suffix[:-2] + b' truncated="true"]' + sd + b" "
        if sd and len(prefix) + len(stamp) + len(marked) > limit:  # the fields alone do not fit: leave them out
            marked = suffix[:-2] + b' truncated="true"] '
        if len(prefix) + len(stamp) + len(marked) > limit:
            # The container's metadata alone does not fit (long pod, image or names under a small maximum, e.g.
            # UDP's 480): its parameters go, the element says the message was cut. HOSTNAME and APP-NAME hold no
            # space, so the first " - - [<SD-ID> " is where the element begins.
            start = suffix.find(_SD_START)
            if start >= 0:
                marked = suffix[:start] + _SD_START + b'truncated="true"] '
        room = limit - len(prefix) - len(stamp) - len(marked)
        return prefix + stamp + marked + cut_utf8(body, max(room, 0)), True

    def encode(self, segments: Sequence[Segment]) -> bytes:
        framing = self.fmt.framing
        out: list[bytes] = []
        truncated = 0
        for seg in segments:
            fast = self._fast(seg, framed=True)
            if fast is not None:
                out += fast
                continue
            msgs, cut = self._careful(seg)
            truncated += cut
            if framing == "octet":
                out.extend(b"%d %s" % (len(m), m) for m in msgs)
            elif framing == "lf":
                out.extend(m + b"\n" for m in msgs)
            else:
                out += msgs
        self.last_truncated = truncated
        return b"".join(out)

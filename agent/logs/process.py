"""A route's processing stage: structured messages parsed, records transformed, filtered and rate limited.

Built once per route from its options (``agent.params.PROCESS_PARAMS``: regexes compiled, levels resolved) and the
agent's ``--log-rate-limit``; each container's labels (``lookout.parse``, ``lookout.ratelimit``) may change its
part, resolved once per container and cached. The codec (agent.logs.codec) hands it the records of one chunk after
the stream filter; it puts them in the batch as one segment whose ``fields`` hold what was parsed or added.

Per record, in order: parse (``json``: a message that is a JSON object; ``logfmt``: a message made only of
``key=value`` pairs, values optionally double-quoted); a message that does not parse is shipped as it is. Of the
parsed fields, ``msg`` or ``message`` becomes the record's message, ``level``, ``lvl`` or ``severity`` its level,
``time_key`` its time (``time_format``; the runtime's time when absent or unreadable), ``drop_field`` removes
fields, ``add_field`` adds them; then ``include``/``exclude`` (on the message as shipped), ``level_min`` (records
without a known level are kept) and the container's rate limit. Every record dropped is counted by reason
(``lookout_route_records_dropped{reason="excluded"|"level"|"rate_limit"}``) and still acknowledged: the checkpoint
moves past it.

The rate limit counts records per container in fixed windows of the records' own time (a second for ``N/s``, a
minute for ``N/m``, an hour for ``N/h``), so catching up on a backlog is limited as the container wrote it, not as
fast as it is read, and reading the same bytes again drops the same records. When a window in which records were
dropped ends (a record of a later window arrives, or the wall clock is a window past it when any chunk of the
route is processed), one summary record is shipped in that container's name: ``lookout: dropped N records of
<container> over the rate limit 1000/s in the last 1 s``, level ``warn``, with ``dropped`` and ``rate_limit`` in its
fields. Its offset is the last dropped record's (a unique, stable position for Elasticsearch ``_id``).
"""

from __future__ import annotations

import calendar
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from agent.model import RFC3339_UTC, ContainerInfo, Fields, LogRecord, LogSource, Segment
from agent.params import (
    LEVEL_SEVERITY,
    NUMERIC_LEVEL_SEVERITY,
    PROCESS_PARAMS,
    RateLimit,
    parse_params,
    parse_rate,
)

if TYPE_CHECKING:
    from agent.logs.batch import Batch
    from agent.logs.metrics import LogMetrics

log = structlog.get_logger("lookout.process")

PARSE_LABEL = "lookout.parse"
RATE_LABEL = "lookout.ratelimit"
MESSAGE_KEYS = ("msg", "message")
LEVEL_KEYS = ("level", "lvl", "severity")
_WINDOW_CHARS = {"s": 19, "m": 16, "h": 13}  # a record time's prefix naming its window
_WINDOW_FORMATS = {"s": "%Y-%m-%dT%H:%M:%S", "m": "%Y-%m-%dT%H:%M", "h": "%Y-%m-%dT%H"}


# --- parsers: pure functions of a message ---------------------------------------------------------------------------

def parse_json(message: str) -> dict[str, Any] | None:
    """The object a message holds, or None when it is not a JSON object."""
    if not message.startswith("{"):
        stripped = message.lstrip()
        if not stripped.startswith("{"):
            return None
        message = stripped
    try:
        value = orjson.loads(message)
    except (orjson.JSONDecodeError, TypeError):  # also a lone surrogate (not UTF-8)
        return None
    return value if isinstance(value, dict) else None


_LOGFMT_PAIR = re.compile(r'[ \t]*([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)[ \t]*')


def parse_logfmt(message: str) -> dict[str, Any] | None:
    """The ``key=value`` pairs of a message made only of them (``level=info msg="a b" took=3ms``), or None.

    Values may be double-quoted with backslash escapes (as Go's logfmt writes them); they stay strings. A message
    with any word that is not a pair (plain text, a bare key) is not logfmt: it is shipped as it is."""
    pos, end = 0, len(message)
    out: dict[str, Any] = {}
    match = _LOGFMT_PAIR.match
    while pos < end:
        m = match(message, pos)
        if m is None or m.end() == pos:
            return None
        key, value = m.group(1), m.group(2)
        if value.startswith('"'):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:  # an escape JSON does not know: keep what is between the quotes
                value = value[1:-1]
        out[key] = value
        pos = m.end()
    return out or None


PARSERS: dict[str, Callable[[str], dict[str, Any] | None]] = {"json": parse_json, "logfmt": parse_logfmt}


def level_severity(value: object) -> int:
    """A parsed level's syslog severity, or -1 when unknown."""
    if isinstance(value, str):
        return LEVEL_SEVERITY.get(value.lower(), -1)
    if isinstance(value, int) and not isinstance(value, bool):
        return NUMERIC_LEVEL_SEVERITY.get(value, -1)
    return -1


def _rfc3339(seconds: int, nanos: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (f".{nanos:09d}Z" if nanos else "Z")


_UNIX_SCALE = {"unix": 1, "unix_ms": 1000, "unix_us": 1000_000, "unix_ns": 1000_000_000}


def parse_time(value: object, fmt: str) -> str | None:
    """A parsed time field as a record time (RFC 3339 UTC), or None when it is not one in ``fmt``
    (agent.params.parse_time_format). Times without a zone are UTC."""
    try:
        if fmt in _UNIX_SCALE:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                return None
            # the number as written (a float's shortest repr), so 1733306400.25 is .25 and not .249999872
            number = Decimal(value) if isinstance(value, int) else Decimal(str(value).strip())
            if not number.is_finite():
                return None
            seconds, nanos = divmod(int((number * (1_000_000_000 // _UNIX_SCALE[fmt])).to_integral_value()),
                                    1_000_000_000)
            if not 0 <= seconds < 253402300800:  # years 1970 to 9999
                return None
            return _rfc3339(seconds, nanos)
        if not isinstance(value, str):
            return None
        if fmt == "rfc3339":
            if len(value) <= 30 and RFC3339_UTC.match(value):  # already a record time (at most nanoseconds)
                return value
            moment = datetime.fromisoformat(value)
        else:
            moment = datetime.strptime(value, fmt)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        return _rfc3339(calendar.timegm(moment.utctimetuple()), moment.microsecond * 1000)
    except (ValueError, OverflowError, OSError, ArithmeticError):
        return None


# --- the stage ------------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Limiter:
    """One container's rate limit: the records counted in the current window and those dropped in it."""

    rate: RateLimit
    window: str = ""
    count: int = 0
    dropped: int = 0
    last_time: str = ""  # the last dropped record's time and offset: the summary's
    last_offset: int = 0
    source: LogSource | None = None


@dataclass(slots=True)
class _Part:
    """What the stage does for one container: its parser (None: none) and its rate limiter (None: unlimited)."""

    info: ContainerInfo
    parse: Callable[[str], dict[str, Any] | None] | None
    limiter: _Limiter | None


class Processing:
    """One route's processing; ``add`` is called by the route's reader thread only."""

    SUMMARY_CHECK = 1.0  # seconds between looks for summaries of quiet containers

    def __init__(self, params: dict[str, str], metrics: LogMetrics | None = None, label: str = "",
                 rate_limit: RateLimit | None = None) -> None:
        opts = parse_params(PROCESS_PARAMS, params, "route", pass_through=True)
        self.parse_name: str = opts["parse"]
        self.time_key: str = opts["time_key"]
        self.time_format: str = opts["time_format"]
        self.include: re.Pattern[str] | None = opts["include"]
        self.exclude: re.Pattern[str] | None = opts["exclude"]
        self.add_fields: dict[str, Any] = dict(opts["add_field"])
        self.drop_fields: tuple[str, ...] = opts["drop_field"]
        self.level_min: int | None = opts["level_min"]
        self.rate_limit = rate_limit
        self.metrics, self.label = metrics, label
        self.dropped_by_container: Counter[str] = Counter()  # rate-limited records by container name
        self._parts: dict[str, _Part] = {}
        self._pending: set[str] = set()  # containers with dropped records not yet summarized
        self._next_due = 0.0

    @property
    def transforms(self) -> bool:
        """Whether the route itself asks for work on every record (else only containers' labels may)."""
        return bool(self.parse_name not in ("", "none") or self.include or self.exclude or self.add_fields
                    or self.level_min is not None or self.rate_limit)

    def part(self, info: ContainerInfo) -> _Part:
        """The container's part, from its labels (cached while its metadata object stays the same)."""
        key = info.container_id or info.cgroup
        part = self._parts.get(key)
        if part is not None and part.info is info:
            return part
        name = info.labels.get(PARSE_LABEL, "").strip().lower() or self.parse_name
        if name not in PARSERS and name not in ("", "none"):
            log.warning("container_label_invalid", route=self.label, container=info.name, label=PARSE_LABEL,
                        value=name, using=self.parse_name or "none")
            name = self.parse_name
        rate = self.rate_limit
        if RATE_LABEL in info.labels:
            try:
                rate = parse_rate(info.labels[RATE_LABEL])
            except ValueError as exc:
                log.warning("container_label_invalid", route=self.label, container=info.name, label=RATE_LABEL,
                            value=info.labels[RATE_LABEL], error=str(exc))
        limiter = part.limiter if part is not None else None
        if rate is None:
            limiter = None
        elif limiter is None or limiter.rate != rate:
            limiter = _Limiter(rate)
        part = self._parts[key] = _Part(info, PARSERS.get(name), limiter)
        if len(self._parts) > 8192:  # containers come and go: forget those without a pending summary
            for old in [k for k in self._parts if k not in self._pending and k != key][:4096]:
                del self._parts[old]
        return part

    def active(self, source: LogSource) -> bool:
        """Whether records of ``source`` need this stage (else a chunk worker may encode them)."""
        part = self.part(source.container)
        return self.transforms or part.parse is not None or part.limiter is not None

    def flush_due(self, batch: Batch) -> None:
        """Add to ``batch`` the summaries of windows long over (at most every ``SUMMARY_CHECK`` seconds): the route's
        reader calls it on every pass, so a container that flooded and went quiet is summarized while all is idle."""
        if self._pending and time.monotonic() >= self._next_due:
            self._due(batch)

    def add(self, source: LogSource, records: list[LogRecord], batch: Batch) -> None:
        """Process one chunk's records of ``source`` into ``batch`` (and any summary whose window has ended)."""
        self.flush_due(batch)
        if not records:
            return
        part = self.part(source.container)
        fields: list[Fields | None] | None = None
        parse = part.parse
        if parse is not None or self.add_fields:
            records, fields = self._fields(records, parse)
        if self.include is not None or self.exclude is not None or self.level_min is not None:
            records, fields = self._filter(records, fields)
        if part.limiter is not None and records:
            records, fields = self._limit(part.limiter, source, records, fields)
        if records:
            # Nothing parsed or added (no line of the chunk was JSON): encoders take their fast paths.
            batch.segments.append(Segment(source, records, fields if fields is not None and any(fields) else None))
            batch.count += len(records)

    def _fields(self, records: list[LogRecord], parse: Callable[[str], dict[str, Any] | None] | None
                ) -> tuple[list[LogRecord], list[Fields | None]]:
        added = self.add_fields
        plain: Fields | None = ("", -1, added) if added else None
        if parse is None:
            return records, [plain] * len(records)
        out: list[LogRecord] = []
        fields: list[Fields | None] = []
        drop, time_key, time_format = self.drop_fields, self.time_key, self.time_format
        for record in records:
            obj = parse(record[2])
            if obj is None:
                out.append(record)
                fields.append(plain)
                continue
            when, stream, message, offset, cut = record
            for key in drop:
                obj.pop(key, None)
            for key in MESSAGE_KEYS:
                if key in obj:
                    value = obj.pop(key)
                    message = value if isinstance(value, str) else orjson.dumps(value).decode()
                    break
            level, severity = "", -1
            for key in LEVEL_KEYS:
                if key in obj:
                    value = obj.pop(key)
                    severity = level_severity(value)
                    level = value if isinstance(value, str) else orjson.dumps(value).decode()
                    break
            if time_key and time_key in obj:
                parsed = parse_time(obj[time_key], time_format)
                if parsed is not None:
                    when = parsed
                    del obj[time_key]
            if added:
                obj.update(added)
            out.append((when, stream, message, offset, cut))
            fields.append((level, severity, obj))
        return out, fields

    def _filter(self, records: list[LogRecord], fields: list[Fields | None] | None
                ) -> tuple[list[LogRecord], list[Fields | None] | None]:
        include, exclude, level_min = self.include, self.exclude, self.level_min
        keep = [i for i, r in enumerate(records)
                if (include is None or include.search(r[2])) and (exclude is None or not exclude.search(r[2]))]
        excluded = len(records) - len(keep)
        below = 0
        if level_min is not None and fields is not None:
            known = [i for i in keep if (f := fields[i]) is None or f[1] < 0 or f[1] <= level_min]
            below, keep = len(keep) - len(known), known
        if excluded:
            self._count("excluded", excluded)
        if below:
            self._count("level", below)
        if len(keep) == len(records):
            return records, fields
        return [records[i] for i in keep], None if fields is None else [fields[i] for i in keep]

    def _limit(self, limiter: _Limiter, source: LogSource, records: list[LogRecord],
               fields: list[Fields | None] | None) -> tuple[list[LogRecord], list[Fields | None] | None]:
        n = _WINDOW_CHARS[limiter.rate.unit]
        limit = limiter.rate.count
        last = records[-1][0][:n]
        # The usual case: every record in the current window, all within the limit.
        if last == limiter.window and records[0][0][:n] == last and limiter.count + len(records) <= limit:
            limiter.count += len(records)
            return records, fields
        out: list[LogRecord] = []
        out_fields: list[Fields | None] = []
        dropped = 0
        name = _name(source.container)
        for i, record in enumerate(records):
            window = record[0][:n]
            if window != limiter.window and RFC3339_UTC.match(record[0]):  # a damaged time stays in the window
                if limiter.dropped:
                    out.append(self._summary(limiter, name))
                    out_fields.append(self._summary_fields(limiter))
                    self._pending.discard(source.container.container_id or source.container.cgroup)
                    limiter.dropped = 0
                limiter.window, limiter.count = window, 0
            limiter.count += 1
            if limiter.count > limit:
                limiter.dropped += 1
                limiter.last_time, limiter.last_offset, limiter.source = record[0], record[3], source
                dropped += 1
                continue
            out.append(record)
            out_fields.append(None if fields is None else fields[i])
        if dropped:
            self._count("rate_limit", dropped)
            self.dropped_by_container[name] += dropped
            if self.metrics is not None:
                self.metrics.rate_limited.labels(self.label, name).inc(dropped)
            self._pending.add(source.container.container_id or source.container.cgroup)
            self._next_due = self._next_due or time.monotonic() + self.SUMMARY_CHECK
        has_fields = fields is not None or any(f is not None for f in out_fields)
        return out, out_fields if has_fields else None

    def _summary(self, limiter: _Limiter, name: str) -> LogRecord:
        rate = limiter.rate
        text = (f"lookout: dropped {limiter.dropped} records of {name} over the rate limit {rate.text} "
                f"in the last {rate.seconds} s")
        log.warning("log_records_rate_limited", route=self.label, container=name, dropped=limiter.dropped,
                    rate_limit=rate.text, window=limiter.window)
        return (limiter.last_time, "stderr", text, limiter.last_offset, False)

    @staticmethod
    def _summary_fields(limiter: _Limiter) -> Fields:
        return ("warn", 4, {"dropped": limiter.dropped, "rate_limit": limiter.rate.text})

    def _due(self, batch: Batch) -> None:
        """Ship the summaries of windows that ended a window ago by the wall clock (their container went quiet)."""
        now = datetime.now(UTC)
        self._next_due = time.monotonic() + self.SUMMARY_CHECK
        for key in list(self._pending):
            part = self._parts.get(key)
            limiter = part.limiter if part is not None else None
            if limiter is None or not limiter.dropped or limiter.source is None:
                self._pending.discard(key)
                continue
            try:
                start = datetime.strptime(limiter.window, _WINDOW_FORMATS[limiter.rate.unit]).replace(tzinfo=UTC)
            except ValueError:
                start = now
            if (now - start).total_seconds() < 2 * limiter.rate.seconds:
                continue
            source = limiter.source
            batch.segments.append(Segment(source, [self._summary(limiter, _name(source.container))],
                                          [self._summary_fields(limiter)]))
            batch.count += 1
            limiter.dropped = 0
            self._pending.discard(key)

    def _count(self, reason: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.dropped.labels(self.label, reason).inc(n)


def _name(info: ContainerInfo) -> str:
    return info.name or info.container or info.container_id[:12] or info.cgroup

"""Multiline joining: the lines of one event (a stack trace, an indented block) made into one record.

Runs per source after the decoder's partial joining (``_Joiner``), per stream. Each mode is a small state machine
of compiled regexes: a line either continues the event held for its stream (a rule of the event's state matches;
the state moves on) or it begins a new event and the held one is finished. A line that nothing could continue (a
plain line in the go, python and ruby modes) is a record at once; any other stays held until the next line of its
stream shows whether it continues, until ``timeout`` passes with no new line (``expired``), until the file
ends (``flush``), or until the joined text reaches ``max_line_bytes`` (cut there, marked truncated, finished).

The joined message is the lines joined with ``\\n``; the record keeps its first line's time and offset, and
``safe_offset`` never lets a checkpoint pass that offset while the event is held: a restart reads the event again
from its first line.

Modes (``MODES``; the names are ``agent.params.MULTILINE_MODES``):

- ``java``: ``\\tat`` frames, ``... N more``, ``Caused by:``, ``Suppressed:``, other indented lines, and an
  exception class line (``java.lang.IllegalStateException: msg``) right after the line that began the event (the
  log line a logging framework prints before the trace).
- ``python``: ``Traceback (most recent call last):`` (joined to the line before it when that line reports an
  error, ``ERROR``/``CRITICAL``/``Exception``/``failed``..., as ``logging.exception`` prints it), indented
  ``File``/source lines, the final ``XxxError: msg`` line, and chained tracebacks (the blank lines and
  "During handling ..." / "The above exception ..." between them).
- ``go``: ``panic:``, ``fatal error:``, ``SIGQUIT:``-style signal dumps and ``goroutine N [state]:`` blocks, with
  their function and tab-indented file lines, the blank lines between goroutines, ``[signal ...]`` and
  ``exit status N``.
- ``ruby``: ``file.rb:N:in 'm': msg (Error)`` with its ``\\tfrom`` lines, and Ruby 2.5-2.7's reversed
  ``Traceback`` with numbered ``N: from`` lines and the error line last.
- ``indented``: a line beginning with a space or a tab continues the event.
- ``regex``: a custom start pattern: a line it matches (``re.search``) begins an event; any other line continues
  the held event, or is a record of its own when none is held.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from agent.model import LogRecord
from agent.params import MULTILINE_MODES

DEFAULT_TIMEOUT = 1.0

# (state, ((pattern, next state), ...)): the rules a line is checked against while the held event is in ``state``.
Rules = dict[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class Mode:
    """One mode: which state a line that begins an event starts in, and how lines continue an event.

    ``begin`` rules are tried on a line that begins an event (the first that matches gives its state; else
    ``default``: None means the line is a record of its own and nothing is held). ``cont`` maps a state to the
    rules that continue it: the first that matches moves the event to its state. Each state's rules are one
    compiled alternation (``_Compiled``), so a line costs one regex match."""

    name: str
    begin: tuple[tuple[str, str], ...]
    cont: Rules
    default: str | None = "line"


class _Compiled:
    """A mode's rules as one regex per state: group ``i`` matching means rule ``i``'s next state."""

    __slots__ = ("begin", "begin_states", "cont", "default", "name")

    def __init__(self, mode: Mode) -> None:
        self.name = mode.name
        self.default = mode.default
        self.begin, self.begin_states = self._alternation(mode.begin)
        self.cont = {state: self._alternation(rules) for state, rules in mode.cont.items()}

    @staticmethod
    def _alternation(rules: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
        if not rules:
            return None, ()
        pattern = "|".join(f"({rx})" for rx, _ in rules)
        return re.compile(pattern), tuple(state for _, state in rules)


_INDENTED = r"[ \t]+\S"
_JAVA_FRAMES = (
    (r"[ \t]+at ", "trace"),
    (r"[ \t]*\.\.\. \d+ (?:more|common frames omitted)", "trace"),
    (r"[ \t]*Caused by: ", "trace"),
    (r"[ \t]*Suppressed: ", "trace"),
    (_INDENTED, "trace"),
)
# A Java exception's first line: a qualified class name ending in Exception, Error or Throwable, a message after it.
_JAVA_EXCEPTION = r"(?:[A-Za-z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)(?::.*)?$"
_JAVA = Mode("java", begin=(), cont={
    "line": ((_JAVA_EXCEPTION, "trace"), *_JAVA_FRAMES),
    "trace": _JAVA_FRAMES,
})

_PY_HEAD = r"Traceback \(most recent call last\):$"
_PY_FRAMES = (
    (r"[ \t]+File \"", "frames"),
    (r"[ \t]", "frames"),  # the source line under a frame, the ^^^ markers, "  [Previous line repeated N more times]"
)
# The exception line ending a traceback: a (qualified) name, a colon and the message, or the name alone.
_PY_ERROR = r"[A-Za-z_][\w.]*(?::.*)?$"
_PY_CHAINED = r"(?:During handling of the above exception, another exception occurred:|The above exception was the " \
              r"direct cause of the following exception:)$"
# A log line that reports an error (logging.exception's "ERROR:app:msg", any format's level or the word): a
# traceback right after it is its own; after any other line a traceback is an event of its own (uncaught).
_PY_REPORT = r".*\b(?:ERROR|CRITICAL|FATAL|[Ee]rror|[Ee]xception|[Ff]ailed)\b"
_PYTHON = Mode("python", begin=((_PY_HEAD, "head"), (_PY_REPORT, "report")), cont={
    "report": ((_PY_HEAD, "head"),),
    "head": _PY_FRAMES,
    "frames": (*_PY_FRAMES, (_PY_ERROR, "error")),
    "error": (("$", "blank"), (r"[ \t]", "error")),  # an exception message's own further lines are indented
    "blank": ((_PY_CHAINED, "chained"), ("$", "blank"), (_PY_HEAD, "head")),
    "chained": (("$", "chained"), (_PY_HEAD, "head")),
})

_GO_GOROUTINE = r"goroutine \d+ \[[^\]]*\]:$"
_GO_BODY = (
    (_GO_GOROUTINE, "goroutine"),
    (r"\t", "goroutine"),  # a frame's file:line
    (r"created by ", "goroutine"),
    (r"[^\s].*\)$", "goroutine"),  # a frame's function: main.main(), main.(*T).f(0xc000010000, ...)
    (r"[ \t]+\S", "goroutine"),
    (r"\[signal ", "goroutine"),
    (r"\.\.\.additional frames elided\.\.\.$", "goroutine"),
    (r"exit status \d+$", "goroutine"),
    (r"(?:[a-z]+|r\d+) +0x[0-9a-f]+$", "goroutine"),  # SIGQUIT's register dump: rax    0x0
    (r"[a-zA-Z]+=0x[0-9a-f]+ ", "goroutine"),  # PC=0x46b4a1 m=0 sigcode=0
    ("$", "goroutine"),  # blank lines between goroutines
)
_GO = Mode("go", begin=(
    (r"panic: ", "panic"), (r"fatal error: ", "panic"), (r"SIG[A-Z]+: ", "panic"), (_GO_GOROUTINE, "goroutine"),
), cont={
    "panic": ((r"[ \t]+panic: ", "panic"), (r"\[recovered\]", "panic"), *_GO_BODY),
    "goroutine": _GO_BODY,
})

_RB_ERROR = r".+:\d+:in .*\([A-Z]\w*(?:::\w+)*\)$"
_RUBY = Mode("ruby", begin=((_RB_ERROR, "error"), (r"Traceback \(most recent call last\):$", "reversed")), cont={
    "error": ((r"[ \t]+from \S", "error"), (r"[ \t]+\S", "error")),
    "reversed": ((r"[ \t]+\d+: from ", "reversed"), (r".+:\d+:in ", "end")),
    "end": ((r"[ \t]+\S", "end"),),
})

_INDENTED_MODE = Mode("indented", begin=(), cont={"line": ((r"[ \t]", "line"),)})

MODES: dict[str, Mode] = {mode.name: mode for mode in (_JAVA, _PYTHON, _GO, _RUBY, _INDENTED_MODE)}


@cache
def _compiled(name: str) -> _Compiled:
    """A mode's regexes, compiled on first use (the agent's start pays nothing for modes no source uses)."""
    return _Compiled(MODES[name])


def compile_start(pattern: str) -> re.Pattern[str]:
    """The custom start pattern; ``ValueError`` in the project's words when it is no regex."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc}): {pattern!r}") from None


@dataclass(frozen=True, slots=True)
class MultilineSpec:
    """A resolved multiline setting: a mode of ``MODES`` or ``regex`` with its start pattern, and the timeout."""

    mode: str
    start: str = ""
    timeout: float = DEFAULT_TIMEOUT

    @staticmethod
    def parse(mode: str, start: str = "", timeout: float = DEFAULT_TIMEOUT, *, mode_name: str = "multiline",
              start_name: str = "multiline_start") -> MultilineSpec | None:
        """The setting of a mode and a start pattern (None for ``off`` or none); ``ValueError`` naming the option
        (``mode_name``, ``start_name``: the route parameters, or the container labels) that is wrong."""
        mode = mode.strip().lower()
        if mode in ("", "off"):
            if start:
                raise ValueError(f"{start_name}: needs {mode_name}=regex")
            return None
        if mode not in MULTILINE_MODES:
            raise ValueError(f"{mode_name}: unknown mode {mode!r} (use {', '.join(MULTILINE_MODES)} or off)")
        if mode == "regex":
            if not start:
                raise ValueError(f"{mode_name}: regex needs {start_name}=<a regular expression a first line matches>")
            try:
                compile_start(start)
            except ValueError as exc:
                raise ValueError(f"{start_name}: {exc}") from None
        elif start:
            raise ValueError(f"{start_name}: only with {mode_name}=regex, not {mode}")
        return MultilineSpec(mode, start, timeout)


LABEL = "lookout.multiline"
START_LABEL = "lookout.multiline_start"


def container_spec(labels: dict[str, str], timeout: float = DEFAULT_TIMEOUT) -> MultilineSpec | None:
    """A container's setting from its ``lookout.multiline`` label (``lookout.multiline_start`` with ``regex``; on
    Kubernetes, the pod annotation of the same name where the runtime shows it); None without one."""
    mode = labels.get(LABEL, "")
    start = labels.get(START_LABEL, "")
    if not mode and not start:
        return None
    return MultilineSpec.parse(mode, start, timeout, mode_name=LABEL, start_name=START_LABEL)


# A held event is a list (cheaper to make than an object, and most events are one line that the next one finishes):
# [its first record, its state, when its last line came (monotonic), its file, the lines' texts (None while it is
# one line), their UTF-8 size joined, truncated].
_REC, _STATE, _SEEN, _FILE, _PARTS, _SIZE, _TRUNC = range(7)
Held = list[Any]


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _cut_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8", "surrogatepass")[:max(limit, 0)].decode("utf-8", "ignore")


def _finished(held: Held) -> LogRecord:
    record: LogRecord = held[_REC]
    parts = held[_PARTS]
    if parts is None:
        return record  # one line: only a continuation changes anything
    return record[0], record[1], "\n".join(parts), record[3], held[_TRUNC]


class Multiline:
    """One source's multiline state: the event held per stream. ``feed`` the decoded records of a file in order;
    it returns the finished records. ``truncated`` counts the events cut at ``max_line_bytes`` so far."""

    def __init__(self, spec: MultilineSpec, max_line_bytes: int,
                 clock: Callable[[], float] = _time.monotonic) -> None:
        self.spec = spec
        self.timeout = spec.timeout
        self.max_line_bytes = max_line_bytes
        self.clock = clock
        self.held: dict[str, Held] = {}  # stream -> the event being joined
        self.truncated = 0
        if spec.mode == "regex":
            self._start: re.Pattern[str] | None = compile_start(spec.start)
            self._mode: _Compiled | None = None
        else:
            self._start = None
            self._mode = _compiled(spec.mode)

    def safe_offset(self, file: str) -> int | None:
        """The first offset of an event of ``file`` still held (None when none is)."""
        offsets = [h[_REC][3] for h in self.held.values() if h[_FILE] == file]
        return min(offsets) if offsets else None

    def first_offset(self, stream: str) -> int | None:
        """Where the event held for ``stream`` begins (None when none is)."""
        held = self.held.get(stream)
        return held[_REC][3] if held is not None else None

    def files(self) -> set[str]:
        """The files of the events held."""
        return {h[_FILE] for h in self.held.values()}

    def holds(self, file: str | None = None) -> bool:
        """Whether an event (of ``file``, when given) is held."""
        return any(file is None or h[_FILE] == file for h in self.held.values())

    def due(self) -> float | None:
        """When the oldest held event expires (monotonic), None when nothing is held."""
        if not self.held:
            return None
        return min(h[_SEEN] for h in self.held.values()) + self.timeout

    def feed(self, records: list[LogRecord], file: str) -> list[LogRecord]:
        """The records finished by ``records`` (decoded from ``file``, in order)."""
        out: list[LogRecord] = []
        if not records:
            return out
        held = self.held
        if held and any(h[_FILE] != file for h in held.values()):  # never across files (a file's end finishes them)
            out += self._take([s for s, h in held.items() if h[_FILE] != file])
        if self._mode is None:
            self._feed_regex(records, file, out)
        else:
            self._feed_mode(records, file, out)
        return out

    def _feed_mode(self, records: list[LogRecord], file: str, out: list[LogRecord]) -> None:
        now = self.clock()
        held = self.held
        emit = out.append
        append = self._append
        mode = self._mode
        assert mode is not None
        conts, begin, begin_states, default = mode.cont, mode.begin, mode.begin_states, mode.default
        no_rules = (None, ())
        for record in records:
            stream = record[1]
            text = record[2]
            event = held.get(stream)
            if event is not None:
                pattern, states = conts.get(event[_STATE], no_rules)
                match = pattern.match(text) if pattern is not None else None
                if match is not None:
                    append(event, record, states[match.lastindex - 1], now, out)  # type: ignore[operator]
                    continue
                emit(event[_REC] if event[_PARTS] is None else _finished(event))
            found = begin.match(text) if begin is not None else None
            state = begin_states[found.lastindex - 1] if found is not None else default  # type: ignore[operator]
            if state is None or state not in conts:  # nothing can continue it: out at once, never held
                if event is not None:
                    del held[stream]
                emit(record)
                continue
            held[stream] = [record, state, now, file, None, 0, record[4]]

    def _feed_regex(self, records: list[LogRecord], file: str, out: list[LogRecord]) -> None:
        """A line the start pattern matches begins an event, any other continues the held one (or is a record of
        its own when none is held)."""
        now = self.clock()
        held = self.held
        emit = out.append
        search = self._start.search  # type: ignore[union-attr]
        for record in records:
            stream = record[1]
            event = held.get(stream)
            if search(record[2]) is None:
                if event is not None:
                    self._append(event, record, "line", now, out)
                else:
                    emit(record)
                continue
            if event is not None:
                emit(_finished(event))
            held[stream] = [record, "line", now, file, None, 0, record[4]]

    def _append(self, event: Held, record: LogRecord, state: str, now: float, out: list[LogRecord]) -> None:
        text = record[2]
        event[_STATE] = state
        event[_SEEN] = now
        if record[4]:
            event[_TRUNC] = True
        parts = event[_PARTS]
        if parts is None:
            first = event[_REC][2]
            parts = event[_PARTS] = [first]
            event[_SIZE] = _utf8_len(first)
        size = _utf8_len(text) + 1
        limit = self.max_line_bytes
        if event[_SIZE] + size > limit:
            parts.append(_cut_utf8(text, limit - event[_SIZE] - 1))
            event[_TRUNC] = True
            self.truncated += 1
            del self.held[record[1]]
            out.append(_finished(event))
            return
        parts.append(text)
        event[_SIZE] += size

    def flush(self, file: str | None = None) -> list[LogRecord]:
        """Finish every held event (of ``file``, when given), oldest first."""
        return self._take([s for s, h in self.held.items() if file is None or h[_FILE] == file])

    def expired(self, now: float | None = None, file: str | None = None) -> list[LogRecord]:
        """Finish the held events (of ``file``, when given) that saw no new line for ``timeout``."""
        now = self.clock() if now is None else now
        return self._take([s for s, h in self.held.items()
                           if now - h[_SEEN] >= self.timeout and (file is None or h[_FILE] == file)])

    def _take(self, streams: list[str]) -> list[LogRecord]:
        events = sorted((self.held.pop(s) for s in streams), key=lambda h: h[_REC][3])
        return [_finished(h) for h in events]

"""Journal entries: which source an entry of ``journalctl -o json`` belongs to, and its Docker json-file line.

Pure functions of the entries journalctl prints (systemd's JSON export format) for the journal spool
(collectors.logs.journal): the match arguments that select Docker's, conmon's and the ``--journal-units`` entries,
a field's value as text or bytes, an entry's source (``classify``) and its json-file line (``to_line``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

RUNTIME_COMMS = {"dockerd": "docker", "conmon": "podman"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ERROR_PRIORITIES = frozenset({"0", "1", "2", "3"})


def unit_name(unit: str) -> str:
    """A --journal-units name as systemd writes it in ``_SYSTEMD_UNIT``: ``nginx`` is ``nginx.service``."""
    return unit if "." in unit else f"{unit}.service"


def unit_identifier(unit: str) -> str:
    """The ``SYSLOG_IDENTIFIER`` an entry of ``unit`` written without systemd carries: its name without the type."""
    return unit_name(unit).rsplit(".", 1)[0]


def matches(units: Iterable[str]) -> list[str]:
    """journalctl's match arguments: Docker's and conmon's entries, or a unit's (by ``_SYSTEMD_UNIT``, or by
    ``SYSLOG_IDENTIFIER`` for entries with no unit). Same field ORed, groups joined by ``+``."""
    names = sorted({unit_name(u) for u in units})
    out = [f"_COMM={comm}" for comm in RUNTIME_COMMS]
    if names:
        out += ["+", *(f"_SYSTEMD_UNIT={n}" for n in names)]
        out += ["+", *sorted({f"SYSLOG_IDENTIFIER={unit_identifier(n)}" for n in names})]
    return out


def field_bytes(value: Any) -> bytes | None:
    """A field's value as journalctl's JSON prints it: a string, an array of byte values (not UTF-8 text), an array
    of those (a field given more than once: the last one), or null (too large to print); None when unusable."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list) and value:
        if all(isinstance(b, int) for b in value):
            try:
                return bytes(value)
            except ValueError:
                return None
        return field_bytes(value[-1])
    return None


def _text(value: Any) -> str:
    if type(value) is str:  # nearly always: no round trip through bytes
        return value
    raw = field_bytes(value)
    return raw.decode("utf-8", "replace") if raw is not None else ""


@lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    """RFC 3339 UTC to the second (cached: a burst of entries shares its seconds)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def classify(entry: dict[str, Any], units: dict[str, str]) -> tuple[str, str] | None:
    """(kind, key) of the source an entry belongs to: ("docker"|"podman", container id) or ("units", unit); None for
    another entry (a runtime's own messages, another unit). ``units`` maps each configured unit name and its
    identifier to the unit name."""
    comm = _text(entry.get("_COMM"))
    runtime = RUNTIME_COMMS.get(comm)
    if runtime is not None:
        cid = _text(entry.get("CONTAINER_ID_FULL"))
        if _HEX64.match(cid):
            return runtime, cid
    unit = _text(entry.get("_SYSTEMD_UNIT"))
    if unit:  # written under systemd: only the unit it ran in counts, whatever it calls itself
        return ("units", unit) if unit in units else None
    ident = _text(entry.get("SYSLOG_IDENTIFIER"))
    return ("units", units[ident]) if ident in units else None


def to_line(entry: dict[str, Any]) -> bytes | None:
    """The Docker json-file line for an entry; None when it has no message or no time. A part of a line split at
    16 KiB (``CONTAINER_PARTIAL_MESSAGE=true``, by Docker or conmon) has no trailing newline, as in a json-file; a
    complete line gets one (Docker's messages have none, conmon's keep theirs). A message that is not UTF-8 has its
    bad bytes replaced by U+FFFD, as Docker's json-file does. Priority 0-3 (error and worse; Docker and conmon write
    stderr as 3) is ``stderr``, anything else ``stdout``."""
    message = entry.get("MESSAGE")
    try:
        micros = int(entry["__REALTIME_TIMESTAMP"])
    except (KeyError, TypeError, ValueError):
        return None
    if type(message) is str:
        text = message
    else:
        raw = field_bytes(message)
        if raw is None:
            return None
        text = raw.decode("utf-8", "replace")
    stream = "stderr" if _text(entry.get("PRIORITY")) in _ERROR_PRIORITIES else "stdout"
    if _text(entry.get("CONTAINER_PARTIAL_MESSAGE")) != "true" and not text.endswith("\n"):
        text += "\n"  # Docker's messages have no newline; conmon's keep theirs
    seconds, fraction = divmod(micros, 1_000_000)
    return orjson.dumps({"log": text, "stream": stream, "time": f"{_second(seconds)}.{fraction:06d}Z"}) + b"\n"

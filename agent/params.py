"""Value parsers and declared options: the one leaf every layer may import (standard library only).

The parsers turn what a user writes (flags, ``LOOKOUT_*`` variables, the TOML file, a route URI's query) into
values, and raise ``ValueError`` with a message fit to show as it is. A sink declares the query parameters of its
route once, as a table of ``Param`` (name, parser, default, help); ``parse_params`` applies the table, and the same
table answers ``check-config`` and documents the route.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go-style durations as cAdvisor and Prometheus users write them: ``10s``, ``1m30s``, ``500ms``."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"malformed duration {text!r} (use e.g. 10s, 500ms, 1m30s)")
    return total


_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b?|b)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mi": 1024**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Byte sizes: ``1048576``, ``64KiB``, ``1MiB``, ``10MB``."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"malformed size {text!r} (use e.g. 65536, 64KiB, 1MiB)")
    value = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if value < 1024:
        raise ValueError(f"{text!r} is too small (at least 1KiB)")
    return value


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"malformed address {text!r} (use HOST:PORT, e.g. 0.0.0.0:9338)")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if bracketed or not _HOSTNAME.match(host):
                raise ValueError(f"malformed address {text!r}: {host!r} is neither an IP address nor a host name "
                                 "(use HOST:PORT, e.g. 0.0.0.0:9338)") from None
    return host or "0.0.0.0", int(port)


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"malformed boolean {text!r} (use true or false)")


def parse_list(text: str | Sequence[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(item.strip() for item in items if item.strip())


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"malformed integer {text!r}") from None


def parse_positive_int(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def redact_uri(uri: str) -> str:
    """The URI with any password replaced, for labels and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser that accepts one of ``choices`` (any case) and returns it in lower case."""
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r}: use {' or '.join(choices)}")
        return value
    return parse


def text(value: str) -> str:
    return value


@dataclass(frozen=True, slots=True)
class Param:
    """One route query parameter: its name, the parser of its text, the value when absent, and a line of help."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str


def parse_params(table: Sequence[Param], params: Mapping[str, str], scheme: str,
                 pass_through: bool = False) -> dict[str, Any]:
    """Every parameter of ``table`` by name, parsed, or its default when absent.

    A parameter the table does not name is an error naming it (unless ``pass_through``: the receiver takes it);
    a value its parser refuses is an error naming the parameter."""
    known = {p.name: p for p in table}
    if not pass_through:
        unknown = sorted(k for k in params if k not in known)
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(unknown)} for {scheme}:// "
                             f"(it takes {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    for name, param in known.items():
        if name not in params:
            out[name] = param.default
            continue
        try:
            out[name] = param.parse(params[name])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def bool_param(params: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean route parameter (``true/false``, ``1/0``, ``yes/no``, ``on/off``); the error names it."""
    if name not in params:
        return default
    try:
        return parse_bool(params[name])
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def parse_seconds(value: str) -> float:
    """Seconds as a plain number (``30``, ``2.5``) or a duration (``30s``, ``1m``)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


# The options every route URI takes, whatever its sink: a stable checkpoint name, the batch limits (defaults by
# the route's kind, agent.logs.routes) and logspout-style filters. A sink's own options are declared with it.
ROUTE_PARAMS = (
    Param("name", text, "", "the route's checkpoint name (default: its URI without credentials and query)"),
    Param("batch", parse_positive_int, None, "records per batch (per request for HTTP sinks)"),
    Param("batch_bytes", parse_size, None, "bytes of log lines per batch"),
    Param("flush", parse_duration, None, "how long a batch may wait to fill before it is sent anyway"),
    Param("filter.name", text, "", "glob on the container name"),
    Param("filter.id", text, "", "container id prefix"),
    Param("filter.labels", text, "", "key:glob pairs, comma-separated; all must match"),
    Param("filter.image", text, "", "glob on the image"),
    Param("filter.sources", text, "", "stdout, stderr or both (comma-separated)"),
    Param("filter.namespace", text, "", "glob on the Kubernetes namespace"),
)

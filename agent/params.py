"""Value parsers and declared options: the one leaf every layer may import (standard library only).

The parsers turn what a user writes (flags, ``LOOKOUT_*`` variables, the TOML file, a route URI's query) into
values, and raise ``ValueError`` with a message fit to show as it is, in the project's words (``expected a duration
like 10s, got 'x'``), never Python's. A sink declares the query parameters of its route once, as a table of ``Param``
(name, parser, default, help); ``parse_params`` applies the table, and the same table answers ``check-config`` and
documents the route. The TLS files a route or the listener names are checked here too (``file_problem``,
``load_ca``, ``load_cert_chain``), so a missing or unloadable file is reported with its path and the option naming it.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go-style durations as cAdvisor and Prometheus users write them: ``10s``, ``1m30s``, ``500ms``."""
    original, text = text, text.strip()
    if not text:
        raise ValueError("expected a duration like 10s, 500ms or 1m30s, got an empty value")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"expected a duration like 10s, 500ms or 1m30s, got {original!r}")
    return total


_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b?|b)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mi": 1024**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Byte sizes: ``1048576``, ``64KiB``, ``1MiB``, ``10MB``."""
    match = _SIZE.match(text.strip()) if text.isascii() else None
    if not match:
        raise ValueError(f"expected a size like 65536, 64KiB or 1MiB, got {text!r}")
    value = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if value < 1024:
        raise ValueError(f"expected at least 1KiB, got {text!r}")
    return value


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
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
    raise ValueError(f"expected true or false, got {text!r}")


def parse_list(text: str | Sequence[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(item.strip() for item in items if item.strip())


_INT = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str) -> int:
    """A whole number in ASCII digits (not Python's literals: no ``1_000``, no other scripts' digits)."""
    if not _INT.fullmatch(text.strip()):
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text.strip())


def parse_positive_int(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def redact_uri(uri: str) -> str:
    """The URI with any password replaced, for labels and logs."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # not a URI (an unclosed IPv6 bracket): hide whatever stands between ':' and '@'
        return _USERINFO_PASSWORD.sub(r"\1:***@", uri, count=1)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")


def split_uri(uri: str) -> SplitResult:
    """``urlsplit`` with its errors in the project's words (the port is checked too, as ``.port`` would)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise ValueError("malformed URI: an IPv6 address needs both [ and ], e.g. syslog+tcp://[::1]:514") from None
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        port = parts.netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")[2]
        raise ValueError(f"port: expected a number from 1 to 65535, got {port!r}") from None
    return parts


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
    if not math.isfinite(seconds):
        raise ValueError(f"expected a duration like 30s or a number of seconds, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return seconds


def file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a file a setting names cannot be read (``/x/ca.pem does not exist``), or None. Opens and closes it."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            return f"{path} is a directory, not a file"
        if not stat.S_ISREG(st.st_mode):
            return f"{path} is not a regular file"
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or type(exc).__name__})"
    return None


def _ssl_reason(exc: ssl.SSLError | OSError) -> str:
    """`` (KEY_VALUES_MISMATCH)``: OpenSSL's short reason, when it has one, or the system's; never CPython's text."""
    if isinstance(exc, ssl.SSLError):
        return f" ({exc.reason})" if exc.reason else ""
    return f" ({exc.strerror or type(exc).__name__})"


def load_ca(ca: str, name: str = "ca") -> ssl.SSLContext:
    """``ssl.create_default_context`` verifying with the CA bundle ``ca`` (the system's when empty); a problem is a
    ``ValueError`` naming the option ``name`` and the file."""
    if ca:
        problem = file_problem(ca)
        if problem:
            raise ValueError(f"{name}: {problem}")
    try:
        return ssl.create_default_context(cafile=ca or None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{name}: {ca} holds no PEM certificate{_ssl_reason(exc)}") from None


class _Encrypted(Exception):
    """Raised by the password callback: the key needs a passphrase, which the agent has no way to ask for."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def load_cert_chain(ctx: ssl.SSLContext, cert: str, key: str, cert_name: str = "cert",
                    key_name: str = "key") -> None:
    """``ctx.load_cert_chain(cert, key)`` (the key in ``cert`` when ``key`` is empty); a problem is a ``ValueError``
    naming the option (``cert_name``, ``key_name``) and the file. Never prompts for a passphrase."""
    for name, path in ((cert_name, cert), (key_name, key)):
        if path:
            problem = file_problem(path)
            if problem:
                raise ValueError(f"{name}: {problem}")
    try:  # the certificate alone first, so that a bad one is told apart from a bad key
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{cert_name}: {cert} holds no PEM certificate{_ssl_reason(exc)}") from None
    key_file, key_option = (key, key_name) if key else (cert, cert_name)
    try:
        ctx.load_cert_chain(cert, key or None, password=_no_passphrase)
    except _Encrypted:
        raise ValueError(f"{key_option}: {key_file} is encrypted (the key must be unencrypted PEM)") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"{key_option}: {key_file} is not the key of the certificate in {cert}") from None
        if not key:
            raise ValueError(f"{cert_name}: {cert} holds no private key (give {key_name} too)") from None
        raise ValueError(f"{key_option}: {key_file} holds no PEM private key{_ssl_reason(exc)}") from None
    except OSError as exc:
        raise ValueError(f"{key_option}: {key_file} cannot be read{_ssl_reason(exc)}") from None


def client_tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """A route's client TLS context from its ``ca``, ``cert`` and ``key`` options (``ValueError`` naming them)."""
    if key and not cert:
        raise ValueError("key: needs cert too (the client certificate the key belongs to)")
    ctx = load_ca(ca)
    if cert:
        load_cert_chain(ctx, cert, key)
    return ctx


# The multiline modes (collectors.logs.multiline.MODES, and ``regex`` with a start pattern); ``off`` disables it.
MULTILINE_MODES = ("java", "python", "go", "ruby", "indented", "regex")

# The options every route URI takes, whatever its sink: a stable checkpoint name, the batch limits (defaults by
# the route's kind, agent.logs.routes) and logspout-style filters. A sink's own options are declared with it.
ROUTE_PARAMS: tuple[Param, ...] = (
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
    Param("multiline", one_of(*MULTILINE_MODES, "off"), "",
          "join the lines of one event: java, python, go, ruby, indented, regex (with multiline_start) or off "
          "(default: the container's lookout.multiline label, else off)"),
    Param("multiline_start", text, "", "with multiline=regex: a regular expression the first line of an event "
          "matches (re.search)"),
    Param("multiline_timeout", parse_seconds, None, "finish a held event after this long with no new line "
          "(default --multiline-timeout, 1s)"),
)


# --- processing (agent.logs.process): parsing structured messages, transforms and limits ---------------------------

# Log levels by the names applications write them (any case), as syslog severities (RFC 5424 §6.2.1: 0 emergency ...
# 7 debug); ``trace`` ranks with debug. pino's and bunyan's numeric levels (10 trace ... 60 fatal) map the same way.
LEVEL_SEVERITY = {
    "emerg": 0, "emergency": 0, "panic": 0, "alert": 1, "crit": 2, "critical": 2, "fatal": 2,
    "err": 3, "error": 3, "eror": 3, "warn": 4, "warning": 4, "notice": 5,
    "info": 6, "information": 6, "informational": 6, "debug": 7, "dbug": 7, "trace": 7, "verbose": 7,
}
NUMERIC_LEVEL_SEVERITY = {10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2}
LEVEL_NAMES = "trace, debug, info, notice, warn, error, crit, alert, emerg"


def parse_level(text: str) -> int:
    """A level name (``warn``, ``ERROR``...) as its syslog severity (lower is more severe)."""
    severity = LEVEL_SEVERITY.get(text.strip().lower())
    if severity is None:
        raise ValueError(f"unknown level {text!r} (use {LEVEL_NAMES})")
    return severity


def parse_regex(text: str) -> re.Pattern[str]:
    """A Python regular expression, searched anywhere in a message."""
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {text!r}: {exc}") from None


_FIELD_NAME = re.compile(r"[^\s=\"\]:,]+")


def parse_add_fields(text: str) -> tuple[tuple[str, str], ...]:
    """``k:v`` pairs, comma-separated (``env:prod,team:core``); the value may be empty."""
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition(":")
        key = key.strip()
        if not sep or not _FIELD_NAME.fullmatch(key):
            raise ValueError(f"expected key:value pairs like env:prod, got {item.strip()!r}")
        out.append((key, value.strip()))
    if not out:
        raise ValueError("expected key:value pairs like env:prod, got an empty value")
    return tuple(out)


def parse_field_names(text: str) -> tuple[str, ...]:
    """Field names, comma-separated."""
    names = parse_list(text)
    bad = [n for n in names if not _FIELD_NAME.fullmatch(n)]
    if bad or not names:
        raise ValueError(f"expected field names like password,token, got {text!r}")
    return names


def parse_fields_key(text: str) -> str:
    """The object parsed fields go under: a name of letters, digits, ``_``, ``-`` or ``.`` (a dotted ECS path is
    one key: Elasticsearch expands it)."""
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(f"expected a field name like labels or app, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` records per ``unit`` (``s``, ``m`` or ``h``) of the records' own time."""

    count: int
    unit: str

    @property
    def text(self) -> str:
        return f"{self.count}/{self.unit}"

    @property
    def seconds(self) -> int:
        return {"s": 1, "m": 60, "h": 3600}[self.unit]


_RATE = re.compile(r"([0-9]+)\s*/\s*(s|sec|second|m|min|minute|h|hour)", re.IGNORECASE)


def parse_rate(text: str) -> RateLimit | None:
    """``1000/s``, ``30000/m`` or ``500000/h`` (whole numbers); ``0``, ``off`` or ``none``: no limit (None)."""
    value = text.strip().lower()
    if value in ("0", "off", "none", "unlimited"):
        return None
    match = _RATE.fullmatch(value)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"expected a rate like 1000/s, 30000/m or off, got {text!r}")
    return RateLimit(int(match.group(1)), match.group(2)[0])


TIME_FORMATS = ("rfc3339", "unix", "unix_ms", "unix_us", "unix_ns")


def parse_time_format(text: str) -> str:
    """``rfc3339`` (ISO 8601 with a zone; none is UTC), ``unix`` (seconds, may have a fraction), ``unix_ms``,
    ``unix_us``, ``unix_ns``, or a ``strptime`` format such as ``%d/%b/%Y:%H:%M:%S %z``."""
    value = text.strip()
    if value.lower() in TIME_FORMATS:
        return value.lower()
    bad = sorted(set(re.findall(r"%(.?)", value.replace("%%", ""))) - set(_STRPTIME_DIRECTIVES))
    if "%" not in value or bad:
        raise ValueError(f"use {', '.join(TIME_FORMATS)} or a strptime format like %Y-%m-%d %H:%M:%S, got {text!r}")
    return value


_STRPTIME_DIRECTIVES = "aAwdbBmyYHIpMSfzZjUWcxXGuV"


# The processing options every route takes (agent.logs.process): declared here so that HTTP sinks do not pass them
# on to the receiver, and check-config refuses a bad one naming it.
PROCESS_PARAMS = (
    Param("parse", one_of("json", "logfmt", "none"), "", "parse messages that are a JSON object (json) or "
          "key=value pairs (logfmt); others are shipped as they are"),
    Param("fields_key", parse_fields_key, "", "the object parsed fields go under (default: labels for "
          "Elasticsearch, fields for NDJSON)"),
    Param("time_key", text, "", "a parsed field holding the record's time (else the runtime's time)"),
    Param("time_format", parse_time_format, "rfc3339", "the time_key's format: rfc3339, unix, unix_ms, unix_us, "
          "unix_ns or a strptime format"),
    Param("include", parse_regex, None, "ship only messages this regular expression matches"),
    Param("exclude", parse_regex, None, "drop messages this regular expression matches"),
    Param("add_field", parse_add_fields, (), "key:value pairs (comma-separated) added to every record's fields"),
    Param("drop_field", parse_field_names, (), "parsed fields to remove (comma-separated)"),
    Param("level_min", parse_level, None, f"drop records whose parsed level is below this ({LEVEL_NAMES})"),
)
ROUTE_PARAMS = (*ROUTE_PARAMS, *PROCESS_PARAMS)

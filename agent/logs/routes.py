"""Routes: URIs, their stable ids and logspout-style filters, their batch options, and the sink each one builds."""

from __future__ import annotations

import dataclasses
import fnmatch
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from agent.model import ContainerInfo
from agent.params import ROUTE_PARAMS, Param, RateLimit, parse_params, redact_uri, split_uri
from collectors.logs.multiline import MultilineSpec

if TYPE_CHECKING:
    from agent.logs.delivery import Sink

FILTER_KEYS = tuple(p.name for p in ROUTE_PARAMS if p.name.startswith("filter."))


class RouteError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RouteFilter:
    name: str = ""  # glob on the container name
    id_prefix: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # (key, glob) pairs, all must match
    image: str = ""  # glob on the image
    namespace: str = ""  # glob on the Kubernetes namespace
    streams: frozenset[str] = frozenset()  # empty: every stream

    def match(self, info: ContainerInfo) -> bool:
        if not info.ship_logs:
            return False
        if self.name and not fnmatch.fnmatchcase(info.name, self.name):
            return False
        if self.id_prefix and not info.container_id.startswith(self.id_prefix):
            return False
        if self.image and not fnmatch.fnmatchcase(info.image, self.image):
            return False
        if self.namespace and not fnmatch.fnmatchcase(info.namespace, self.namespace):
            return False
        for key, pattern in self.labels:
            value = info.labels.get(key)
            if value is None or not fnmatch.fnmatchcase(value, pattern or "*"):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Route:
    uri: str
    scheme: str
    host: str
    port: int | None
    path: str
    params: dict[str, str] = field(default_factory=dict)
    filter: RouteFilter = RouteFilter()

    @property
    def redacted(self) -> str:
        return redact_uri(self.uri)

    @property
    def id(self) -> str:
        """Checkpoint key: ``name=`` if given, else the URI without credentials or query."""
        if "name" in self.params:
            return self.params["name"]
        netloc = self.host + (f":{self.port}" if self.port else "")
        return f"{self.scheme}://{netloc}{self.path}"


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        sep = ":" if ":" in item else "=" if "=" in item else None
        if sep is None:
            raise RouteError(f"filter.labels entry {item!r} needs key:value or key=value")
        key, _, value = item.partition(sep)
        out.append((key.strip(), value.strip()))
    return tuple(out)


def parse_filter(params: dict[str, str]) -> RouteFilter:
    """The logspout-style filter of a route's (or a /logs request's) ``filter.*`` parameters."""
    unknown = sorted(k for k in params if k.startswith("filter.") and k not in FILTER_KEYS)
    if unknown:
        raise RouteError(f"unknown filter {', '.join(unknown)} (use {', '.join(FILTER_KEYS)})")
    streams = frozenset(s.strip() for s in params.get("filter.sources", "").split(",") if s.strip())
    bad = streams - {"stdout", "stderr"}
    if bad:
        raise RouteError(f"filter.sources accepts stdout and stderr, not {', '.join(sorted(bad))}")
    return RouteFilter(
        name=params.get("filter.name", ""),
        id_prefix=params.get("filter.id", ""),
        labels=_labels(params.get("filter.labels", "")),
        image=params.get("filter.image", ""),
        namespace=params.get("filter.namespace", ""),
        streams=streams,
    )


def parse_route(uri: str) -> Route:
    try:
        parts = split_uri(uri)
    except ValueError as exc:
        raise RouteError(str(exc)) from None
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    flt = parse_filter(params)
    return Route(uri, parts.scheme, parts.hostname or "", parts.port, parts.path, params, flt)


BATCH_BYTES = 1 << 20
BATCH_RECORDS = 10_000


@dataclass
class LogOptions:
    read_from: str = "head"
    max_line_bytes: int = 1 << 20
    host: str = ""
    poll_interval: float = 0.25  # the wait for new lines while they come in large reads
    poll_max: float = 1.0  # and at most this while they trickle in (RouteRunner.reader backs off)
    batch_bytes: int = BATCH_BYTES
    batch_records: int = BATCH_RECORDS
    flush_interval: float = 0.0  # wait this long for a batch to fill before sending it anyway
    rate_limit: RateLimit | None = None  # --log-rate-limit: each container's (agent.logs.process)
    multiline_timeout: float = 1.0  # --multiline-timeout, or the route's multiline_timeout
    # The route's own multiline setting (None: off); ``multiline_set`` when the route gave multiline= at all (then
    # the containers' lookout.multiline labels are not looked at).
    multiline: MultilineSpec | None = None
    multiline_set: bool = False


@dataclass(frozen=True)
class RouteKind:
    records: int  # records per batch
    size: int  # bytes per batch
    flush: float  # seconds a partial batch may wait


ROUTE_KINDS = {
    "file": RouteKind(10_000, 1 << 20, 0.0),
    "stdout": RouteKind(10_000, 1 << 20, 0.0),
    "syslog": RouteKind(10_000, 1 << 20, 0.0),
    "http": RouteKind(1000, 5 << 20, 1.0),
    "elasticsearch": RouteKind(1000, 5 << 20, 1.0),
}


def sink_params(scheme: str) -> Sequence[Param] | None:
    """The options a scheme's sink declares (beside ``ROUTE_PARAMS``); None for HTTP sinks, which pass any other
    query parameter on to the receiver."""
    if scheme in ("file", "stdout"):
        return ()
    if scheme.startswith("syslog+"):
        from exporters.syslog.sink import PARAMS

        return PARAMS
    return None


def route_kind(route: Route) -> RouteKind:
    """``syslog+tcp`` -> syslog, ``https`` -> http, ``elasticsearch+https`` -> elasticsearch."""
    prefix = route.scheme.split("+")[0]
    kind = ROUTE_KINDS.get("http" if prefix == "https" else prefix)
    if kind is None:
        raise ValueError(f"route scheme {route.scheme!r} is not available")
    return kind


def make_sink(route: Route, state_dir: Path) -> Sink:
    """The sink for a route; raises ValueError naming what is wrong with the route's options."""
    # Each sink's module only when a route uses it: the HTTP sinks import aiohttp (~0.1 s), and a syslog or
    # file route ships before the agent imports it for its own HTTP server (see agent.runtime.serve).
    scheme = route.scheme
    route_kind(route)
    table = sink_params(scheme)
    if table is not None:
        parse_params((*ROUTE_PARAMS, *table), route.params, scheme)  # an unknown parameter is an error
    fields_key = parse_params(ROUTE_PARAMS, route.params, scheme, pass_through=True)["fields_key"]
    if scheme == "file":
        if route.host or not route.path.startswith("/") or route.path.endswith("/"):
            raise ValueError("needs an absolute file path: file:///path/to/out.ndjson")
        from exporters.logs.file import FileSink

        return FileSink(route.path, fields_key)
    if scheme == "stdout":
        from exporters.logs.file import StdoutSink

        return StdoutSink(fields_key)
    if scheme.startswith("syslog+"):
        from exporters.syslog.sink import SyslogSink

        if not route.host:
            raise ValueError("needs a host: syslog+tcp://HOST:PORT")
        return SyslogSink(scheme, route.host, route.port, route.params)  # TLS files: agent.params.load_ca ...
    if scheme in ("http", "https", "elasticsearch+http", "elasticsearch+https"):
        from exporters.http.elasticsearch import ElasticsearchSink
        from exporters.http.sink import HttpSink

        if scheme.startswith("elasticsearch+"):
            return ElasticsearchSink(route.uri, scheme.split("+")[1], state_dir, route.id, fields_key)
        return HttpSink(route.uri, scheme, state_dir, route.id, fields_key)
    raise ValueError(f"route scheme {scheme!r} is not available")


def route_options(route: Route, base: LogOptions) -> LogOptions:
    """The route's batch limits: its ``batch``, ``batch_bytes`` and ``flush`` options, else its kind's; its
    multiline options (a ``ValueError`` naming the one that is wrong)."""
    kind = route_kind(route)
    opts = parse_params(ROUTE_PARAMS, route.params, route.scheme, pass_through=True)
    timeout = base.multiline_timeout if opts["multiline_timeout"] is None else opts["multiline_timeout"]
    multiline = MultilineSpec.parse(opts["multiline"], opts["multiline_start"], timeout)
    return dataclasses.replace(base, batch_records=opts["batch"] or kind.records,
                               batch_bytes=opts["batch_bytes"] or kind.size,
                               flush_interval=kind.flush if opts["flush"] is None else opts["flush"],
                               multiline_timeout=timeout, multiline=multiline,
                               multiline_set="multiline" in route.params)


def check_route(uri: str, state_dir: Path) -> str | None:
    """The problem with a route's options, found by building (not connecting) its sink; None when fine.

    The problem is ``'<uri, password hidden>': <why>``; the caller says where the URI came from (``--route: ...``,
    ``--config: route in FILE: ...``)."""
    try:
        route = parse_route(uri)
        make_sink(route, state_dir)
        route_options(route, LogOptions())
    except ValueError as exc:
        return f"{redact_uri(uri)!r}: {exc}"
    except (OSError, ssl.SSLError) as exc:  # a file no check above named: still one line, never a traceback
        return f"{redact_uri(uri)!r}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
    return None



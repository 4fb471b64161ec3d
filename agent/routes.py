"""Route URIs: parsing, password redaction, stable route ids, and logspout-style filters."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from agent.model import ContainerInfo
from agent.params import redact_uri

FILTER_KEYS = ("filter.name", "filter.id", "filter.labels", "filter.image", "filter.sources")


class RouteError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RouteFilter:
    name: str = ""  # glob on the container name
    id_prefix: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # (key, glob) pairs, all must match
    image: str = ""  # glob on the image
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


def parse_route(uri: str) -> Route:
    parts = urlsplit(uri)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(k for k in params if k.startswith("filter.") and k not in FILTER_KEYS)
    if unknown:
        raise RouteError(f"unknown filter {', '.join(unknown)} (use {', '.join(FILTER_KEYS)})")
    streams = frozenset(s.strip() for s in params.get("filter.sources", "").split(",") if s.strip())
    bad = streams - {"stdout", "stderr"}
    if bad:
        raise RouteError(f"filter.sources accepts stdout and stderr, not {', '.join(sorted(bad))}")
    try:
        port = parts.port
    except ValueError as exc:
        raise RouteError(str(exc)) from exc
    flt = RouteFilter(
        name=params.get("filter.name", ""),
        id_prefix=params.get("filter.id", ""),
        labels=_labels(params.get("filter.labels", "")),
        image=params.get("filter.image", ""),
        streams=streams,
    )
    return Route(uri, parts.scheme, parts.hostname or "", port, parts.path, params, flt)

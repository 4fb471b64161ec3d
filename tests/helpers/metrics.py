"""Scrape an HTTP endpoint and parse Prometheus text into plain samples that are easy to assert on."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float

    def line(self) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{labels}}} {self.value}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Response:
    """GET without any automatic decoding (a gzip body stays gzip); HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


class Metrics:
    """The samples of one scrape, with label-subset selection."""

    def __init__(self, samples: Iterable[Sample], text: str = "") -> None:
        self.samples = list(samples)
        self.text = text

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, name: str | None = None, /, **labels: str) -> list[Sample]:
        """Samples named ``name`` (any name when None) whose labels include ``labels``.

        ``name`` is positional-only, so ``select("x", name="my-container")`` filters on the label."""
        return [s for s in self.samples
                if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())]

    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def value(self, name: str, /, **labels: str) -> float:
        """The value of the one sample that matches; otherwise an AssertionError listing what matched."""
        found = self.select(name, **labels)
        if len(found) != 1:
            raise AssertionError(f"expected exactly one {name}{labels}, found {len(found)}:\n"
                                 + self.describe(name, **labels))
        return found[0].value

    def total(self, name: str, /, **labels: str) -> float:
        """Sum over every matching sample (e.g. container_cpu_usage_seconds_total over its ``cpu`` label)."""
        found = self.select(name, **labels)
        if not found:
            raise AssertionError(f"no {name}{labels} in the scrape:\n" + self.describe(name, **labels))
        return math.fsum(s.value for s in found)

    def describe(self, name: str | None = None, /, **labels: str) -> str:
        """Matching series (by labels alone when none match both) for failure messages."""
        limit = 40
        found = self.select(name, **labels) or self.select(None, **labels) or self.select(name)
        lines = [s.line() for s in found[:limit]]
        if len(found) > limit:
            lines.append(f"... and {len(found) - limit} more")
        return "\n".join(lines) or "(no matching series at all)"


def parse(text: str) -> Metrics:
    """Prometheus text (0.0.4) via prometheus_client's parser: every sample with its labels."""
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append(Sample(s.name, dict(s.labels), float(s.value)))
    return Metrics(samples, text)


def scrape(base_url: str, timeout: float = 10.0) -> Metrics:
    resp = http_get(base_url.rstrip("/") + "/metrics", timeout=timeout)
    if resp.status != 200:
        raise AssertionError(f"GET {base_url}/metrics: HTTP {resp.status}: {resp.body[:300]!r}")
    return parse(resp.text)

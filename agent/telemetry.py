"""The agent's own health on /metrics: build info, collection duration, errors by collector, containers seen.

Uses a private prometheus-client registry (never the global one) with the standard process and
platform collectors, so ``process_resident_memory_bytes`` and friends are served as cAdvisor does.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__

# The collectors that count errors, listed so their series exist at 0 before the first error.
COLLECTORS = ("cgroups", "cgroup_stats", "docker", "cri", "machine")


class AgentState(Collector):
    """Exposes counters kept by the collector thread without making it touch prometheus-client."""

    def __init__(self, errors: Callable[[], Counter[str]], containers: Callable[[], Counter[str]]) -> None:
        self._errors = errors
        self._containers = containers

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("lookout_collector_errors", "Errors met while collecting, by collector.",
                                     labels=["collector"])
        counts = {name: 0 for name in COLLECTORS}
        counts.update(self._errors())
        for name, count in sorted(counts.items()):
            errors.add_metric([name], count)
        yield errors
        seen = GaugeMetricFamily("lookout_containers", "Containers (and raw cgroups) in the last snapshot, "
                                 "by runtime.", labels=["runtime"])
        for runtime, count in sorted(self._containers().items()):
            seen.add_metric([runtime], count)
        yield seen


class Telemetry:
    def __init__(self) -> None:
        disable_created_metrics()  # *_created series double the payload and no dashboard uses them
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        info = GaugeMetricFamily("lookout_build_info", "Lookout's version; constant 1.",
                                 labels=["version", "python_version"])
        info.add_metric([__version__, platform.python_version()], 1)

        class _Build(Collector):
            def collect(self) -> Iterator[Metric]:
                yield info

        self.registry.register(_Build())
        self.collection_duration = Histogram(
            "lookout_collection_duration_seconds", "Wall time of one housekeeping cycle (collect and render).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.render_duration = Histogram(
            "lookout_render_duration_seconds",
            "Wall time of rendering one snapshot to the exposition format and compressing it.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=self.registry)

    def watch(self, errors: Callable[[], Counter[str]], containers: Callable[[], Counter[str]]) -> None:
        self.registry.register(AgentState(errors, containers))

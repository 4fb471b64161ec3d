"""Per-second rates of every container between the last two collections, as the API and the status page show them
(docs/API.md): CPU cores, memory against its limit, network bytes and log lines per second.
"""

from __future__ import annotations

from agent.model import ContainerSample, Snapshot


class ContainerRates:
    """Per-second rates between the last two collections, by cgroup name (docs/API.md)."""

    def __init__(self) -> None:
        self.rates: dict[str, dict[str, float | None]] = {}
        self._last: dict[str, tuple[float, int | None, int | None, int | None, int | None]] = {}

    def update(self, snapshot: Snapshot, lines: dict[str, int]) -> None:
        rates: dict[str, dict[str, float | None]] = {}
        last: dict[str, tuple[float, int | None, int | None, int | None, int | None]] = {}
        for sample in snapshot.containers:
            now = self._totals(sample, lines)
            before = self._last.get(sample.info.cgroup)
            last[sample.info.cgroup] = now
            rates[sample.info.cgroup] = self._rates(sample, now, before)
        self.rates, self._last = rates, last

    @staticmethod
    def _totals(sample: ContainerSample,
                lines: dict[str, int]) -> tuple[float, int | None, int | None, int | None, int | None]:
        stats = sample.stats
        cpu = stats.cpu.usage_ns if stats.cpu is not None else None
        rx = tx = None
        if stats.network is not None and sample.info.owns_network:
            rx = sum(i.rx_bytes for i in stats.network)
            tx = sum(i.tx_bytes for i in stats.network)
        return stats.timestamp, cpu, rx, tx, lines.get(sample.info.container_id) if sample.info.container_id else None

    @staticmethod
    def _rates(sample: ContainerSample, now: tuple[float, int | None, int | None, int | None, int | None],
               before: tuple[float, int | None, int | None, int | None, int | None] | None) -> dict[str, float | None]:
        memory = sample.stats.memory
        spec = sample.stats.spec
        out: dict[str, float | None] = {
            "cpu_cores": None, "memory_bytes": float(memory.working_set) if memory is not None else None,
            "memory_limit_bytes": float(spec.memory_limit) if spec.has_memory and spec.memory_limit else None,
            "network_rx_bytes_per_second": None, "network_tx_bytes_per_second": None, "log_lines_per_second": None}
        if before is None or now[0] <= before[0]:
            return out
        span = now[0] - before[0]
        for key, i, scale in (("cpu_cores", 1, 1e9), ("network_rx_bytes_per_second", 2, 1.0),
                              ("network_tx_bytes_per_second", 3, 1.0), ("log_lines_per_second", 4, 1.0)):
            a, b = before[i], now[i]
            if a is not None and b is not None and b >= a:
                out[key] = round((b - a) / scale / span, 6)
        return out

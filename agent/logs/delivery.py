"""Delivery: the sink contract, the one retry policy, and the accounting of every record's outcome.

A sink (``Sink``) encodes a batch into a ``Payload`` and sends it, answering a ``DeliveryResult``: how many records
were delivered, are to be retried, were dead-lettered or dropped (``agent.model``). ``Delivery.deliver`` sends a
payload until no record is left to retry:

- a send that raises ``RetryableError`` or ``OSError`` (network, timeouts, 429/5xx answers) is retried whole, and
  one whose result has records to retry is sent again for those; both after a full-jitter exponential backoff, and
  at least as long as the receiver's Retry-After;
- any other exception, or a result that does not account for every record sent, is a bug in the sink: retrying
  would repeat it forever in silence. It raises ``SinkFailed``, and the route stops (agent.logs.runner).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from agent.logs.metrics import LogMetrics
from agent.model import DeliveryResult, Payload, RetryableError, Segment

log = structlog.get_logger("lookout.delivery")

BACKOFF_BASE = 0.2
BACKOFF_CAP = 30.0
# A send that has had no outcome for this long shows its route as stalled (/routes): a receiver that accepts and does
# not read, or answers very slowly. The send goes on until its transport's own timeout.
STALL_AFTER = 10.0


class Sink(Protocol):
    """A route's encoder and transport. ``encode`` is pure and runs in the reader's thread; ``send`` returns once
    every record of the payload has an outcome (``DeliveryResult``), or raises when the whole send failed."""

    def encode(self, segments: Sequence[Segment]) -> Payload: ...

    async def send(self, payload: Payload) -> DeliveryResult: ...

    async def close(self) -> None: ...


def payload_size(payload: Payload) -> int:
    data = payload.data
    return len(data) if isinstance(data, bytes) else sum(len(entry) for entry in data)


class SinkFailed(Exception):
    """A sink failed in a way no retry can mend (a bug: ``TypeError``, a result that loses records)."""


def retryable(exc: BaseException) -> bool:
    """Network errors and timeouts (``OSError``) and the sinks' "try again later" (``RetryableError``)."""
    return isinstance(exc, OSError | RetryableError)


def backoff(attempt: int, hint: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter up to ``BACKOFF_BASE * 2**attempt`` (at most
    ``BACKOFF_CAP``), and never less than the receiver's hint."""
    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
    return max(delay, hint) if hint is not None else delay


@dataclass
class RouteStats:
    """A route's outcomes as plain numbers, for the API and the status page (the same as its counters on /metrics,
    without reading prometheus-client's internals)."""

    delivered: int = 0
    delivered_bytes: int = 0
    retries: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    last_error: str = ""
    delivered_at: float = 0.0  # wall time of the last delivered batch
    samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=16))

    def sample(self, now: float) -> None:
        """Remember the totals at ``now`` (``time.monotonic()``, every few seconds): rates are taken over the samples.
        The monotonic clock, as a step of the wall clock (NTP, an operator) would make them 0 or a day's average."""
        self.samples.append((now, self.delivered, self.delivered_bytes))

    def rates(self, now: float, window: float = 10.0) -> tuple[float, float]:
        """Records and bytes per second over about the last ``window`` seconds (``now``: ``time.monotonic()``)."""
        start = next(((t, r, b) for t, r, b in self.samples if now - t <= window), None)
        if start is None or now - start[0] < 1.0:
            start = self.samples[-2] if len(self.samples) >= 2 else None
        if start is None or now <= start[0]:
            return 0.0, 0.0
        span = now - start[0]
        return (self.delivered - start[1]) / span, (self.delivered_bytes - start[2]) / span


class Delivery:
    """Sends one route's payloads with the retry policy and counts each record's outcome in the route's
    metrics."""

    def __init__(self, sink: Sink, metrics: LogMetrics, label: str) -> None:
        self.sink = sink
        self.metrics = metrics
        self.label = label
        self.failing = False
        self.stats = RouteStats()
        self.sending_since = 0.0  # time.monotonic() when the send under way began (0: none)
        self.sending_count = 0  # and how many records it holds

    def stalled_for(self, now: float) -> float:
        """Seconds the send under way has gone without an outcome, once that is ``STALL_AFTER`` or more; else 0."""
        since = self.sending_since
        return now - since if since and now - since >= STALL_AFTER else 0.0

    async def deliver(self, payload: Payload) -> None:
        """Send until every record is delivered, dead-lettered or dropped; raise ``SinkFailed`` on a bug."""
        m, label = self.metrics, self.label
        started = time.monotonic()
        attempt = 0
        while True:
            expected = len(payload.pending()) if payload.done is not None else payload.count
            self.sending_since, self.sending_count = time.monotonic(), expected
            try:
                result = await self.sink.send(payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.sending_since = 0.0
                if not retryable(exc):
                    raise SinkFailed(f"{type(exc).__name__}: {exc}") from exc
                # A payload that keeps its progress may have had entries answered before the send broke off.
                left = len(payload.pending()) if payload.done is not None else expected
                result = DeliveryResult(delivered=expected - left, retry=left,
                                        retry_after=getattr(exc, "retry_after", None),
                                        error=str(exc) or type(exc).__name__)
            else:
                self.sending_since = 0.0
                if not isinstance(result, DeliveryResult) or result.final + result.retry != expected:
                    raise SinkFailed(f"the sink answered {result!r} for {expected} record(s)")
                if result.retry:
                    m.item_retries.labels(label).inc(result.retry)
            self._count(result)
            if not result.retry:
                break
            attempt += 1
            m.retries.labels(label).inc()
            self.stats.retries += 1
            self.stats.last_error = result.error
            m.up.labels(label).set(0)
            if not self.failing:
                log.warning("route_send_failed", route=label, error=result.error, records=result.retry)
                self.failing = True
            await asyncio.sleep(backoff(attempt, result.retry_after))
        if self.failing:
            log.info("route_recovered", route=label, attempts=attempt + 1)
            self.failing = False
        m.up.labels(label).set(1)
        self.stats.delivered_at = time.time()
        self.stats.delivered_bytes += payload_size(payload)
        m.batch_latency.labels(label).observe(time.monotonic() - started)

    def _count(self, result: DeliveryResult) -> None:
        m, label = self.metrics, self.label
        stats = self.stats
        stats.delivered += result.delivered
        stats.dead_lettered += result.dead_lettered
        stats.dropped += sum(result.dropped.values())
        if result.delivered:
            m.sent.labels(label).inc(result.delivered)
        rejected = result.dead_lettered + result.dropped.get("rejected", 0)
        if rejected:
            m.rejected.labels(label).inc(rejected)
        if result.dead_lettered:
            m.dead_lettered.labels(label).inc(result.dead_lettered)
            m.dropped.labels(label, "rejected").inc(result.dead_lettered)
        for reason, n in result.dropped.items():
            if n:
                m.dropped.labels(label, reason).inc(n)

"""The delivery contract and its one retry policy (agent.logs.delivery), with sinks that answer as scripted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from agent.logs import delivery as delivery_module
from agent.logs.delivery import Delivery, SinkFailed, backoff, retryable
from agent.logs.metrics import LogMetrics
from agent.model import DeliveryResult, Payload, RetryableError, Segment

LABEL = "test://route"


class Scripted:
    """A sink whose ``send`` plays ``answers`` in order: a ``DeliveryResult`` (entries it marks done: ``marks``) or
    an exception to raise."""

    def __init__(self, *answers: DeliveryResult | BaseException, marks: Sequence[Sequence[int]] = ()) -> None:
        self.answers = list(answers)
        self.marks = list(marks)
        self.sends = 0

    def encode(self, segments: Sequence[Segment]) -> Payload:
        raise NotImplementedError

    async def send(self, payload: Payload) -> DeliveryResult:
        self.sends += 1
        if self.marks and payload.done is not None:
            for i in self.marks.pop(0):
                payload.done[i] = True
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def close(self) -> None:
        return None


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery_module, "BACKOFF_BASE", 0.0001)


def metrics() -> LogMetrics:
    m = LogMetrics(CollectorRegistry())
    m.route(LABEL, offload=False)
    return m


def value(m: LogMetrics, name: str, *labels: str) -> float:
    return float(getattr(m, name).labels(LABEL, *labels)._value.get())


async def test_network_errors_and_retryable_answers_are_retried_until_delivered() -> None:
    m = metrics()
    sink = Scripted(ConnectionResetError("reset"), RetryableError("HTTP 503", retry_after=0.001),
                    DeliveryResult(delivered=5))
    await Delivery(sink, m, LABEL).deliver(Payload(b"x", 5))
    assert sink.sends == 3
    assert value(m, "sent") == 5 and value(m, "retries") == 2 and value(m, "up") == 1


async def test_a_bug_in_the_sink_is_not_retried() -> None:
    m = metrics()
    sink = Scripted(TypeError("unsupported operand"), DeliveryResult(delivered=5))
    with pytest.raises(SinkFailed, match="TypeError: unsupported operand"):
        await Delivery(sink, m, LABEL).deliver(Payload(b"x", 5))
    assert sink.sends == 1 and value(m, "sent") == 0 and value(m, "retries") == 0


async def test_a_result_that_loses_records_is_a_bug() -> None:
    sink = Scripted(DeliveryResult(delivered=4))  # 5 records sent, 4 accounted for
    with pytest.raises(SinkFailed, match="for 5 record"):
        await Delivery(sink, metrics(), LABEL).deliver(Payload(b"x", 5))


async def test_per_record_outcomes_are_counted_by_kind() -> None:
    m = metrics()
    payload = Payload([b"a", b"b", b"c", b"d", b"e", b"f"], 6, done=[False] * 6)
    # First send: 2 delivered, 1 dead-lettered, 1 dropped as a duplicate, 2 answered "later" (per-item 429).
    sink = Scripted(DeliveryResult(delivered=2, dead_lettered=1, dropped={"duplicate": 1}, retry=2,
                                   error="2 item(s) answered 429/5xx"),
                    DeliveryResult(delivered=2), marks=[[0, 1, 2, 3], [4, 5]])
    await Delivery(sink, m, LABEL).deliver(payload)
    assert value(m, "sent") == 4 and value(m, "dead_lettered") == 1 and value(m, "rejected") == 1
    assert value(m, "dropped", "rejected") == 1 and value(m, "dropped", "duplicate") == 1
    assert value(m, "item_retries") == 2 and value(m, "retries") == 1


async def test_entries_answered_before_a_send_broke_off_count_as_delivered() -> None:
    """RELP: 3 of 5 frames were answered 200, then the connection reset; the retry sends the other 2."""
    m = metrics()
    payload = Payload([b"1", b"2", b"3", b"4", b"5"], 5, done=[False] * 5)
    sink = Scripted(ConnectionResetError("reset"), DeliveryResult(delivered=2), marks=[[0, 1, 2], []])
    await Delivery(sink, m, LABEL).deliver(payload)
    assert value(m, "sent") == 5 and sink.sends == 2


def test_the_policy_classifies_errors_and_honours_retry_after() -> None:
    assert retryable(OSError()) and retryable(TimeoutError()) and retryable(RetryableError("429"))
    assert not retryable(TypeError()) and not retryable(KeyError()) and not retryable(ValueError())
    assert all(backoff(attempt, 7.5) >= 7.5 for attempt in range(1, 10))
    assert max(backoff(30) for _ in range(50)) <= delivery_module.BACKOFF_CAP


class Held:
    """A sink whose send waits until the test releases it (a receiver that accepts and does not read)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def encode(self, segments: Sequence[Segment]) -> Payload:
        raise NotImplementedError

    async def send(self, payload: Payload) -> DeliveryResult:
        await self.release.wait()
        return DeliveryResult(delivered=payload.count)

    async def close(self) -> None:
        return None


async def test_a_send_without_an_outcome_for_stall_after_seconds_is_stalled_until_it_ends() -> None:
    sink = Held()
    d = Delivery(sink, metrics(), LABEL)
    assert d.stalled_for(time.monotonic()) == 0.0
    task = asyncio.create_task(d.deliver(Payload(b"x", 7)))
    await asyncio.sleep(0.01)
    now = time.monotonic()
    assert d.stalled_for(now) == 0.0 and d.sending_count == 7
    later = now + delivery_module.STALL_AFTER
    assert delivery_module.STALL_AFTER <= d.stalled_for(later) == later - d.sending_since < later - now + 1.0
    sink.release.set()
    await task
    assert d.stalled_for(later) == 0.0 and d.stats.delivered == 7

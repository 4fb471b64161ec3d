"""``wait_for`` (and ``until`` inside an event loop): poll a predicate instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float, interval: float = 0.2, message: str = "",
             describe: Callable[[], str] | None = None) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Exceptions raised by the predicate count as "not yet" (a server still starting, a file not yet
    written). On timeout an ``AssertionError`` says what was awaited, the last value or exception,
    and ``describe()`` (extra diagnostics, e.g. the series found) when given.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last: object = None
    last_exc: BaseException | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            value = predicate()
        except Exception as exc:  # "not ready yet"; reported on timeout
            last_exc, value = exc, None
        else:
            last_exc = None
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    what = message or getattr(predicate, "__name__", "condition")
    lines = [f"timed out after {time.monotonic() - started:.1f}s ({attempts} attempts) waiting for: {what}"]
    if last_exc is not None:
        lines.append(f"last attempt raised: {last_exc!r}")
    else:
        lines.append(f"last value: {last!r}"[:2000])
    if describe is not None:
        try:
            lines.append(describe())
        except Exception as exc:
            lines.append(f"(describe() failed: {exc!r})")
    raise AssertionError("\n".join(lines))


async def until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
                message: str = "") -> None:
    """``wait_for`` for a test running in the event loop: await ``interval`` between calls, so the loop serves the
    server or client the test waits on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for: {message or 'condition'}"
        await asyncio.sleep(interval)

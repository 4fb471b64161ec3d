"""Waiting on an event with a timeout, without losing a cancellation (standard library only)."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 that returns normally when the task is
    cancelled in the same loop turn as the event is set, so a loop built on it never ends (a stopping agent
    waited forever for its checkpoint flusher, which acknowledgements wake all the time). ``asyncio.timeout``
    keeps the cancellation."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True

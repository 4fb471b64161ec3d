"""agent.waits.wait_event: a wait that never loses the task's cancellation (asyncio.wait_for on 3.11 does)."""

from __future__ import annotations

import asyncio

from agent.waits import wait_event


async def test_a_cancellation_in_the_turn_the_event_is_set_stops_the_loop() -> None:
    """The checkpoint flusher's shape: wait for acknowledgements, clear, again. With asyncio.wait_for, 0 of 20
    such loops stopped when cancelled as the event was set (a stopping agent then waited forever)."""

    async def flusher(event: asyncio.Event) -> None:
        while True:
            await wait_event(event, 5.0)
            event.clear()

    for _ in range(20):
        event = asyncio.Event()
        task = asyncio.create_task(flusher(event))
        await asyncio.sleep(0)  # the task is waiting on the event
        event.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        assert done and task.cancelled()


async def test_it_tells_a_set_event_from_a_timeout() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 5.0) is True
    async with asyncio.timeout(1.0):  # a set event returns at once, whatever the timeout
        assert await wait_event(event, 3600.0) is True

"""The runtime's task supervisor: a task that dies of a bug stops the agent (exit 1) instead of leaving it
half-alive; cancelled tasks and tasks with nothing to do are not failures."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from agent.runtime import Supervisor


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _nothing_to_do() -> None:
    return


async def _broken() -> None:
    await asyncio.sleep(0.01)
    raise ValueError("month must be in 1..12")


async def test_a_task_that_raises_stops_the_agent_and_is_named() -> None:
    stop = asyncio.Event()
    supervisor = Supervisor(stop)
    tasks = [asyncio.create_task(_forever(), name="housekeeping"),
             asyncio.create_task(_broken(), name="reader file:///out.ndjson")]
    supervisor.watch(tasks)
    with capture_logs() as logs:
        await asyncio.wait_for(stop.wait(), timeout=5)
    assert supervisor.failed == ["reader file:///out.ndjson"]
    [event] = logs
    assert (event["event"], event["log_level"], event["task"]) == ("task_failed", "error", "reader file:///out.ndjson")
    assert event["error"] == "ValueError: month must be in 1..12"
    assert event["exc_info"][1] is tasks[1].exception()  # the bug's traceback goes to the log
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_cancelled_and_finished_tasks_are_not_failures() -> None:
    stop = asyncio.Event()
    supervisor = Supervisor(stop)
    tasks = [asyncio.create_task(_forever(), name="docker"), asyncio.create_task(_nothing_to_do(), name="fs_usage")]
    supervisor.watch(tasks)
    await asyncio.sleep(0.05)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert supervisor.failed == [] and not stop.is_set()

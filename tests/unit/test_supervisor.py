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


def test_a_taken_listen_address_exits_1_after_the_routes_stop_in_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The routes start before the HTTP server; when its address is taken the agent still exits 1 with one clear
    line, and the routes that already shipped stop in order: every line shipped is checkpointed."""
    import json
    import socket
    import subprocess
    import sys

    cid = "c" * 64
    logs = tmp_path / "docker" / "containers" / cid
    logs.mkdir(parents=True)
    (logs / "config.v2.json").write_text(json.dumps({"ID": cid, "Name": "/web", "Config": {"Image": "x"},
                                                     "State": {"Running": True}}))
    lines = [json.dumps({"log": f"line {i}\n", "stream": "stdout", "time": "2026-11-28T04:00:00Z"}) for i in range(50)]
    (logs / f"{cid}-json.log").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.ndjson"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--listen", f"127.0.0.1:{port}", "--host-root", str(tmp_path),
             "--docker-root", str(tmp_path / "docker"), "--docker-socket", "", "--state-dir", str(tmp_path / "state"),
             "--log-format", "json", "--route", f"file://{out}"],
            capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    events = [json.loads(line) for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "listen_failed"]
    assert len(failed) == 1 and failed[0]["address"] == f"127.0.0.1:{port}"
    assert "stopped_after_failure" not in [e["event"] for e in events]
    # Whatever reached the route before the stop (all of it, in practice) is acknowledged on disk, and no more.
    shipped = len(out.read_text().splitlines()) if out.exists() else 0
    state = tmp_path / "state" / "checkpoints.json"
    checkpoints = json.loads(state.read_text()) if state.exists() else {"routes": {}}
    offsets = [e["offset"] for files in checkpoints["routes"].values() for e in files.values()]
    assert max(offsets, default=0) == sum(len(x) + 1 for x in lines[:shipped])

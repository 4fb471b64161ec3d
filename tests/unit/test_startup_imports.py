"""What the agent process loads at start: structlog imported without rich (agent/structlog_import.py, imported first by
the command line), while the chunk workers import no structlog at all, ``lookout top`` and ``lookout tail`` still draw
with rich and the console log format still shows tracebacks. Each check runs in a fresh interpreter: this test
process has imported everything already."""

from __future__ import annotations

import subprocess
import sys

import orjson


def fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def loaded_packages(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` a fresh interpreter holds after importing ``modules`` (in that order)."""
    out = fresh("import sys, orjson\n"
                f"for name in {modules!r}: __import__(name)\n"
                f"print(orjson.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {packages!r})).decode())")
    return list(orjson.loads(out))


def test_the_agent_starts_without_rich_or_pygments() -> None:
    modules = ["agent.cli", "agent.wiring", "agent.runtime", "agent.logs.pipeline", "agent.logs.offload"]
    assert loaded_packages(modules, ("rich", "pygments")) == []


def test_a_chunk_worker_imports_neither_structlog_nor_rich() -> None:
    """What the forkserver preloads for the workers (agent.logs.offload): the workers log nothing themselves."""
    from agent.logs.offload import PRELOAD

    assert loaded_packages(list(PRELOAD), ("structlog", "rich", "pygments")) == []


def test_top_and_tail_still_draw_with_rich() -> None:
    out = fresh("import agent.cli, structlog\n"
                "from rich.console import Console\n"
                "from rich.table import Table\n"
                "console = Console(width=40, color_system=None)\n"
                "table = Table('container', 'cpu')\n"
                "table.add_row('web', '1.5%')\n"
                "console.print(table)")
    assert "container" in out and "web" in out and "1.5%" in out


def test_the_console_log_format_still_shows_a_traceback() -> None:
    out = fresh("import agent.cli  # structlog as the agent imports it: without rich\n"
                "from agent.logconfig import configure_logging\n"
                "import structlog\n"
                "configure_logging('info', 'console')\n"
                "try:\n"
                "    1 / 0\n"
                "except ZeroDivisionError:\n"
                "    structlog.get_logger('t').exception('cycle_failed', cycle=3)\n")
    assert "cycle_failed" in out and "cycle=3" in out
    assert "Traceback (most recent call last)" in out and "ZeroDivisionError: division by zero" in out

"""structlog, imported once with rich hidden from it; the command line (``agent.cli``) imports this module before
anything else can import structlog.

structlog imports rich at its own import whenever rich is installed (it is: ``lookout top`` and ``lookout tail`` draw
with it), only to offer rich tracebacks to its console renderer. The agent never uses them: its log configuration
turns exceptions into text (``format_exc_info``) before any renderer. Hidden, the agent process skips 91 modules
(rich and pygments): ~4-5 MB of RSS and ~0.1 s of CPU at every start (BENCHMARKS.md, section 20). ``lookout top`` and
``tail`` import rich themselves when they draw, unaffected. Not done in ``agent/__init__``: the chunk workers import
the ``agent`` package but never structlog, and would pay for it there.
"""

import sys


def _import_structlog_without_rich() -> None:
    if "structlog" in sys.modules:
        return
    rich = sys.modules.get("rich")
    sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" now raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        if rich is None:
            del sys.modules["rich"]
        else:
            sys.modules["rich"] = rich


_import_structlog_without_rich()

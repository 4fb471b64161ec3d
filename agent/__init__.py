"""Lookout: a host agent that serves cAdvisor-compatible container metrics and ships container logs."""

import sys

__version__ = "0.1.0"


def _import_structlog_without_rich() -> None:
    """Import structlog once with rich hidden from it.

    structlog imports rich at its own import whenever rich is installed (it is: ``lookout top`` and ``lookout tail``
    draw with it), only to offer rich tracebacks to its console renderer. The agent never uses them: its log
    configuration turns exceptions into text (``format_exc_info``) before any renderer. Hidden, the agent process and
    each chunk worker skip 91 modules (rich and pygments): ~5 MB of RSS and ~0.1 s of CPU at every start
    (BENCHMARKS.md, section 20). ``lookout top``/``tail`` import rich themselves when they draw, unaffected.
    """
    if "structlog" in sys.modules:
        return
    hidden = {name: sys.modules.get(name) for name in ("rich", "better_exceptions")}
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import rich" now raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        for name, module in hidden.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


_import_structlog_without_rich()

"""structlog set up once: ISO UTC timestamps, level filter, JSON off a terminal, console on one.

Standard-library loggers (aiohttp, watchdog, asyncio) are bridged through the same renderer.
"""

from __future__ import annotations

import logging
import sys
import warnings

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


# ``extra=`` keys of standard-library records that are shown (others, e.g. aiohttp's, are left out).
EXTRA_KEYS = ("error", "since_last", "limit", "closed", "which")


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Key-value pairs of the standard-library records that carry them (the web listener's, exporters/web/guard).
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=EXTRA_KEYS)],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # aiohttp's access log is noise at one line per scrape.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Python warnings go through the same renderer (logger "py.warnings") instead of raw lines on stderr.
    logging.captureWarnings(True)
    # watchdog warns when a recursive watch meets a directory it already watches (a container's directory
    # created while its parent is being walked); the watch is reused and nothing is missed.
    warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning)

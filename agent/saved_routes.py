"""The routes added over the API, kept in ``<state-dir>/routes.json`` so that they come back after a restart: the
file read (a damaged one moved aside and logged, its routes not started) and written whole, atomically.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import orjson
import structlog

log = structlog.get_logger("lookout.control")

ROUTES_FILE = "routes.json"


def read_saved(path: Path) -> list[dict[str, str]]:
    """The saved routes' ids and URIs (none when the file is missing or unreadable)."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError) as exc:
        broken = path.with_suffix(f".broken-{int(time.time())}")
        log.error("api_routes_unreadable", path=str(path), error=str(exc), moved_to=str(broken))
        with contextlib.suppress(OSError):
            os.replace(path, broken)
        return []
    items = data.get("routes") if isinstance(data, dict) else None
    if not isinstance(items, list):
        log.error("api_routes_unreadable", path=str(path), error="no routes list")
        return []
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("uri"), str):
            out.append({"id": item["id"], "uri": item["uri"]})
        else:
            log.error("api_route_unreadable", path=str(path), entry=str(item)[:200])
    return out


def write_saved(path: Path, items: list[dict[str, str]]) -> None:
    """routes.json: written whole to a temporary file, fsynced and renamed; 0600 (URIs may hold passwords)."""
    body = orjson.dumps({"version": 1, "routes": items}, option=orjson.OPT_INDENT_2)
    from collectors.logs.checkpoints import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, body)

"""What ``lookout top`` and ``lookout tail`` share as clients of a running agent's HTTP API (docs/API.md):
the agent's base URL, TLS options, the one line to show for a refusal, and a container's display name.

Client code only: nothing here (nor in agent.top, agent.tail) imports the collectors or exporters.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

DEFAULT_URL = "http://127.0.0.1:9338"


class ClientError(Exception):
    """The agent cannot be asked (unreachable, refused, not an agent): ``str()`` is the one line shown; exit 1."""


def base_url(text: str) -> str:
    """``--url``: ``http://host:port`` or ``https://…``; a bare ``host:port`` means http. No trailing slash."""
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL of the agent (e.g. {DEFAULT_URL})")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: give the agent's address only, without a query")
    return text.rstrip("/")


def ssl_context(url: str, insecure: bool = False, cacert: str | None = None) -> ssl.SSLContext | None:
    """The TLS context for an https URL (``--cacert`` adds a CA, ``--insecure`` verifies nothing); None for http."""
    if not url.startswith("https://"):
        return None
    context = ssl.create_default_context()
    if cacert:
        try:
            context.load_verify_locations(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"--cacert {cacert}: {exc}") from exc
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_line(body: bytes, limit: int = 300) -> str:
    """What the agent said, in one line: a JSON ``{"error": …}``'s message, else the body's first non-empty line."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        text = doc["error"]
    else:
        text = next((line for line in body.decode(errors="replace").splitlines() if line.strip()), "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def refusal(status: int, reason: str, url: str, body: bytes) -> str:
    """The one line for an HTTP error answer: ``GET URL: 401 Unauthorized: <the agent's line>``."""
    said = server_line(body)
    if said.startswith(f"{status} "):  # the agent's own line names the status already
        return f"GET {url}: {said}"
    return f"GET {url}: {status} {reason}" + (f": {said}" if said else "")


def display_name(info: Mapping[str, Any]) -> str:
    """How a person names a container: Kubernetes ``pod/container``, else its name, else its id or cgroup.

    ``info`` is a container's ``info`` on /api/v1/containers or a log record (``container_name``, ``pod``, …).
    """
    pod, container = info.get("pod") or "", info.get("container") or ""
    if pod and container:
        return f"{pod}/{container}"
    name = info.get("name") or info.get("container_name") or ""
    if pod:  # a pod's sandbox, or its pod-level cgroup
        return f"{pod}/POD" if info.get("container_id") else pod
    if name:
        return str(name)
    cid = info.get("container_id") or ""
    return str(cid[:12] if cid else info.get("cgroup") or "?")

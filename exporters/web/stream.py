"""``GET /logs``: a live stream of every container's records, as logspout's (docs/API.md).

Plain ``name|message`` lines by default, NDJSON (the ``file://`` route's records) with ``Accept:
application/x-ndjson`` or ``?format=json``, Server-Sent Events with ``Accept: text/event-stream`` or ``?format=sse``.
The records come from a subscription (agent.logs.live) whose buffer is bounded: what a slow client missed is told in
its stream where the gap is."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from aiohttp import web

from agent.model import ApiError, Segment
from agent.waits import wait_event
from exporters.logs.ndjson import NdjsonEncoder
from exporters.web.auth import guarded
from exporters.web.keys import LIVE

FORMATS = {"text": "text/plain; charset=utf-8", "json": "application/x-ndjson", "sse": "text/event-stream"}
MAX_TAIL = 10_000  # records per container sent by ?tail=N
BUFFER_RECORDS = 10_000  # a client's buffer; beyond it records are missed (counted, and told in its stream)
CHECK_INTERVAL = 1.0  # how often an idle stream checks that its client is still there
KEEPALIVE = 15.0  # an SSE comment after this long without records, so proxies keep the stream open


def stream_format(request: web.Request) -> str:
    """The client's format: ``?format=`` first, then its Accept header, plain text by default."""
    asked = request.query.get("format", "").lower()
    if asked:
        if asked in ("json", "ndjson"):
            return "json"
        if asked in FORMATS:
            return asked
        raise ApiError(400, f"unknown format {asked!r} (use text, json or sse)")
    accept = request.headers.get("Accept", "")
    if "text/event-stream" in accept:
        return "sse"
    if "application/x-ndjson" in accept or "application/json" in accept:
        return "json"
    return "text"


def render_text(segments: Iterable[Segment]) -> bytes:
    out: list[str] = []
    for seg in segments:
        name = seg.source.container.name or seg.source.container.container_id[:12]
        out.extend(f"{name}|{record[2]}\n" for record in seg.records)
    return "".join(out).encode("utf-8", "replace")


def render_sse(ndjson: bytes) -> bytes:
    return b"".join(b"event: log\ndata: " + line + b"\n\n" for line in ndjson.splitlines())


def missed_notice(fmt: str, missed: int) -> bytes:
    if fmt == "text":
        return f"lookout|missed {missed} records (this client read too slowly)\n".encode()
    body = orjson.dumps({"missed": missed})
    return b"event: missed\ndata: " + body + b"\n\n" if fmt == "sse" else body + b"\n"


def _tail_param(request: web.Request) -> int:
    text = request.query.get("tail", "0")
    if not text.isdigit():
        raise ApiError(400, f"tail must be a number of records, not {text!r}")
    return min(int(text), MAX_TAIL)


@guarded
async def logs(request: web.Request) -> web.StreamResponse:
    """The live stream."""
    stream = request.app[LIVE].stream
    if stream is None:
        return web.Response(status=503, text="the live log stream is not available in this agent\n")
    try:
        fmt = stream_format(request)
        params = {k: v for k, v in request.query.items() if k.startswith("filter.")}
        subscription = await stream.subscribe(params, _tail_param(request), BUFFER_RECORDS)
    except ApiError as exc:
        return web.Response(status=exc.status, text=f"{exc}\n")
    response = web.StreamResponse(headers={"Content-Type": FORMATS[fmt], "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    encoder = NdjsonEncoder()
    idle = 0.0
    try:
        await response.prepare(request)
        while True:
            if not await wait_event(subscription.ready, CHECK_INTERVAL):
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                idle += CHECK_INTERVAL
                if fmt == "sse" and idle >= KEEPALIVE:
                    await response.write(b": keepalive\n\n")
                    idle = 0.0
                continue
            idle = 0.0
            segments, missed = subscription.take()  # the records missed came after the buffered ones
            if segments:
                if fmt == "text":
                    await response.write(render_text(segments))
                else:
                    body = encoder.encode(segments)
                    await response.write(render_sse(body) if fmt == "sse" else body)
            if missed:
                await response.write(missed_notice(fmt, missed))
            if subscription.ended:
                break
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        subscription.close()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/logs", logs)

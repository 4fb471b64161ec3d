"""``http(s)://`` route: batches of NDJSON records POSTed as ``application/x-ndjson``.

2xx acknowledges the batch (even when the answer's body then breaks off); network errors, no answer within the
route's ``timeout=``, 429 and 5xx are retried by the pipeline (with the
receiver's Retry-After when it sends one); any other status is final: the batch goes to the
dead-letter file, is counted as rejected, and the records after it flow on. A gzip body is decompressed again
only for the dead-letter file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

from agent.model import DeliveryResult, Payload, RetryableError, Segment
from exporters.http.common import PostingSink, Target, retry_after, retryable_request_status
from exporters.logs.ndjson import NdjsonEncoder


class HttpSink(PostingSink):
    def __init__(self, uri: str, http_scheme: str, state_dir: Path, route_id: str, fields_key: str = "") -> None:
        super().__init__(Target.from_route(uri, http_scheme), state_dir, route_id)
        self.encoder = NdjsonEncoder(fields_key)

    def encode(self, segments: Sequence[Segment]) -> Payload:
        raw = self.encoder.encode(segments)
        body = gzip.compress(raw, compresslevel=1) if self.target.gzip else raw
        return Payload(body, sum(len(s.records) for s in segments))

    async def send(self, payload: Payload) -> DeliveryResult:
        assert isinstance(payload.data, bytes), "an HTTP payload is one request body"
        headers = {"Content-Type": "application/x-ndjson", **self.target.headers}
        if self.target.gzip:
            headers["Content-Encoding"] = "gzip"
        try:
            async with self.session().post(self.target.url, data=payload.data, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    # The status line decides: a body that breaks off after a 2xx does not undo it (sending the
                    # batch again would only duplicate it).
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        await resp.read()
                    return DeliveryResult(delivered=payload.count)
                text = await resp.text(errors="replace")
                if retryable_request_status(resp.status):
                    hint = retry_after(resp.headers.get("Retry-After"), resp.headers.get("Date"))
                    raise RetryableError(f"HTTP {resp.status}: {text[:200]}", hint)
        except aiohttp.ClientError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise self.timed_out() from exc
        # Final refusal (4xx other than 429): keep the records in the dead-letter file, move on. Decompressing and
        # parsing a batch of megabytes is done beside the event loop, as the write is.
        await asyncio.to_thread(self._dead_letter, payload.data, resp.status, text[:1000])
        return DeliveryResult(dead_lettered=payload.count)

    def _dead_letter(self, data: bytes, status: int, error: str) -> None:
        raw = gzip.decompress(data) if self.target.gzip else data
        self.dead.write([{"status": status, "error": error, "record": orjson.loads(line)}
                         for line in raw.splitlines() if line])


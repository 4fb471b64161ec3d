"""``elasticsearch+http(s)://[user:pass@]host:port/<index>`` route: the ``_bulk`` API, exactly once per line.

- Body: NDJSON action/source pairs ending with a newline (``Content-Type: application/x-ndjson``).
- Documents carry ECS fields: ``@timestamp``, ``message``, ``stream``, ``container.id``,
  ``container.name``, ``container.image.name``, ``container.labels``, ``host.name``,
  ``kubernetes.pod.name``, ``kubernetes.namespace``, ``kubernetes.container.name``,
  ``log.file.path``, ``log.offset``.
- Each document's ``_id`` is derived from its source position (file identity and offset), so a
  resent document is never a duplicate: ``create`` answering 409 counts as delivered.
- The index may hold strftime fields, filled from each record's own time in UTC.
- ``"errors": true``: only items answered 429/5xx are sent again; items refused for good (400
  mapping errors, 404, ...) go to the dead-letter file and never block the records after them.
- A whole-request 429/5xx or network error retries what is still pending; 413 halves the request.
- A route that processes records (agent.logs.process) adds ``log.level`` (the level as the application wrote it)
  and the record's fields under ``fields_key`` (default ``labels``, ECS's custom fields), keys dedotted as the
  container labels are.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
import orjson

from agent.model import (
    RFC3339_UTC,
    ContainerInfo,
    DeliveryResult,
    LogSource,
    Payload,
    RetryableError,
    Segment,
    utc_now_rfc3339,
)
from agent.params import parse_params
from exporters.http.common import (
    ES_PARAMS,
    PostingSink,
    Target,
    retry_after,
    retryable_request_status,
    retryable_status,
)

# strftime fields that change at most once an hour, and how a record's time is cut to cache index names.
HOURLY_FIELDS = frozenset("YymdjHIpbBhaAuwUWVGgCeD")
INDEX_KEY_FORMATS = {13: "%Y-%m-%dT%H", 19: "%Y-%m-%dT%H:%M:%S"}
# The strftime fields an index name may hold: the ones that give digits only, down to the second (names are cached
# per hour or per second of the records' time). The other hourly fields give what Elasticsearch refuses in a name.
INDEX_FIELDS = "YymdjHIMSuwUWVGgC"
_REFUSED_FIELDS = {**dict.fromkeys("aAbBhp", "upper case (Mon, Jan, AM)"), "e": "a space", "D": "'/'"}
# Elasticsearch's rules for index names (create index API): lower case, none of these characters, not starting with
# one of START, not . or .., at most 255 bytes.
INDEX_FORBIDDEN = '\\/*?"<>| ,#:'
INDEX_FORBIDDEN_START = "-_+"
INDEX_MAX_BYTES = 255
DEFAULT_FIELDS_KEY = "labels"
# Top-level fields of every document: parsed fields may not be put under one of them.
RESERVED_KEYS = frozenset({"@timestamp", "message", "stream", "container", "host", "kubernetes", "log"})


def check_index(pattern: str) -> None:
    """Refuse an index pattern (``logs-lookout-%Y.%m.%d``) whose names Elasticsearch would refuse, or that holds a
    field the sink does not fill; ``ValueError`` naming the index."""
    def refuse(why: str) -> ValueError:
        return ValueError(f"index {pattern!r}: {why}")

    fields = " ".join(f"%{c}" for c in INDEX_FIELDS)
    i = 0
    while (i := pattern.find("%", i)) >= 0:
        field = pattern[i + 1: i + 2]
        if not field:
            raise refuse("a % at the end (write %% for a literal %)")
        if field in _REFUSED_FIELDS:
            raise refuse(f"%{field} gives {_REFUSED_FIELDS[field]}, which Elasticsearch refuses in index names "
                         f"(use {fields})")
        if field != "%" and field not in INDEX_FIELDS:
            raise refuse(f"unknown field %{field} (use {fields}, or %% for a literal %)")
        i += 2
    # The fields give digits only: the literal text decides the rest; the longest fields are 4 digits (%Y, %G).
    name = datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC).strftime(pattern)
    if name != name.lower():
        raise refuse("Elasticsearch index names are lower case")
    bad = sorted({c for c in name if c in INDEX_FORBIDDEN})
    if bad:
        shown = ", ".join("a space" if c == " " else repr(c) for c in bad)
        raise refuse(f"Elasticsearch index names cannot hold {shown}")
    if name[0] in INDEX_FORBIDDEN_START:
        raise refuse(f"Elasticsearch index names cannot start with {name[0]!r}")
    if name in (".", ".."):
        raise refuse("Elasticsearch index names cannot be . or ..")
    if len(name.encode()) > INDEX_MAX_BYTES:
        raise refuse(f"names such as this are {len(name.encode())} bytes long; Elasticsearch takes at most "
                     f"{INDEX_MAX_BYTES}")


def document_id(file_key: str, offset: int) -> str:
    """Deterministic ``_id``: 120 bits of BLAKE2b over the record's file identity and offset."""
    digest = hashlib.blake2b(f"{file_key}|{offset}".encode(), digest_size=15).digest()
    return base64.urlsafe_b64encode(digest).decode()


def dedot(labels: dict[str, str]) -> dict[str, str]:
    """Label keys with ``.`` replaced by ``_``, as Filebeat's ``labels.dedot`` and Fluent Bit's ``Replace_Dots``.

    Elasticsearch expands dots in field names into objects, so Compose's ``com.docker.compose.project`` next to
    ``com.docker.compose.project.working_dir`` (or ``app`` next to ``app.kubernetes.io/name``) would be a value
    and an object at once: every document of such a container would be refused with a mapping error."""
    return {key.replace(".", "_"): value for key, value in labels.items()}


def dedot_fields(values: dict[str, object]) -> dict[str, object]:
    """Parsed fields with ``.`` in their (top-level) keys replaced by ``_``, for the reason ``dedot`` gives."""
    if not any("." in str(k) for k in values):
        return values
    return {str(key).replace(".", "_"): value for key, value in values.items()}


def _ecs_fragment(source: LogSource) -> bytes:
    info = source.container
    container: dict[str, object] = {"id": info.container_id, "name": info.name, "image": {"name": info.image},
                                    "labels": dedot(info.labels)}
    meta: dict[str, object] = {"container": container, "host": {"name": source.host}}
    if info.pod:
        meta["kubernetes"] = {"pod": {"name": info.pod}, "namespace": info.namespace,
                              "container": {"name": info.container}}
    return orjson.dumps(meta)[1:-1]


class ElasticsearchSink(PostingSink):
    def __init__(self, uri: str, http_scheme: str, state_dir: Path, route_id: str, fields_key: str = "") -> None:
        key = fields_key or DEFAULT_FIELDS_KEY
        if key in RESERVED_KEYS or key.split(".")[0] in RESERVED_KEYS:
            raise ValueError(f"fields_key: {key!r} is a field of every document (use another name, e.g. labels)")
        self.fields_key = b',"' + key.encode() + b'":'
        parts = urlsplit(uri)
        index = unquote(parts.path.strip("/"))
        if not index:
            raise ValueError("needs an index: elasticsearch+http://host:9200/logs-lookout-%Y.%m.%d")
        check_index(index)
        self.index = index
        opts = parse_params(ES_PARAMS, dict(parse_qsl(parts.query, keep_blank_values=True)), "elasticsearch",
                            pass_through=True)
        self.op = opts["op"]
        # The pipeline parameter becomes the request's; the path is always /_bulk.
        extra = {"pipeline": opts["pipeline"]} if opts["pipeline"] else {}
        target = Target.from_route(uri, http_scheme, path="/_bulk", extra_query=extra, table=ES_PARAMS)
        super().__init__(target, state_dir, route_id)
        # Per container metadata object, host and file name (what the templates hold), not per LogSource: a source
        # is made for every file, and a cache of them would keep every rotated file's until it fills (see _fragment).
        self._frags: dict[tuple[int, str, str], tuple[ContainerInfo, bytes, bytes]] = {}
        self._index_cache: dict[str, str] = {}
        # Items per request for the payload being sent (halved on 413); starts whole for each payload.
        self._chunk_of: Payload | None = None
        self._chunk = 1
        # Names are cached per hour of the records' time, unless the index has a field finer than the hour.
        fields = set(re.findall(r"%(.)", index.replace("%%", "")))
        self._index_key_len = 13 if fields <= HOURLY_FIELDS else 19

    # --- encoding (reader thread) ---

    def _index_for(self, time: str) -> str:
        if "%" not in self.index:
            return self.index
        key = time[: self._index_key_len]  # the record's time (UTC) down to the index name's finest field
        name = self._index_cache.get(key)
        if name is None:
            if len(self._index_cache) > 1024:
                self._index_cache.clear()
            try:
                moment = datetime.strptime(key, INDEX_KEY_FORMATS[self._index_key_len])
            except ValueError:
                moment = datetime.now(UTC)
            name = self._index_cache[key] = moment.strftime(self.index)
        return name

    def _fragment(self, source: LogSource) -> tuple[bytes, bytes]:
        """The document templates of ``source``'s records. Cached by what they are made of (the container's metadata
        object, the host, the file's name), so that the file a rotation opens under the live file's name takes
        the same entry: keyed by the ``LogSource``, made once per file, the cache grew by ~2 KB per rotated file
        and kept each one's source until it reached its cap (hours of rotations at a soak's pace)."""
        info = source.container
        key = (id(info), source.host, source.path)
        cached = self._frags.get(key)
        if cached is None or cached[0] is not info:
            if len(self._frags) > 4096:
                self._frags.clear()
            frag = _ecs_fragment(source).replace(b"%", b"%%")
            path = orjson.dumps(source.path).replace(b"%", b"%%")
            tmpl = (b'{"@timestamp":"%s","message":%s,"stream":"%s",' + frag +
                    b',"log":{"file":{"path":' + path + b'},"offset":%d}}\n')
            tmpl_x = tmpl[:-3] + b"%s}%s}\n"  # with log.level, and the fields after the log object
            cached = self._frags[key] = (info, tmpl, tmpl_x)
        return cached[1], cached[2]

    def encode(self, segments: Sequence[Segment]) -> Payload:
        """One ``_bulk`` item (action line + document line) per record; each is answered on its own."""
        items = []
        dumps = orjson.dumps
        op = self.op
        for seg in segments:
            tmpl, tmpl_x = self._fragment(seg.source)
            key = seg.source.file_key
            fields = seg.fields
            for i, (time, stream, message, offset, _cut) in enumerate(seg.records):
                if not RFC3339_UTC.match(time):  # a damaged file: ES would refuse the document; index it now
                    time = utc_now_rfc3339()
                action = dumps({op: {"_index": self._index_for(time), "_id": document_id(key, offset)}}) + b"\n"
                extra = None if fields is None else fields[i]
                if extra is None:
                    items.append(action + tmpl % (time.encode(), dumps(message), stream.encode(), offset))
                    continue
                level, _severity, values = extra
                in_log = b',"level":' + dumps(level) if level else b""
                after = self.fields_key + dumps(dedot_fields(values)) if values else b""
                items.append(action + tmpl_x % (time.encode(), dumps(message), stream.encode(), offset, in_log, after))
        return Payload(items, len(items), done=[False] * len(items))

    # --- sending (event loop) ---

    async def send(self, payload: Payload) -> DeliveryResult:
        """Send what is pending in requests of up to the current chunk size; stop at the first request whose
        items (or whole answer) must be retried."""
        assert isinstance(payload.data, list) and payload.done is not None, "a _bulk payload is one item per record"
        if self._chunk_of is not payload:
            self._chunk_of, self._chunk = payload, max(len(payload.data), 1)
        result = DeliveryResult()
        while pending := payload.pending():
            chunk = pending[: self._chunk]
            try:
                answered = await self._bulk(payload.data, chunk)
            except RetryableError as exc:
                if not (result.delivered or result.dead_lettered):
                    raise
                # Earlier requests of this send (a 413 split it) were answered: their outcomes are this send's,
                # so that the dead-lettered ones are not counted as delivered with the whole request's retry.
                result.retry, result.retry_after = len(pending), exc.retry_after
                result.error = str(exc)
                break
            if answered is None:
                continue  # 413: the chunk was halved; send again right away
            retry, dead, hint = answered
            for i in chunk:
                payload.done[i] = i not in retry
            result.dead_lettered += len(dead)
            result.delivered += len(chunk) - len(retry) - len(dead)
            if retry:
                result.retry, result.retry_after = len(payload.pending()), hint
                result.error = f"{len(retry)} item(s) answered 429/5xx"
                break
        return result

    async def _bulk(self, items: list[bytes], chunk: list[int]
                    ) -> tuple[set[int], list[int], float | None] | None:
        """One request: (items to retry, items dead-lettered, Retry-After), or None after a 413 halved the chunk.
        Raises ``RetryableError`` when the whole request must be retried."""
        body = b"".join(items[i] for i in chunk)  # ends with "\n", as _bulk requires
        headers = {"Content-Type": "application/x-ndjson", **self.target.headers}
        if self.target.gzip:
            body = await asyncio.to_thread(gzip.compress, body, 1)
            headers["Content-Encoding"] = "gzip"
        try:
            async with self.session().post(self.target.url, data=body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                hint = retry_after(resp.headers.get("Retry-After"), resp.headers.get("Date"))
        except aiohttp.ClientError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise self.timed_out() from exc
        if status == 413 and len(chunk) > 1:
            self._chunk = max(len(chunk) // 2, 1)
            return None
        if retryable_request_status(status):
            raise RetryableError(f"HTTP {status}: {raw[:300]!r}", hint)
        if status >= 300:
            await self._dead_letter(items, [(i, status, raw[:1000].decode(errors="replace")) for i in chunk])
            return set(), chunk, None
        try:
            answer = orjson.loads(raw)
            results = answer["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RetryableError(f"unreadable _bulk response: {exc}") from exc
        if not isinstance(results, list):
            raise RetryableError(f"unreadable _bulk response: items is {orjson.dumps(results)[:200]!r}")
        if not answer.get("errors"):
            return set(), [], None
        if len(results) != len(chunk):
            raise RetryableError(f"_bulk answered {len(results)} items for {len(chunk)}")
        retry: set[int] = set()
        dead: list[tuple[int, int, str]] = []
        for n, (i, result) in enumerate(zip(chunk, results, strict=True)):
            outcome = next(iter(result.values())) if isinstance(result, dict) and len(result) == 1 else None
            code = outcome.get("status") if isinstance(outcome, dict) else None
            if not isinstance(outcome, dict) or not isinstance(code, int) or isinstance(code, bool):
                # Not an answer Elasticsearch gives (a proxy's, a broken one): nothing of it can be trusted.
                raise RetryableError(f"unreadable _bulk response: item {n} is {orjson.dumps(result)[:200]!r}")
            if code < 300 or (code == 409 and self.op == "create"):
                continue  # indexed, or already indexed by an earlier attempt
            if retryable_status(code):
                retry.add(i)
            else:
                dead.append((i, code, orjson.dumps(outcome.get("error")).decode()))
        await self._dead_letter(items, dead)
        return retry, [i for i, _, _ in dead], hint

    async def _dead_letter(self, items: list[bytes], dead: list[tuple[int, int, str]]) -> None:
        if not dead:
            return
        entries: list[dict[str, object]] = []
        for i, code, error in dead:
            action, _, doc = items[i].partition(b"\n")
            meta = next(iter(orjson.loads(action).values()))
            entries.append({"status": code, "error": error, "index": meta["_index"], "id": meta["_id"],
                            "document": orjson.loads(doc)})
        await asyncio.to_thread(self.dead.write, entries)

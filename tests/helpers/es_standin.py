"""HTTP receivers for the HTTP and Elasticsearch route tests, on loopback, each in its own thread and loop.

``EsStandin`` follows the documented Elasticsearch ``_bulk`` contract strictly, so a client that gets
it wrong fails here as it would against Elasticsearch:

- ``POST /_bulk`` or ``POST /<index>/_bulk``; ``Content-Type`` must be ``application/x-ndjson`` or
  ``application/json`` (else 406); ``Content-Encoding: gzip`` is decoded; a body larger than
  ``max_content_length`` (as sent, i.e. compressed) is answered 413; the body must end with a newline
  (else 400 ``illegal_argument_exception``, as Elasticsearch answers).
- Action/metadata lines ``index``, ``create`` and ``delete`` (a malformed or unknown action fails the
  whole request with 400); ``index`` and ``create`` need a source line that is a JSON object.
- Per-item answers in request order with ``status``, ``result`` or ``error``, and the top-level
  ``errors`` flag: ``create`` of an existing ``_id`` is 409 ``version_conflict_engine_exception``,
  ``index`` of one is 200 ``updated``; a document that does not fit the index mapping (a field type
  conflict with the explicit ``mapping`` given to the stand-in or with what dynamic mapping made of
  earlier documents) or whose ``message`` holds a ``poison`` string is 400
  ``document_parsing_exception``; an invalid index name is 400 ``invalid_index_name_exception``.
- HTTP basic auth (``users``) or a bearer token (``token``): 401 ``security_exception`` otherwise.
- Faults: ``fail_next(status, retry_after=..., times=n)`` answers whole requests with that status,
  ``drop_next()`` indexes a request and then closes the connection without an answer, ``slow_next(seconds)``
  indexes it and answers only after ``seconds`` (``slow_waiting`` counts the answers still waiting),
  ``garble_next(body)`` indexes it and answers 200 with ``body`` (a malformed answer), and
  ``item_fault`` (a function of the action, index, id and document returning a status or None)
  answers single items 429/5xx (``es_rejected_execution_exception``) or anything else.

Everything indexed is kept: ``docs(index)``, ``writes`` (successful writes per ``(index, _id)``, to
prove "exactly once"), and ``requests`` (one ``BulkRequest`` per request, with its item statuses).

``NdjsonReceiver`` is the ``http://`` route's receiver: NDJSON bodies (final newline required, every
line a JSON object), gzip, basic or bearer auth, scripted whole-request faults with ``Retry-After``, the slow
and garbled answers above (a garbled answer is a 200 whose body breaks off before its ``Content-Length``),
a ``reject`` predicate answering 400 for a batch, and every request logged with its arrival time.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

ItemFault = Callable[[str, str, str, dict[str, Any]], int | None]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?$")
_BAD_INDEX_CHARS = set(' "*\\<|,>/?#:')


@dataclass
class Fault:
    status: int
    retry_after: str | None = None
    drop: bool = False  # process the request, then close the connection without answering
    delay: float = 0.0  # process the request, answer after this many seconds
    body: bytes | Callable[[dict[str, Any]], bytes] | None = None  # process it, answer 200 with this (malformed)


@dataclass
class BulkRequest:
    at: float  # time.monotonic() on arrival
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    body_bytes: int
    items: list[tuple[str, str, str, int]] = field(default_factory=list)  # (action, index, _id, status)
    error: str = ""


class _ThreadServer:
    """An aiohttp application on 127.0.0.1:<free port> in a thread of its own."""

    def __init__(self) -> None:
        self.port = 0
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._faults: collections.deque[Fault] = collections.deque()
        self.slow_waiting = 0  # slow answers not given yet

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        raise NotImplementedError

    def start(self) -> _ThreadServer:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                runner = web.AppRunner(self.app(), access_log=None)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                self.port = runner.addresses[0][1]
                self._runner = runner
            except BaseException as exc:
                error.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def fail_next(self, status: int, retry_after: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After`` when given)."""
        with self.lock:
            self._faults.extend(Fault(status, retry_after) for _ in range(times))

    def drop_next(self, times: int = 1) -> None:
        """Process the next ``times`` requests normally, then close the connection without an answer."""
        with self.lock:
            self._faults.extend(Fault(200, drop=True) for _ in range(times))

    def slow_next(self, seconds: float, times: int = 1) -> None:
        """Process the next ``times`` requests normally and answer each only after ``seconds``."""
        with self.lock:
            self._faults.extend(Fault(200, delay=seconds) for _ in range(times))

    def garble_next(self, body: bytes | Callable[[dict[str, Any]], bytes], times: int = 1) -> None:
        """Process the next ``times`` requests normally and answer 200 with ``body`` instead of the answer (or what
        ``body`` makes of the answer, for ``EsStandin``)."""
        with self.lock:
            self._faults.extend(Fault(200, body=body) for _ in range(times))

    async def _slow(self, fault: Fault) -> None:
        with self.lock:
            self.slow_waiting += 1
        try:
            await asyncio.sleep(fault.delay)
        finally:
            with self.lock:
                self.slow_waiting -= 1

    def _next_fault(self) -> Fault | None:
        with self.lock:
            return self._faults.popleft() if self._faults else None

    @staticmethod
    def _error(status: int, kind: str, reason: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
                "status": status}
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

    def _auth_ok(self, request: web.Request, users: dict[str, str] | None, token: str | None) -> bool:
        if users is None and token is None:
            return True
        header = request.headers.get("Authorization", "")
        if token is not None and header == f"Bearer {token}":
            return True
        if users is not None and header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            with self.lock:
                return users.get(user) == password
        return False

    @staticmethod
    def _decode_body(request: web.Request, raw: bytes) -> bytes | web.Response:
        """aiohttp's server already decoded a gzip or deflate body (and answered 400 to a corrupt one);
        any other encoding is refused."""
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding in ("", "identity", "gzip", "deflate"):
            return raw
        return _ThreadServer._error(415, "illegal_argument_exception", f"unsupported Content-Encoding {encoding}")

    @staticmethod
    def _wire_size(request: web.Request, raw: bytes) -> int:
        """The body's size as sent (compressed when it was)."""
        return request.content_length if request.content_length is not None else len(raw)


def _flatten(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Leaf fields as (dotted path, value); objects are recursed, arrays contribute each element."""
    out: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{prefix}.{key}" if prefix else key
            # Elasticsearch expands dots in field names into objects: {"a.b": 1} is {"a": {"b": 1}}, so "a.b"
            # next to "a.b.c" makes "a.b" both a leaf and an object (a mapping conflict, 400).
            parts = key.split(".")
            for i in range(1, len(parts)):
                out.append((".".join([prefix, *parts[:i]] if prefix else parts[:i]), {}))
            if isinstance(value, dict):
                out.append((path, {}))
                out.extend(_flatten(value, path))
            elif isinstance(value, list):
                for v in value:
                    out.extend(_flatten({key: v}, prefix))
            else:
                out.append((path, value))
    return out


def _dynamic_type(value: Any) -> str | None:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "date" if _RFC3339.match(value) and len(value) >= 10 else "text"
    return None  # null: no mapping


def _fits(kind: str, value: Any) -> bool:
    """Whether Elasticsearch would accept ``value`` for a field mapped as ``kind`` (with its coercion)."""
    if value is None:
        return True
    if kind == "object":
        return isinstance(value, dict)
    if isinstance(value, dict):
        return False
    if kind in ("text", "keyword"):
        return True
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if kind in ("long", "integer"):
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):
            return value.is_integer()
        return isinstance(value, str) and re.fullmatch(r"-?\d+(\.0*)?", value.strip()) is not None
    if kind in ("float", "double"):
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return True
        try:
            float(value)
        except (TypeError, ValueError):
            return False
        return True
    if kind == "date":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and _RFC3339.match(value) is not None)
    return True


def valid_index_name(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if name != name.lower():
        return "must be lowercase"
    if name[0] in "-_+":
        return "must not start with '_', '-', or '+'"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    bad = sorted(set(name) & _BAD_INDEX_CHARS)
    if bad:
        return f"must not contain {bad}"
    if len(name.encode()) > 255:
        return "index name is too long"
    return None


class EsStandin(_ThreadServer):
    def __init__(self, users: dict[str, str] | None = None, token: str | None = None,
                 mapping: dict[str, str] | None = None, poison: tuple[str, ...] = (),
                 max_content_length: int = 100 << 20) -> None:
        super().__init__()
        self.users = users
        self.token = token
        self.template = dict(mapping or {})  # dotted field path -> type, applied to every index (a template)
        self.poison = poison
        self.max_content_length = max_content_length
        self.item_fault: ItemFault | None = None
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        self.mappings: dict[str, dict[str, str]] = {}
        self.versions: dict[tuple[str, str], int] = {}
        self.writes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.requests: list[BulkRequest] = []
        self._seq = itertools.count()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/_bulk", self.bulk)
        app.router.add_put("/_bulk", self.bulk)
        app.router.add_post("/{index}/_bulk", self.bulk)
        app.router.add_put("/{index}/_bulk", self.bulk)
        return app

    # --- what tests read ---

    def docs(self, index: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            names = [index] if index is not None else sorted(self.indices)
            return [dict(doc) for name in names for doc in self.indices.get(name, {}).values()]

    def ids(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self.lock:
            return {(i, d): doc for i, docs in self.indices.items() for d, doc in docs.items()}

    def bulk_requests(self) -> list[BulkRequest]:
        with self.lock:
            return list(self.requests)

    def set_users(self, users: dict[str, str] | None) -> None:
        with self.lock:
            self.users = users

    # --- the _bulk endpoint ---

    def _log(self, request: web.Request, status: int, size: int, items: list[tuple[str, str, str, int]] | None = None,
             error: str = "", at: float = 0.0) -> None:
        with self.lock:
            self.requests.append(BulkRequest(at or time.monotonic(), request.path, dict(request.query),
                                             {k: v for k, v in request.headers.items()}, status, size,
                                             items or [], error))

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        raw = await request.read()
        size = self._wire_size(request, raw)
        if not self._auth_ok(request, self.users, self.token):
            self._log(request, 401, size, error="unauthenticated", at=at)
            return self._error(401, "security_exception", "missing or wrong authentication credentials for REST "
                               "request [/_bulk]", {"WWW-Authenticate": 'Basic realm="security" charset="UTF-8"'})
        fault = self._next_fault()
        if fault is not None and not (fault.drop or fault.delay or fault.body is not None):
            self._log(request, fault.status, size, error="injected", at=at)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            kind = "es_rejected_execution_exception" if fault.status == 429 else "unavailable_shards_exception"
            return self._error(fault.status, kind, "injected fault", headers)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-ndjson", "application/json"):
            self._log(request, 406, size, error=f"content type {ctype!r}", at=at)
            return self._error(406, "media_type_header_exception",
                               f"Content-Type header [{ctype}] is not supported")
        if size > self.max_content_length:
            self._log(request, 413, size, error="too large", at=at)
            return web.Response(status=413, text="")
        body = self._decode_body(request, raw)
        if isinstance(body, web.Response):
            self._log(request, body.status, size, error="bad encoding", at=at)
            return body
        if not body.endswith(b"\n"):
            self._log(request, 400, size, error="no final newline", at=at)
            return self._error(400, "illegal_argument_exception", "The bulk request must be terminated by a "
                               "newline [\\n]")
        try:
            ops = self._parse(body, request.match_info.get("index"))
        except ValueError as exc:
            self._log(request, 400, size, error=str(exc), at=at)
            return self._error(400, "illegal_argument_exception", str(exc))
        started = time.monotonic()
        items = []
        logged = []
        with self.lock:
            for action, index, doc_id, doc in ops:
                result = self._apply(action, index, doc_id, doc)
                items.append({action: result})
                logged.append((action, index, result["_id"], result["status"]))
        answer = {"took": int((time.monotonic() - started) * 1000),
                  "errors": any("error" in next(iter(i.values())) for i in items), "items": items}
        self._log(request, 200, size, logged, at=at)
        if fault is not None and fault.drop:
            assert request.transport is not None
            request.transport.close()  # indexed, but the client never hears of it
            return web.Response(status=200)
        if fault is not None and fault.body is not None:  # indexed, answered garbage
            garbage = fault.body(answer) if callable(fault.body) else fault.body
            return web.Response(body=garbage, content_type="application/json")
        if fault is not None and fault.delay:
            await self._slow(fault)  # indexed; the answer comes late (the client may have given up)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    @staticmethod
    def _parse(body: bytes, path_index: str | None) -> list[tuple[str, str, str | None, dict[str, Any] | None]]:
        lines = body.split(b"\n")[:-1]  # the final newline leaves one empty string
        ops: list[tuple[str, str, str | None, dict[str, Any] | None]] = []
        i = 0
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            try:
                meta = orjson.loads(lines[i])
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"Malformed action/metadata line [{i + 1}]: {exc}") from exc
            if not isinstance(meta, dict) or len(meta) != 1:
                raise ValueError(f"Malformed action/metadata line [{i + 1}], expected START_OBJECT with one action")
            action, params = next(iter(meta.items()))
            if action not in ("index", "create", "delete"):
                raise ValueError(f"Malformed action/metadata line [{i + 1}], expected one of [create, delete, "
                                 f"index, update] but found [{action}]")
            if not isinstance(params, dict):
                raise ValueError(f"Malformed action/metadata line [{i + 1}]")
            unknown = set(params) - {"_index", "_id", "pipeline", "routing", "require_alias", "dynamic_templates"}
            if unknown:
                raise ValueError(f"Action/metadata line [{i + 1}] contains an unknown parameter [{sorted(unknown)[0]}]")
            index = params.get("_index") or path_index
            if not index:
                raise ValueError("Validation Failed: 1: index is missing;")
            doc_id = params.get("_id")
            if doc_id is not None and (not isinstance(doc_id, str) or not doc_id or len(doc_id.encode()) > 512):
                raise ValueError(f"Validation Failed: 1: id [{doc_id!r}] is invalid;")
            if action == "delete":
                if doc_id is None:
                    raise ValueError("Validation Failed: 1: id is missing;")
                ops.append((action, index, doc_id, None))
                i += 1
                continue
            if i + 1 >= len(lines):
                raise ValueError(f"The bulk request's action line [{i + 1}] has no source line")
            try:
                doc = orjson.loads(lines[i + 1])
            except orjson.JSONDecodeError:
                doc = None
            ops.append((action, index, doc_id, doc if isinstance(doc, dict) else {"__not_an_object__": True}))
            i += 2
        return ops

    def _apply(self, action: str, index: str, doc_id: str | None, doc: dict[str, Any] | None) -> dict[str, Any]:
        """One item, under the lock."""
        doc_id = doc_id or base64.urlsafe_b64encode(next(self._seq).to_bytes(8, "big")).decode().rstrip("=")

        def error(status: int, kind: str, reason: str) -> dict[str, Any]:
            return {"_index": index, "_id": doc_id, "status": status,
                    "error": {"type": kind, "reason": reason, "index": index}}

        problem = valid_index_name(index)
        if problem:
            return error(400, "invalid_index_name_exception", f"Invalid index name [{index}], {problem}")
        if self.item_fault is not None:
            status = self.item_fault(action, index, doc_id, doc or {})
            if status is not None:
                kind = "es_rejected_execution_exception" if status == 429 else "injected_exception"
                return error(status, kind, f"injected item fault {status}")
        docs = self.indices.setdefault(index, {})
        key = (index, doc_id)
        if action == "delete":
            if doc_id not in docs:
                return {"_index": index, "_id": doc_id, "status": 404, "result": "not_found"}
            del docs[doc_id]
            return {"_index": index, "_id": doc_id, "status": 200, "result": "deleted"}
        assert doc is not None
        if "__not_an_object__" in doc:
            return error(400, "document_parsing_exception", "[1:1] failed to parse: source is not a JSON object")
        if action == "create" and doc_id in docs:
            return error(409, "version_conflict_engine_exception",
                         f"[{doc_id}]: version conflict, document already exists (current version "
                         f"[{self.versions[key]}])")
        message = doc.get("message")
        if isinstance(message, str) and any(p in message for p in self.poison):
            return error(400, "document_parsing_exception", "[1:2] failed to parse field [message]: poison")
        mapping = self.mappings.setdefault(index, dict(self.template))
        added = {}
        for path, value in _flatten(doc):
            kind = mapping.get(path) or added.get(path)
            if kind is None:
                dynamic = _dynamic_type(value)
                if dynamic is not None:
                    added[path] = dynamic
                continue
            if not _fits(kind, value):
                return error(400, "document_parsing_exception",
                             f"[1:1] failed to parse field [{path}] of type [{kind}] in document with id "
                             f"'{doc_id}'. Preview of field's value: '{value}'")
        mapping.update(added)
        existed = doc_id in docs
        docs[doc_id] = doc
        self.versions[key] = self.versions.get(key, 0) + 1
        self.writes[key] += 1
        return {"_index": index, "_id": doc_id, "_version": self.versions[key],
                "result": "updated" if existed else "created",
                "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": next(self._seq),
                "_primary_term": 1, "status": 200 if existed else 201}


@dataclass
class HttpRequest:
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    records: list[dict[str, Any]]
    body_bytes: int


class NdjsonReceiver(_ThreadServer):
    """The receiver of an ``http://`` route: NDJSON batches, faults on demand."""

    def __init__(self, users: dict[str, str] | None = None, token: str | None = None,
                 reject: Callable[[list[dict[str, Any]]], bool] | None = None) -> None:
        super().__init__()
        self.users = users
        self.token = token
        self.reject = reject  # a batch for which this is true is answered 400
        self.requests: list[HttpRequest] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def accepted(self) -> list[dict[str, Any]]:
        """Records of every request answered 2xx, in arrival order."""
        with self.lock:
            return [r for req in self.requests if 200 <= req.status < 300 for r in req.records]

    def log(self) -> list[HttpRequest]:
        with self.lock:
            return list(self.requests)

    def _record(self, request: web.Request, status: int, records: list[dict[str, Any]], size: int,
                at: float) -> None:
        with self.lock:
            wall = time.time() - (time.monotonic() - at)
            self.requests.append(HttpRequest(at, wall, request.path, dict(request.query), dict(request.headers),
                                             status, records, size))

    async def handle(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        raw = await request.read()
        size = self._wire_size(request, raw)
        if request.method != "POST":
            return web.Response(status=405)
        if not self._auth_ok(request, self.users, self.token):
            self._record(request, 401, [], size, at)
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        body = self._decode_body(request, raw)
        if isinstance(body, web.Response):
            self._record(request, body.status, [], size, at)
            return body
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        records = []
        problem = ""
        if ctype != "application/x-ndjson":
            problem = f"Content-Type {ctype!r} is not application/x-ndjson"
        elif not body.endswith(b"\n"):
            problem = "NDJSON body without a final newline"
        else:
            for n, line in enumerate(body.split(b"\n")[:-1], 1):
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict):
                    problem = f"line {n} is not a JSON object"
                    break
                records.append(doc)
        if problem:
            self._record(request, 400, records, size, at)
            return web.Response(status=400, text=problem)
        fault = self._next_fault()
        if fault is not None and fault.drop:
            self._record(request, 200, records, size, at)
            assert request.transport is not None
            request.transport.close()  # accepted, but the client never hears of it
            return web.Response(status=200)
        if fault is not None and fault.delay:
            self._record(request, 200, records, size, at)
            await self._slow(fault)  # accepted; the answer comes late (the client may have given up)
            return web.Response(status=200, text="ok")
        if fault is not None and fault.body is not None:
            self._record(request, 200, records, size, at)
            assert request.transport is not None and isinstance(fault.body, bytes)
            # Accepted; the answer's body breaks off before its Content-Length (a proxy cut it).
            request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                                    % (len(fault.body) + 100, fault.body))
            request.transport.close()
            return web.Response(status=200)
        if fault is not None:
            self._record(request, fault.status, records, size, at)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return web.Response(status=fault.status, text="injected fault", headers=headers)
        if self.reject is not None and self.reject(records):
            self._record(request, 400, records, size, at)
            return web.Response(status=400, text="rejected: a record this receiver refuses")
        self._record(request, 200, records, size, at)
        return web.Response(status=200, text="ok")

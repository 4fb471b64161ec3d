"""What the HTTP and Elasticsearch sinks share: target URL and auth from the route, TLS, retry
classification (network errors, 429 and 5xx are retried, honouring Retry-After; other 4xx are
final), and the dead-letter file for records a receiver refused for good."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import aiohttp
import orjson
import structlog

from agent.model import RetryableError
from agent.params import (
    ROUTE_PARAMS,
    Param,
    client_tls_context,
    one_of,
    parse_bool,
    parse_params,
    parse_seconds,
    text,
)

# The options of ``http(s)://`` routes; any query parameter that is neither one of these nor a route option
# (agent.params.ROUTE_PARAMS) is passed on to the receiver in the request's URL.
PARAMS = (
    Param("gzip", parse_bool, False, "compress request bodies (Content-Encoding: gzip)"),
    Param("timeout", parse_seconds, 30.0, "seconds a request may take"),
    Param("ca", text, "", "TLS: CA bundle to verify the receiver with"),
    Param("cert", text, "", "TLS: client certificate (PEM)"),
    Param("key", text, "", "TLS: client key (PEM)"),
    Param("verify", parse_bool, True, "TLS: verify the receiver's certificate and name"),
)
# ``elasticsearch+http(s)://`` takes these too.
ES_PARAMS = (
    *PARAMS,
    Param("op", one_of("create", "index"), "create", "_bulk action: create (data streams, no overwrite) or index"),
    Param("pipeline", text, "", "ingest pipeline for every request"),
)


log = structlog.get_logger("lookout.http")


def retry_after(value: str | None, date: str | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped at 5 minutes. A date is taken relative to the
    answer's own ``Date`` (both by the receiver's clock, RFC 9110 §10.2.3) when it has one, else to this host's
    clock: a clock that is off (or stepped) must not turn "in 2 s" into an hour."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        try:
            now = parsedate_to_datetime(date).timestamp() if date else time.time()
        except (TypeError, ValueError):
            now = time.time()
        seconds = when - now
    return min(max(seconds, 0.0), 300.0)


# The whole request was refused for the route's credentials, not for its records: retrying keeps the records
# in their files (backpressure) until the operator fixes the credentials, where dead-lettering them would divert
# the entire stream. Both HTTP sinks treat them alike.
AUTH_STATUSES = frozenset({401, 403, 407})


def retryable_status(status: int) -> bool:
    """429 and 5xx: the receiver may take the same request later."""
    return status == 429 or status >= 500


def retryable_request_status(status: int) -> bool:
    """For a whole request: 429, 5xx and the authentication refusals (``AUTH_STATUSES``)."""
    return retryable_status(status) or status in AUTH_STATUSES


class Credentials(NamedTuple):
    """HTTP basic authentication from the route URI's userinfo (RFC 7617)."""

    login: str
    password: str

    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.login}:{self.password}".encode()).decode("ascii")


@dataclass(frozen=True)
class Target:
    """Where and how to POST, from a route URI such as ``https://user:pass@host:9200/path?x=y``."""

    url: str
    auth: Credentials | None
    headers: Mapping[str, str]
    ssl_context: ssl.SSLContext | bool
    gzip: bool
    timeout: float

    @classmethod
    def from_route(cls, uri: str, http_scheme: str, path: str | None = None,
                   extra_query: Mapping[str, str] | None = None, table: Sequence[Param] = PARAMS) -> Target:
        parts = urlsplit(uri)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        opts = parse_params(table, params, http_scheme, pass_through=True)
        own = {p.name for p in (*ROUTE_PARAMS, *table)}
        passthrough = {k: v for k, v in params.items() if k not in own}
        passthrough.update(extra_query or {})
        host = parts.hostname or ""
        if not host:
            raise ValueError("needs a host")
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        query = f"?{urlencode(passthrough)}" if passthrough else ""
        url = f"{http_scheme}://{netloc}{path if path is not None else (parts.path or '/')}{query}"
        # userinfo is percent-encoded in a URI (RFC 3986 §3.2.1): "p%40ss" is the password "p@ss".
        auth = Credentials(unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        headers = {}
        token = os.environ.get("LOOKOUT_HTTP_TOKEN", "")
        if auth is not None:
            headers["Authorization"] = auth.header()
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        ctx: ssl.SSLContext | bool = True
        if http_scheme == "https":
            ctx = client_tls_context(opts["ca"], opts["cert"], opts["key"])  # ValueError naming a bad file
            if not opts["verify"]:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        return cls(url, auth, headers, ctx, opts["gzip"], opts["timeout"])


class DeadLetters:
    """Appends records a receiver rejected for good to ``<state-dir>/dead-letter/<12 hex of sha1(route id)>.ndjson``."""

    def __init__(self, state_dir: Path, route_id: str) -> None:
        digest = hashlib.sha1(route_id.encode()).hexdigest()[:12]
        self.path = state_dir / "dead-letter" / f"{digest}.ndjson"
        self.route_id = route_id

    def write(self, entries: list[dict[str, object]]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = b"".join(orjson.dumps({"route": self.route_id, "at": time.time(), **e}) + b"\n" for e in entries)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # A full state directory: no torn line is left behind; the records stay unacknowledged, retried.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        statuses = sorted({str(e.get("status")) for e in entries})
        log.warning("route_records_dead_lettered", route=self.route_id, records=len(entries),
                    statuses=",".join(statuses), path=str(self.path))


class PostingSink:
    """What the NDJSON and Elasticsearch sinks share: the target, the dead-letter file and one keep-alive aiohttp
    session, opened on first use."""

    def __init__(self, target: Target, state_dir: Path, route_id: str) -> None:
        self.target = target
        self.dead = DeadLetters(state_dir, route_id)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.target.timeout),
                connector=aiohttp.TCPConnector(ssl=self.target.ssl_context, limit=4))
        return self._session

    def timed_out(self) -> RetryableError:
        """The error for a request that had no (whole) answer within the route's ``timeout=``: retried."""
        return RetryableError(f"no answer within {self.target.timeout:g}s (timeout=)")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

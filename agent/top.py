"""``lookout top``: a live view of a running agent, as ``docker stats`` or ``vector top``.

It polls ``GET /api/v1/containers`` and ``GET /routes`` (docs/API.md) every ``--interval`` and shows the
containers by CPU, memory, network and log lines per second, and the routes with their lag and errors. Keys
(read without echo) sort and quit; ``--once`` prints one plain table for scripts (also what happens when standard
output is not a terminal).

Rates come from the agent's ``rates`` where it serves them; where it does not (an agent older than docs/API.md, or
null: its first collection) CPU and network rates are computed here from two successive snapshots of the cumulative
counters (log rates then stay unknown).

The pure parts (rows from the JSON, sorting, formatting, the tables) are in agent.top_data; the terminal loop is
three threads: the poller (blocking HTTP), the key reader (stdin in cbreak mode) and the main thread that redraws
on whatever either of them queued.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import select
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.client import HTTPException
from typing import Any, TextIO

import orjson

from agent import __version__
from agent.client import ClientError, refusal, ssl_context
from agent.top_data import (
    KEYS,
    ROUTE_COLUMNS,
    ROUTES_NOT_AVAILABLE,
    Route,
    Snapshot,
    SortKey,
    columns_for,
    host_line,
    needs_two_samples,
    plain_report,
    route_cells,
    routes,
    snapshot,
    sort_rows,
)

# --once against an agent without ``rates``: how long to wait for a second, newer snapshot (the agent's default
# housekeeping interval is 10 s, so its snapshot may not change between two polls --interval apart).
_SECOND_SNAPSHOT_WAIT = 15.0
_TIMEOUT = 10.0  # per request


# --- HTTP -------------------------------------------------------------------------------------------------------


class NotAvailable(ClientError):
    """404: this agent has no such endpoint (older than docs/API.md)."""


@dataclass
class Api:
    """Blocking GETs of the agent's JSON endpoints (urllib; called from the poller thread or for --once)."""

    url: str
    insecure: bool = False
    cacert: str | None = None
    timeout: float = _TIMEOUT
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        context = ssl_context(self.url, self.insecure, self.cacert)
        # No proxies from the environment: the agent is on this host or this network (aiohttp's default too).
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str) -> Any:
        url = self.url + path
        request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                       "User-Agent": f"lookout-top/{__version__}"})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                text = refusal(exc.code, exc.reason, url, exc.read())
            raise (NotAvailable if exc.code == 404 else ClientError)(text) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach the agent at {self.url}: {exc.reason}") from None
        except (OSError, HTTPException) as exc:  # timeouts, resets, a peer that is not speaking HTTP
            raise ClientError(f"cannot reach the agent at {self.url}: {exc or type(exc).__name__}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ClientError(f"GET {url}: the answer is not JSON (is {self.url} a Lookout agent?)") from None

    def containers(self) -> dict[str, Any]:
        doc = self.get("/api/v1/containers")
        if not isinstance(doc, dict) or not isinstance(doc.get("containers"), list):
            raise ClientError(f"GET {self.url}/api/v1/containers: no container list (is it a Lookout agent?)")
        return doc

    def routes(self) -> tuple[Route, ...] | None:
        """The routes, or None when the agent has no /routes."""
        try:
            doc = self.get("/routes")
        except NotAvailable:
            return None
        if not isinstance(doc, dict):
            raise ClientError(f"GET {self.url}/routes: not a route list")
        return routes(doc)


@dataclass(frozen=True)
class Poll:
    """One round of requests: the containers answer and the routes, or what went wrong."""

    doc: dict[str, Any] | None
    routes: tuple[Route, ...] | None
    error: str | None = None
    routes_error: str | None = None
    at: float = field(default_factory=time.time)


def poll(api: Api) -> Poll:
    try:
        doc = api.containers()
    except ClientError as exc:
        return Poll(None, None, error=str(exc))
    try:
        return Poll(doc, api.routes())
    except ClientError as exc:
        return Poll(doc, None, routes_error=str(exc))


# --- --once -----------------------------------------------------------------------------------------------------


def once(api: Api, interval: float, out: TextIO, key: SortKey = SortKey.CPU, reverse: bool = False,
         sleep: Callable[[float], None] = time.sleep) -> int:
    first = poll(api)
    if first.error is not None or first.doc is None:
        raise ClientError(first.error or "no answer")
    result, previous = first, None
    if needs_two_samples(first.doc):
        # An agent without ``rates``: CPU and network need a second, newer snapshot of the counters.
        deadline = time.monotonic() + interval + _SECOND_SNAPSHOT_WAIT
        wait = interval
        while True:
            sleep(wait)
            second = poll(api)
            if second.error is not None or second.doc is None:
                raise ClientError(second.error or "no answer")
            if second.doc.get("timestamp") != first.doc.get("timestamp") or time.monotonic() >= deadline:
                result, previous = second, first.doc
                break
            wait = min(interval, 0.5)
    assert result.doc is not None
    out.write(plain_report(snapshot(result.doc, previous), result.routes, key, reverse, result.routes_error))
    out.flush()
    return 0


# --- the live view ----------------------------------------------------------------------------------------------


@dataclass
class View:
    """What the live screen shows; changed only by the main thread."""

    url: str
    key: SortKey = SortKey.CPU
    reverse: bool = False
    snap: Snapshot | None = None
    doc: dict[str, Any] | None = None  # the answer ``snap`` was made from
    routes: tuple[Route, ...] | None = None
    routes_error: str | None = None
    error: str | None = None
    updated: float | None = None

    def take(self, result: Poll) -> None:
        """A poll's result. Without the agent's rates, a snapshot replaces the shown one only once it is newer."""
        self.error = result.error
        if result.doc is None:
            return
        self.routes, self.routes_error = result.routes, result.routes_error
        self.updated = result.at
        if self.doc is not None and result.doc.get("timestamp") == self.doc.get("timestamp") \
                and needs_two_samples(result.doc):
            return  # the same snapshot again: computed rates would be 0/0
        self.snap = snapshot(result.doc, self.doc)
        self.doc = result.doc

    def press(self, char: str) -> bool:
        """A key; False to quit."""
        if char in ("q", "Q", "\x04"):  # q or Ctrl-D
            return False
        if char in KEYS:
            new = KEYS[char]
            if new is self.key:
                self.reverse = not self.reverse
            else:
                self.key, self.reverse = new, False
        elif char == "r":
            self.reverse = not self.reverse
        return True


FOOTER = "  ".join([*(f"{k} {v.value}" for k, v in KEYS.items()), "r reverse", "q quit"])


def render(view: View, height: int, unicode: bool = True) -> Any:
    """The screen, as rich renderables: header, containers (as many as fit), routes, footer."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    down, up = ("▼", "▲") if unicode else ("v", "^")
    header = Text()
    header.append("lookout top", style="bold")
    header.append(f"  {view.url}")
    if view.updated is not None:
        header.append(f"  {datetime.fromtimestamp(view.updated).strftime('%H:%M:%S')}", style="dim")
    if view.error:
        header.append(f"\n{view.error}", style="bold red")
    elif view.snap is not None:
        header.append("\n" + host_line(view.snap.host))
        if not view.snap.rates_from_agent:
            header.append("  (rates computed here: this agent serves no rates, so no log rates)", style="dim")

    route_table: Any
    route_lines = 1
    if view.routes_error:
        route_table = Text(f"routes: {view.routes_error}", style="red")
    elif view.routes is None:
        route_table = Text(ROUTES_NOT_AVAILABLE, style="dim")
    elif not view.routes:
        route_table = Text("routes: none", style="dim")
    else:
        table_of_routes = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
        headers, rows_text = route_cells(view.routes)
        last = len(headers) - 1
        for i, (title, _cell, numeric) in enumerate(ROUTE_COLUMNS):
            # Only the last column (the URI) gives way on a narrow terminal: the numbers keep their width.
            width = max(len(title), *(len(r[i]) for r in rows_text)) if i != last else None
            table_of_routes.add_column("URI" if i == last else title, justify="right" if numeric else "left",
                                       no_wrap=True, min_width=width, overflow="ellipsis")
        state_style = {"running": "green", "stalled": "yellow", "retrying": "yellow", "failed": "bold red"}
        for route, texts in zip(view.routes, rows_text, strict=True):
            cells: list[Any] = list(texts)
            cells[1] = Text(texts[1], style=state_style.get(route.state, ""))
            cells[last] = route.uri
            table_of_routes.add_row(*cells)
        # Errors below the table, whole and wrapped: a narrow terminal must not cut off what is wrong.
        errors = [Text(f"{r.id}: {r.error}", style="red") for r in view.routes if r.error]
        route_table = Group(table_of_routes, *errors)
        route_lines = len(view.routes) + len(errors) + 2

    rows = sort_rows(view.snap.rows, view.key, view.reverse) if view.snap else []
    columns = columns_for(rows)
    room = max(2, height - 3 - 3 - route_lines - 2)  # header, table header and rule, routes, footer
    hidden = 0
    if len(rows) > room:
        hidden = len(rows) - (room - 1)
        rows = rows[: room - 1]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        title = column.title
        if column.sort is view.key and title != "NET TX/s":
            title += " " + (up if view.reverse else down)
        table.add_column(title, justify="right" if column.numeric else "left", no_wrap=True,
                         header_style="bold reverse" if column.sort is view.key else "bold",
                         overflow="ellipsis", max_width=40 if column.title in ("NAME", "IMAGE") else None)
    for row in rows:
        table.add_row(*(c.cell(row) for c in columns))
    parts: list[Any] = [header, table]
    if hidden:
        parts.append(Text(f"… {hidden} more (make the terminal taller)", style="dim"))
    if view.snap is not None and not view.snap.rows:
        parts.append(Text("no containers", style="dim"))
    parts += [Text(""), route_table, Text(""), Text(FOOTER, style="reverse")]
    return Group(*parts)


class Keys:
    """Single key presses from a terminal on stdin, without echo (cbreak mode), queued as ``("key", char)``.

    Ctrl-C still interrupts (cbreak keeps signals). The terminal's mode is restored on exit.
    """

    def __init__(self, events: queue.Queue[tuple[str, Any]], stream: TextIO = sys.stdin) -> None:
        self.events = events
        self.stream = stream
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: Any = None

    def __enter__(self) -> Keys:
        try:
            fd = self.stream.fileno()
        except (OSError, ValueError):
            return self
        if not os.isatty(fd):
            return self  # no keys: Ctrl-C quits
        import termios
        import tty

        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._read, args=(fd,), name="lookout-top-keys", daemon=True)
        self._thread.start()
        return self

    def _read(self, fd: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 64)
            if not data:
                self.events.put(("key", "\x04"))  # end of input: as Ctrl-D
                return
            if data.startswith(b"\x1b"):
                continue  # arrows, function keys: escape sequences, not our keys
            for char in data.decode(errors="ignore"):
                self.events.put(("key", char))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)


def _poller(api: Api, interval: float, events: queue.Queue[tuple[str, Any]], stop: threading.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        events.put(("poll", poll(api)))
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def live(api: Api, interval: float, first: Poll, key: SortKey = SortKey.CPU, reverse: bool = False) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    view = View(api.url, key, reverse)
    view.take(first)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()
    poller = threading.Thread(target=_poller, args=(api, interval, events, stop), name="lookout-top-poll",
                              daemon=True)
    unicode = console.encoding.lower().startswith("utf")
    try:
        with Keys(events), Live(render(view, console.size.height, unicode), console=console, screen=True,
                                auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as screen:
            poller.start()
            while True:
                kind, value = events.get()
                if kind == "key":
                    if not view.press(value):
                        break
                else:
                    view.take(value)
                screen.update(render(view, console.size.height, unicode), refresh=True)
    finally:
        stop.set()
    return 0


# --- command line -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, url_type: Callable[[str], str],
                  interval_type: Callable[[str], float]) -> None:
    from agent.client import DEFAULT_URL

    parser.add_argument("--url", type=url_type, default=DEFAULT_URL,
                        help=f"the agent's address (default {DEFAULT_URL}; https://… for an agent with TLS)")
    parser.add_argument("--interval", type=interval_type, default=2.0, metavar="DURATION",
                        help="how often to ask the agent (default 2s)")
    parser.add_argument("--once", action="store_true",
                        help="print one plain table and exit (also when standard output is not a terminal)")
    parser.add_argument("--sort", choices=[k.value for k in SortKey], default=SortKey.CPU.value,
                        help="the column to sort by first (default cpu)")
    parser.add_argument("--insecure", action="store_true", help="https: do not verify the agent's certificate")
    parser.add_argument("--cacert", metavar="FILE", help="https: verify the agent's certificate against this CA")


def main(args: argparse.Namespace) -> int:
    key = SortKey(args.sort)
    try:
        api = Api(args.url, args.insecure, args.cacert)
        if args.once or not sys.stdout.isatty():
            return once(api, args.interval, sys.stdout, key)
        first = poll(api)
        if first.error is not None:
            raise ClientError(first.error)
        return live(api, args.interval, first, key)
    except ClientError as exc:
        print(f"lookout top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `lookout top --once | head -1`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


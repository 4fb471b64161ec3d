"""``lookout tail``: follow a running agent's container logs (``GET /logs``, docs/API.md) on a terminal or a pipe.

It asks for NDJSON (``?format=json``) with the filters given (``--name``, ``--id``, ``--image``, ``--label``,
``--stream``, ``--namespace``, ``--tail``) and the token of ``--api-token-file``, and prints each record:

- on a terminal, ``name stream | message``: the name in a colour of its own (the same colour for the same name on
  every run), stderr in red, control characters in messages made visible so a container cannot drive the terminal;
- through a pipe, ``name|message`` as logspout's and the agent's own plain format;
- with ``--json``, the agent's NDJSON lines as they are.

The agent's ``{"missed": N}`` (this client read too slowly) and reconnects are notices on stderr. When the stream
breaks after it was established, it is requested again with a growing pause (what was logged meanwhile is not
shown); Ctrl-C ends it quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from agent import __version__
from agent.client import ClientError, display_name, refusal, ssl_context

if TYPE_CHECKING:
    import aiohttp

TOKEN_ENV = "LOOKOUT_API_TOKEN_FILE"
# Name colours: readable on dark and light backgrounds; no red (stderr has it) and no plain white or black.
PALETTE = ("cyan", "green", "yellow", "blue", "magenta", "bright_cyan", "bright_green", "bright_blue",
           "bright_magenta", "dark_orange", "purple", "turquoise4")
STDERR_STYLE = "red"
NOTICE_STYLE = "dim yellow"
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0

# C0 controls but tab, DEL and C1 controls, shown as \xNN on a terminal (ESC would start an escape sequence).
_VISIBLE_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0))}


class UsageError(Exception):
    """A bad option found after parsing (an unreadable token file): one line, exit 2."""


class Mode(StrEnum):
    TERMINAL = "terminal"  # name stream | message, coloured
    PLAIN = "plain"  # name|message
    JSON = "json"  # the NDJSON lines as received


# --- the pure parts -------------------------------------------------------------------------------------------


def query(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The query of ``GET /logs``: NDJSON, and the filters given (docs/API.md names them as the routes' filters)."""
    params = [("format", "json")]
    for option, name in (("name", "filter.name"), ("id", "filter.id"), ("image", "filter.image"),
                         ("stream", "filter.sources"), ("namespace", "filter.namespace")):
        value = getattr(args, option, None)
        if value:
            params.append((name, value))
    if getattr(args, "label", None):
        params.append(("filter.labels", ",".join(args.label)))
    if getattr(args, "tail", None) is not None:
        params.append(("tail", str(args.tail)))
    return params


def colour_for(name: str) -> str:
    """A colour of the palette for a container name: the same on every run and every host (CRC-32, not hash())."""
    return PALETTE[zlib.crc32(name.encode("utf-8", "surrogatepass")) % len(PALETTE)]


def visible(message: str) -> str:
    return message.translate(_VISIBLE_CONTROLS)


def record_name(record: Mapping[str, Any]) -> str:
    return display_name(record)


def plain_line(record: Mapping[str, Any]) -> str:
    return f"{record_name(record)}|{record.get('message', '')}\n"


def missed(record: Mapping[str, Any]) -> int | None:
    """N for the agent's ``{"missed": N}`` line (records this client lost by reading too slowly), else None."""
    value = record.get("missed")
    return value if isinstance(value, int) and "message" not in record else None


def missed_notice(count: int) -> str:
    return f"missed {count} record{'s' if count != 1 else ''} (this client read too slowly)"


Paint = Callable[[str, str], str]  # (text, rich style) -> text with the style's escape codes


def no_paint(text: str, style: str) -> str:
    return text


def rich_paint(color_system: str | None) -> Paint:
    """Escape codes made by rich for this terminal's colour system (none where it has no colours or NO_COLOR)."""
    if color_system is None:
        return no_paint
    from rich.color import ColorSystem
    from rich.style import Style

    system = {"standard": ColorSystem.STANDARD, "256": ColorSystem.EIGHT_BIT, "truecolor": ColorSystem.TRUECOLOR,
              "windows": ColorSystem.WINDOWS}.get(color_system, ColorSystem.STANDARD)
    prefixes: dict[str, tuple[str, str]] = {}

    def paint(text: str, style: str) -> str:
        if style not in prefixes:
            marker = "\0"
            before, _, after = Style.parse(style).render(marker, color_system=system).partition(marker)
            prefixes[style] = (before, after)
        before, after = prefixes[style]
        return f"{before}{text}{after}"

    return paint


@dataclass
class TerminalFormat:
    """``name stream | message`` with the names padded to the longest seen so far, so the bars line up."""

    paint: Paint = no_paint
    width: int = 0

    def line(self, record: Mapping[str, Any]) -> str:
        name = record_name(record)
        self.width = max(self.width, len(name))
        stream = str(record.get("stream") or "")
        message = visible(str(record.get("message", "")))
        padded = self.paint(name.ljust(self.width), colour_for(name))
        if stream == "stderr":
            return f"{padded} {self.paint(stream, STDERR_STYLE)} | {self.paint(message, STDERR_STYLE)}\n"
        return f"{padded} {stream.ljust(6)} | {message}\n"


class Printer:
    """Turns the NDJSON lines of the stream into output lines; notices go to ``notice``."""

    def __init__(self, out: BinaryIO, mode: Mode, notice: Callable[[str], None], paint: Paint = no_paint) -> None:
        self.out = out
        self.mode = mode
        self.notice = notice
        self.terminal = TerminalFormat(paint)

    def lines(self, lines: Sequence[bytes]) -> None:
        out: list[str] = []
        for raw in lines:
            if not raw.strip():
                continue
            if self.mode is Mode.JSON:
                self._flush(out)
                self.out.write(raw.rstrip(b"\r") + b"\n")
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._flush(out)
                self.notice(f"not JSON from the agent: {raw[:200]!r}")
                continue
            if not isinstance(record, dict):
                continue
            count = missed(record)
            if count is not None:
                self._flush(out)  # the notice goes where the gap is
                self.notice(missed_notice(count))
                continue
            out.append(self.terminal.line(record) if self.mode is Mode.TERMINAL else plain_line(record))
        self._flush(out)
        self.out.flush()

    def _flush(self, out: list[str]) -> None:
        if out:
            self.out.write("".join(out).encode("utf-8", "surrogateescape"))
            out.clear()
            self.out.flush()


# --- the stream -----------------------------------------------------------------------------------------------


TOKEN_MAX_BYTES = 4096  # as the agent's own check of its --api-token-file (agent.config.read_token)


def read_token(path: str) -> str:
    """The token in ``path`` without surrounding whitespace, checked as the agent checks its own; the message never
    shows the file's content (it may be a token, or a key given by mistake)."""
    try:
        with open(path, "rb") as fh:
            token = fh.read(TOKEN_MAX_BYTES + 64).strip()
    except OSError as exc:
        raise UsageError(f"--api-token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise UsageError(f"--api-token-file {path}: the file is empty")
    if len(token) > TOKEN_MAX_BYTES or not all(0x21 <= byte <= 0x7E for byte in token):
        raise UsageError(f"--api-token-file {path}: the file must hold one token of printable ASCII characters "
                         f"without spaces")
    return token.decode("ascii")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


@dataclass
class Follow:
    url: str
    params: list[tuple[str, str]]
    printer: Printer
    notice: Callable[[str], None]
    token: str | None = None
    insecure: bool = False
    cacert: str | None = None
    connect_timeout: float = 10.0

    async def run(self) -> int:
        import aiohttp  # here, not at the top: `lookout run` builds this parser before it may import aiohttp

        ssl = ssl_context(self.url, self.insecure, self.cacert)
        headers = {"Accept": "application/x-ndjson", "User-Agent": f"lookout-tail/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # No read timeout: a quiet host sends nothing for as long as it likes.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=None)
        params = self.params
        established = False
        delay = BACKOFF_FIRST
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                try:
                    async with session.get(self.url + "/logs", params=params,
                                           ssl=ssl if ssl is not None else True) as response:
                        if response.status != 200:
                            text = refusal(response.status, response.reason or "", self.url + "/logs",
                                           await response.content.read(4096))
                            if response.status == 401 and not self.token:
                                text += f" (give --api-token-file, or {TOKEN_ENV})"
                            if not established or response.status < 500:
                                raise ClientError(text)  # refused or not there: asking again will not help
                            reason = text
                        else:
                            if established:
                                self.notice("reconnected (lines logged while disconnected are not shown)")
                            established, delay = True, BACKOFF_FIRST
                            params = [p for p in params if p[0] != "tail"]  # --tail once, not after reconnects
                            await self._pump(response)
                            reason = "the agent ended the stream"
                except BrokenPipeError:
                    raise  # our reader went away (`| head`): not a disconnect from the agent
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if not established:
                        raise ClientError(f"cannot reach the agent at {self.url}: {_reason(exc)}") from None
                    reason = _reason(exc)
                self.notice(f"disconnected ({reason}); reconnecting in {delay:.1f}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _pump(self, response: aiohttp.ClientResponse) -> None:
        rest = b""
        async for chunk in response.content.iter_any():
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            if lines:
                self.printer.lines(lines)
            # iter_any returns at once while the stream's buffer holds data: when printing is slower than the
            # agent sends (a busy machine, a slow pipe), this loop would never give the event loop a turn, and
            # Ctrl-C (asyncio's SIGINT handler cancels the task from the loop) would wait for the stream to pause.
            await asyncio.sleep(0)
        if rest:
            self.printer.lines([rest])


# --- command line ---------------------------------------------------------------------------------------------


def _label(text: str) -> str:
    if ":" not in text and "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} needs key:value (the value may be a glob)")
    return text


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of records")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser, url_type: Callable[[str], str]) -> None:
    from agent.client import DEFAULT_URL

    parser.add_argument("--url", type=url_type, default=DEFAULT_URL,
                        help=f"the agent's address (default {DEFAULT_URL}; https://… for an agent with TLS)")
    parser.add_argument("--api-token-file", metavar="FILE", default=os.environ.get(TOKEN_ENV) or None,
                        help=f"the file holding the agent's API token (default ${TOKEN_ENV})")
    parser.add_argument("--name", metavar="GLOB", help="containers whose name matches")
    parser.add_argument("--id", metavar="PREFIX", help="containers whose id starts so")
    parser.add_argument("--image", metavar="GLOB", help="containers whose image matches")
    parser.add_argument("--label", metavar="KEY:GLOB", type=_label, action="append",
                        help="containers with this label (repeatable: all must match)")
    parser.add_argument("--stream", choices=("stdout", "stderr"), help="only this stream")
    parser.add_argument("--namespace", metavar="GLOB", help="Kubernetes containers in a matching namespace")
    parser.add_argument("--tail", metavar="N", type=_count, help="first the last N records of each container")
    parser.add_argument("--json", action="store_true", help="print the agent's NDJSON records as they are")
    parser.add_argument("--insecure", action="store_true", help="https: do not verify the agent's certificate")
    parser.add_argument("--cacert", metavar="FILE", help="https: verify the agent's certificate against this CA")


def _notice_writer() -> Callable[[str], None]:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    paint = rich_paint(console.color_system) if console.is_terminal and not console.no_color else no_paint

    def notice(text: str) -> None:
        sys.stderr.write(paint(f"lookout tail: {text}", NOTICE_STYLE) + "\n")
        sys.stderr.flush()

    return notice


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    try:
        token = read_token(args.api_token_file) if args.api_token_file else None
    except UsageError as exc:
        print(f"lookout tail: {exc}", file=sys.stderr)
        return 2
    console = Console(highlight=False)
    mode = Mode.JSON if args.json else Mode.TERMINAL if console.is_terminal else Mode.PLAIN
    paint = rich_paint(console.color_system) if mode is Mode.TERMINAL and not console.no_color else no_paint
    notice = _notice_writer()
    printer = Printer(sys.stdout.buffer, mode, notice, paint)
    follow = Follow(args.url, query(args), printer, notice, token, args.insecure, args.cacert)
    try:
        return asyncio.run(follow.run())
    except ClientError as exc:
        print(f"lookout tail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `lookout tail | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

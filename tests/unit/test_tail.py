"""``lookout tail``'s pure parts on records captured from a running agent (tests/fixtures/data/api/logs-docker.ndjson):
the query built from the filters, colour choice, the terminal and plain lines, the printer and the token file; and the
command line's one-line errors."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from agent import cli, tail
from agent.tail import Mode, Printer, TerminalFormat

RAW = (Path(__file__).resolve().parents[1] / "fixtures" / "data" / "api" / "logs-docker.ndjson").read_bytes()
LINES = RAW.splitlines()
RECORDS: list[dict[str, Any]] = [json.loads(line) for line in LINES]
HELLO, COLOURED, OOPS, TICK = RECORDS[0], RECORDS[1], RECORDS[2], RECORDS[3]


def parse(*argv: str) -> argparse.Namespace:
    args, unknown = cli._parser().parse_known_args(["tail", *argv])
    assert not unknown
    return args


# --- the query -------------------------------------------------------------------------------------------------


def test_every_filter_goes_into_the_query_under_the_routes_filter_names() -> None:
    args = parse("--name", "web-*", "--id", "3f2a", "--image", "nginx:*", "--label", "team:api", "--label",
                 "tier=web*", "--stream", "stderr", "--namespace", "shop", "--tail", "0")
    assert tail.query(args) == [
        ("format", "json"), ("filter.name", "web-*"), ("filter.id", "3f2a"), ("filter.image", "nginx:*"),
        ("filter.sources", "stderr"), ("filter.namespace", "shop"), ("filter.labels", "team:api,tier=web*"),
        ("tail", "0"),
    ]
    assert tail.query(parse()) == [("format", "json")]


@pytest.mark.parametrize(("argv", "error"), [
    (["--label", "team"], "lookout tail: argument --label: 'team' needs key:value (the value may be a glob)"),
    (["--tail", "-1"], "lookout tail: argument --tail: '-1' is not a number of records"),
    (["--stream", "both"], "lookout tail: argument --stream: invalid choice: 'both'"),
    (["--url", "ftp://x"], "lookout tail: argument --url: 'ftp://x' is not an http:// or https:// URL"),
    (["--bogus"], "lookout tail: unrecognized arguments: --bogus"),
])
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    try:
        code = cli.main(["tail", *argv])  # an error found after argparse: returned
    except SystemExit as exc:  # argparse's: raised
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(error) and err.count("\n") == 1


def test_a_token_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    assert cli.main(["tail", "--api-token-file", str(tmp_path / "missing")]) == 2
    missing = tmp_path / "missing"
    assert capsys.readouterr().err == f"lookout tail: --api-token-file {missing}: No such file or directory\n"
    (tmp_path / "empty").write_text(" \n")
    assert cli.main(["tail", "--api-token-file", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"lookout tail: --api-token-file {tmp_path / 'empty'}: the file is empty\n"
    (tmp_path / "token").write_text("  s3cret\n")
    assert tail.read_token(str(tmp_path / "token")) == "s3cret"
    # A PEM file given by mistake: two lines would be a header injection (aiohttp raises); said without the content.
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert cli.main(["tail", "--api-token-file", str(tmp_path / "ca.pem")]) == 2
    assert capsys.readouterr().err == (f"lookout tail: --api-token-file {tmp_path / 'ca.pem'}: the file must hold one "
                                       f"token of printable ASCII characters without spaces\n")


def test_the_token_file_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tail.TOKEN_ENV, "/etc/lookout/token")
    assert parse().api_token_file == "/etc/lookout/token"
    assert parse("--api-token-file", "/other").api_token_file == "/other"


# --- colours and lines -----------------------------------------------------------------------------------------


def test_a_name_always_gets_the_same_colour_and_never_red() -> None:
    assert tail.colour_for("cli-dev-busy") == tail.colour_for("cli-dev-busy")
    assert tail.colour_for("web") == "bright_cyan"  # zlib.crc32(b"web") = 0x15c93851: the same on every run
    names = [f"web-{i}" for i in range(40)]
    assert len({tail.colour_for(n) for n in names}) >= len(tail.PALETTE) // 2
    assert not any("red" in c for c in tail.PALETTE) and tail.STDERR_STYLE == "red"


def test_plain_lines_are_name_bar_message() -> None:
    assert tail.plain_line(HELLO) == "cli-dev-mixed|hello from stdout\n"
    assert tail.plain_line(COLOURED) == "cli-dev-mixed|colour \x1b[31mred\x1b[0m and a bell \x07\n"  # as logged
    pod = {**TICK, "pod": "web-7d4b9c8f5-x2x9q", "namespace": "shop", "container": "nginx"}
    assert tail.plain_line(pod) == "web-7d4b9c8f5-x2x9q/nginx|tick Fri Dec 4 13:08:09 UTC 2026\n"


def test_terminal_lines_align_the_bars_show_the_stream_and_make_control_characters_visible() -> None:
    fmt = TerminalFormat()
    assert fmt.line(TICK) == "cli-dev-busy stdout | tick Fri Dec 4 13:08:09 UTC 2026\n"
    assert fmt.line(HELLO) == "cli-dev-mixed stdout | hello from stdout\n"
    assert fmt.line(TICK) == "cli-dev-busy  stdout | tick Fri Dec 4 13:08:09 UTC 2026\n"  # padded to the longest
    assert fmt.line(OOPS) == "cli-dev-mixed stderr | oops on stderr\n"
    assert fmt.line(COLOURED) == "cli-dev-mixed stdout | colour \\x1b[31mred\\x1b[0m and a bell \\x07\n"
    assert tail.visible("tab\tkept, CR\r DEL\x7f C1\x9b") == "tab\tkept, CR\\x0d DEL\\x7f C1\\x9b"


def test_colours_come_from_rich_for_the_terminals_colour_system() -> None:
    paint = tail.rich_paint("standard")
    assert paint("x", "cyan") == "\x1b[36mx\x1b[0m"
    assert paint("x", "red") == "\x1b[31mx\x1b[0m"
    assert tail.rich_paint(None)("x", "cyan") == "x"
    fmt = TerminalFormat(paint)
    line = fmt.line(OOPS)
    colour = {"cyan": "36", "green": "32", "yellow": "33", "blue": "34", "magenta": "35"}.get(
        tail.colour_for("cli-dev-mixed"))
    if colour:
        assert line.startswith(f"\x1b[{colour}mcli-dev-mixed\x1b[0m ")
    assert line.endswith(" \x1b[31mstderr\x1b[0m | \x1b[31moops on stderr\x1b[0m\n")
    assert "\x1b[31m" not in fmt.line(HELLO)


# --- the printer -----------------------------------------------------------------------------------------------


def printed(mode: Mode, chunks: list[list[bytes]]) -> tuple[bytes, list[str]]:
    out, notices = io.BytesIO(), []
    printer = Printer(out, mode, notices.append)
    for lines in chunks:
        printer.lines(lines)
    return out.getvalue(), notices


def test_plain_mode_prints_records_and_tells_missed_records_as_a_notice() -> None:
    out, notices = printed(Mode.PLAIN, [LINES[:3], LINES[3:]])
    assert out.decode().splitlines() == ["cli-dev-mixed|hello from stdout",
                                         "cli-dev-mixed|colour \x1b[31mred\x1b[0m and a bell \x07",
                                         "cli-dev-mixed|oops on stderr",
                                         "cli-dev-busy|tick Fri Dec 4 13:08:09 UTC 2026",
                                         "cli-dev-busy|tick Fri Dec 4 13:08:09 UTC 2026"]
    assert notices == ["missed 3 records (this client read too slowly)"]
    assert tail.missed_notice(1) == "missed 1 record (this client read too slowly)"


def test_json_mode_passes_the_lines_through_missed_included() -> None:
    out, notices = printed(Mode.JSON, [LINES])
    assert out == RAW and notices == []


def test_a_line_that_is_not_json_is_a_notice_not_a_crash() -> None:
    out, notices = printed(Mode.TERMINAL, [[b"<html>", b"", LINES[0]]])
    assert out.decode() == "cli-dev-mixed stdout | hello from stdout\n"
    assert notices == ["not JSON from the agent: b'<html>'"]


# --- the stream, against a stand-in for the agent's /logs (the client's own logic: reconnects, --tail once) -------


async def standin(logs: Any) -> tuple[str, Any]:
    """An aiohttp server on a free loopback port whose GET /logs is ``logs``: (its URL, its runner to clean up)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/logs", logs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}", runner


def test_a_refusal_is_the_agents_own_line_without_repeating_the_status() -> None:
    from agent.client import refusal

    said = b"401 Unauthorized: GET /logs needs the API token (a wrong token)\n"
    assert refusal(401, "Unauthorized", "http://a/logs", said) == \
        "GET http://a/logs: 401 Unauthorized: GET /logs needs the API token (a wrong token)"
    assert refusal(400, "Bad Request", "http://a/routes", b'{"error": "unknown scheme"}') == \
        "GET http://a/routes: 400 Bad Request: unknown scheme"
    assert refusal(502, "Bad Gateway", "http://a/logs", b"") == "GET http://a/logs: 502 Bad Gateway"


async def test_follow_prints_reconnects_after_the_stream_ends_and_asks_for_the_tail_only_once() -> None:
    import asyncio

    from aiohttp import web

    requests: list[tuple[list[tuple[str, str]], str]] = []
    second_done, release = asyncio.Event(), asyncio.Event()

    async def logs(request: web.Request) -> web.StreamResponse:
        requests.append((list(request.query.items()), request.headers.get("Authorization", "")))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        if len(requests) == 1:
            await response.write(LINES[0] + b"\n" + LINES[5][:5])  # a line split across writes
            await response.write(LINES[5][5:] + b"\n" + LINES[2] + b"\n")
            return response  # the agent ends the stream: the client comes back
        await response.write(LINES[3] + b"\n")
        second_done.set()
        await release.wait()  # then nothing, until the test ends
        return response

    url, runner = await standin(logs)
    out, notices = io.BytesIO(), []
    args = parse("--name", "cli-dev-*", "--tail", "5")
    follow = tail.Follow(url, tail.query(args), Printer(out, Mode.PLAIN, notices.append),
                         notices.append, token="s3cret")
    task = asyncio.create_task(follow.run())
    try:
        await asyncio.wait_for(second_done.wait(), 10)
        for _ in range(100):
            if out.getvalue().count(b"\n") >= 3:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        release.set()
        await runner.cleanup()
    assert out.getvalue().decode().splitlines() == ["cli-dev-mixed|hello from stdout", "cli-dev-mixed|oops on stderr",
                                                    "cli-dev-busy|tick Fri Dec 4 13:08:09 UTC 2026"]
    assert notices == ["missed 3 records (this client read too slowly)",
                       "disconnected (the agent ended the stream); reconnecting in 0.5s",
                       "reconnected (lines logged while disconnected are not shown)"]
    first, second = requests
    assert first == ([("format", "json"), ("filter.name", "cli-dev-*"), ("tail", "5")], "Bearer s3cret")
    assert second == ([("format", "json"), ("filter.name", "cli-dev-*")], "Bearer s3cret")  # no second tail


async def test_follow_stops_with_one_line_when_the_agent_refuses_or_is_not_there() -> None:
    from aiohttp import web

    from agent.client import ClientError
    from tests.helpers.agent import free_port

    async def logs(request: web.Request) -> web.Response:
        return web.Response(status=401, text="401 Unauthorized: GET /logs needs the API token "
                                             "(no Authorization: Bearer <token> header)\n")

    url, runner = await standin(logs)
    try:
        with pytest.raises(ClientError) as refused:
            await tail.Follow(url, [], Printer(io.BytesIO(), Mode.PLAIN, print), print).run()
    finally:
        await runner.cleanup()
    assert str(refused.value) == (f"GET {url}/logs: 401 Unauthorized: GET /logs needs the API token (no "
                                  f"Authorization: Bearer <token> header) (give --api-token-file, or "
                                  f"LOOKOUT_API_TOKEN_FILE)")
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClientError) as unreachable:
        await tail.Follow(nobody, [], Printer(io.BytesIO(), Mode.PLAIN, print), print).run()
    assert str(unreachable.value).startswith(f"cannot reach the agent at {nobody}: ")


class _ClosedPipe(io.BytesIO):
    def write(self, data: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_reader_that_went_away_ends_the_follow_it_is_not_a_disconnect() -> None:
    """``lookout tail | head -3``: once head exits, writing fails; asking the agent again would loop for ever."""
    import asyncio

    from aiohttp import web

    connections = 0

    async def logs(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(LINES[0] + b"\n")
        return response

    url, runner = await standin(logs)
    notices: list[str] = []
    try:
        with pytest.raises(BrokenPipeError):
            follow = tail.Follow(url, [], Printer(_ClosedPipe(), Mode.PLAIN, notices.append), notices.append)
            await asyncio.wait_for(follow.run(), 10)  # not reconnecting for ever
    finally:
        await runner.cleanup()
    assert connections == 1 and notices == []

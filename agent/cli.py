"""The ``lookout`` command line: ``run``, ``check-config``, the clients ``top`` and ``tail``, and ``--version``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import agent.structlog_import  # noqa: F401  # first: before any module of the agent imports structlog

# isort: split
from agent import __version__, tail, top
from agent.client import base_url
from agent.config import STORAGE_DURATION_NOTE, Config, ConfigError, load_config
from agent.options import add_arguments
from agent.params import parse_duration

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the culprit (exit 2), like every other configuration error."""

    error_prefix = "lookout: invalid configuration"  # the clients (top, tail) say their own name instead

    def error(self, message: str) -> NoReturn:
        hint = ""
        if "expected one argument" in message and self.error_prefix == _Parser.error_prefix:
            hint = " (a value starting with '-' needs the = form, e.g. --housekeeping-interval=-1s)"
        self.exit(2, f"{self.error_prefix}: {message}{hint}\n")


def _typed(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """An argparse ``type`` whose ValueError message is shown as it is (argparse would say only "invalid value")."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _interval(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be more than 0 (e.g. 2s, 500ms)")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lookout",
        description="Container metrics (cAdvisor-compatible /metrics) and container log shipping.",
    )
    parser.add_argument("--version", action="version", version=f"lookout {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent")
    add_arguments(run)
    check = sub.add_parser("check-config", help="validate the configuration and exit")
    add_arguments(check)
    url, interval = _typed(base_url, "url"), _typed(_interval, "duration")
    top_parser = sub.add_parser("top", help="live view of a running agent: containers and routes")
    top_parser.error_prefix = "lookout top"
    top.add_arguments(top_parser, url, interval)
    tail_parser = sub.add_parser("tail", help="follow a running agent's container logs (GET /logs)")
    tail_parser.error_prefix = "lookout tail"
    tail.add_arguments(tail_parser, url)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command in ("top", "tail"):  # clients of a running agent: no configuration of their own to load
        if unknown:
            print(f"lookout {args.command}: unrecognized arguments: {' '.join(unknown)}", file=sys.stderr)
            return 2
        return top.main(args) if args.command == "top" else tail.main(args)
    # check_route builds (never connects) each route's sink: its options' problems; check_kinds looks at the host's
    # files for the metric kinds it cannot feed.
    from agent.wiring import check_kinds, check_route

    try:
        # Every problem at once. Only run creates the state directory: check-config changes nothing on disk.
        config = load_config(args, unknown=unknown, check_route=check_route, create_state_dir=args.command == "run",
                             check_kinds=check_kinds)
    except ConfigError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"lookout: configuration ok (listen {config.listen_host}:{config.listen_port}, "
              f"host root {config.host_root}, {len(config.routes)} route(s), state in {config.state_dir})")
        if config.state_dir_note:
            print(f"lookout: {config.state_dir_note}")
        for kind, why in config.metrics_unfed.items():
            print(f"lookout: metric kind {kind} is not collected on this host: {why}")
        if config.storage_duration is not None:
            print(f"lookout: {STORAGE_DURATION_NOTE}")
        return 0
    from agent.runtime import run_agent  # the daemon's imports are not needed to check a config

    def reload() -> Config:  # SIGHUP: the same flags and environment, the TOML file read again
        again, unknown_again = parser.parse_known_args(argv)
        return load_config(again, unknown=unknown_again, check_route=check_route, check_kinds=check_kinds)

    return run_agent(config, reload)

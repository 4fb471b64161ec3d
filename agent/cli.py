"""The ``lookout`` command line: ``run``, ``check-config`` and ``--version``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from agent import __version__
from agent.config import STORAGE_DURATION_NOTE, Config, ConfigError, add_arguments, load_config


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the culprit (exit 2), like every other configuration error."""

    def error(self, message: str) -> NoReturn:
        hint = ""
        if "expected one argument" in message:
            hint = " (a value starting with '-' needs the = form, e.g. --housekeeping-interval=-1s)"
        self.exit(2, f"lookout: invalid configuration: {message}{hint}\n")


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from agent.wiring import check_route  # builds (never connects) each route's sink: its options' problems

    try:
        # Every problem at once. Only run creates the state directory: check-config changes nothing on disk.
        config = load_config(args, unknown=unknown, check_route=check_route, create_state_dir=args.command == "run")
    except ConfigError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"lookout: configuration ok (listen {config.listen_host}:{config.listen_port}, "
              f"host root {config.host_root}, {len(config.routes)} route(s), state in {config.state_dir})")
        if config.state_dir_note:
            print(f"lookout: {config.state_dir_note}")
        if config.storage_duration is not None:
            print(f"lookout: {STORAGE_DURATION_NOTE}")
        return 0
    from agent.runtime import run_agent  # the daemon's imports are not needed to check a config

    def reload() -> Config:  # SIGHUP: the same flags and environment, the TOML file read again
        again, unknown_again = parser.parse_known_args(argv)
        return load_config(again, unknown=unknown_again, check_route=check_route)

    return run_agent(config, reload)

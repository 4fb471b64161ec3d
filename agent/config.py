"""Resolved configuration: command-line flags, ``LOOKOUT_<FLAG>`` environment variables and a TOML file.

Precedence is flag > environment > file > default. Every problem is collected and reported
together (``ConfigError.problems``) so a user fixes a bad configuration in one round trip.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.params import (  # re-exported: the parsers of flags and files
    parse_bool,
    parse_duration,
    parse_list,
    parse_listen,
    parse_size,
    redact_uri,
    split_uri,
)

# cAdvisor's metric kinds (the --disable_metrics vocabulary), lib/container/factory.go.
METRIC_KINDS = frozenset(
    {
        "cpu", "percpu", "sched", "cpuLoad", "memory", "memory_numa", "cpuset", "hugetlb", "disk",
        "diskIO", "network", "tcp", "advtcp", "udp", "process", "app", "perf_event",
        "referenced_memory", "resctrl", "cpu_topology", "oom_event", "pressure",
    }
)
# cAdvisor's default --disable_metrics, less "process": Lookout serves processes and threads by
# default, as the kubelet's /metrics/cadvisor does.
DEFAULT_DISABLED_METRICS = frozenset(
    {
        "advtcp", "cpu_topology", "cpuset", "hugetlb", "memory_numa", "referenced_memory",
        "resctrl", "sched", "tcp", "udp",
    }
)

DEFAULT_STATE_DIR = Path("/var/lib/lookout")
ROUTE_SCHEMES = frozenset(
    {
        "file", "stdout", "syslog+udp", "syslog+tcp", "syslog+tls", "syslog+relp", "http", "https",
        "elasticsearch+http", "elasticsearch+https",
    }
)

class ConfigError(Exception):
    """Raised with every problem found; ``str()`` is the one line shown to the user."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class Config:
    listen_host: str = "0.0.0.0"
    listen_port: int = 9338
    host_root: Path = Path("/")
    docker_root: Path = Path("/var/lib/docker")
    docker_socket: str = "/var/run/docker.sock"
    housekeeping_interval: float = 10.0
    fs_usage_interval: float = 60.0
    state_dir: Path = DEFAULT_STATE_DIR
    store_container_labels: bool = True
    container_labels_allowlist: tuple[str, ...] = ()
    env_metadata_allowlist: tuple[str, ...] = ()
    disabled_metrics: frozenset[str] = DEFAULT_DISABLED_METRICS
    metrics_timestamps: bool = False
    log_level: str = "info"
    log_format: str = "auto"
    routes: tuple[str, ...] = ()
    read_from: str = "head"
    max_line_bytes: int = 1 << 20
    log_workers: int = -1  # -1: one per CPU (agent.logs.offload.default_workers)
    config_file: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def metric_enabled(self, kind: str) -> bool:
        return kind not in self.disabled_metrics

    def host_path(self, path: str) -> Path:
        """A host path such as ``/proc`` seen through ``--host-root``."""
        return self.host_root / path.lstrip("/")


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag, how to parse it and its help. Drives argparse, env, TOML and docs."""

    name: str
    help: str
    parse: Any = str
    flag_kind: str = "value"  # value | bool | list
    metavar: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option("listen", "HTTP address for /metrics and the API (default 0.0.0.0:9338)", parse_listen,
           metavar="HOST:PORT"),
    Option("host-root", "where the host's / is mounted (default /); prefixes /sys/fs/cgroup, /proc, "
           "/var/lib/docker and /var/log/pods", str, metavar="DIR"),
    Option("docker-root", "Docker's data root (default <host-root>/var/lib/docker)", str, metavar="DIR"),
    Option("docker-socket", "Docker Engine API socket (default /var/run/docker.sock); empty: read "
           "metadata from <docker-root>/containers/<id>/config.v2.json only", str, metavar="PATH"),
    Option("housekeeping-interval", "how often container stats are collected (default 10s)",
           parse_duration, metavar="DURATION"),
    Option("fs-usage-interval", "how often writable-layer disk usage is measured (default 1m)",
           parse_duration, metavar="DURATION"),
    Option("state-dir", "where checkpoints and dead letters live (default /var/lib/lookout)", str,
           metavar="DIR"),
    Option("store-container-labels", "export every container label as container_label_<name> "
           "(default true)", parse_bool, "bool"),
    Option("container-labels-allowlist", "only these container labels (comma list); implies "
           "--store-container-labels=false unless that is given", parse_list, "list", metavar="A,B"),
    Option("env-metadata-allowlist", "export env vars with these prefixes as container_env_<name>",
           parse_list, "list", metavar="PREFIX,..."),
    Option("disable-metrics", "cAdvisor metric kinds to skip (default "
           + ",".join(sorted(DEFAULT_DISABLED_METRICS)) + ")", parse_list, "list", metavar="KIND,..."),
    Option("enable-metrics", "if set, exactly these metric kinds (overrides --disable-metrics)",
           parse_list, "list", metavar="KIND,..."),
    Option("metrics-timestamps", "attach cAdvisor-style sample timestamps (default false, so "
           "Prometheus staleness removes a gone container's series at once)", parse_bool, "bool"),
    Option("log-level", "debug, info, warning or error (default info)", str, metavar="LEVEL"),
    Option("log-format", "json or console (default: console on a terminal, json otherwise)", str,
           metavar="FORMAT"),
    Option("route", "where to ship container logs (repeatable), e.g. file:///var/log/out.ndjson",
           str, "repeat", metavar="URI"),
    Option("read-from", "at the very first start, read existing log files from the head or the tail "
           "(default head); files that appear later are always read from the head", str, metavar="head|tail"),
    Option("max-line-bytes", "longest log record; longer ones are cut there and marked truncated "
           "(default 1MiB)", str, metavar="BYTES"),
    Option("log-workers", "processes that decode and encode log chunks beside each file and syslog TCP/TLS "
           "route's reader: auto (one per CPU, at most 4; none on one CPU) or a number, 0 for none (default auto)",
           str, metavar="N|auto"),
)
_BY_NAME = {opt.name: opt for opt in OPTIONS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file with the same settings as the flags")
    for opt in OPTIONS:
        dest = opt.name.replace("-", "_")
        if opt.flag_kind == "bool":
            parser.add_argument(f"--{opt.name}", dest=dest, nargs="?", const="true", default=None,
                                metavar="true|false", help=opt.help)
            parser.add_argument(f"--no-{opt.name}", dest=dest, action="store_const", const="false",
                                help=argparse.SUPPRESS)
        elif opt.flag_kind == "repeat":
            parser.add_argument(f"--{opt.name}", dest=dest, action="append", default=None,
                                metavar=opt.metavar, help=opt.help)
        else:
            parser.add_argument(f"--{opt.name}", dest=dest, default=None, metavar=opt.metavar,
                                help=opt.help)


def _load_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        problems.append(f"--config: {path} does not exist")
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"--config: cannot read {path}: {exc}")
        return {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name == "routes":
            name = "route"
        if name not in _BY_NAME:
            problems.append(f"--config: unknown setting {key!r} in {path}")
            continue
        out[name] = value
    return out


def _raw_settings(args: argparse.Namespace, environ: Mapping[str, str],
                  problems: list[str]) -> tuple[dict[str, Any], Path | None]:
    config_path = args.config or environ.get("LOOKOUT_CONFIG")
    settings: dict[str, Any] = {}
    if config_path:
        settings.update(_load_file(Path(config_path), problems))
    for opt in OPTIONS:
        env_name = "LOOKOUT_" + opt.name.upper().replace("-", "_")
        if env_name in environ:
            value: Any = environ[env_name]
            if opt.flag_kind == "repeat":
                # Route URIs hold commas (filter.labels=a:1,b:2): only whitespace separates them.
                value = value.split()
            settings[opt.name] = value
    for opt in OPTIONS:
        value = getattr(args, opt.name.replace("-", "_"), None)
        if value is not None:
            settings[opt.name] = value
    return settings, Path(config_path) if config_path else None


def _route_scheme_problem(uri: str) -> str | None:
    try:
        scheme = split_uri(uri).scheme
    except ValueError as exc:
        return f"{redact_uri(uri)!r}: {exc}"
    if not scheme:
        return f"{redact_uri(uri)!r} has no scheme (e.g. file:///path, syslog+tcp://host:514)"
    if scheme not in ROUTE_SCHEMES:
        return f"{redact_uri(uri)!r}: unknown scheme {scheme!r} (known: {', '.join(sorted(ROUTE_SCHEMES))})"
    return None


# Checks a route URI's options by building (never connecting) its sink: ``agent.logs.routes.check_route``, handed
# in by the CLI so that the configuration does not import the log pipeline and the sinks. It answers the problem
# as ``'<uri>': <why>``; the configuration prefixes where the URI came from.
RouteCheck = Callable[[str, Path], str | None]


def _check_state_dir(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"--state-dir: {path} cannot be written ({exc.strerror or exc})"
    return None


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None,
                unknown: Sequence[str] = (), check_state_dir: bool = True,
                check_route: RouteCheck | None = None) -> Config:
    """Resolve flags, env and file into a ``Config``; raise ``ConfigError`` listing every problem.

    Route URIs are checked for their scheme here, and for their options by ``check_route`` when given."""
    environ = os.environ if environ is None else environ
    problems = [f"unknown flag {arg.split('=')[0]!r}" for arg in unknown if arg.startswith("-")]
    problems += [f"unexpected argument {arg!r}" for arg in unknown if not arg.startswith("-")]
    raw, config_path = _raw_settings(args, environ, problems)

    values: dict[str, Any] = {}
    for name, value in raw.items():
        opt = _BY_NAME[name]
        try:
            if opt.flag_kind == "repeat":
                values[name] = tuple(value if isinstance(value, list) else [value])
            elif isinstance(value, str) or opt.flag_kind in ("bool", "list"):
                values[name] = opt.parse(value)
            elif opt.parse is parse_duration and isinstance(value, int | float):
                values[name] = float(value)
            else:
                problems.append(f"--{name}: expected a string, got {value!r}")
        except ValueError as exc:
            problems.append(f"--{name}: {exc}")

    kwargs: dict[str, Any] = {"config_file": config_path}
    if "listen" in values:
        kwargs["listen_host"], kwargs["listen_port"] = values["listen"]
    host_root = Path(values.get("host-root", "/"))
    kwargs["host_root"] = host_root
    kwargs["docker_root"] = Path(values.get("docker-root") or host_root / "var/lib/docker")
    if "docker-socket" in values:
        kwargs["docker_socket"] = values["docker-socket"]
    for name, attr in (("housekeeping-interval", "housekeeping_interval"),
                       ("fs-usage-interval", "fs_usage_interval")):
        if name in values:
            if values[name] <= 0:
                problems.append(f"--{name}: must be positive")
            kwargs[attr] = values[name]
    if "state-dir" in values:
        kwargs["state_dir"] = Path(values["state-dir"])
    allow = values.get("container-labels-allowlist", ())
    kwargs["container_labels_allowlist"] = allow
    kwargs["store_container_labels"] = values.get("store-container-labels", not allow)
    kwargs["env_metadata_allowlist"] = values.get("env-metadata-allowlist", ())

    for name in ("disable-metrics", "enable-metrics"):
        bad = [k for k in values.get(name, ()) if k not in METRIC_KINDS]
        if bad:
            problems.append(f"--{name}: unknown metric kind(s) {', '.join(bad)} "
                            f"(known: {', '.join(sorted(METRIC_KINDS))})")
    if values.get("enable-metrics"):
        kwargs["disabled_metrics"] = METRIC_KINDS - frozenset(values["enable-metrics"])
    elif "disable-metrics" in values:
        kwargs["disabled_metrics"] = frozenset(values["disable-metrics"])
    if "metrics-timestamps" in values:
        kwargs["metrics_timestamps"] = values["metrics-timestamps"]

    level = str(values.get("log-level", "info")).lower()
    if level not in {"debug", "info", "warning", "error"}:
        problems.append(f"--log-level: unknown level {level!r} (use debug, info, warning or error)")
    kwargs["log_level"] = level
    fmt = str(values.get("log-format", "auto")).lower()
    if fmt not in {"auto", "json", "console"}:
        problems.append(f"--log-format: unknown format {fmt!r} (use json or console)")
    kwargs["log_format"] = fmt

    routes = values.get("route", ())
    state_dir = Path(values.get("state-dir", DEFAULT_STATE_DIR))
    for uri in routes:
        problem = _route_scheme_problem(uri)
        if problem is None and check_route is not None:
            problem = check_route(uri, state_dir)
        if problem:
            problems.append(f"--route: {problem}")
    kwargs["routes"] = routes
    read_from = str(values.get("read-from", "head")).lower()
    if read_from not in ("head", "tail"):
        problems.append(f"--read-from: use head or tail, not {read_from!r}")
    kwargs["read_from"] = read_from
    if "max-line-bytes" in values:
        try:
            kwargs["max_line_bytes"] = parse_size(str(values["max-line-bytes"]))
        except ValueError as exc:
            problems.append(f"--max-line-bytes: {exc}")
    workers = str(values.get("log-workers", "auto")).strip().lower()
    if workers != "auto":
        if workers.isdigit() and int(workers) <= 64:
            kwargs["log_workers"] = int(workers)
        else:
            problems.append(f"--log-workers: use auto or a number from 0 to 64, not {workers!r}")

    config = Config(**kwargs)
    if check_state_dir and not any(p.startswith("--state-dir") for p in problems):
        problem = _check_state_dir(config.state_dir)
        if problem:
            problems.append(problem)
    if problems:
        raise ConfigError(problems)
    return config

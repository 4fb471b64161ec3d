"""Resolved configuration: command-line flags, ``LOOKOUT_<FLAG>`` environment variables and a TOML file.

Precedence is flag > environment > file > default. Every problem is collected and reported
together (``ConfigError.problems``) so a user fixes a bad configuration in one round trip; each names where the
value came from: the flag (``--max-line-bytes: ...``), the variable (``--max-line-bytes (LOOKOUT_MAX_LINE_BYTES):
...``) or the key and the file (``--config: max-line-bytes in /etc/lookout/lookout.toml: ...``). Checking writes
nothing: only ``run`` (``create_state_dir``) creates the state directory.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import math
import os
import ssl
import stat
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from agent.params import (  # re-exported: the parsers of flags and files
    RateLimit,
    file_problem,
    load_cert_chain,
    parse_bool,
    parse_duration,
    parse_list,
    parse_listen,
    parse_rate,
    parse_seconds,
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
# Kinds Lookout accepts (cAdvisor's vocabulary, so cAdvisor's flags keep working) but never serves, and why.
# Naming one in --enable-metrics is an error; they are off by default.
UNSERVED_METRICS = {
    "app": "custom application metrics (cAdvisor's io.cadvisor.metric.* container labels) are not collected",
    "cpuLoad": "container_cpu_load_average_10s, container_cpu_load_d_average_10s and container_tasks_state are not "
               "served: cAdvisor reads them over netlink (--enable_load_reader) and serves constant zeros without it",
    "perf_event": "Lookout does not implement perf events (cAdvisor's container_perf_events_* and "
                  "container_perf_uncore_events_* need its libpfm build and --perf_events_config)",
}
# cAdvisor's default --disable_metrics, less "process" (Lookout serves processes and threads by default, as the
# kubelet's /metrics/cadvisor does), plus the kinds Lookout never serves.
DEFAULT_DISABLED_METRICS = frozenset(
    {
        "advtcp", "cpu_topology", "cpuset", "hugetlb", "memory_numa", "referenced_memory",
        "resctrl", "sched", "tcp", "udp", *UNSERVED_METRICS,
    }
)

DEFAULT_STATE_DIR = Path("/var/lib/lookout")
# What run (log event storage_duration_ignored) and check-config say when cAdvisor's --storage_duration is carried over.
STORAGE_DURATION_NOTE = ("--storage-duration has no effect: Lookout keeps no history of stats (every scrape and API "
                         "answer is the latest collection); Prometheus keeps the history")
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
    # Why the state is not in the default directory (it could not be written, so a per-user one is used), or "".
    state_dir_note: str = ""
    store_container_labels: bool = True
    container_labels_allowlist: tuple[str, ...] = ()
    env_metadata_allowlist: tuple[str, ...] = ()
    disabled_metrics: frozenset[str] = DEFAULT_DISABLED_METRICS
    # Kinds left on by --disable-metrics (not named in --enable-metrics) that this host cannot feed: kind -> why.
    # They are in disabled_metrics; check-config prints them and run logs them (metric_kinds_not_collected).
    metrics_unfed: Mapping[str, str] = field(default_factory=dict)
    metrics_timestamps: bool = False
    docker_only: bool = False
    raw_cgroup_prefix_allowlist: tuple[str, ...] = ()
    disable_root_cgroup_stats: bool = False
    storage_duration: float | None = None  # cAdvisor's flag, accepted and without effect: Lookout keeps no history
    log_level: str = "info"
    log_format: str = "auto"
    routes: tuple[str, ...] = ()
    read_from: str = "head"
    max_line_bytes: int = 1 << 20
    multiline_timeout: float = 1.0
    log_workers: int = -1  # -1: one per CPU (agent.logs.offload.default_workers)
    log_rate_limit: RateLimit | None = None  # each container's records per second/minute/hour (agent.logs.process)
    journal: str = "auto"  # "auto": read the journal when the host has one and journalctl; "off": never
    journal_units: tuple[str, ...] = ()  # systemd units whose journal entries are shipped (collectors.logs.journal)
    api_token_file: Path | None = None
    api_token: str | None = field(default=None, repr=False)  # read from api_token_file; never logged or shown
    tls_cert: Path | None = None
    tls_key: Path | None = None
    config_file: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def metric_enabled(self, kind: str) -> bool:
        return kind not in self.disabled_metrics

    def host_path(self, path: str) -> Path:
        """A host path such as ``/proc`` seen through ``--host-root``."""
        return self.host_root / path.lstrip("/")


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag, how to parse it and its help. Drives argparse, env, TOML and docs.

    ``parse`` takes the text of a flag or variable (for ``list`` options also the TOML list). A TOML string goes the
    same way; a TOML number is taken by ``number`` where one is meant (``max-line-bytes = 65536``); any other TOML
    value is refused saying what was ``expected``."""

    name: str
    help: str
    parse: Any = str
    flag_kind: str = "value"  # value | bool | list | repeat
    metavar: str | None = None
    number: Callable[[int | float], Any] | None = None
    expected: str = "a string"


def _positive_seconds(value: int | float) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise ValueError(f"must be positive, got {_toml(value)}")
    return seconds


def _seconds(value: int | float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a duration like 10s or a number of seconds, got {_toml(value)}")
    return float(value)


def _bytes(value: int | float) -> int:
    if not isinstance(value, int):
        raise ValueError(f"expected a number of bytes or a size like 1MiB, got {_toml(value)}")
    if value < 1024:
        raise ValueError(f"expected at least 1KiB, got {value}")
    return value


def parse_workers(text: str) -> int:
    """``auto`` (-1: one per CPU, agent.logs.offload.default_workers) or a number of chunk workers from 0 to 64."""
    value = text.strip().lower()
    if value == "auto":
        return -1
    if value.isascii() and value.isdigit() and int(value) <= 64:
        return int(value)
    raise ValueError(f"use auto or a number from 0 to 64, not {text!r}")


def _workers(value: int | float) -> int:
    if isinstance(value, int) and 0 <= value <= 64:
        return value
    raise ValueError(f"use auto or a number from 0 to 64, not {_toml(value)}")


def _toml(value: Any) -> str:
    """A TOML value as the file spells it, for messages: ``1``, ``true``, ``[1, "a"]``, ``'x'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


_A_DURATION = "a duration like 10s or a number of seconds"
_A_LIST = "a list of strings or a comma-separated string"
_A_PATH = "a path (a string)"

OPTIONS: tuple[Option, ...] = (
    Option("listen", "HTTP address for /metrics and the API (default 0.0.0.0:9338)", parse_listen,
           metavar="HOST:PORT", expected="an address like \"0.0.0.0:9338\""),
    Option("host-root", "where the host's / is mounted (default /); prefixes /sys/fs/cgroup, /proc, "
           "/var/lib/docker and /var/log/pods", str, metavar="DIR", expected=_A_PATH),
    Option("docker-root", "Docker's data root (default <host-root>/var/lib/docker)", str, metavar="DIR",
           expected=_A_PATH),
    Option("docker-socket", "Docker Engine API socket (default /var/run/docker.sock); empty: read "
           "metadata from <docker-root>/containers/<id>/config.v2.json only", str, metavar="PATH",
           expected=_A_PATH),
    Option("housekeeping-interval", "how often container stats are collected (default 10s)", parse_duration,
           metavar="DURATION", number=_seconds, expected=_A_DURATION),
    Option("fs-usage-interval", "how often writable-layer disk usage is measured (default 1m)", parse_duration,
           metavar="DURATION", number=_seconds, expected=_A_DURATION),
    Option("state-dir", "where checkpoints and dead letters live (default /var/lib/lookout, or a per-user "
           "directory when that cannot be written)", str, metavar="DIR", expected=_A_PATH),
    Option("store-container-labels", "export every container label as container_label_<name> "
           "(default true)", parse_bool, "bool", expected="true or false"),
    Option("container-labels-allowlist", "only these container labels (comma list); implies "
           "--store-container-labels=false unless that is given", parse_list, "list", metavar="A,B", expected=_A_LIST),
    Option("env-metadata-allowlist", "export env vars with these prefixes as container_env_<name>",
           parse_list, "list", metavar="PREFIX,...", expected=_A_LIST),
    Option("disable-metrics", "cAdvisor metric kinds to skip (default "
           + ",".join(sorted(DEFAULT_DISABLED_METRICS)) + ")", parse_list, "list", metavar="KIND,...",
           expected=_A_LIST),
    Option("enable-metrics", "if set, exactly these metric kinds (overrides --disable-metrics)",
           parse_list, "list", metavar="KIND,...", expected=_A_LIST),
    Option("metrics-timestamps", "attach cAdvisor-style sample timestamps (default false, so "
           "Prometheus staleness removes a gone container's series at once)", parse_bool, "bool",
           expected="true or false"),
    Option("docker-only", "report only containers of a runtime (Docker, containerd/CRI, CRI-O, Podman) and the "
           "root cgroup /, no raw cgroups such as systemd services, which are then never read (default false)",
           parse_bool, "bool", expected="true or false"),
    Option("raw-cgroup-prefix-allowlist", "report only the raw cgroups whose name (the id label) starts with one "
           "of these prefixes, e.g. /system.slice/ (with or without --docker-only; / is always reported)",
           parse_list, "list", metavar="PREFIX,...", expected=_A_LIST),
    Option("disable-root-cgroup-stats", "serve no stats of the root cgroup / (its usage, network and filesystems "
           "are not read; its limits and the machine_* series stay) (default false)", parse_bool, "bool",
           expected="true or false"),
    Option("storage-duration", "accepted for cAdvisor's flag and ignored, with a warning: Lookout keeps no "
           "history, every scrape and API answer is the latest collection", parse_duration, metavar="DURATION",
           number=_seconds, expected=_A_DURATION),
    Option("log-level", "debug, info, warning or error (default info)", str, metavar="LEVEL"),
    Option("log-format", "json or console (default: console on a terminal, json otherwise)", str,
           metavar="FORMAT"),
    Option("route", "where to ship container logs (repeatable), e.g. file:///var/log/out.ndjson",
           str, "repeat", metavar="URI", expected="a route URI or a list of them (strings)"),
    Option("read-from", "at the very first start, read existing log files from the head or the tail "
           "(default head); files that appear later are always read from the head", str, metavar="head|tail"),
    Option("max-line-bytes", "longest log record; longer ones are cut there and marked truncated "
           "(default 1MiB)", parse_size, metavar="BYTES", number=_bytes,
           expected="a number of bytes or a size like 1MiB"),
    Option("multiline-timeout", "a multiline event (route option multiline, label lookout.multiline) is finished "
           "after this long with no new line; a route's multiline_timeout wins (default 1s)", parse_seconds,
           metavar="DURATION", number=_positive_seconds, expected=_A_DURATION),
    Option("log-workers", "processes that decode and encode log chunks beside each file and syslog TCP/TLS "
           "route's reader: auto (one per CPU, at most 4; none on one CPU) or a number, 0 for none (default auto)",
           parse_workers, metavar="N|auto", number=_workers, expected="auto or a number from 0 to 64"),
    Option("log-rate-limit", "at most this many log records per container and route, e.g. 1000/s, 30000/m; beyond "
           "it records are dropped, counted, and summarized in one record per interval; a container's label "
           "lookout.ratelimit overrides it (default off)", parse_rate, metavar="N/s", expected="a rate like 1000/s"),
    Option("journal", "read the systemd journal for containers with the journald log driver and --journal-units: "
           "auto (when the host keeps a journal and journalctl is installed) or off (default auto)", str,
           metavar="auto|off"),
    Option("journal-units", "systemd units whose journal entries the routes ship besides containers' (comma list, "
           "e.g. nginx,cron.service; a name without a type is a .service): an entry is a unit's when its _SYSTEMD_UNIT "
           "is it, or, written with no unit (no systemd), when its SYSLOG_IDENTIFIER is the unit's name without the "
           "type", parse_list, "list", metavar="UNIT,...", expected=_A_LIST),
    Option("api-token-file", "file holding the bearer token that the API's guarded endpoints (adding and removing "
           "routes, /logs) require; without it they answer 403", str, metavar="FILE", expected=_A_PATH),
    Option("tls-cert", "serve HTTPS with this certificate (PEM, the chain after it); needs --tls-key", str,
           metavar="FILE", expected=_A_PATH),
    Option("tls-key", "the private key of --tls-cert (unencrypted PEM)", str, metavar="FILE", expected=_A_PATH),
)
_BY_NAME = {opt.name: opt for opt in OPTIONS}
# cAdvisor's flags (reference section 4.2) whose Lookout name is not theirs with dashes for underscores.
_CADVISOR_NAMES = {"whitelisted-container-labels": "container-labels-allowlist",
                   "env-metadata-whitelist": "env-metadata-allowlist",
                   "raw-cgroup-prefix-whitelist": "raw-cgroup-prefix-allowlist",
                   "docker": "docker-socket", "port": "listen", "listen-ip": "listen"}


def lookout_name(name: str) -> str | None:
    """The Lookout option a cAdvisor spelling means (``--docker_only``, ``-raw_cgroup_prefix_whitelist=...``,
    ``whitelisted_container_labels``), for the hint in an unknown flag's or setting's problem; None if none."""
    key = name.lstrip("-").partition("=")[0].replace("_", "-")
    key = _CADVISOR_NAMES.get(key, key)
    return key if key in _BY_NAME else None


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


class Setting(NamedTuple):
    """A raw value and where it came from: ``where`` names it in problems; ``in_file`` when it is a TOML value."""

    value: Any
    where: str
    in_file: bool = False


def _load_file(path: Path, problems: list[str]) -> dict[str, Setting]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        problems.append(f"--config: {path} does not exist")
        return {}
    except OSError as exc:
        problems.append(f"--config: {path} cannot be read ({exc.strerror or type(exc).__name__})")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"--config: {path} is not valid TOML: {exc}")
        return {}
    except UnicodeDecodeError as exc:
        problems.append(f"--config: {path} is not UTF-8 text (byte {exc.start})")
        return {}
    out: dict[str, Setting] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name == "routes":
            name = "route"
        if name not in _BY_NAME:
            known = lookout_name(key)
            hint = f" (Lookout calls it {known})" if known else ""
            problems.append(f"--config: unknown setting {key!r} in {path}{hint}")
            continue
        out[name] = Setting(value, f"--config: {key} in {path}", in_file=True)
    return out


def _raw_settings(args: argparse.Namespace, environ: Mapping[str, str],
                  problems: list[str]) -> tuple[dict[str, list[Setting]], Path | None]:
    """Every setting given, by name: from the file, the environment and the flags, in this order (the last wins)."""
    config_path = args.config or environ.get("LOOKOUT_CONFIG")
    settings: dict[str, list[Setting]] = {}
    if config_path:
        for name, setting in _load_file(Path(config_path), problems).items():
            settings[name] = [setting]
    for opt in OPTIONS:
        env_name = "LOOKOUT_" + opt.name.upper().replace("-", "_")
        if env_name in environ:
            value: Any = environ[env_name]
            if opt.flag_kind == "repeat":
                # Route URIs hold commas (filter.labels=a:1,b:2): only whitespace separates them.
                value = value.split()
            settings.setdefault(opt.name, []).append(Setting(value, f"--{opt.name} ({env_name})"))
    for opt in OPTIONS:
        value = getattr(args, opt.name.replace("-", "_"), None)
        if value is not None:
            settings.setdefault(opt.name, []).append(Setting(value, f"--{opt.name}"))
    return settings, Path(config_path) if config_path else None


def _parse(opt: Option, setting: Setting) -> Any:
    """A setting's value; ``ValueError`` saying what is wrong with it (never Python's words)."""
    value = setting.value
    if not setting.in_file:  # a flag's or a variable's text (a list of them for --route)
        return tuple(value) if opt.flag_kind == "repeat" else opt.parse(value)
    if isinstance(value, str):
        return (value,) if opt.flag_kind == "repeat" else opt.parse(value)
    if opt.flag_kind == "bool" and isinstance(value, bool):
        return value
    if opt.flag_kind in ("list", "repeat") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value) if opt.flag_kind == "repeat" else opt.parse(value)
    if opt.number is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return opt.number(value)
    raise ValueError(f"expected {opt.expected}, got {_toml(value)}")


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


# Which of the given metric kinds the host under --host-root cannot feed, and why (kind -> reason), found by
# looking at its files: ``collectors.hostkinds.unfed_kinds``, handed in by the CLI like ``check_route``.
KindCheck = Callable[[Path, frozenset[str]], dict[str, str]]


def user_state_dir(environ: Mapping[str, str]) -> Path:
    """The per-user state directory (XDG Base Directory): ``$XDG_STATE_HOME/lookout`` or ``~/.local/state/lookout``."""
    xdg = environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):  # the spec: a relative path is ignored
        return Path(xdg) / "lookout"
    return Path(environ.get("HOME") or os.path.expanduser("~")) / ".local/state/lookout"


def state_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as the state directory, found without changing anything: it exists and is a
    writable directory, or its nearest existing parent is one (so ``run`` can create it); None when fine."""
    probe = path
    while True:
        try:
            st = probe.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return f"{path} cannot be created"
            probe = probe.parent
        except OSError as exc:
            return f"{path} cannot be reached ({exc.strerror or type(exc).__name__} at {probe})"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory" if probe == path else f"{path} cannot be created: {probe} is a file"
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "a read-only file system" if read_only else "permission denied"
        return f"{path} cannot be written ({why})" if probe == path else f"{path} cannot be created in {probe} ({why})"
    return None


def make_state_dir(path: Path) -> str | None:
    """``state_dir_problem``, then create the directory and write a file in it, as ``run`` does; None when fine."""
    problem = state_dir_problem(path)
    if problem:
        return problem
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"{path} cannot be written ({exc.strerror or type(exc).__name__})"
    return None


TOKEN_MAX_BYTES = 4096


def read_token(path: Path) -> str:
    """The API token in ``path``, without surrounding whitespace; ``ValueError`` that never shows the token."""
    problem = file_problem(path)
    if problem:
        raise ValueError(problem)
    try:
        with path.open("rb") as fh:
            data = fh.read(TOKEN_MAX_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    token = data.strip()
    if not token:
        raise ValueError(f"{path} is empty (it must hold the API token)")
    if len(token) > TOKEN_MAX_BYTES:
        raise ValueError(f"{path} is larger than {TOKEN_MAX_BYTES} bytes (it must hold only the API token)")
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise ValueError(f"{path} must hold one token of printable ASCII characters without spaces")
    return token.decode("ascii")


def _tls_server_context(cert: str, key: str, cert_name: str, key_name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(ctx, cert, key, cert_name, key_name)  # ValueError naming the option and the file
    return ctx


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The listener's TLS context from ``--tls-cert`` and ``--tls-key`` (checked by ``load_config``), None without
    them. Raises ``ConfigError`` when the files no longer load (changed since the configuration was read)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        return _tls_server_context(str(config.tls_cert), str(config.tls_key), "--tls-cert", "--tls-key")
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None


def listen_failure(config: Config, exc: OSError) -> str:
    """The line telling why the listener could not start, and which flag moves it."""
    host = f"[{config.listen_host}]" if ":" in config.listen_host else config.listen_host
    address = f"{host}:{config.listen_port}"
    if exc.errno == errno.EADDRINUSE:
        why = "is in use"
    elif exc.errno == errno.EACCES:
        why = "cannot be used: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "is not an address of this host"
    else:
        why = f"cannot be listened on ({exc.strerror or exc})"
    return f"address {address} {why} (change it with --listen)"


def _unknown_flag(arg: str) -> str:
    flag = arg.split("=")[0]
    known = lookout_name(flag)
    return f"unknown flag {flag!r}" + (f" (Lookout spells it --{known})" if known else "")


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None,
                unknown: Sequence[str] = (), check_state_dir: bool = True,
                check_route: RouteCheck | None = None, create_state_dir: bool = True,
                check_kinds: KindCheck | None = None) -> Config:
    """Resolve flags, env and file into a ``Config``; raise ``ConfigError`` listing every problem.

    Route URIs are checked for their scheme here, and for their options by ``check_route`` when given. The state
    directory is created (``run``) only with ``create_state_dir``; otherwise it is only looked at (``check-config``
    changes nothing on disk). The default state directory falls back to a per-user one when it cannot be written
    (``Config.state_dir_note`` says so); a state directory that was given must be writable.

    A metric kind named in ``--enable-metrics`` that Lookout never serves (``UNSERVED_METRICS``) or that the host
    cannot feed (``check_kinds``, when given) is a problem, with the reason; one that is on only because
    ``--disable-metrics`` does not name it is turned off and listed in ``Config.metrics_unfed``."""
    environ = os.environ if environ is None else environ
    problems = [_unknown_flag(arg) for arg in unknown if arg.startswith("-")]
    problems += [f"unexpected argument {arg!r}" for arg in unknown if not arg.startswith("-")]
    given, config_path = _raw_settings(args, environ, problems)

    values: dict[str, Any] = {}
    for name, settings in given.items():
        for setting in settings:  # an overridden value is checked too: a file stays valid without the flag
            try:
                values[name] = _parse(_BY_NAME[name], setting)
            except ValueError as exc:
                problems.append(f"{setting.where}: {exc}")
                values.pop(name, None)
    raw = {name: settings[-1] for name, settings in given.items()}  # what is used, and where it came from

    def where(name: str) -> str:
        return raw[name].where if name in raw else f"--{name}"

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
                problems.append(f"{where(name)}: must be positive")
            kwargs[attr] = values[name]
    allow = values.get("container-labels-allowlist", ())
    kwargs["container_labels_allowlist"] = allow
    kwargs["store_container_labels"] = values.get("store-container-labels", not allow)
    kwargs["env_metadata_allowlist"] = values.get("env-metadata-allowlist", ())

    for name in ("disable-metrics", "enable-metrics"):
        bad = [k for k in values.get(name, ()) if k not in METRIC_KINDS]
        if bad:
            problems.append(f"{where(name)}: unknown metric kind(s) {', '.join(bad)} "
                            f"(known: {', '.join(sorted(METRIC_KINDS))})")
    if values.get("enable-metrics"):
        kwargs["disabled_metrics"] = METRIC_KINDS - frozenset(values["enable-metrics"])
    elif "disable-metrics" in values:
        kwargs["disabled_metrics"] = frozenset(values["disable-metrics"])
    named = frozenset(values.get("enable-metrics", ()))
    disabled = kwargs.get("disabled_metrics", DEFAULT_DISABLED_METRICS)
    enabled = METRIC_KINDS - disabled
    unfed = {kind: why for kind, why in UNSERVED_METRICS.items() if kind in enabled}
    if check_kinds is not None and enabled - unfed.keys():
        unfed.update(check_kinds(host_root, frozenset(enabled - unfed.keys())))
    for kind in sorted(unfed.keys() & named, key=str.lower):
        problems.append(f"{where('enable-metrics')}: {kind}: {unfed[kind]}")
    implied = {kind: unfed[kind] for kind in sorted(unfed.keys() - named, key=str.lower)}
    if implied:
        kwargs["disabled_metrics"] = frozenset(disabled | implied.keys())
        kwargs["metrics_unfed"] = implied
    if "metrics-timestamps" in values:
        kwargs["metrics_timestamps"] = values["metrics-timestamps"]
    kwargs["docker_only"] = values.get("docker-only", False)
    kwargs["disable_root_cgroup_stats"] = values.get("disable-root-cgroup-stats", False)
    prefixes = values.get("raw-cgroup-prefix-allowlist", ())
    relative = [prefix for prefix in prefixes if not prefix.startswith("/")]
    if relative:  # cAdvisor takes them, and they match nothing
        problems.append(f"{where('raw-cgroup-prefix-allowlist')}: {', '.join(map(repr, relative))} would match no "
                        f"cgroup: cgroup names start with / (e.g. {'/' + relative[0]!r})")
    kwargs["raw_cgroup_prefix_allowlist"] = prefixes
    if "storage-duration" in values:
        kwargs["storage_duration"] = values["storage-duration"]

    level = str(values.get("log-level", "info")).lower()
    if level not in {"debug", "info", "warning", "error"}:
        problems.append(f"{where('log-level')}: unknown level {level!r} (use debug, info, warning or error)")
        level = "info"
    kwargs["log_level"] = level
    fmt = str(values.get("log-format", "auto")).lower()
    if fmt not in {"auto", "json", "console"}:
        problems.append(f"{where('log-format')}: unknown format {fmt!r} (use json or console)")
        fmt = "auto"
    kwargs["log_format"] = fmt
    read_from = str(values.get("read-from", "head")).lower()
    if read_from not in ("head", "tail"):
        problems.append(f"{where('read-from')}: use head or tail, not {read_from!r}")
    kwargs["read_from"] = read_from
    journal = str(values.get("journal", "auto")).lower()
    if journal not in ("auto", "off"):
        problems.append(f"{where('journal')}: use auto or off, not {journal!r}")
    kwargs["journal"] = journal
    kwargs["journal_units"] = tuple(u.strip() for u in values.get("journal-units", ()) if u.strip())
    bad_units = [u for u in kwargs["journal_units"] if "/" in u or u.startswith(".") or u.endswith(".")]
    if bad_units:
        problems.append(f"{where('journal-units')}: not unit names: {', '.join(bad_units)}")
    if "max-line-bytes" in values:
        kwargs["max_line_bytes"] = values["max-line-bytes"]
    if "multiline-timeout" in values:
        kwargs["multiline_timeout"] = values["multiline-timeout"]
    if "log-workers" in values:
        kwargs["log_workers"] = values["log-workers"]
    if "log-rate-limit" in values:
        kwargs["log_rate_limit"] = values["log-rate-limit"]

    if values.get("api-token-file"):
        token_file = Path(values["api-token-file"])
        kwargs["api_token_file"] = token_file
        try:
            kwargs["api_token"] = read_token(token_file)
        except ValueError as exc:
            problems.append(f"{where('api-token-file')}: {exc}")
    cert, key = values.get("tls-cert") or "", values.get("tls-key") or ""
    if cert and not key:
        problems.append(f"{where('tls-cert')}: needs --tls-key too (both or neither)")
    elif key and not cert:
        problems.append(f"{where('tls-key')}: needs --tls-cert too (both or neither)")
    elif cert and key:
        kwargs["tls_cert"], kwargs["tls_key"] = Path(cert), Path(key)
        try:
            _tls_server_context(cert, key, where("tls-cert"), where("tls-key"))
        except ValueError as exc:
            problems.append(str(exc))

    routes = values.get("route", ())
    kwargs["routes"] = routes
    explicit = "state-dir" in raw  # given, even if unparsable: then it is reported above and not looked at
    state_dir = Path(values["state-dir"]) if "state-dir" in values else DEFAULT_STATE_DIR
    if check_state_dir and ("state-dir" in values or not explicit):
        state_dir, note, problem = _resolve_state_dir(state_dir, explicit, bool(routes), environ,
                                                      make_state_dir if create_state_dir else state_dir_problem)
        kwargs["state_dir_note"] = note
        if problem:
            problems.append(f"{where('state-dir')}: {problem}")
    kwargs["state_dir"] = state_dir
    for uri in routes:
        problem = _route_scheme_problem(uri)
        if problem is None and check_route is not None:
            problem = check_route(uri, state_dir)
        if problem:
            problems.append(f"{where('route')}: {problem}")

    if problems:
        raise ConfigError(problems)
    return Config(**kwargs)


def _resolve_state_dir(path: Path, given: bool, routes: bool, environ: Mapping[str, str],
                       probe: Callable[[Path], str | None]) -> tuple[Path, str, str | None]:
    """(the state directory, a note when it is not the default, a problem). A given directory must be usable. The
    default one falls back to the per-user directory; when neither can be used that is a problem only with routes,
    the only users of the state."""
    problem = probe(path)
    if problem is None or given:
        return path, "", problem
    fallback = user_state_dir(environ)
    fallback_problem = probe(fallback) if fallback != path else problem
    if fallback_problem is None:
        return fallback, f"{problem}: state is kept in {fallback}", None
    if routes:
        return path, "", f"{problem}, nor can {fallback} be used ({fallback_problem}); give a writable --state-dir"
    return path, f"{problem}, nor can {fallback} be used: no state is kept (only routes need it)", None

"""Resolved configuration: command-line flags, ``LOOKOUT_<FLAG>`` environment variables and a TOML file.

Precedence is flag > environment > file > default. Every problem is collected and reported
together (``ConfigError.problems``) so a user fixes a bad configuration in one round trip; each names where the
value came from: the flag (``--max-line-bytes: ...``), the variable (``--max-line-bytes (LOOKOUT_MAX_LINE_BYTES):
...``) or the key and the file (``--config: max-line-bytes in /etc/lookout/lookout.toml: ...``). Checking writes
nothing: only ``run`` (``create_state_dir``) creates the state directory.
"""

from __future__ import annotations

import argparse
import errno
import os
import ssl
import stat
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from agent.options import (  # re-exported: the declared options and cAdvisor's metric kinds
    DEFAULT_DISABLED_METRICS,
    METRIC_KINDS,
    OPTIONS,
    OPTIONS_BY_NAME,
    UNSERVED_METRICS,
    Option,
    lookout_name,
    toml_text,
)
from agent.params import (  # re-exported: the parsers of flags and files
    RateLimit,
    file_problem,
    load_cert_chain,
    redact_uri,
    split_uri,
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
        if name not in OPTIONS_BY_NAME:
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
    raise ValueError(f"expected {opt.expected}, got {toml_text(value)}")


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
                values[name] = _parse(OPTIONS_BY_NAME[name], setting)
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

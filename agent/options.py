"""The agent's settings as declared options: each option's flag, parser, help and TOML type, in one table.

``OPTIONS`` drives argparse (``add_arguments``), the ``LOOKOUT_<FLAG>`` environment variables, the TOML file and
the docs; ``agent.config.load_config`` resolves them into a ``Config``. Also here: cAdvisor's metric-kind
vocabulary and the kinds off by default, which the ``--disable-metrics`` help names.
"""

from __future__ import annotations

import argparse
import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.params import parse_bool, parse_duration, parse_list, parse_listen, parse_rate, parse_seconds, parse_size

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
        raise ValueError(f"must be positive, got {toml_text(value)}")
    return seconds


def _seconds(value: int | float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a duration like 10s or a number of seconds, got {toml_text(value)}")
    return float(value)


def _bytes(value: int | float) -> int:
    if not isinstance(value, int):
        raise ValueError(f"expected a number of bytes or a size like 1MiB, got {toml_text(value)}")
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
    raise ValueError(f"use auto or a number from 0 to 64, not {toml_text(value)}")


def toml_text(value: Any) -> str:
    """A TOML value as the file spells it, for messages: ``1``, ``true``, ``[1, "a"]``, ``'x'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
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
OPTIONS_BY_NAME = {opt.name: opt for opt in OPTIONS}
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
    return key if key in OPTIONS_BY_NAME else None


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

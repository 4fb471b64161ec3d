"""What the dashboard and alert tests share: every query in the Grafana dashboards and the alert rules,
Grafana's variable interpolation, the metric names a PromQL expression mentions, and the metric names
the agent exports.

Used by tests/unit/test_dashboards_static.py (offline) and tests/integration/test_dashboards.py (a real
Prometheus scraping a real agent).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO_ROOT / "dashboards" / "grafana"
PROMETHEUS_DIR = REPO_ROOT / "dashboards" / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "alerts.yml"

# Series Prometheus makes itself (not scraped from the agent).
PROMETHEUS_SERIES = frozenset({"up"})


# --- dashboards -------------------------------------------------------------------------------------


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, for every file in dashboards/grafana/."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def iter_panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    dashboard: str  # file name
    where: str  # "panel 'CPU usage' A" or "variable $name"
    expr: str  # as written in the dashboard (Grafana variables not yet interpolated)
    kind: str  # "panel" | "variable"
    panel: str = ""
    legend: str = ""

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}"


def panel_queries(name: str, board: Mapping[str, Any]) -> list[Query]:
    out = []
    for panel in iter_panels(board):
        for t in panel.get("targets", []):
            if "expr" in t:
                out.append(Query(name, f"panel {panel['title']!r} {t['refId']}", t["expr"], "panel",
                                 panel["title"], t.get("legendFormat", "")))
    return out


def variable_query_text(var: Mapping[str, Any]) -> str:
    q = var.get("query")
    return q.get("query", "") if isinstance(q, dict) else str(q or "")


def variable_queries(name: str, board: Mapping[str, Any]) -> list[Query]:
    return [Query(name, f"variable ${v['name']}", variable_query_text(v), "variable")
            for v in board["templating"]["list"] if v.get("type") == "query"]


def all_dashboard_queries() -> list[Query]:
    out: list[Query] = []
    for name, board in load_dashboards().items():
        out += variable_queries(name, board) + panel_queries(name, board)
    return out


# --- Grafana interpolation --------------------------------------------------------------------------

# Grafana's built-in interval variables, with values that fit a Prometheus scraping every second.
BUILTINS = {"__rate_interval": "10s", "__interval": "5s", "__range": "5m", "__range_s": "300", "__range_ms": "300000"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def regex_escape(value: str) -> str:
    """Grafana's ``prometheusSpecialRegexEscape`` for multi-value variables in ``=~`` matchers."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def interpolate(expr: str, board: Mapping[str, Any], values: Mapping[str, str | None]) -> str:
    """Replace ``$var``/``${var}``/``[[var]]`` as Grafana's Prometheus data source does.

    ``values[var]`` is the one selected value, or None for "All". Multi-value or include-all variables
    get the value regex-escaped (or the variable's ``allValue``); single-value variables the raw value
    (Grafana escapes only backslashes and quotes there). Interval built-ins get ``BUILTINS``.
    """
    defs = {v["name"]: v for v in board["templating"]["list"]}

    def one(match: re.Match[str]) -> str:
        var = match.group(1) or match.group(2) or match.group(3)
        if var in BUILTINS:
            return BUILTINS[var]
        if var not in defs:
            raise KeyError(f"${var} is neither a dashboard variable nor a known Grafana built-in")
        d = defs[var]
        value = values.get(var)
        if d.get("multi") or d.get("includeAll"):
            if value is None:
                return str(d.get("allValue") or ".*")
            return regex_escape(value)
        if value is None:
            raise KeyError(f"${var} is single-valued: give it a value")
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return _VAR.sub(one, expr)


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>[a-zA-Z_]\w*)\s*\)\s*$",
                           re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class VariableRequest:
    """How Grafana asks Prometheus for a variable's values."""

    path: str  # "label/<name>/values" or "query"
    params: tuple[tuple[str, str], ...]
    promql: str  # the PromQL part (a series selector or expression), "" for label_values(label)


def variable_request(query: str) -> VariableRequest:
    """``label_values(selector, label)`` -> /api/v1/label/<label>/values?match[]=selector (as Grafana
    calls it); ``label_values(label)`` -> the same without match[]; ``query_result(expr)`` -> /api/v1/query."""
    m = _LABEL_VALUES.match(query)
    if m:
        selector = m.group("selector") or ""
        params = (("match[]", selector),) if selector else ()
        return VariableRequest(f"label/{m.group('label')}/values", params, selector)
    m = _QUERY_RESULT.match(query)
    if m:
        return VariableRequest("query", (("query", m.group("expr")),), m.group("expr"))
    raise ValueError(f"unsupported Grafana variable query {query!r} (use label_values(...) or query_result(...))")


# --- metric names in PromQL -------------------------------------------------------------------------

_KEYWORDS_WITH_LABELS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_OPERATOR_WORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                 "quantile", "limitk", "limit_ratio"}
_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?:(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<open_brace>\{)
  | (?P<close_brace>\})
  | (?P<open_paren>\()
  | (?P<range>\[[^\]]*\])
  | (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<other>.)
""", re.VERBOSE)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, aggregations, keywords,
    label names (inside ``{...}`` or after by/without/on/ignoring/group_*) or literals."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    tokens = [t for t in tokens if t[0] not in ("space", "comment")]
    names: set[str] = set()
    depth_brace = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "open_brace":
            depth_brace += 1
        elif kind == "close_brace":
            depth_brace -= 1
        elif kind == "ident" and depth_brace == 0:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
            if text in _KEYWORDS_WITH_LABELS:
                if nxt[0] == "open_paren":  # skip the label list
                    while i < len(tokens) and tokens[i][1] != ")":
                        i += 1
            elif text.lower() in _OPERATOR_WORDS:
                pass
            elif text in _AGGREGATIONS and (nxt[0] == "open_paren" or nxt[1] in ("by", "without")):
                pass  # `sum by (x) (...)`
            elif nxt[0] == "open_paren":
                pass  # a function or an aggregation operator
            else:
                names.add(text)
        i += 1
    return names


# --- the agent's metric names -----------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every sample name the agent can serve on /metrics: the cAdvisor families, container_last_seen,
    machine_* and cadvisor_version_info (rendered from an empty snapshot), and the self-metrics
    registry (Telemetry + LogMetrics), with prometheus-client's suffixes (_total, _bucket/_sum/_count)."""
    from prometheus_client import CollectorRegistry

    from agent.logs.metrics import LogMetrics
    from agent.model import MachineInfo, Snapshot
    from agent.telemetry import Telemetry
    from exporters.prometheus.render import LabelPolicy, Renderer
    from exporters.prometheus.table import FAMILIES

    names = {f.name for f in FAMILIES}
    text = Renderer(FAMILIES, LabelPolicy()).render(Snapshot(timestamp=0.0, containers=[], machine=MachineInfo()))
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])

    telemetry = Telemetry()
    telemetry.watch(lambda: Counter({"cgroups": 1}), lambda: Counter({"docker": 1}))
    registries: list[CollectorRegistry] = [telemetry.registry]
    LogMetrics(telemetry.registry)
    for registry in registries:
        for family in registry.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
            elif family.type == "summary":
                names.update(family.name + suffix for suffix in ("", "_sum", "_count"))
            else:
                names.add(family.name)
            names.update(s.name for s in family.samples)
    return names


# --- alert rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    group: str
    name: str  # alert or record name
    expr: str


def load_rules(path: Path = RULES_FILE) -> list[Rule]:
    import yaml

    doc = yaml.safe_load(path.read_text())
    return [Rule(g["name"], r.get("alert") or r.get("record"), r["expr"])
            for g in doc["groups"] for r in g["rules"]]

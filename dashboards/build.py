#!/usr/bin/env python3
"""Generate Lookout's Grafana dashboards (classic JSON model, schemaVersion 42) from one place.

    python dashboards/build.py           # (re)write dashboards/grafana/*.json
    python dashboards/build.py --check   # exit 1 and name the files that differ from this script's output

Standard library only. The JSON files are committed so Grafana's file provisioning (and anyone
importing them by hand) needs no Python; CI runs ``--check`` (tests/unit/test_dashboards_static.py)
so they never drift from this script.

Every query keeps to cAdvisor's metric names and labels (``name``, ``image``, ``id``, ``interface``,
``device``, ``cpu``), so the two container dashboards also work against a plain cAdvisor or the
kubelet's ``/metrics/cadvisor``. Conventions:

- ``name=~"$name"`` also drops the raw cgroups (``/``, ``/docker``, systemd slices), which have no
  ``name`` label: the multi-value variables' "All" is ``.+``, never ``.*``.
- CPU usage is summed over the ``cpu`` label: Lookout and cAdvisor with ``percpu`` serve one series
  per CPU, cAdvisor without it ``cpu="total"``.
- Memory limits: Lookout and cAdvisor report 0 for "no limit" (cAdvisor on some cgroup v1 hosts the
  kernel's 2^63-ish "unlimited"), hence ``> 0 < 1e18``.
- "Stopped reporting" is ``max_over_time(container_last_seen[range]) unless container_last_seen``:
  containers seen during the range that are not reporting now. It works with Lookout (no sample
  timestamps: a removed container's series goes stale at the next scrape) and with cAdvisor
  (timestamped samples linger up to Prometheus' 5 minute lookback, then the container shows up here).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 42  # the last classic-model schema version (Grafana 12.2 and later)
OUT_DIR = Path(__file__).resolve().parent / "grafana"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["lookout"]

Json = dict[str, Any]


# --- variables --------------------------------------------------------------------------------------


def datasource_var() -> Json:
    return {
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
        "regex": "", "skipUrlSync": False,
    }


def query_var(name: str, label: str, query: str, *, multi: bool, all_value: str | None = ".+",
              sort: int = 1) -> Json:
    """A Prometheus query variable; ``query`` is Grafana's ``label_values(...)``/``query_result(...)``."""
    include_all = multi and all_value is not None
    var: Json = {
        "name": name, "label": label, "type": "query", "datasource": dict(DS),
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {}, "hide": 0, "includeAll": include_all, "multi": multi, "options": [],
        "refresh": 2, "regex": "", "skipUrlSync": False, "sort": sort,
    }
    if include_all:
        var["allValue"] = all_value
    return var


# --- panels -----------------------------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False) -> Json:
    t: Json = {"refId": ref, "datasource": dict(DS), "expr": expr, "editorMode": "code",
               "legendFormat": legend or "__auto", "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


def _targets(exprs: list[tuple[str, str]] | list[Json]) -> list[Json]:
    out = []
    for i, item in enumerate(exprs):
        t = item if isinstance(item, dict) else target(item[0], item[1])
        t = dict(t)
        t["refId"] = chr(ord("A") + i)
        out.append(t)
    return out


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


GREEN = ((None, "green"),)


def timeseries(title: str, description: str, exprs: list[tuple[str, str]] | list[Json], unit: str, *,
               stack: bool = False, limit_series: tuple[str, ...] = (), minimum: float | None = 0,
               maximum: float | None = None, bars: bool = False, steps: tuple[tuple[float | None, str], ...] = GREEN,
               threshold_lines: bool = False) -> Json:
    """A time series panel. ``limit_series``: legend names drawn as limits (dashed red, no fill)."""
    custom: Json = {
        "drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 10 if not bars else 80,
        "gradientMode": "none", "showPoints": "never", "spanNulls": False, "lineInterpolation": "linear",
        "axisPlacement": "auto", "axisSoftMin": 0 if minimum == 0 else None,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if threshold_lines else "off"},
    }
    custom = {k: v for k, v in custom.items() if v is not None}
    defaults: Json = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"},
                      "thresholds": thresholds(*steps)}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    overrides = [{
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.lineWidth", "value": 2},
            {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
        ],
    } for name in limit_series]
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": dict(DS),
        "targets": _targets(exprs), "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                               "calcs": ["mean", "max", "lastNotNull"], "sortBy": "Max", "sortDesc": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, expr: str, unit: str, *,
         steps: tuple[tuple[float | None, str], ...] = GREEN, no_value: str | None = None) -> Json:
    defaults: Json = {"unit": unit, "color": {"mode": "thresholds"}, "thresholds": thresholds(*steps)}
    if no_value is not None:
        defaults["noValue"] = no_value
    return {
        "type": "stat", "title": title, "description": description, "datasource": dict(DS),
        "targets": [target(expr, instant=True)], "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "textMode": "auto",
                    "orientation": "auto", "wideLayout": True, "showPercentChange": False},
    }


def gauge(title: str, description: str, expr: str, legend: str, unit: str,
          steps: tuple[tuple[float | None, str], ...], maximum: float) -> Json:
    return {
        "type": "gauge", "title": title, "description": description, "datasource": dict(DS),
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "max": maximum, "color": {"mode": "thresholds"},
                                     "thresholds": thresholds(*steps)}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "showThresholdLabels": False, "showThresholdMarkers": True, "orientation": "auto"},
    }


def table(title: str, description: str, columns: list[tuple[str, str, str]], *,
          sort_by: str | None = None) -> Json:
    """An instant table: one query per column (expr, column title, unit), joined on their labels."""
    targets = [target(expr, ref=chr(ord("A") + i), instant=True, table=True)
               for i, (expr, _title, _unit) in enumerate(columns)]
    rename = {(f"Value #{chr(ord('A') + i)}" if len(columns) > 1 else "Value"): col
              for i, (_e, col, _u) in enumerate(columns)}
    overrides = [{"matcher": {"id": "byName", "options": col}, "properties": [{"id": "unit", "value": unit}]}
                 for _e, col, unit in columns]
    return {
        "type": "table", "title": title, "description": description, "datasource": dict(DS),
        "targets": targets,
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "id": True, "job": True, "__name__": True},
                                           "renameByName": rename}},
        ],
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}},
                                     "thresholds": thresholds(*GREEN)}, "overrides": overrides},
        "options": {"showHeader": True, "cellHeight": "sm",
                    "sortBy": [{"displayName": sort_by, "desc": True}] if sort_by else [],
                    "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""}},
    }


def state_timeline(title: str, description: str, expr: str, legend: str, mappings: list[Json],
                   steps: tuple[tuple[float | None, str], ...]) -> Json:
    return {
        "type": "state-timeline", "title": title, "description": description, "datasource": dict(DS),
        "targets": [target(expr, legend)],
        "fieldConfig": {"defaults": {"color": {"mode": "thresholds"}, "thresholds": thresholds(*steps),
                                     "mappings": mappings, "custom": {"fillOpacity": 80, "lineWidth": 0}},
                        "overrides": []},
        "options": {"showValue": "auto", "rowHeight": 0.9, "mergeValues": True, "alignValue": "left",
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "single", "sort": "none"}},
    }


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# --- layout and dashboard -----------------------------------------------------------------------------


def layout(items: list[tuple[Json, int, int]]) -> list[Json]:
    """Place (panel, width, height) left to right on a 24-column grid; rows start a new line."""
    panels, x, y, line_h = [], 0, 0, 0
    for pid, (panel, w, h) in enumerate(items, start=1):
        if panel["type"] == "row":
            if x:
                y, x, line_h = y + line_h, 0, 0
            panel = {**panel, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}
            y += 1
        else:
            if x + w > 24:
                y, x, line_h = y + line_h, 0, 0
            panel = {**panel, "gridPos": {"h": h, "w": w, "x": x, "y": y}}
            x += w
            line_h = max(line_h, h)
        panel["id"] = pid
        panels.append(panel)
    return panels


def dashboard(uid: str, title: str, description: str, variables: list[Json], items: list[tuple[Json, int, int]],
              refresh: str = "30s") -> Json:
    return {
        "uid": uid, "title": title, "description": description, "tags": [*TAGS],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "fiscalYearStartMonth": 0,
        "liveNow": False, "refresh": refresh, "time": {"from": "now-1h", "to": "now"},
        "timepicker": {}, "weekStart": "", "schemaVersion": SCHEMA_VERSION, "version": 1,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [{"type": "dashboards", "tags": [*TAGS], "asDropdown": True, "title": "Lookout",
                   "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "templating": {"list": variables},
        "panels": layout(items),
    }


# --- 1. containers overview -----------------------------------------------------------------------------

SEL = 'instance=~"$instance", name=~"$name"'
RI = "$__rate_interval"
LIMIT_FILTER = "> 0 < 1e18"


def containers_overview() -> Json:
    by = "instance, name"
    cpu = f"sum by ({by}) (rate(container_cpu_usage_seconds_total{{{SEL}}}[{RI}]))"
    throttled = (f"sum by ({by}) (rate(container_cpu_cfs_throttled_periods_total{{{SEL}}}[{RI}]))\n"
                 f"/\nsum by ({by}) (rate(container_cpu_cfs_periods_total{{{SEL}}}[{RI}]))")
    ws = f"sum by ({by}) (container_memory_working_set_bytes{{{SEL}}})"
    limit = f"max by ({by}) (container_spec_memory_limit_bytes{{{SEL}}} {LIMIT_FILTER})"
    gone = (f"1000 * max by (instance, name, image) (max_over_time(container_last_seen{{{SEL}}}[$__range]))\n"
            f"unless on (instance, name) container_last_seen")
    variables = [
        datasource_var(),
        query_var("instance", "Host", "label_values(container_last_seen, instance)", multi=True),
        query_var("name", "Container", 'label_values(container_last_seen{instance=~"$instance"}, name)', multi=True),
    ]
    items: list[tuple[Json, int, int]] = [
        (row("Summary"), 24, 1),
        (stat("Containers reporting", "Containers reporting now (series of container_last_seen with a name).",
              f"count(container_last_seen{{{SEL}}})", "none"), 4, 4),
        (stat("Stopped reporting", "Containers seen during the time range that are not reporting now.",
              f"count(max by (instance, name) (max_over_time(container_last_seen{{{SEL}}}[$__range]))\n"
              f"unless on (instance, name) container_last_seen)", "none",
              steps=((None, "green"), (1, "orange")), no_value="0"), 4, 4),
        (stat("OOM kills", "Out-of-memory kills inside the selected containers during the time range.",
              f"sum(increase(container_oom_events_total{{{SEL}}}[$__range]))", "none",
              steps=((None, "green"), (1, "red"))), 4, 4),
        (stat("CPU in use", "CPU used by the selected containers, in cores.",
              f"sum(rate(container_cpu_usage_seconds_total{{{SEL}}}[{RI}]))", "none"), 4, 4),
        (stat("Memory in use", "Working set (usage minus inactive file cache) of the selected containers.",
              f"sum(container_memory_working_set_bytes{{{SEL}}})", "bytes"), 4, 4),
        (stat("Hosts", "Hosts with containers reporting.",
              f"count(count by (instance) (container_last_seen{{{SEL}}}))", "none"), 4, 4),

        (row("CPU"), 24, 1),
        (timeseries("CPU usage", "Per container, in cores (1 = one CPU fully busy).",
                    [(cpu, "{{name}} ({{instance}})")], "none"), 12, 8),
        (timeseries("CPU throttling ratio", "Share of CFS periods in which the container was throttled "
                    "(only containers with a CPU quota have these counters).",
                    [(throttled, "{{name}} ({{instance}})")], "percentunit", maximum=1,
                    steps=((None, "green"), (0.25, "red")), threshold_lines=True), 12, 8),

        (row("Memory"), 24, 1),
        (timeseries("Memory working set", "What the kernel counts against the limit before reclaiming cache.",
                    [(ws, "{{name}} ({{instance}})")], "bytes"), 12, 8),
        (timeseries("Memory working set / limit", "Only containers with a memory limit.",
                    [(f"{ws}\n/\n{limit}", "{{name}} ({{instance}})")], "percentunit", maximum=1,
                    steps=((None, "green"), (0.9, "red")), threshold_lines=True), 12, 8),
        (table("Memory against the limit", "Working set, RSS and page cache of every container next to its limit.",
               [(ws, "Working set", "bytes"),
                (f"sum by ({by}) (container_memory_rss{{{SEL}}})", "RSS", "bytes"),
                (f"sum by ({by}) (container_memory_cache{{{SEL}}})", "Cache", "bytes"),
                (limit, "Limit", "bytes"),
                (f"{ws}\n/\n{limit}", "Of limit", "percentunit")], sort_by="Working set"), 24, 8),

        (row("Network"), 24, 1),
        (timeseries("Network receive", "Bytes per second received, per container and interface.",
                    [(f"sum by ({by}, interface) (rate(container_network_receive_bytes_total{{{SEL}}}[{RI}]))",
                      "{{name}} {{interface}} ({{instance}})")], "Bps"), 12, 8),
        (timeseries("Network transmit", "Bytes per second transmitted, per container and interface.",
                    [(f"sum by ({by}, interface) (rate(container_network_transmit_bytes_total{{{SEL}}}[{RI}]))",
                      "{{name}} {{interface}} ({{instance}})")], "Bps"), 12, 8),

        (row("Filesystem"), 24, 1),
        (timeseries("Filesystem reads", "Bytes per second read from block devices, per container and device.",
                    [(f"sum by ({by}, device) (rate(container_fs_reads_bytes_total{{{SEL}}}[{RI}]))",
                      "{{name}} {{device}} ({{instance}})")], "Bps"), 12, 8),
        (timeseries("Filesystem writes", "Bytes per second written to block devices, per container and device.",
                    [(f"sum by ({by}, device) (rate(container_fs_writes_bytes_total{{{SEL}}}[{RI}]))",
                      "{{name}} {{device}} ({{instance}})")], "Bps"), 12, 8),

        (row("Containers"), 24, 1),
        (timeseries("Container count", "Containers reporting, per host.",
                    [(f"count by (instance) (container_last_seen{{{SEL}}})", "{{instance}}")], "none"), 12, 8),
        (table("Containers that stopped reporting", "Seen during the time range, not reporting now; "
               "the value is when each was last seen.", [(gone, "Last seen", "dateTimeAsIso")],
               sort_by="Last seen"), 12, 8),
    ]
    return dashboard("lookout-containers", "Lookout / Containers overview",
                     "Every container: CPU, throttling, memory against limits, network, disk, count and "
                     "containers that stopped reporting. cAdvisor metric names and labels.", variables, items)


# --- 2. container detail --------------------------------------------------------------------------------

ONE = 'instance="$instance", name="$name"'


def container_detail() -> Json:
    variables = [
        datasource_var(),
        query_var("instance", "Host", "label_values(container_last_seen, instance)", multi=False),
        query_var("name", "Container", 'label_values(container_last_seen{instance="$instance"}, name)', multi=False),
    ]
    ws = f"sum(container_memory_working_set_bytes{{{ONE}}})"
    limit = f"max(container_spec_memory_limit_bytes{{{ONE}}} {LIMIT_FILTER})"
    psi = [(kind, f"rate(container_pressure_{kind}_{what}_seconds_total{{{ONE}}}[{RI}])", f"{kind} {what}")
           for kind in ("cpu", "memory", "io") for what in ("waiting", "stalled")]
    items: list[tuple[Json, int, int]] = [
        (row("Overview"), 24, 1),
        (stat("Up for", "Time since the container started.",
              f"time() - max(container_start_time_seconds{{{ONE}}})", "s"), 6, 4),
        (stat("OOM kills", "Out-of-memory kills inside the container since it started (the kernel's counter).",
              f"max(container_oom_events_total{{{ONE}}})", "none", steps=((None, "green"), (1, "red"))), 6, 4),
        (gauge("Memory of limit", "Working set against the memory limit (empty without a limit).",
               f"{ws}\n/\n{limit}", "{{name}}", "percentunit", ((None, "green"), (0.8, "orange"), (0.9, "red")), 1),
         6, 4),
        (stat("Processes", "Processes in the container.", f"sum(container_processes{{{ONE}}})", "none"), 6, 4),

        (row("CPU"), 24, 1),
        (timeseries("CPU usage and limit", "Cores used; the dashed red line is the CFS quota (--cpus).",
                    [(f"sum(rate(container_cpu_usage_seconds_total{{{ONE}}}[{RI}]))", "used"),
                     (f"max(container_spec_cpu_quota{{{ONE}}} / container_spec_cpu_period{{{ONE}}})", "limit"),
                     (f"sum(rate(container_cpu_user_seconds_total{{{ONE}}}[{RI}]))", "user"),
                     (f"sum(rate(container_cpu_system_seconds_total{{{ONE}}}[{RI}]))", "system")],
                    "none", limit_series=("limit",)), 12, 8),
        (timeseries("CPU throttling", "Share of CFS periods throttled, and seconds throttled per second.",
                    [(f"sum(rate(container_cpu_cfs_throttled_periods_total{{{ONE}}}[{RI}]))\n/\n"
                      f"sum(rate(container_cpu_cfs_periods_total{{{ONE}}}[{RI}]))", "throttled periods"),
                     (f"sum(rate(container_cpu_cfs_throttled_seconds_total{{{ONE}}}[{RI}]))", "throttled s/s")],
                    "percentunit", steps=((None, "green"), (0.25, "red")), threshold_lines=True), 12, 8),

        (row("Memory"), 24, 1),
        (timeseries("Memory and limit", "Working set, RSS, page cache and total usage; the dashed red line is "
                    "the memory limit.",
                    [(ws, "working set"),
                     (f"sum(container_memory_rss{{{ONE}}})", "rss"),
                     (f"sum(container_memory_cache{{{ONE}}})", "cache"),
                     (f"sum(container_memory_usage_bytes{{{ONE}}})", "usage"),
                     (limit, "limit")], "bytes", limit_series=("limit",)), 12, 8),
        (timeseries("OOM kills over time", "Out-of-memory kills per interval, and allocations that hit the limit.",
                    [(f"sum(increase(container_oom_events_total{{{ONE}}}[{RI}]))", "OOM kills"),
                     (f"sum(increase(container_memory_failcnt{{{ONE}}}[{RI}]))", "limit hits (cgroup v1)"),
                     (f"sum(increase(container_memory_events_max_total{{{ONE}}}[{RI}]))", "limit hits (cgroup v2)")],
                    "none", bars=True), 12, 8),

        (row("Network and disk"), 24, 1),
        (timeseries("Network", "Bytes per second per interface; transmit is drawn below the axis.",
                    [(f"sum by (interface) (rate(container_network_receive_bytes_total{{{ONE}}}[{RI}]))",
                      "receive {{interface}}"),
                     (f"-sum by (interface) (rate(container_network_transmit_bytes_total{{{ONE}}}[{RI}]))",
                      "transmit {{interface}}")], "Bps", minimum=None), 12, 8),
        (timeseries("Network errors and drops", "Packets per second dropped or in error, per interface.",
                    [(f"sum by (interface) (rate(container_network_receive_packets_dropped_total{{{ONE}}}[{RI}])"
                      f" + rate(container_network_receive_errors_total{{{ONE}}}[{RI}]))", "receive {{interface}}"),
                     (f"sum by (interface) (rate(container_network_transmit_packets_dropped_total{{{ONE}}}[{RI}])"
                      f" + rate(container_network_transmit_errors_total{{{ONE}}}[{RI}]))", "transmit {{interface}}")],
                    "pps"), 12, 8),
        (timeseries("Filesystem IO", "Bytes per second read and written per block device.",
                    [(f"sum by (device) (rate(container_fs_reads_bytes_total{{{ONE}}}[{RI}]))", "read {{device}}"),
                     (f"sum by (device) (rate(container_fs_writes_bytes_total{{{ONE}}}[{RI}]))", "write {{device}}")],
                    "Bps"), 12, 8),
        (timeseries("Processes, threads, descriptors", "Processes and threads in the container, open file "
                    "descriptors and sockets.",
                    [(f"sum(container_processes{{{ONE}}})", "processes"),
                     (f"sum(container_threads{{{ONE}}})", "threads"),
                     (f"sum(container_file_descriptors{{{ONE}}})", "file descriptors"),
                     (f"sum(container_sockets{{{ONE}}})", "sockets")], "none"), 12, 8),

        (row("Pressure (PSI, cgroup v2 hosts only)"), 24, 1),
        (timeseries("Pressure", "Seconds per second some (waiting) or all (stalled) tasks waited for CPU, "
                    "memory or IO. Empty on cgroup v1 hosts, which have no PSI per cgroup.",
                    [(expr, legend) for _k, expr, legend in psi], "percentunit"), 24, 8),
    ]
    return dashboard("lookout-container-detail", "Lookout / Container detail",
                     "One container over time with its limits drawn as dashed red lines, OOM kills and PSI "
                     "pressure. cAdvisor metric names and labels.", variables, items)


# --- 3. Lookout pipeline ------------------------------------------------------------------------------

RSEL = 'instance=~"$instance", route=~"$route"'
ISEL = 'instance=~"$instance"'
AGENT = "and on (instance, job) lookout_build_info"


def counted(metric: str, window: str) -> str:
    """Increments of a per-route counter within ``window``, including a series' first ones: the agent
    creates such a series at its first increment, so a series that appeared within the window counts
    whole (increase() alone sees 1 -> 1, i.e. 0)."""
    sel = f"{metric}{{{RSEL}}}"
    return f"({sel} unless {sel} offset {window})\nor\nincrease({sel}[{window}])"


def pipeline() -> Json:
    by = "instance, route"
    legend = "{{route}} ({{instance}})"
    variables = [
        datasource_var(),
        query_var("instance", "Agent", "label_values(lookout_build_info, instance)", multi=True),
        query_var("route", "Route", 'label_values(lookout_route_up{instance=~"$instance"}, route)', multi=True),
    ]
    items: list[tuple[Json, int, int]] = [
        (row("Routes"), 24, 1),
        (stat("Agents", "Lookout agents reporting.", f"count(lookout_build_info{{{ISEL}}})", "none"), 4, 4),
        (stat("Routes up", "Routes whose last send succeeded.", f"count(lookout_route_up{{{RSEL}}} == 1)", "none",
              no_value="0"), 4, 4),
        (stat("Routes down", "Routes whose last send failed (retrying).", f"count(lookout_route_up{{{RSEL}}} == 0)",
              "none", steps=((None, "green"), (1, "red")), no_value="0"), 4, 4),
        (stat("Lag", "Bytes in watched log files not yet acknowledged, all routes.",
              f"sum(lookout_log_lag_bytes{{{RSEL}}})", "bytes", steps=((None, "green"), (10 * 2**20, "orange"))),
         4, 4),
        (stat("Dead letters", "Records written to dead-letter files during the time range.",
              f"sum(\n{counted('lookout_route_records_dead_lettered_total', '$__range')}\n)", "none",
              steps=((None, "green"), (1, "red")), no_value="0"), 4, 4),
        (stat("Parse errors", "Log lines that could not be decoded during the time range.",
              f"sum(\n{counted('lookout_log_parse_errors_total', '$__range')}\n)", "none",
              steps=((None, "green"), (1, "orange")), no_value="0"), 4, 4),
        (state_timeline("Route up/down", "1 while the route's last send succeeded, 0 while it is failing.",
                        f"max by ({by}) (lookout_route_up{{{RSEL}}})", legend,
                        [{"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0},
                                                       "1": {"text": "up", "color": "green", "index": 1}}}],
                        ((None, "red"), (1, "green"))), 24, 6),

        (row("Throughput"), 24, 1),
        (timeseries("Records read", "Log records decoded per second, per route reader.",
                    [(f"sum by ({by}) (rate(lookout_log_records_read_total{{{RSEL}}}[{RI}]))", legend)], "rps"),
         12, 8),
        (timeseries("Records shipped", "Records per second the route's receiver acknowledged.",
                    [(f"sum by ({by}) (rate(lookout_route_records_sent_total{{{RSEL}}}[{RI}]))", legend)], "rps"),
         12, 8),
        (timeseries("Bytes read", "Log file bytes read per second, per route reader.",
                    [(f"sum by ({by}) (rate(lookout_log_bytes_read_total{{{RSEL}}}[{RI}]))", legend)], "Bps"), 12, 8),
        (timeseries("Batch delivery time (p99)", "99th percentile of the time to deliver one batch, retries "
                    "included.",
                    [(f"histogram_quantile(0.99, sum by ({by}, le) "
                      f"(rate(lookout_route_batch_duration_seconds_bucket{{{RSEL}}}[{RI}])))", legend)], "s"), 12, 8),

        (row("Backlog and failures"), 24, 1),
        (timeseries("Lag per route", "Bytes in watched log files not yet acknowledged by the route. Growing lag: the "
                    "route is slower than the containers write, or down.",
                    [(f"max by ({by}) (lookout_log_lag_bytes{{{RSEL}}})", legend)], "bytes"), 12, 8),
        (timeseries("Queue depth and files watched", "Batches waiting for the route's sender, and log files open "
                    "per route.",
                    [(f"max by ({by}) (lookout_route_queue_depth{{{RSEL}}})", "queued batches " + legend),
                     (f"max by ({by}) (lookout_log_files_watched{{{RSEL}}})", "files " + legend)], "none"), 12, 8),
        (timeseries("Retries", "Batch sends retried after a failure, per second.",
                    [(f"sum by ({by}) (rate(lookout_route_retries_total{{{RSEL}}}[{RI}]))", legend)], "ops"), 12, 8),
        (timeseries("Dead letters and rejections", "Records per interval the receiver refused for good, and "
                    "those written to the dead-letter file.",
                    [(f"sum by ({by}) (\n{counted('lookout_route_records_dead_lettered_total', RI)}\n)",
                      "dead-lettered " + legend),
                     (f"sum by ({by}) (\n{counted('lookout_route_records_rejected_total', RI)}\n)",
                      "rejected " + legend)], "none", bars=True), 12, 8),
        (timeseries("Dropped records", "Records not sent, by reason (filtered, rejected, ...), per second.",
                    [(f"sum by ({by}, reason) (rate(lookout_route_records_dropped_total{{{RSEL}}}[{RI}]))",
                      "{{reason}} " + legend)], "rps"), 12, 8),
        (timeseries("Parse errors and truncated lines", "Log lines per interval that could not be decoded, and "
                    "records cut at --max-line-bytes.",
                    [(f"sum by ({by}) (\n{counted('lookout_log_parse_errors_total', RI)}\n)",
                      "parse errors " + legend),
                     (f"sum by ({by}) (\n{counted('lookout_log_lines_truncated_total', RI)}\n)",
                      "truncated " + legend)], "none", bars=True), 12, 8),

        (row("Agent"), 24, 1),
        (timeseries("Agent CPU", "CPU used by the Lookout process, in cores.",
                    [(f"rate(process_cpu_seconds_total{{{ISEL}}}[{RI}])\n{AGENT}", "{{instance}}")], "none"), 8, 8),
        (timeseries("Agent memory", "Resident memory of the Lookout process.",
                    [(f"process_resident_memory_bytes{{{ISEL}}}\n{AGENT}", "{{instance}}")], "bytes"), 8, 8),
        (timeseries("Collection time (p90)", "90th percentile of one housekeeping cycle (collect and render).",
                    [(f"histogram_quantile(0.9, sum by (instance, le) "
                      f"(rate(lookout_collection_duration_seconds_bucket{{{ISEL}}}[{RI}])))", "{{instance}}")], "s"),
         8, 8),
    ]
    return dashboard("lookout-pipeline", "Lookout pipeline",
                     "Lookout's log shipping: records read and shipped per route, lag, retries, dead letters, "
                     "route up/down, parse errors, and the agent's own CPU and memory.", variables, items)


# --- output -------------------------------------------------------------------------------------------

FILES = {
    "lookout-containers.json": containers_overview,
    "lookout-container-detail.json": container_detail,
    "lookout-pipeline.json": pipeline,
}


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text, exactly as written to ``dashboards/grafana/``."""
    return {name: render(make()) for name, make in FILES.items()}


def stale(out_dir: Path = OUT_DIR) -> list[str]:
    """Files that are missing or differ from the generated text, and JSON files this script does not make."""
    wanted = generate()
    problems = [name for name, text in wanted.items()
                if not (out_dir / name).is_file() or (out_dir / name).read_text() != text]
    problems += sorted(p.name for p in out_dir.glob("*.json") if p.name not in wanted)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file is out of date")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output directory (default {OUT_DIR})")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.out)
        for name in problems:
            print(f"{args.out / name}: out of date; run: python dashboards/build.py", file=sys.stderr)
        return 1 if problems else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

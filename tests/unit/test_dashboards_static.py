"""Issue #5, offline: the Grafana dashboards, the provisioning files, the alert rules and the example scrape
configuration.

- the committed dashboard JSON is exactly what ``dashboards/build.py`` generates;
- each dashboard is well formed for Grafana's classic model (schemaVersion 42): unique ids and uids,
  panels on the 24-column grid without overlaps, every query on the ``$datasource`` variable, every
  ``$variable`` defined, a ``$name`` container variable from ``label_values(...)``;
- each dashboard has the panels the issue asks for (by the metrics and groupings its queries use);
- every panel and variable query parses (``promtool check rules`` on a generated rule file);
- every metric name a dashboard or rule mentions is one the agent exports; the container dashboards
  and container alerts use only cAdvisor's ``container_*``/``machine_*`` families;
- ``promtool check rules`` and ``promtool test rules``, where every alert has a firing and a
  not-firing case;
- ``promtool check config`` on the example scrape configuration.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.dashboard_queries import (
    DASHBOARDS_DIR,
    PROMETHEUS_DIR,
    PROMETHEUS_SERIES,
    REPO_ROOT,
    RULES_FILE,
    Query,
    exported_metric_names,
    interpolate,
    iter_panels,
    load_dashboards,
    load_rules,
    metric_names,
    panel_queries,
    variable_queries,
    variable_request,
)
from tests.helpers.deps import unavailable

BOARDS = load_dashboards()
EXPECTED_FILES = {"lookout-containers.json", "lookout-container-detail.json", "lookout-pipeline.json"}
REQUIRED_ALERTS = {
    "ContainerOOMKilled", "ContainerCPUThrottled", "ContainerMemoryNearLimit", "ContainerGone",
    "LookoutRouteDown", "LookoutRouteDeadLettering", "LookoutLogLagGrowing", "LookoutAgentDown",
}
# Sample values for the variables: a host, a container name and a route URI that need escaping.
SAMPLE_VALUES = {"instance": "node-1.example.com:9338", "name": "web.1", "route": "file:///var/log/all.ndjson?x=1"}


def yaml_module() -> ModuleType:
    try:
        import yaml
    except ImportError:
        unavailable("PyYAML is not installed (pip install pyyaml; it belongs in the [test] extras)")
    return yaml


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_build", REPO_ROOT / "dashboards" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def promql_of(query: Query) -> str:
    """The PromQL a query sends to Prometheus (a variable's series selector for label_values)."""
    return query.expr if query.kind == "panel" else variable_request(query.expr).promql


def queries_of(name: str) -> list[Query]:
    return variable_queries(name, BOARDS[name]) + panel_queries(name, BOARDS[name])


def concrete(query: Query, values: dict[str, str | None] | None = None) -> str:
    return interpolate(promql_of(query), BOARDS[query.dashboard], SAMPLE_VALUES if values is None else values)


# --- generation -------------------------------------------------------------------------------------


def test_dashboard_files_are_what_build_py_generates() -> None:
    build = load_build()
    assert set(BOARDS) == EXPECTED_FILES
    assert build.stale(DASHBOARDS_DIR) == [], "run: python dashboards/build.py"


def test_build_py_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    script = str(REPO_ROOT / "dashboards" / "build.py")
    subprocess.run(["python3", script, "--out", str(tmp_path)], check=True, capture_output=True)
    assert subprocess.run(["python3", script, "--check", "--out", str(tmp_path)]).returncode == 0
    (tmp_path / "lookout-pipeline.json").write_text("{}\n")
    proc = subprocess.run(["python3", script, "--check", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "lookout-pipeline.json: out of date" in proc.stderr


# --- structure --------------------------------------------------------------------------------------


def test_dashboard_uids_are_unique() -> None:
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids), uids
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid) for uid in uids), uids


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_dashboard_structure(name: str) -> None:
    board = BOARDS[name]
    assert board["schemaVersion"] == 42
    assert board["title"].startswith("Lookout") and "lookout" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    container_var = variables.get("name") or variables.get("route")
    assert container_var is not None
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, var["name"]
            assert var["definition"] == var["query"]["query"], var["name"]
            variable_request(var["query"]["query"])  # label_values(...) / query_result(...) only
            if var.get("includeAll"):
                assert var["allValue"] == ".+", f"${var['name']}: All must not match an absent label"
    if name != "lookout-pipeline.json":
        assert re.fullmatch(r"label_values\(container_last_seen\{.*\}, name\)", variables["name"]["definition"])

    titles = [p["title"] for p in iter_panels(board)]
    duplicates = sorted({t for t in titles if titles.count(t) > 1})
    assert not duplicates, f"duplicate panel titles: {duplicates}"
    ids = [p["id"] for p in iter_panels(board)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, (panel["title"], pos)
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "state-timeline"}, panel["type"]
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert t["expr"].strip(), panel["title"]
    for query in queries_of(name):
        concrete(query)  # raises KeyError naming an undefined $variable
        if all(v.get("multi") for v in variables.values() if v["type"] == "query"):
            concrete(query, {})  # "All" for the multi-value variables
        if query.kind == "panel":
            assert '=~"$name"' in query.expr or '="$name"' in query.expr or "$route" in query.expr \
                or "$instance" in query.expr, f"{query}: not filtered by the dashboard's variables"


def test_grafana_interpolation_escapes_like_grafana() -> None:
    board = BOARDS["lookout-containers.json"]
    expr = 'x{instance=~"$instance", name=~"$name"}[$__rate_interval]'
    assert interpolate(expr, board, {"name": "web.1", "instance": None}) == 'x{instance=~".+", name=~"web\\\\.1"}[10s]'
    detail = BOARDS["lookout-container-detail.json"]
    assert interpolate('x{name="$name"}', detail, {"name": "web.1", "instance": "h"}) == 'x{name="web.1"}'


# --- what the issue asks for ------------------------------------------------------------------------


def used(name: str) -> set[str]:
    out: set[str] = set()
    for q in queries_of(name):
        out |= metric_names(concrete(q))
    return out


def exprs(name: str) -> list[str]:
    return [q.expr for q in panel_queries(name, BOARDS[name])]


def test_overview_has_the_issue_panels() -> None:
    name = "lookout-containers.json"
    names = used(name)
    assert {"container_cpu_usage_seconds_total", "container_cpu_cfs_throttled_periods_total",
            "container_cpu_cfs_periods_total", "container_memory_working_set_bytes", "container_memory_rss",
            "container_memory_cache", "container_spec_memory_limit_bytes", "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total", "container_fs_reads_bytes_total",
            "container_fs_writes_bytes_total", "container_last_seen"} <= names
    joined = "\n".join(exprs(name))
    assert "by (instance, name, interface)" in joined  # network per interface
    assert re.search(r"count\(container_last_seen\{", joined)  # container count
    assert re.search(r"max_over_time\(container_last_seen\{.*\}\[\$__range\]\)\)\s*unless on \(instance, name\) "
                     r"container_last_seen", joined)  # containers that stopped reporting
    titles = {p["title"] for p in iter_panels(BOARDS[name])}
    assert {"CPU throttling ratio", "Memory against the limit", "Containers that stopped reporting"} <= titles


def test_detail_draws_limits_as_thresholds_and_has_oom_and_psi() -> None:
    board = BOARDS["lookout-container-detail.json"]
    assert {v["name"]: v["multi"] for v in board["templating"]["list"] if v["type"] == "query"} == \
        {"instance": False, "name": False}
    panels = {p["title"]: p for p in iter_panels(board)}
    for title, limit_metric in (("CPU usage and limit", "container_spec_cpu_quota"),
                                ("Memory and limit", "container_spec_memory_limit_bytes")):
        panel = panels[title]
        limit = [t for t in panel["targets"] if t["legendFormat"] == "limit"]
        assert len(limit) == 1 and limit_metric in limit[0]["expr"], title
        override = panel["fieldConfig"]["overrides"][0]
        assert override["matcher"] == {"id": "byName", "options": "limit"}
        props = {p["id"]: p["value"] for p in override["properties"]}
        assert props["custom.lineStyle"]["fill"] == "dash" and props["color"]["fixedColor"] == "red"
    names = used("lookout-container-detail.json")
    assert "container_oom_events_total" in names
    assert {f"container_pressure_{k}_{w}_seconds_total" for k in ("cpu", "memory", "io")
            for w in ("waiting", "stalled")} <= names


def test_pipeline_has_the_issue_panels() -> None:
    name = "lookout-pipeline.json"
    assert {"lookout_log_records_read_total", "lookout_route_records_sent_total", "lookout_log_lag_bytes",
            "lookout_route_retries_total", "lookout_route_records_dead_lettered_total", "lookout_route_up",
            "lookout_log_parse_errors_total", "process_cpu_seconds_total", "process_resident_memory_bytes"} \
        <= used(name)
    joined = "\n".join(exprs(name))
    for metric in ("lookout_log_records_read_total", "lookout_route_records_sent_total"):
        assert re.search(rf"sum by \(instance, route\) \(rate\({metric}\{{", joined), f"{metric} per route"
    # the agent's own process metrics, not those of every other exporter on the same Prometheus
    for metric in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        expr = next(e for e in exprs(name) if metric in e)
        assert "and on (instance, job) lookout_build_info" in expr


# --- queries parse, metric names exist ---------------------------------------------------------------


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    yaml = yaml_module()
    queries: list[tuple[str, str]] = []
    for name in sorted(BOARDS):
        for q in queries_of(name):
            queries.append((str(q), concrete(q)))
            queries.append((f"{q} (All)", concrete(q, {"instance": None, "name": None, "route": None}
                                                   if name != "lookout-container-detail.json" else SAMPLE_VALUES)))
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_where, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        bad = sorted({int(m) for m in re.findall(r'"dashboard:query_(\d+)"', proc.stdout + proc.stderr)})
        detail = "\n".join(f"{queries[i][0]}: {queries[i][1]}" for i in bad if i < len(queries))
        pytest.fail(f"promtool rejects dashboard queries:\n{proc.stdout}{proc.stderr}\n{detail}")
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_every_metric_a_dashboard_or_rule_mentions_is_exported() -> None:
    exported = exported_metric_names() | PROMETHEUS_SERIES
    missing: dict[str, set[str]] = {}
    for name in BOARDS:
        for q in queries_of(name):
            for metric in metric_names(concrete(q)) - exported:
                missing.setdefault(metric, set()).add(str(q))
    for rule in load_rules():
        for metric in metric_names(rule.expr) - exported:
            missing.setdefault(metric, set()).add(f"alerts.yml: {rule.name}")
    assert not missing, "\n".join(f"{m}: {sorted(w)}" for m, w in sorted(missing.items()))


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (instance, name) (rate(a_total{name=~"x"}[5m])) / on (i) group_left (j) b:c') == \
        {"a_total", "b:c"}
    assert metric_names("x > 0 < 1e18 unless on (instance) (up == 0) or max_over_time(y[1h:5m] offset 1d)") == \
        {"x", "up", "y"}
    assert metric_names("count(count by (instance) (z)) and histogram_quantile(0.9, sum by (le) (rate(h[1m])))") == \
        {"z", "h"}


def test_container_dashboards_and_alerts_keep_to_cadvisor_names() -> None:
    """They must work on a plain cAdvisor too: only container_*/machine_* (and Prometheus' own up)."""
    for name in ("lookout-containers.json", "lookout-container-detail.json"):
        other = {m for m in used(name) if not m.startswith(("container_", "machine_"))}
        assert not other, f"{name} uses non-cAdvisor metrics: {other}"
    for rule in load_rules():
        if rule.group == "lookout-containers":
            other = {m for m in metric_names(rule.expr) if not m.startswith("container_")} - PROMETHEUS_SERIES
            assert not other, f"{rule.name}: {other}"
    # cAdvisor's labels only: aggregations keep to these
    allowed = {"instance", "job", "name", "image", "id", "interface", "device", "cpu", "le", "namespace", "pod",
               "container", "route", "reason"}
    for name in BOARDS:
        for q in panel_queries(name, BOARDS[name]):
            for labels in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", q.expr):
                extra = {label.strip() for label in labels.split(",") if label.strip()} - allowed
                assert not extra, f"{q}: grouping by {extra}"


# --- alert rules and scrape configuration --------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_test_rules(promtool: str) -> None:
    proc = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    yaml = yaml_module()
    alerts = {r.name for r in load_rules()}
    assert alerts >= REQUIRED_ALERTS, REQUIRED_ALERTS - alerts
    doc: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - fired == set(), f"never tested firing: {alerts - fired}"
    assert alerts - quiet == set(), f"never tested not firing: {alerts - quiet}"
    for group in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_example_scrape_config(promtool: str, tmp_path: Path) -> None:
    yaml = yaml_module()
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    static = jobs["lookout"]["static_configs"][0]["targets"]
    assert static and all(t.endswith(":9338") for t in static)
    k8s = jobs["lookout-daemonset"]
    assert k8s["kubernetes_sd_configs"][0]["role"] == "pod"
    assert all(job.startswith("lookout") for job in jobs), "the agent alerts select up{job=~\"lookout.*\"}"
    relabel = k8s["relabel_configs"]
    for step in relabel:
        assert step.get("action", "replace") in {"keep", "drop", "replace", "labelmap"}, step
        re.compile(step.get("regex", "(.*)"))
    targets = {s.get("target_label") for s in relabel}
    assert "instance" in targets and not targets & {"namespace", "pod", "container"}, \
        "target labels must not clash with the container metrics' own namespace/pod/container"
    assert {"regex": "metrics", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "action": "keep"} in relabel, "keep only the DaemonSet's port named metrics"

    for f in ("prometheus.yml", "alerts.yml"):
        (tmp_path / f).write_text((PROMETHEUS_DIR / f).read_text())
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True)
    if proc.returncode != 0 and "field kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        # Debian's prometheus/promtool are built without Kubernetes service discovery: check the rest with
        # promtool, the kubernetes_sd job above structurally.
        config["scrape_configs"] = [j for j in config["scrape_configs"] if "kubernetes_sd_configs" not in j]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                              text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 1 rule files found" in proc.stdout + proc.stderr


def test_grafana_provisioning() -> None:
    yaml = yaml_module()
    prov = REPO_ROOT / "dashboards" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "lookout.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    assert source["jsonData"]["timeInterval"] == "10s"
    providers = yaml.safe_load((prov / "dashboards" / "lookout.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards/lookout"

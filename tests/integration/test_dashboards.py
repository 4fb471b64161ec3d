"""Issue #5, live: every query of every Grafana dashboard, and the alert rules, against a real Prometheus
(Debian's ``prometheus``) scraping a real agent that watches real Docker containers.

The module starts, once:

- ``busy``: ``--cpus 0.5 --memory 64m`` and read/write bandwidth limits on the disk under Docker's root
  (cgroup v1 counts block IO only for devices with a throttle rule), burning CPU, pinging ``peer`` on
  the test network and reading and writing with O_DIRECT: CPU, throttling, memory against a limit,
  network, filesystem IO;
- ``peer``, pinging ``busy`` back;
- ``logger``, writing to stdout and stderr, with an over-long line now and then;
- ``oomer``: ``--memory 16m`` with a child that keeps allocating 32 MiB and is OOM-killed (with
  ``oom_score_adj`` 1000 it is always the victim, so the container itself lives on), so the OOM panels
  and the OOM alert have something to show;
- ``gone``: seen by Prometheus, then removed, for "containers that stopped reporting";
- ``corrupt``: a quiet container whose json-file log gets one line that is not JSON (as after a crash
  mid-write), for the parse-error panels;
- the agent (``--housekeeping-interval 1s``, ``--max-line-bytes 4KiB``) with three routes: a file
  (working), an HTTP receiver that answers 400 to everything (rejected records, dead letters, dropped
  records), and a port where nothing listens (route down, retries, growing lag);
- Prometheus scraping the agent every second, with ``dashboards/prometheus/alerts.yml`` loaded.

Then each dashboard's variable queries go to ``/api/v1/label/<label>/values`` (as Grafana sends
``label_values``) and each panel query, with the variables interpolated as Grafana does and
``$__rate_interval``/``$__interval``/``$__range`` set to 10s/5s/5m, to ``/api/v1/query``: each must parse
and return data. The only queries allowed to be empty are listed in ``allowed_empty`` with the reason
(PSI on a cgroup v1 host).
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_queries import (
    PROMETHEUS_SERIES,
    RULES_FILE,
    Query,
    interpolate,
    load_dashboards,
    load_rules,
    metric_names,
    panel_queries,
    variable_queries,
    variable_request,
)
from tests.helpers import docker as docker_helper
from tests.helpers import kernel
from tests.helpers import prometheus as prometheus_helper
from tests.helpers.agent import AgentProcess, free_port
from tests.helpers.deps import unavailable
from tests.helpers.docker import Container, ContainerRunner, DockerEngine
from tests.helpers.prometheus import PrometheusServer
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.prometheus]

BOARDS = load_dashboards()
PSI_REASON = ("no PSI per cgroup on this host (cgroup v1, or a v2 kernel without CONFIG_PSI): "
              "container_pressure_* are not exported")
FS_REASON = ("cgroup v1 counts block IO only for devices with a throttle rule, and no block device could be "
             "found under Docker's root to set one on")


# --- helpers ----------------------------------------------------------------------------------------


class RulesPrometheus(PrometheusServer):
    """The helper's Prometheus with the project's alert rules loaded."""

    def __init__(self, *args: Any, rule_file: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rule_file = rule_file

    def config(self) -> str:
        return f"rule_files:\n  - '{self.rule_file}'\n" + super().config()


class Rejecting(http.server.BaseHTTPRequestHandler):
    """An HTTP receiver that refuses every batch for good (400): the sink dead-letters it."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error":"rejected by the dashboards test"}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


def backing_disk(path: str) -> str | None:
    """The whole block device (``/dev/vda``) holding ``path``, for ``--device-*-bps``; None if none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    sys_dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not sys_dev.exists():
        return None
    real = sys_dev.resolve()
    if (real / "partition").exists():
        real = real.parent
    dev = Path("/dev") / real.name
    return str(dev) if dev.exists() else None


def has_psi() -> bool:
    if kernel.cgroup_version() == 1:
        return False
    return (kernel.CGROUP_ROOT / "cpu.pressure").exists() or any(kernel.CGROUP_ROOT.glob("*/cpu.pressure"))


@dataclass
class Stack:
    agent: AgentProcess
    prom: PrometheusServer
    busy: Container
    peer: Container
    logger: Container
    oomer: Container
    gone: Container
    corrupt: Container
    file_route: str
    reject_route: str
    down_route: str
    allowed_empty: dict[str, str] = field(default_factory=dict)  # metric-name substring -> reason

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.prom.query(expr)

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def reason_empty(self, expr: str) -> str | None:
        for needle, reason in self.allowed_empty.items():
            if needle in expr:
                return reason
        return None


# --- the stack --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(docker_engine: DockerEngine, module_containers: ContainerRunner,
          module_agent: Callable[..., AgentProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = prometheus_helper.find_binary("prometheus")
    if binary is None:
        unavailable("no prometheus binary (" + prometheus_helper.where("prometheus")
                    + "; Debian: apt-get install prometheus)")
    allowed: dict[str, str] = {}
    if not has_psi():
        allowed["container_pressure_"] = PSI_REASON

    run = module_containers.run
    net = docker_engine.network
    peer = run("--network", net, purpose="dashpeer", cmd=["sleep", "3600"])
    disk = backing_disk(docker_engine.root_dir)
    io_limits: list[str] = []
    if disk is not None:
        io_limits = ["--device-read-bps", f"{disk}:1gb", "--device-write-bps", f"{disk}:1gb"]
    elif kernel.cgroup_version() == 1:
        allowed["container_fs_reads_bytes_total"] = allowed["container_fs_writes_bytes_total"] = FS_REASON
    busy = run("--network", net, "--cpus", "0.5", "--memory", "64m", *io_limits, purpose="dashbusy", cmd=[
        "sh", "-c",
        f"ping {peer.ip(net)} >/dev/null 2>&1 & "
        "while :; do dd if=/dev/zero of=/io bs=64k count=32 oflag=direct 2>/dev/null; "
        "dd if=/io of=/dev/null bs=64k iflag=direct 2>/dev/null; sleep 0.5; done & "
        "while :; do :; done"])
    docker_helper.docker("exec", "-d", peer.id, "ping", busy.ip(net))
    logger = run(purpose="dashlogger", cmd=[
        "sh", "-c",
        'i=0; while :; do i=$((i+1)); echo "dashboards test line $i"; echo "dashboards test error $i" >&2; '
        'if [ $((i % 20)) -eq 0 ]; then head -c 6000 /dev/zero | tr "\\0" x; echo; fi; sleep 0.1; done'])
    oomer = run("--memory", "16m", "--memory-swap", "16m", purpose="dashoomer", cmd=[
        # the child volunteers as the OOM killer's victim, so the container's init survives every kill
        "sh", "-c", 'while :; do sh -c "echo 1000 >/proc/self/oom_score_adj; x=\\$(yes | head -c 33554432)"; '
        'sleep 1; done'])
    gone = run(purpose="dashgone", cmd=["sleep", "3600"])
    corrupt = run(purpose="dashcorrupt", cmd=["sleep", "3600"])

    reject = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Rejecting)
    thread = threading.Thread(target=reject.serve_forever, name="rejecting-receiver", daemon=True)
    thread.start()
    out_dir = tmp_path_factory.mktemp("dashboards-routes")
    only_ours = "filter.name=lookout-test-dash*"
    file_route = f"file://{out_dir}/all.ndjson"
    reject_route = f"http://127.0.0.1:{reject.server_address[1]}/bulk?{only_ours}&flush=200ms"
    down_route = f"http://127.0.0.1:{free_port()}/down?{only_ours}&flush=200ms"
    try:
        agent = module_agent("--route", file_route, "--route", reject_route, "--route", down_route,
                             "--max-line-bytes", "4KiB")
        rules = tmp_path_factory.mktemp("dashboards-rules") / "alerts.yml"
        shutil.copy(RULES_FILE, rules)
        prom = RulesPrometheus(binary, tmp_path_factory.mktemp("dashboards-prometheus"), [agent.address],
                               rule_file=rules)
        try:
            prom.start()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            s = Stack(agent, prom, busy, peer, logger, oomer, gone, corrupt, file_route, reject_route, down_route,
                      allowed)
            settle(s)
            yield s
        finally:
            prom.stop()
    finally:
        reject.shutdown()
        reject.server_close()


def settle(s: Stack) -> None:
    """Induce what the panels show and wait until Prometheus has it, with enough samples for rate()."""
    log_path = s.corrupt.inspect()["LogPath"]
    with open(log_path, "ab") as fh:  # a line that is not JSON, as after a crash mid-write
        fh.write(b"this line is not json\n")

    def present(expr: str) -> bool:
        return bool(s.query(expr))

    wait_for(lambda: present(f'container_last_seen{{name="{s.gone.name}"}}'), 30,
             message=f"Prometheus to scrape {s.gone.name}", describe=s.prom.describe_targets)
    docker_helper.docker("rm", "-f", "-v", s.gone.id)

    conditions = {
        "container_oom_events_total of the OOM container > 0":
            f'container_oom_events_total{{name="{s.oomer.name}"}} > 0',
        "the busy container's CPU throttled":
            f'rate(container_cpu_cfs_throttled_periods_total{{name="{s.busy.name}"}}[10s]) > 0',
        "network traffic between busy and peer":
            f'rate(container_network_receive_bytes_total{{name="{s.busy.name}"}}[10s]) > 0',
        "dead letters on the rejecting route": "lookout_route_records_dead_lettered_total > 0",
        "a parse error": "lookout_log_parse_errors_total > 0",
        "a truncated line": "lookout_log_lines_truncated_total > 0",
        "the unreachable route down": "lookout_route_up == 0",
        "the removed container no longer reporting": f'absent(container_last_seen{{name="{s.gone.name}"}})',
        "20 s of samples": f'count_over_time(container_last_seen{{name="{s.busy.name}"}}[1m]) >= 20',
    }
    if "container_fs_writes_bytes_total" not in s.allowed_empty:
        conditions["block IO of the busy container"] = \
            f'rate(container_fs_writes_bytes_total{{name="{s.busy.name}"}}[10s]) > 0'
    for what, expr in conditions.items():
        wait_for(lambda expr=expr: present(expr), 60, interval=0.5, message=f"{what} ({expr})",
                 describe=lambda: s.prom.describe_targets() + "\n" + s.agent.log(20))


# --- variables --------------------------------------------------------------------------------------


def variable_values(s: Stack, board_name: str, chosen: dict[str, str | None]) -> dict[str, list[str]]:
    """Run each query variable as Grafana does (in order, later ones see the earlier choices)."""
    board = BOARDS[board_name]
    out = {}
    for q in variable_queries(board_name, board):
        var = q.where.removeprefix("variable $")
        req = variable_request(interpolate(q.expr, board, chosen))
        data = s.prom.api(req.path, **dict(req.params)) if req.path != "query" else s.prom.query(req.promql)
        out[var] = sorted(data) if req.path != "query" else [str(r["metric"]) for r in data]
    return out


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_every_variable_query_returns_values(stack: Stack, board_name: str) -> None:
    address = stack.agent.address
    chosen: dict[str, str | None] = {"instance": address, "name": stack.busy.name, "route": None}
    values = variable_values(stack, board_name, chosen)
    assert values and all(values.values()), values
    assert address in values["instance"], values["instance"]
    if "name" in values:
        assert {stack.busy.name, stack.oomer.name, stack.logger.name} <= set(values["name"]), values["name"]
    if "route" in values:
        assert {stack.file_route, stack.reject_route, stack.down_route} <= set(values["route"]), values["route"]


# --- panels -----------------------------------------------------------------------------------------


def execute(s: Stack, board_name: str, chosen: dict[str, str | None],
            titles: frozenset[str] | None = None) -> tuple[dict[Query, list[dict[str, Any]]], dict[Query, str]]:
    """Run the dashboard's panel queries (those of ``titles`` only, when given), interpolated as Grafana does:
    (results, errors) keyed by query, each with its interpolated expression."""
    board = BOARDS[board_name]
    results: dict[Query, list[dict[str, Any]]] = {}
    errors: dict[Query, str] = {}
    for q in panel_queries(board_name, board):
        if titles is not None and q.panel not in titles:
            continue
        expr = interpolate(q.expr, board, chosen)
        try:
            results[q] = s.query(expr)
        except AssertionError as exc:  # the API's error (e.g. a parse error)
            errors[q] = f"{exc}\n    {expr}"
    return results, errors


def run_panels(s: Stack, board_name: str, chosen: dict[str, str | None],
               empty: frozenset[str] = frozenset()) -> dict[Query, list[dict[str, Any]]]:
    """Every panel query of the dashboard, interpolated; fails listing every query that errors or is empty
    (or, for the panels titled in ``empty``, that shows anything but zeros: right for this selection)."""
    board = BOARDS[board_name]
    results, errors = execute(s, board_name, chosen)
    problems = [f"{q}: {error}" for q, error in errors.items()]
    for q, result in results.items():
        expr = interpolate(q.expr, board, chosen)
        if q.panel in empty:
            # a per-route counter exists at 0 from the route's start: "nothing happened" is no series or zeros
            if any(float(item["value"][1]) != 0 for item in result):
                problems.append(f"{q}: should be empty or 0 for {chosen}, got {result}\n    {expr}")
        elif not result and s.reason_empty(expr) is None:
            problems.append(f"{q}: no data for\n    {expr}")
    assert not problems, f"{len(problems)} of {len(results) + len(errors)} queries fail:\n" + "\n".join(problems)
    return results


def by_title(results: dict[Query, list[dict[str, Any]]], title: str, ref: str = "A") -> list[dict[str, Any]]:
    return next(r for q, r in results.items() if q.panel == title and q.where.endswith(f" {ref}"))


def test_containers_overview_queries_return_data(stack: Stack) -> None:
    results = run_panels(stack, "lookout-containers.json", {"instance": stack.agent.address, "name": None})
    names = {r["metric"].get("name") for r in by_title(results, "CPU usage")}
    assert {stack.busy.name, stack.oomer.name} <= names, names
    ratio = {r["metric"]["name"]: float(r["value"][1]) for r in by_title(results, "CPU throttling ratio")}
    assert ratio[stack.busy.name] > 0, ratio
    table = {r["metric"]["name"]: float(r["value"][1]) for r in by_title(results, "Memory against the limit", "D")}
    assert table[stack.busy.name] == 64 * 2**20, table
    interfaces = {(r["metric"]["name"], r["metric"]["interface"]) for r in by_title(results, "Network receive")}
    assert (stack.busy.name, "eth0") in interfaces, interfaces
    gone = {r["metric"]["name"] for r in by_title(results, "Containers that stopped reporting")}
    assert stack.gone.name in gone and stack.busy.name not in gone, gone
    assert float(by_title(results, "Stopped reporting")[0]["value"][1]) >= 1
    assert float(by_title(results, "OOM kills")[0]["value"][1]) > 0


def test_containers_overview_for_one_selected_container(stack: Stack) -> None:
    """A multi-value selection is regex-escaped: the container's name (with its '-') still matches."""
    # busy is reporting: the "stopped reporting" panels must be empty for it
    results = run_panels(stack, "lookout-containers.json", {"instance": stack.agent.address, "name": stack.busy.name},
                         empty=frozenset({"Stopped reporting", "Containers that stopped reporting"}))
    assert {r["metric"]["name"] for r in by_title(results, "CPU usage")} == {stack.busy.name}
    assert float(by_title(results, "Containers reporting")[0]["value"][1]) == 1


def test_container_detail_queries_return_data(stack: Stack) -> None:
    results = run_panels(stack, "lookout-container-detail.json",
                         {"instance": stack.agent.address, "name": stack.busy.name})
    limit = by_title(results, "CPU usage and limit", "B")
    assert [float(r["value"][1]) for r in limit] == [0.5], limit  # --cpus 0.5, drawn as the limit line
    assert float(by_title(results, "Memory and limit", "E")[0]["value"][1]) == 64 * 2**20
    used = float(by_title(results, "CPU usage and limit", "A")[0]["value"][1])
    assert 0 < used <= 0.6, f"the burner under --cpus 0.5 used {used} cores"  # busy 2-core machines: no lower bound
    assert float(by_title(results, "Memory of limit")[0]["value"][1]) > 0


def test_container_detail_shows_the_oom_kills(stack: Stack) -> None:
    """The OOM container (no CPU quota, no network, no IO: only its OOM panels are asked)."""
    results, errors = execute(stack, "lookout-container-detail.json",
                              {"instance": stack.agent.address, "name": stack.oomer.name},
                              frozenset({"OOM kills", "OOM kills over time", "Memory and limit"}))
    assert not errors, errors
    assert float(by_title(results, "OOM kills")[0]["value"][1]) >= 1  # the stat: the kernel's counter
    series = by_title(results, "OOM kills over time")
    assert series and float(series[0]["value"][1]) >= 0, series  # the per-interval bars
    assert float(by_title(results, "Memory and limit", "E")[0]["value"][1]) == 16 * 2**20


def test_pipeline_queries_return_data(stack: Stack) -> None:
    results = run_panels(stack, "lookout-pipeline.json", {"instance": stack.agent.address, "route": None})
    up = {r["metric"]["route"]: float(r["value"][1]) for r in by_title(results, "Route up/down")}
    assert up[stack.file_route] == 1 and up[stack.down_route] == 0, up
    assert float(by_title(results, "Routes down")[0]["value"][1]) >= 1
    assert float(by_title(results, "Dead letters")[0]["value"][1]) > 0
    assert float(by_title(results, "Parse errors")[0]["value"][1]) > 0
    lag = {r["metric"]["route"]: float(r["value"][1]) for r in by_title(results, "Lag per route")}
    assert lag[stack.down_route] > 0, lag
    shipped = {r["metric"]["route"] for r in by_title(results, "Records shipped")}
    assert stack.file_route in shipped, shipped
    dropped = {r["metric"]["reason"] for r in by_title(results, "Dropped records")}
    assert "rejected" in dropped, dropped


def test_pipeline_for_one_selected_route(stack: Stack) -> None:
    """A route URI (with '?', '.', '*') selected in $route is regex-escaped and still matches only itself."""
    # the rejecting route is up and never retries (400 is final): those panels show nothing (or 0) for it
    results = run_panels(stack, "lookout-pipeline.json",
                         {"instance": stack.agent.address, "route": stack.reject_route},
                         empty=frozenset({"Routes down", "Retries"}))
    assert {r["metric"]["route"] for r in by_title(results, "Records read")} == {stack.reject_route}
    dead = by_title(results, "Dead letters and rejections")
    assert {r["metric"]["route"] for r in dead} == {stack.reject_route}


def test_allowed_empty_queries_are_only_those_the_host_cannot_feed(stack: Stack) -> None:
    """Every allow-list entry has a reason and names metrics the dashboards use; on a host with PSI the
    pressure queries are not allowed to be empty at all."""
    for needle, reason in stack.allowed_empty.items():
        assert reason and needle.startswith("container_"), (needle, reason)
    if has_psi():
        assert "container_pressure_" not in stack.allowed_empty


def test_every_dashboard_metric_is_live(stack: Stack) -> None:
    """The names the dashboards use are all on the agent's /metrics as Prometheus scraped it."""
    live = set(stack.prom.api("label/__name__/values")) | PROMETHEUS_SERIES
    missing = set()
    for board_name, board in BOARDS.items():
        for q in panel_queries(board_name, board):
            for metric in metric_names(interpolate(q.expr, board, {"instance": "x", "name": "y", "route": "z"})):
                if metric not in live and stack.reason_empty(metric) is None:
                    missing.add(f"{metric} ({q})")
    assert not missing, "\n".join(sorted(missing))


# --- alert rules on live data -------------------------------------------------------------------------


def test_alert_rules_evaluate_on_live_data(stack: Stack) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = stack.prom.api("rules")["groups"]
        found = [r for g in groups for r in g["rules"]]
        return found if len(found) == len(load_rules()) and all(r.get("lastEvaluation", "").startswith("2")
                                                                 for r in found) else []

    found = wait_for(rules, 30, message="every alert rule evaluated")
    unhealthy = [(r["name"], r.get("lastError")) for r in found if r["health"] != "ok"]
    assert not unhealthy, unhealthy

    def alerts() -> dict[tuple[str, str], str]:
        active = stack.prom.api("alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("name") or a["labels"].get("route", "")): a["state"]
                for a in active}

    def expected() -> dict[tuple[str, str], str] | None:
        got = alerts()
        want = [("ContainerOOMKilled", stack.oomer.name), ("LookoutRouteDeadLettering", stack.reject_route),
                ("LookoutRouteDown", stack.down_route)]
        return got if all(k in got for k in want) else None

    got = wait_for(expected, 30, message="the OOM, dead-letter and route-down alerts active",
                   describe=lambda: str(alerts()))
    assert got[("ContainerOOMKilled", stack.oomer.name)] == "firing"
    assert got[("LookoutRouteDeadLettering", stack.reject_route)] == "firing"
    assert got[("LookoutRouteDown", stack.down_route)] in ("pending", "firing")  # for: 5m
    assert ("LookoutRouteDown", stack.file_route) not in got
    assert not any(name == "LookoutAgentDown" for name, _ in got)

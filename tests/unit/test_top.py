"""``lookout top``'s pure parts on answers captured from a running agent (tests/fixtures/data/api, SOURCES.md):
rows and rates from the JSON, sorting, formatting, the plain table, the keys and the live screen's rendering."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agent import top, top_data
from agent.top import Api, Poll, View
from agent.top_data import Row, SortKey

API = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "api"


def load(name: str) -> dict[str, Any]:
    return json.loads((API / name).read_text())


DOCKER_1, DOCKER_2 = load("containers-docker-1.json"), load("containers-docker-2.json")
KUBEPODS = load("containers-kubepods.json")
WITH_RATES, ROUTES_DOC = load("containers-docker-rates.json"), load("routes.json")


def entry(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["containers"] if (c["info"]["name"] or c["info"]["cgroup"]) == name)


def by_name(snap: top_data.Snapshot) -> dict[str, Row]:
    return {r.name: r for r in snap.rows}


def with_rates(doc: dict[str, Any], rates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``doc`` as an agent that serves ``rates`` (docs/API.md) answers it; containers not named get all-null rates."""
    doc = copy.deepcopy(doc)
    keys = ("cpu_cores", "memory_bytes", "memory_limit_bytes", "network_rx_bytes_per_second",
            "network_tx_bytes_per_second", "log_lines_per_second", "log_bytes_per_second")
    for c in doc["containers"]:
        c["rates"] = {k: None for k in keys} | rates.get(c["info"]["name"] or c["info"]["cgroup"], {})
    return doc


# --- rows and rates --------------------------------------------------------------------------------------------


def test_without_the_agents_rates_cpu_and_network_come_from_two_snapshots_of_the_counters() -> None:
    snap = top_data.snapshot(DOCKER_2, DOCKER_1)
    assert not snap.rates_from_agent
    rows = by_name(snap)
    assert set(rows) == {"/docker", "cli-dev-busy", "cli-dev-idle", "cli-dev-netshare"}  # not the root: the host line

    before, after = entry(DOCKER_1, "cli-dev-busy"), entry(DOCKER_2, "cli-dev-busy")
    seconds = after["stats"]["timestamp"] - before["stats"]["timestamp"]
    cores = (after["stats"]["cpu"]["usage_ns"] - before["stats"]["cpu"]["usage_ns"]) / seconds / 1e9
    busy = rows["cli-dev-busy"]
    assert busy.cpu_cores == pytest.approx(cores)
    assert 0.5 < busy.cpu_cores < 1.2  # the shell loop keeps about one core busy
    rx = [sum(i["rx_bytes"] for i in e["stats"]["network"]) for e in (before, after)]
    assert busy.rx_bytes_per_second == pytest.approx((rx[1] - rx[0]) / seconds)
    assert busy.tx_bytes_per_second == 0.0
    assert busy.memory_bytes == after["stats"]["memory"]["working_set"]
    assert busy.memory_limit_bytes is None  # no -m: unlimited
    assert busy.log_lines_per_second is None  # only the agent knows
    assert busy.container_id == after["info"]["container_id"] and busy.image == "lookout-test-busybox"

    idle = rows["cli-dev-idle"]
    assert idle.memory_limit_bytes == 64 * 1024 * 1024
    assert idle.memory_fraction == pytest.approx(idle.memory_bytes / (64 * 1024 * 1024))
    assert idle.cpu_cores is not None and idle.cpu_cores < 0.01
    # --network container:cli-dev-idle: the counters are the other container's, so none of its own.
    assert rows["cli-dev-netshare"].net_bytes_per_second is None
    assert rows["/docker"].net_bytes_per_second is None  # a raw cgroup in the host's network namespace

    root = [entry(d, "/") for d in (DOCKER_1, DOCKER_2)]
    host_cores = (root[1]["stats"]["cpu"]["usage_ns"] - root[0]["stats"]["cpu"]["usage_ns"]) / (
        root[1]["stats"]["timestamp"] - root[0]["stats"]["timestamp"]) / 1e9
    assert snap.host == top_data.Host(pytest.approx(host_cores), DOCKER_2["machine"]["cpu_cores"],
                                 root[1]["stats"]["memory"]["working_set"], DOCKER_2["machine"]["memory_bytes"])


def test_one_snapshot_without_rates_has_memory_but_no_rates() -> None:
    assert top_data.needs_two_samples(DOCKER_1)
    rows = by_name(top_data.snapshot(DOCKER_1))
    assert rows["cli-dev-busy"].cpu_cores is None and rows["cli-dev-busy"].net_bytes_per_second is None
    assert rows["cli-dev-idle"].memory_bytes == entry(DOCKER_1, "cli-dev-idle")["stats"]["memory"]["working_set"]


def test_a_counter_that_went_back_is_an_unknown_rate_not_a_negative_one() -> None:
    restarted = copy.deepcopy(DOCKER_2)
    entry(restarted, "cli-dev-busy")["stats"]["cpu"]["usage_ns"] = 5
    assert by_name(top_data.snapshot(restarted, DOCKER_1))["cli-dev-busy"].cpu_cores is None


def test_the_agents_rates_are_used_as_they_are_and_null_is_computed_or_unknown() -> None:
    doc = with_rates(DOCKER_2, {
        "cli-dev-busy": {"cpu_cores": 0.75, "memory_bytes": 1000, "memory_limit_bytes": 4000,
                         "network_rx_bytes_per_second": 10.0, "network_tx_bytes_per_second": 5.0,
                         "log_lines_per_second": 14.5},
        "/": {"cpu_cores": 1.5, "memory_bytes": 2048},
    })
    assert not top_data.needs_two_samples(doc)
    snap = top_data.snapshot(doc)
    assert snap.rates_from_agent
    busy = by_name(snap)["cli-dev-busy"]
    assert (busy.cpu_cores, busy.memory_bytes, busy.memory_limit_bytes, busy.net_bytes_per_second,
            busy.log_lines_per_second) == (0.75, 1000, 4000, 15.0, 14.5)
    idle = by_name(snap)["cli-dev-idle"]  # all null (e.g. started since the agent's last collection)
    assert (idle.cpu_cores, idle.net_bytes_per_second, idle.log_lines_per_second) == (None, None, None)
    assert idle.memory_bytes == entry(DOCKER_2, "cli-dev-idle")["stats"]["memory"]["working_set"]  # from its stats
    assert idle.memory_limit_bytes == 64 * 1024 * 1024
    assert (snap.host.cpu_cores, snap.host.memory_bytes) == (1.5, 2048)

    # With an earlier answer, what the agent left null is computed; what it served is kept.
    snap = top_data.snapshot(doc, DOCKER_1)
    assert by_name(snap)["cli-dev-busy"].cpu_cores == 0.75
    computed = by_name(top_data.snapshot(DOCKER_2, DOCKER_1))["cli-dev-idle"].cpu_cores
    assert computed is not None and by_name(snap)["cli-dev-idle"].cpu_cores == computed
    assert by_name(snap)["cli-dev-idle"].log_lines_per_second is None


def test_an_agent_with_rates_is_shown_as_it_serves_them() -> None:
    assert not top_data.needs_two_samples(WITH_RATES)
    snap = top_data.snapshot(WITH_RATES)
    rows = by_name(snap)
    for name, row in rows.items():
        rates = entry(WITH_RATES, name)["rates"]
        assert row.cpu_cores == rates["cpu_cores"] and row.log_lines_per_second == rates["log_lines_per_second"]
        assert row.memory_bytes == rates["memory_bytes"]
    assert rows["cli-dev-busy"].log_lines_per_second and rows["cli-dev-busy"].cpu_cores > 0.5
    assert rows["cli-dev-idle"].memory_limit_bytes == 64 * 1024 * 1024
    assert rows["cli-dev-netshare"].net_bytes_per_second is None
    assert snap.host.cpu_cores == entry(WITH_RATES, "/")["rates"]["cpu_cores"]
    busy = next(line for line in top_data.plain_report(snap, None).splitlines() if line.startswith("cli-dev-busy"))
    assert busy.split()[-2] == f"{rows['cli-dev-busy'].log_lines_per_second:.1f}"  # LOGS/s


def test_the_routes_of_a_real_agent_in_the_plain_report() -> None:
    listed = top_data.routes(ROUTES_DOC)
    assert [(r.id, r.state, r.error) for r in listed] == [
        ("file:///tmp/cli-dev/out.ndjson", "running", None), ("down", "retrying", "[Errno 111] Connection refused")]
    lines = top_data.plain_report(top_data.snapshot(WITH_RATES), listed).split("\n\n")[2].splitlines()
    assert lines[2].split()[:3] == ["down", "retrying", "6.0MiB"]  # lag_bytes 6239727
    assert lines[2].endswith("syslog+tcp://127.0.0.1:9?name=down  [Errno 111] Connection refused")


def test_an_agent_that_has_no_cpu_rate_for_any_container_needs_two_samples() -> None:
    assert top_data.needs_two_samples(with_rates(DOCKER_2, {}))  # rates all null: its first collection
    assert top_data.needs_two_samples({"containers": [{**entry(DOCKER_2, "/"), "rates": None}]})
    assert not top_data.needs_two_samples(with_rates(DOCKER_2, {"/": {"cpu_cores": 0.1}}))


def test_kubernetes_containers_are_named_pod_slash_container() -> None:
    rows = by_name(top_data.snapshot(KUBEPODS))
    assert set(rows) == {"web-7d4b9c8f5-x2x9q", "web-7d4b9c8f5-x2x9q/POD", "web-7d4b9c8f5-x2x9q/nginx"}
    assert {r.namespace for r in rows.values()} == {"shop"}
    assert rows["web-7d4b9c8f5-x2x9q/nginx"].image == "docker.io/library/nginx:1.25"


# --- sorting ---------------------------------------------------------------------------------------------------


def rows_of(*specs: tuple[str, float | None, int | None]) -> list[Row]:
    return [Row(key=f"/{name}", name=name, namespace="", container_id="", runtime="docker", image="",
                cpu_cores=cpu, memory_bytes=memory) for name, cpu, memory in specs]


def names(rows: list[Row]) -> list[str]:
    return [r.name for r in rows]


def test_sorting_puts_the_biggest_first_reverse_flips_and_unknowns_stay_last() -> None:
    rows = rows_of(("b", 0.5, 10), ("a", 2.0, None), ("c", None, 30), ("d", 0.5, 20))
    assert names(top_data.sort_rows(rows, SortKey.CPU)) == ["a", "b", "d", "c"]  # ties by name
    assert names(top_data.sort_rows(rows, SortKey.CPU, reverse=True)) == ["b", "d", "a", "c"]
    assert names(top_data.sort_rows(rows, SortKey.MEMORY)) == ["c", "d", "b", "a"]
    assert names(top_data.sort_rows(rows, SortKey.NAME)) == ["a", "b", "c", "d"]
    assert names(top_data.sort_rows(rows, SortKey.NAME, reverse=True)) == ["d", "c", "b", "a"]
    assert names(top_data.sort_rows(rows, SortKey.LOGS)) == ["a", "b", "c", "d"]  # all unknown: by name


def test_sorting_the_captured_containers_by_cpu_puts_the_busy_one_first() -> None:
    rows = top_data.sort_rows(top_data.snapshot(DOCKER_2, DOCKER_1).rows, SortKey.CPU)
    assert rows[0].name in ("cli-dev-busy", "/docker")  # /docker holds the busy container
    assert names(rows).index("cli-dev-busy") < names(rows).index("cli-dev-idle")
    assert names(top_data.sort_rows(rows, SortKey.NET))[-2:] == ["/docker", "cli-dev-netshare"]  # no network: last


# --- formatting ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (None, "-"), (0, "0B"), (512, "512B"), (1536, "1.5KiB"), (48.2 * 1024**2, "48.2MiB"),
    (150 * 1024**2, "150MiB"), (64 * 1024**3, "64.0GiB"), (3 * 1024**5, "3072TiB"),
])
def test_fmt_bytes_uses_binary_units_as_docker_stats(value: float | None, text: str) -> None:
    assert top_data.fmt_bytes(value) == text


def test_rates_and_percentages() -> None:
    assert top_data.fmt_cpu(2.5) == "250.0%" and top_data.fmt_cpu(0.0123) == "1.2%" and top_data.fmt_cpu(None) == "-"
    assert top_data.fmt_rate(2048.0) == "2.0KiB/s" and top_data.fmt_rate(None) == "-"
    assert top_data.fmt_count_rate(3.25) == "3.2" and top_data.fmt_count_rate(812.4) == "812"
    assert top_data.fmt_count_rate(25_400) == "25k" and top_data.fmt_count_rate(None) == "-"
    assert top_data.fmt_percent(0.5) == "50.0%" and top_data.fmt_seconds(3.04) == "3.0s"
    assert top_data.fmt_seconds(125) == "2m05s"
    assert top_data.fmt_seconds(7260) == "2h01m" and top_data.fmt_count(0) == "0" and top_data.fmt_count(None) == "-"


# --- the plain table -------------------------------------------------------------------------------------------

ROUTES = {"routes": [
    {"id": "a1b2c3d4e5f6", "uri": "syslog+tcp://logs.example:514", "origin": "api", "state": "running", "error": None,
     "files": 12, "lag_bytes": 0, "lag_seconds": 0.0, "records_per_second": 812.4, "bytes_per_second": 190211.0,
     "records_total": 1200000, "retries_total": 3, "dead_lettered_total": 0, "dropped_total": 0},
    {"id": "es", "uri": "elasticsearch+http://xxxxx@es:9200/logs", "origin": "config", "state": "retrying",
     "error": "503 Service Unavailable", "files": 12, "lag_bytes": 5 * 1024**2, "lag_seconds": 42.5,
     "records_per_second": 0.0, "bytes_per_second": 0.0, "records_total": 10, "retries_total": 17,
     "dead_lettered_total": 2, "dropped_total": 1},
]}


def column_starts(line: str, titles: list[str]) -> list[int]:
    return [line.index(t) for t in titles]


def test_the_plain_report_is_an_aligned_table_of_containers_and_routes() -> None:
    report = top_data.plain_report(top_data.snapshot(DOCKER_2, DOCKER_1), top_data.routes(ROUTES))
    assert "\x1b" not in report
    lines = report.splitlines()
    assert lines[0].startswith("host: cpu ") and " of 2 CPUs, memory " in lines[0]
    header = lines[2]
    assert header.split() == ["NAME", "ID", "CPU", "%", "MEM", "LIMIT", "MEM", "%", "NET", "RX/s", "NET", "TX/s",
                              "LOGS/s", "IMAGE"]
    body = lines[3:7]
    assert body[0].split()[0] in ("cli-dev-busy", "/docker")  # by CPU, biggest first
    image_at = header.index("IMAGE")
    for line in body:
        if line.startswith("cli-dev"):
            assert line[image_at:] == "lookout-test-busybox"  # every column lines up under its title
    idle = next(line for line in body if line.startswith("cli-dev-idle"))
    assert "64.0MiB" in idle
    route_lines = report.split("\n\n")[2].splitlines()
    assert route_lines[0].split()[:3] == ["ROUTE", "STATE", "LAG"]
    assert route_lines[1].split()[:2] == ["a1b2c3d4e5f6", "running"]
    assert route_lines[2].split()[:4] == ["es", "retrying", "5.0MiB", "42.5s"]
    assert route_lines[2].endswith("elasticsearch+http://xxxxx@es:9200/logs  503 Service Unavailable")


def test_the_plain_report_says_when_there_are_no_routes_or_no_endpoint() -> None:
    snap = top_data.snapshot(KUBEPODS)
    assert top_data.plain_report(snap, None).endswith("\nroutes: not available\n")
    assert top_data.plain_report(snap, ()).endswith("\nroutes: none\n")
    assert top_data.plain_report(snap, None, routes_error="GET x: 500 Internal Server Error").endswith(
        "\nroutes: GET x: 500 Internal Server Error\n")
    header = top_data.plain_report(snap, None).splitlines()[2]
    assert header.split()[:3] == ["NAME", "NAMESPACE", "ID"]  # Kubernetes: a namespace column
    assert "NAMESPACE" not in top_data.plain_report(top_data.snapshot(DOCKER_1), None)


# --- --once against a stand-in for the HTTP part --------------------------------------------------------------


class Answers(Api):
    """An ``Api`` whose answers are the given documents, one per poll (the last one repeated)."""

    def __init__(self, *docs: dict[str, Any]) -> None:
        self.docs = list(docs)
        self.url = "http://agent.test:9338"
        self.polls = 0

    def containers(self) -> dict[str, Any]:
        self.polls += 1
        return self.docs.pop(0) if len(self.docs) > 1 else self.docs[0]

    def routes(self) -> tuple[top_data.Route, ...] | None:
        return None


def test_once_takes_a_second_newer_snapshot_only_when_the_agent_serves_no_rates() -> None:
    slept: list[float] = []
    out = io.StringIO()
    api = Answers(DOCKER_1, DOCKER_1, DOCKER_2)  # the agent's snapshot changes only at the third poll
    assert top.once(api, 2.0, out, sleep=slept.append) == 0
    assert api.polls == 3 and slept == [2.0, 0.5]
    busy = next(line for line in out.getvalue().splitlines() if line.startswith("cli-dev-busy"))
    assert busy.split()[2].endswith("%") and busy.split()[2] != "-"

    slept.clear()
    api = Answers(with_rates(DOCKER_2, {"cli-dev-busy": {"cpu_cores": 0.5}}))
    assert top.once(api, 2.0, io.StringIO(), sleep=slept.append) == 0
    assert api.polls == 1 and slept == []


# --- the live view: keys, updates, rendering -------------------------------------------------------------------


def test_keys_choose_the_sort_pressing_it_again_or_r_reverses_and_q_quits() -> None:
    view = View("http://x")
    assert view.key is SortKey.CPU and not view.reverse
    assert view.press("m") and (view.key, view.reverse) == (SortKey.MEMORY, False)
    assert view.press("m") and (view.key, view.reverse) == (SortKey.MEMORY, True)
    assert view.press("n") and (view.key, view.reverse) == (SortKey.NET, False)
    assert view.press("r") and view.reverse
    assert view.press("l") and view.key is SortKey.LOGS and view.press("a") and view.key is SortKey.NAME
    assert view.press("x") and view.key is SortKey.NAME  # other keys do nothing
    assert not view.press("q")
    assert set(top_data.KEYS) | {"r", "q"} <= set(top.FOOTER.replace("  ", " ").split()[::2])


def test_the_same_snapshot_again_does_not_replace_computed_rates() -> None:
    view = View("http://x")
    view.take(Poll(DOCKER_1, None))
    view.take(Poll(DOCKER_2, None))
    assert view.snap is not None and by_name(view.snap)["cli-dev-busy"].cpu_cores
    view.take(Poll(DOCKER_2, None))  # the agent has not collected since: 0/0 would blank the rates
    assert by_name(view.snap)["cli-dev-busy"].cpu_cores
    view.take(Poll(None, None, error="cannot reach the agent at http://x: [Errno 111] Connection refused"))
    assert view.error and by_name(view.snap)["cli-dev-busy"].cpu_cores  # the last numbers stay on screen


def screen(view: View, height: int = 40, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    console.print(top.render(view, height))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_screen_marks_the_sorted_column_and_shows_routes_and_keys() -> None:
    view = View("http://127.0.0.1:9338")
    view.take(Poll(DOCKER_1, None))
    view.take(Poll(DOCKER_2, top_data.routes(ROUTES)))
    text = screen(view)
    assert "CPU % ▼" in text and "MEM ▼" not in text
    assert "(rates computed here" in text
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("─"))
    assert lines[first + 1].split()[0] in ("cli-dev-busy", "/docker")
    assert "a1b2c3d4e5f6" in text and "retrying" in text and top.FOOTER in text
    view.press("a")
    view.press("a")
    text = screen(view)
    assert "NAME ▲" in text
    rows = [line.split()[0] for line in text.splitlines() if line.startswith(("cli-dev", "/docker"))]
    assert rows == ["cli-dev-netshare", "cli-dev-idle", "cli-dev-busy", "/docker"]


def test_a_short_terminal_shows_as_many_containers_as_fit_and_says_how_many_more() -> None:
    view = View("http://x")
    view.take(Poll(DOCKER_2, None))
    text = screen(view, height=12)
    assert "… 2 more (make the terminal taller)" in text
    assert top.FOOTER in text and top_data.ROUTES_NOT_AVAILABLE in text


def test_an_unreachable_agent_is_said_on_the_screen() -> None:
    view = View("http://x")
    view.take(Poll(None, None, error="cannot reach the agent at http://x: [Errno 111] Connection refused"))
    assert "cannot reach the agent at http://x" in screen(view)


# --- the HTTP part against a stand-in agent that has no /routes (older than docs/API.md) -----------------------


class _OldAgent:
    """An HTTP server with the captured /api/v1/containers and 404 for everything else, in a thread."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/api/v1/containers"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", content_type if found else "text/plain")
                payload = body if found else b"404: Not Found"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_agent_without_routes_shows_routes_not_available() -> None:
    agent = _OldAgent((API / "containers-docker-2.json").read_bytes())
    try:
        result = top.poll(Api(agent.url))
    finally:
        agent.close()
    assert result.error is None and result.routes is None and result.routes_error is None
    assert result.doc == DOCKER_2
    assert top_data.plain_report(top_data.snapshot(result.doc), result.routes).endswith("\nroutes: not available\n")


def test_what_is_not_an_agent_is_said_in_one_line() -> None:
    from agent.client import ClientError

    html = _OldAgent(b"<html>hello</html>", "text/html")
    try:
        with pytest.raises(ClientError) as not_json:
            Api(html.url).containers()
        with pytest.raises(ClientError) as missing:
            Api(html.url).get("/nothing")
    finally:
        html.close()
    assert str(not_json.value) == (f"GET {html.url}/api/v1/containers: the answer is not JSON "
                                   f"(is {html.url} a Lookout agent?)")
    assert str(missing.value) == f"GET {html.url}/nothing: 404 Not Found: 404: Not Found"


def test_on_a_narrow_terminal_the_route_numbers_keep_their_width_and_errors_are_shown_whole() -> None:
    view = View("http://x")
    view.take(Poll(WITH_RATES, top_data.routes(ROUTES_DOC)))
    text = screen(view, width=110)
    lines = text.splitlines()
    head = next(line for line in lines if line.startswith("ROUTE"))
    assert head.split()[:9] == ["ROUTE", "STATE", "LAG", "LAG", "s", "REC/s", "RETRIES", "DEAD", "DROPPED"]
    down = next(i for i, line in enumerate(lines) if line.startswith("down "))
    assert lines[down + 1] == "down: [Errno 111] Connection refused"

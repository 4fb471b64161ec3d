"""Issue #13: the status page at ``/`` in a real headless Chromium (Debian's ``chromium``), served by the real agent.

- On a real Docker engine: the containers' names are in the rendered DOM's table rows, and a PNG screenshot shows
  a table with a line of text per row (tests/helpers/screenshot.py measures it: the header colour, the bottom rule,
  the lines of text between them).
- The same measure says "empty" for an agent that sees no container (a fixture host with only the root cgroup), and
  for one started with a wrong ``--host-root``, whose page says why at the top.
- The page's own inline script sorts the table in the browser as the server would.

Chromium runs as ``chromium --headless=new --no-sandbox ... --dump-dom|--screenshot=FILE URL``, one process per
page, which exits when the page has loaded. Without a Chromium that runs, the tests skip with the reason (fail
under LOOKOUT_TEST_STRICT=1: ``.ci/run`` installs it).
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures import trees
from tests.helpers.agent import AgentError, AgentProcess, tail
from tests.helpers.deps import unavailable
from tests.helpers.docker import ContainerRunner
from tests.helpers.metrics import http_get
from tests.helpers.screenshot import (
    ChromiumUnavailable,
    TableMeasure,
    capture,
    check_chromium,
    dump_dom,
    measure_table,
    read_png,
)
from tests.helpers.status_page import Page, read_page
from tests.helpers.wait import wait_for

AgentFactory = Callable[..., AgentProcess]
UNKNOWN = "—"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> None:
    try:
        check_chromium(tmp_path_factory.mktemp("chromium"))
    except ChromiumUnavailable as exc:
        unavailable(f"no headless Chromium: {exc}")


def rendered(url: str) -> Page:
    """The page as Chromium rendered it (the DOM after load)."""
    return read_page(dump_dom(url))


def shot(url: str, path: Path) -> tuple[Page, TableMeasure]:
    """The rendered DOM and the measure of the screenshot, from one load of the page."""
    page = read_page(capture(url, path))
    measure = measure_table(read_png(path.read_bytes()))
    print(f"{url}: {measure} (screenshot {path})")
    return page, measure


def server_page(agent: AgentProcess, query: str = "") -> Page:
    resp = agent.get("/" + query)
    assert resp.status == 200, resp.body[:500]
    return read_page(resp.body.decode())


# --- a real engine ------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_the_page_shows_the_engines_containers_in_a_browser(browser: None, agent: AgentFactory,
                                                            containers: ContainerRunner, tmp_path: Path) -> None:
    quiet = containers.run("--memory", "64m", purpose="page-quiet", cmd=["sleep", "3600"])
    busy = containers.run("--cpus", "0.3", purpose="page-busy",
                          cmd=["sh", "-c", "while :; do echo tick; usleep 20000; done"])
    ours = {quiet.name, busy.name}
    out = tmp_path / "page.ndjson"
    lookout = agent("--route", f"file://{out}?filter.name=lookout-test-page-*")

    # Both listed, with the rates of two collections (the busy one burns CPU and writes logs): on the server first,
    # so that a slow start is told as such and not as a browser failure.
    def ready() -> Page | None:
        page = server_page(lookout)
        rows = {row[0]: row for row in page.containers}
        if ours <= set(rows) and rows[busy.name][4] != UNKNOWN and rows[busy.name][7] != UNKNOWN:
            return page
        return None

    wait_for(ready, timeout=30, message=f"{sorted(ours)} on {lookout.url}/ with CPU and log rates",
             describe=lambda: json.dumps(server_page(lookout).containers, ensure_ascii=False)[:3000])

    page, measure = shot(lookout.url + "/", tmp_path / "containers.png")
    rows = {row[0]: row for row in page.containers}
    assert ours <= set(rows), f"rendered table rows: {page.names}"
    assert " / 64 MiB (" in rows[quiet.name][5], rows[quiet.name]  # memory used / its limit (share)
    assert rows[busy.name][1] == "docker" and rows[busy.name][2] == "lookout-test-busybox", rows[busy.name]
    links = dict(zip(page.names, page.links, strict=True))
    entry = json.loads(http_get(lookout.url + links[busy.name]).body)
    assert entry["info"]["name"] == busy.name and entry["rates"]["cpu_cores"] is not None
    assert [r[:3] for r in page.routes] == [[f"file://{out}", f"file://{out}?filter.name=lookout-test-page-*",
                                             "running"]], page.routes
    assert page.problems == [] and page.empty == []

    # The screenshot of that same load: a table with text on it, a line per row.
    assert not measure.empty, measure
    if measure.bottom < 900:  # the whole table is on the screenshot: a line of text per row, no more, no less
        assert measure.lines == len(page.containers), (measure, page.names)
    else:
        assert measure.lines >= 3, measure


@pytest.mark.docker
def test_the_inline_script_sorts_as_the_server_does(browser: None, agent: AgentFactory, containers: ContainerRunner,
                                                    tmp_path: Path) -> None:
    """The served page with a click on a header appended, loaded over HTTP from another local server (the agent's
    CSP would refuse the added script, as it should)."""
    for n in range(3):
        containers.run(purpose=f"page-sort{n}", cmd=["sh", "-c", f"while :; do usleep {(n + 1) * 30000}; done"])
    lookout = agent()

    def sorters_with_cpu() -> bool:
        rows = [row for row in server_page(lookout).containers if row[0].startswith("lookout-test-page-sort")]
        return len(rows) == 3 and all(row[4] != UNKNOWN for row in rows)

    wait_for(sorters_with_cpu, timeout=30, message="the three containers with CPU rates")
    html = lookout.get("/").body.decode()
    served = read_page(html)
    for key, column in (("name", 0), ("cpu", 4)):
        click = f'<script>document.querySelector(\'a[data-sort="{key}"]\').click()</script>'
        (tmp_path / f"{key}.html").write_text(html.replace("</body>", click + "</body>"))
        with static_server(tmp_path) as base:
            page = rendered(f"{base}/{key}.html")
        # Expected: what the server does with the same values (from name ascending, stable, unknown last).
        values = [(row[0], served.sort_values[i].get(column)) for i, row in enumerate(served.containers)]
        if key == "name":
            expected = [name for name, _ in sorted(values, key=lambda nv: nv[1] or "", reverse=True)]
        else:
            known = sorted((nv for nv in values if nv[1] is not None), key=lambda nv: float(nv[1] or 0), reverse=True)
            expected = [name for name, _ in known] + [name for name, v in values if v is None]
        assert page.names == expected, key
        assert page.aria_sort == {key: "descending"}, page.aria_sort


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class static_server:  # a context manager, named like one
    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- no containers ------------------------------------------------------------------------------------------


def test_the_same_measure_says_empty_when_the_agent_sees_no_container(browser: None, agent: AgentFactory,
                                                                      tmp_path: Path) -> None:
    tree = trees.build_v2_no_containers(tmp_path / "host")
    lookout = agent("--host-root", str(tree.root), "--docker-socket", "")
    page, measure = shot(lookout.url + "/", tmp_path / "empty.png")
    assert page.containers == [] and page.problems == []
    assert page.empty[0].startswith("containers: No containers found on this host. The agent sees 1 other cgroup")
    assert measure.empty, measure
    # The raw cgroups on request: the root cgroup's row is there, and the same measure sees it.
    everything, measure = shot(lookout.url + "/?all=1", tmp_path / "all.png")
    assert everything.names == ["/"] and measure.lines == 1, measure


class UnreadyAgent(AgentProcess):
    """An agent that never publishes a container (a wrong --host-root): ready for a test when /readyz names why."""

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AgentError(f"agent exited with {self.proc.returncode}\n{tail(self.log_path)}")
            try:
                resp = http_get(self.url + "/readyz", timeout=2)
                if resp.status == 503 and b"cgroups" in resp.body:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AgentError(f"/readyz never named the cgroups within {timeout}s\n{tail(self.log_path)}")


@pytest.fixture
def unready_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(*args: str) -> AgentProcess:
        proc = UnreadyAgent(tmp_path / f"agent{len(started)}", args)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


def test_a_wrong_host_root_is_said_at_the_top(browser: None, unready_agent: Callable[..., AgentProcess],
                                              tmp_path: Path) -> None:
    wrong = tmp_path / "not-a-host"
    wrong.mkdir()
    lookout = unready_agent("--host-root", str(wrong), "--docker-socket", "")
    page, measure = shot(lookout.url + "/", tmp_path / "wrong.png")
    assert len(page.problems) == 1 and page.problems[0].startswith(f"cgroups: no cgroup hierarchy under --host-root "
                                                                   f"{wrong}"), page.problems
    assert page.containers == [] and measure.empty, measure

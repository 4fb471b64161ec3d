"""Session fixtures for Lookout's tests: a Docker engine with the test image and network, containers
removed at teardown, the agent as a real subprocess, and a real Prometheus server.

Missing outside dependencies (no Docker engine that can be reached or started, no prometheus
binary) skip the tests that need them with the precise reason. With ``LOOKOUT_TEST_STRICT=1``
(set by ``.ci/run``, which installs everything) they fail instead, so CI cannot go green by
skipping; other fixtures get the same behaviour from ``tests.helpers.deps.unavailable(reason)``.

When a test fails, the report gets the last lines of the log of every agent and Prometheus
server that was running (sections "lookout agent ..." / "prometheus ...").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

# Agents started by the tests read no systemd journal unless a test asks (--journal auto, tests/integration/
# test_journal.py): a machine's journal may hold other runs' containers, which a route without filters would ship.
os.environ.setdefault("LOOKOUT_JOURNAL", "off")

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `pytest` (not `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, _ROOT)

from tests.helpers import agent as agent_helper  # noqa: E402
from tests.helpers import docker as docker_helper  # noqa: E402
from tests.helpers import prometheus as prometheus_helper  # noqa: E402
from tests.helpers.agent import AgentError, AgentProcess  # noqa: E402
from tests.helpers.deps import unavailable  # noqa: E402
from tests.helpers.docker import ContainerRunner, DockerEngine, DockerError, DockerUnavailable  # noqa: E402
from tests.helpers.prometheus import PrometheusServer  # noqa: E402

# --- failure reports --------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for proc in list(agent_helper.LIVE):
            alive = "running" if proc.alive() else f"exited {proc.proc.returncode if proc.proc else '?'}"
            report.sections.append((f"lookout agent {proc.address} ({alive}) log, last lines", proc.log(60)))
        for server in list(prometheus_helper.LIVE):
            report.sections.append((f"prometheus {server.url} targets", server.describe_targets()))
            report.sections.append((f"prometheus {server.url} log, last lines", server.log(30)))
    return report


# --- Docker -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """A Docker engine that answers (started as root when needed), the test image and the test network."""
    try:
        docker_helper.ensure_daemon(timeout=60)
    except DockerUnavailable as exc:
        unavailable(f"no Docker engine: {exc}")
    try:
        docker_helper.sweep_stale()
        docker_helper.ensure_image()
        subnet = docker_helper.ensure_network()
        info = docker_helper.docker("info", "--format",
                                    "{{.DockerRootDir}}|{{.CgroupDriver}}|{{.ServerVersion}}").stdout.strip()
    except DockerUnavailable as exc:
        unavailable(str(exc))
    except DockerError as exc:
        pytest.fail(f"Docker engine answers but the test setup failed: {exc}", pytrace=False)
    root_dir, cgroup_driver, version = info.split("|")
    return DockerEngine(docker_helper.IMAGE, docker_helper.NETWORK, subnet, root_dir,
                        docker_helper.DOCKER_SOCKET, cgroup_driver, version)


@pytest.fixture
def containers(docker_engine: DockerEngine) -> Iterator[ContainerRunner]:
    """``containers.run(*docker_run_options, cmd=[...], purpose="x")``; all removed at teardown."""
    runner = ContainerRunner(docker_engine.image)
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.fixture(scope="module")
def module_containers(docker_engine: DockerEngine) -> Iterator[ContainerRunner]:
    """As ``containers``, for containers shared by a module's tests; removed after the module."""
    runner = ContainerRunner(docker_engine.image)
    try:
        yield runner
    finally:
        runner.cleanup()


# --- the agent --------------------------------------------------------------------------------------

AgentFactory = Callable[..., AgentProcess]


def _agent_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFactory]:
    started: list[AgentProcess] = []

    def start(*extra_args: str, interval: str = "1s", env: dict[str, str] | None = None) -> AgentProcess:
        proc = AgentProcess(tmp_path_factory.mktemp("agent"), extra_args, interval, env)
        started.append(proc)
        try:
            return proc.start()
        except AgentError as exc:
            pytest.fail(str(exc), pytrace=False)

    try:
        yield start
    finally:
        for proc in started:
            code = proc.stop()
            if code not in (0, None):
                print(f"\nlookout agent {proc.address} exited {code} at teardown:\n{proc.log()}", file=sys.stderr)


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFactory]:
    """``agent(*extra_args)`` starts ``python -m agent run --listen 127.0.0.1:<free> --state-dir <tmp>
    --housekeeping-interval 1s [extra_args]`` and returns once /healthz answers and a snapshot is
    published; stopped (SIGTERM, then SIGKILL) at teardown."""
    yield from _agent_factory(tmp_path_factory)


@pytest.fixture(scope="module")
def module_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFactory]:
    """As ``agent``, for an agent shared by a module's tests."""
    yield from _agent_factory(tmp_path_factory)


# --- Prometheus -------------------------------------------------------------------------------------


@pytest.fixture
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrometheusServer]]:
    """``prometheus(agent_or_address, ...)`` starts the real prometheus binary on a free loopback port,
    scraping the targets every second with temporary storage; stopped at teardown."""
    binary = prometheus_helper.find_binary("prometheus")
    if binary is None:
        unavailable("no prometheus binary (" + prometheus_helper.where("prometheus")
                    + "; Debian: apt-get install prometheus)")
    servers: list[PrometheusServer] = []

    def start(*targets: AgentProcess | str) -> PrometheusServer:
        addresses = [t.address if isinstance(t, AgentProcess) else t for t in targets]
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), addresses)
        servers.append(server)
        try:
            return server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def promtool() -> str:
    binary = prometheus_helper.find_binary("promtool")
    if binary is None:
        unavailable("no promtool binary (" + prometheus_helper.where("promtool")
                    + "; Debian: apt-get install prometheus)")
    return binary

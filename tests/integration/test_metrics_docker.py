"""Issue #2: cAdvisor-compatible /metrics for real Docker containers, checked against the kernel's own
files, the Docker Engine API and a real Prometheus.

Every container here runs the busybox image ``lookout-test-busybox`` (built locally, see
``tests/helpers/docker.py``) and is removed at teardown. The agent runs as a subprocess with a 1 s
housekeeping interval, so "within one interval" means within ``INTERVAL`` plus the time one
collection cycle and one scrape take (``SLACK``).

Comparisons with the kernel use tolerances derived from the time between the two readings (CPU
counters keep running) or wait until both sides agree (memory and network of idle containers
settle), never fixed sleeps.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import time
import zlib
from collections.abc import Callable

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.helpers import kernel
from tests.helpers.agent import AgentProcess
from tests.helpers.docker import IMAGE, Container, ContainerRunner, DockerEngine, docker
from tests.helpers.metrics import Metrics, parse
from tests.helpers.prometheus import PrometheusServer
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.docker

INTERVAL = 1.0  # the agents' --housekeeping-interval
SLACK = 1.0  # one collection cycle + one scrape, on a busy 2-core CI machine
MiB = 1024 * 1024


# --- helpers ----------------------------------------------------------------------------------------


def wait_seen(agent: AgentProcess, cgroup: str, name: str | None = None, timeout: float = 10.0) -> Metrics:
    """A scrape in which the container's ``container_last_seen`` is present (with ``name`` when given)."""

    def seen() -> Metrics | None:
        m = agent.metrics()
        found = m.select("container_last_seen", id=cgroup)
        if found and (name is None or found[0].labels.get("name") == name):
            return m
        return None

    return wait_for(seen, timeout, message=f"container_last_seen{{id={cgroup!r}, name={name!r}}} on {agent.url}",
                    describe=lambda: "container_last_seen series:\n" + agent.metrics().describe("container_last_seen"))


def series_of(m: Metrics, cgroup: str) -> list[str]:
    return [s.line() for s in m.select(id=cgroup)]


def labels_of(m: Metrics, cgroup: str) -> dict[str, str]:
    found = m.select("container_last_seen", id=cgroup)
    assert len(found) == 1, f"expected one container_last_seen for {cgroup}:\n{m.describe('container_last_seen')}"
    return dict(found[0].labels)


def within(actual: float, expected: float, absolute: float, relative: float = 0.0) -> bool:
    return abs(actual - expected) <= max(absolute, relative * abs(expected))


# --- module fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_agent(module_agent: Callable[..., AgentProcess]) -> AgentProcess:
    """An agent on its default flags (Docker API for metadata), shared by the module."""
    return module_agent()


# A label value that needs every escape of the text format (quote, backslash, newline) and UTF-8.
AWKWARD = 'say "hi"\\ to C:\\temp\nand bye \u2013 ünïcode'


@pytest.fixture(scope="module")
def sleeper(module_containers: ContainerRunner, docker_engine: DockerEngine) -> tuple[Container, str]:
    """An idle container with Docker labels and env vars; (container, its cgroup id label)."""
    c = module_containers.run(
        "--label", "com.example.team=api", "--label", "com.example.tier=backend",
        "--label", f"com.example/note-text={AWKWARD}",
        "--env", "LOOKOUT_TEST_COLOR=blue", "--env", "OTHER_SECRET=hunter2",
        purpose="sleeper", cmd=["sleep", "3600"])
    return c, docker_engine.expected_cgroup(c)


# --- CPU --------------------------------------------------------------------------------------------


def test_cpu_quota_usage_and_throttling_match_kernel(base_agent: AgentProcess, containers: ContainerRunner,
                                                     docker_engine: DockerEngine) -> None:
    c = containers.run("--cpus", "0.5", purpose="cpu", cmd=["sh", "-c", "while :; do :; done"])
    cg = docker_engine.expected_cgroup(c)
    assert cg == f"/docker/{c.id}" or docker_engine.cgroup_driver != "cgroupfs"
    m = wait_seen(base_agent, cg, c.name)

    # Spec: cAdvisor's labels on every series, quota/period in µs as the kernel's cpu.cfs_*_us.
    want = {"id": cg, "name": c.name, "image": IMAGE}
    for family, expected in (("container_spec_cpu_quota", 50000), ("container_spec_cpu_period", 100000)):
        found = m.select(family, id=cg)
        assert len(found) == 1, f"{family} for {cg}:\n{m.describe(family, id=cg)}"
        assert {k: found[0].labels.get(k) for k in want} == want, found[0].line()
        assert found[0].value == expected, found[0].line()

    def point(m: Metrics) -> tuple[float, float, float]:
        usage = m.total("container_cpu_usage_seconds_total", id=cg)  # summed over its `cpu` label
        return usage, m.value("container_last_seen", id=cg), m.value("container_cpu_cfs_throttled_periods_total",
                                                                       id=cg)

    cpus = {s.labels["cpu"] for s in m.select("container_cpu_usage_seconds_total", id=cg)}
    assert cpus and all(x == "total" or x.startswith("cpu") for x in cpus), cpus
    usage1, seen1, throttled1 = point(m)
    # Two snapshots at least 3 s apart; container_last_seen is each snapshot's own timestamp, so the
    # rate does not depend on when we happened to scrape.
    def later() -> Metrics | None:
        m = base_agent.metrics()
        return m if m.value("container_last_seen", id=cg) >= seen1 + 3 else None

    m2 = wait_for(later, timeout=3 + INTERVAL + 5, message="a snapshot 3 s after the first")
    usage2, seen2, throttled2 = point(m2)
    rate = (usage2 - usage1) / (seen2 - seen1)
    print(f"cpu: {rate:.3f} cores over {seen2 - seen1:.2f}s, throttled periods {throttled1:.0f} -> {throttled2:.0f}")
    assert 0.3 <= rate <= 0.6, (f"--cpus 0.5 burner used {rate:.3f} cores over {seen2 - seen1:.2f}s "
                                f"({usage1:.3f}s -> {usage2:.3f}s)")
    if throttled2 <= throttled1:
        # Only on a machine so busy that the burner never reached its quota: give it a few more seconds.
        wait_for(lambda: base_agent.metrics().value("container_cpu_cfs_throttled_periods_total", id=cg) > throttled1,
                 timeout=10, message=f"container_cpu_cfs_throttled_periods_total to grow beyond {throttled1}")

    # The kernel's own counter, read right after a scrape: it can only be ahead of the agent's
    # snapshot, by at most the CPU the container can burn since then (0.5 core, 0.6 with CFS slack),
    # plus the collection cycle's own duration (the cgroup is read before the snapshot is stamped).
    m3 = base_agent.metrics()
    kernel_usage = kernel.cpu_usage_seconds(cg)
    read_at = time.time()
    agent_usage = m3.total("container_cpu_usage_seconds_total", id=cg)
    age = read_at - m3.value("container_last_seen", id=cg)
    ahead = kernel_usage - agent_usage
    print(f"cpu: kernel {kernel_usage:.4f}s, agent {agent_usage:.4f}s, snapshot age {age:.3f}s")
    assert -0.001 <= ahead <= 0.6 * age + 0.15, (
        f"{kernel.cpu_usage_path(cg)} = {kernel_usage:.4f}s, agent {agent_usage:.4f}s from a snapshot "
        f"{age:.2f}s old: kernel ahead by {ahead:.4f}s")


# --- memory -----------------------------------------------------------------------------------------


def test_memory_limit_usage_match_kernel_and_docker_api(base_agent: AgentProcess, containers: ContainerRunner,
                                                        docker_engine: DockerEngine) -> None:
    fill = 24 * MiB  # written to /dev/shm (tmpfs): charged to the container as shmem, stays resident
    c = containers.run("--memory", "64m", purpose="mem", cmd=[
        "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null && echo filled && exec sleep 3600"])
    cg = docker_engine.expected_cgroup(c)
    wait_for(lambda: "filled" in c.logs(), 15, message="the container to fill /dev/shm", describe=c.logs)
    wait_seen(base_agent, cg, c.name)

    def filled() -> Metrics | None:
        m = base_agent.metrics()
        return m if m.value("container_memory_usage_bytes", id=cg) >= fill else None

    m = wait_for(filled, timeout=INTERVAL + SLACK, message=f"container_memory_usage_bytes >= {fill} for {c.name}",
                 describe=lambda: base_agent.metrics().describe("container_memory_usage_bytes", id=cg))

    assert m.value("container_spec_memory_limit_bytes", id=cg, name=c.name, image=IMAGE) == 64 * MiB

    # The container is idle, so the agent's last snapshot and the kernel's file settle on the same
    # value; wait for them to agree within 1 MiB / 2 % (page-cache and slab noise).
    last: dict[str, float] = {}

    def agrees_with_kernel() -> bool:
        m = base_agent.metrics()
        last["agent"] = m.value("container_memory_usage_bytes", id=cg)
        last["kernel"] = kernel.memory_usage_bytes(cg)
        last["working_set"] = m.value("container_memory_working_set_bytes", id=cg)
        return within(last["agent"], last["kernel"], MiB, 0.02)

    wait_for(agrees_with_kernel, timeout=3 * INTERVAL + SLACK, describe=lambda: f"agent vs kernel: {last}",
             message=f"container_memory_usage_bytes to agree with {cg}/memory.usage_in_bytes")
    usage, working_set = last["agent"], last["working_set"]
    print(f"memory: {last}")
    assert 0 < working_set <= usage, last
    # shmem is swap-backed (anon LRU), not inactive file cache: it stays in the working set.
    assert working_set >= fill, last

    # The Docker Engine API's stats: memory_stats.usage is the same kernel counter (read at its own
    # moment); the docker CLI's "MEM USAGE" is usage minus inactive file, i.e. the working set.
    stats = c.stats()
    mem = stats["memory_stats"]
    assert mem["limit"] == 64 * MiB, mem
    assert within(mem["usage"], usage, 2 * MiB, 0.05), f"Docker API usage {mem['usage']} vs agent {usage}"
    inactive_file = mem["stats"].get("total_inactive_file", mem["stats"].get("inactive_file", 0))
    cli_usage = mem["usage"] - inactive_file
    assert within(cli_usage, working_set, 2 * MiB, 0.05), (
        f"docker stats' usage-minus-inactive-file {cli_usage} vs agent working set {working_set}")


def test_docker_update_shows_at_the_next_cycle(base_agent: AgentProcess, containers: ContainerRunner,
                                               docker_engine: DockerEngine) -> None:
    """``docker update`` rewrites the limit files and emits an ``update`` event: the agent reads the container's
    limits again at its next cycle (they are otherwise kept for up to 3 cycles, see ``SpecCache``). Three
    updates in a row, each seen within one interval: a cache that missed the event would pass each with a
    chance of about 2 in 3 only."""
    c = containers.run("--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5", purpose="update")
    cg = docker_engine.expected_cgroup(c)
    wait_seen(base_agent, cg, c.name)
    families = ("container_spec_memory_limit_bytes", "container_spec_memory_swap_limit_bytes",
                "container_spec_cpu_quota")

    def served() -> tuple[float, ...]:
        m = base_agent.metrics()
        return tuple(m.value(family, id=cg) for family in families)

    for mem, cpus in ((96, 0.25), (80, 0.75), (112, 1.5)):
        docker("update", "--memory", f"{mem}m", "--memory-swap", f"{2 * mem}m", "--cpus", str(cpus), c.id)
        want = (mem * MiB, 2 * mem * MiB, round(cpus * 100000))
        wait_for(lambda want=want: served() == want, timeout=INTERVAL + SLACK,
                 message=f"{families} to be {want} after `docker update`",
                 describe=lambda: f"served: {served()}")


# --- network ----------------------------------------------------------------------------------------


def test_network_counters_match_proc_and_docker_api(base_agent: AgentProcess, containers: ContainerRunner,
                                                    docker_engine: DockerEngine) -> None:
    a = containers.run("--network", docker_engine.network, purpose="net-a")
    b = containers.run("--network", docker_engine.network, purpose="net-b")
    ip_a, ip_b = a.ip(docker_engine.network), b.ip(docker_engine.network)
    count, size = 40, 1200
    # Each side pings the other (-A: next request as soon as the reply is in): every container
    # sends and receives count requests and count replies of size + 42 bytes (ICMP, IP, Ethernet).
    for src, dst in ((a, ip_b), (b, ip_a)):
        out = src.exec("ping", "-c", str(count), "-A", "-s", str(size), "-W", "5", dst, check=False)
        assert out.returncode == 0 and f"{count} packets received" in out.stdout, out.stdout + out.stderr
    minimum = 2 * count * (size + 42)
    for c in (a, b):
        _check_network(base_agent, c, docker_engine.expected_cgroup(c), minimum)


def _check_network(agent: AgentProcess, c: Container, cg: str, minimum: int) -> None:
    pid = c.pid
    last: dict[str, object] = {}

    def agrees() -> bool:
        m = agent.metrics()
        proc = kernel.net_dev(pid)["eth0"]
        api = c.stats()["networks"]
        rx = m.value("container_network_receive_bytes_total", id=cg, interface="eth0")
        tx = m.value("container_network_transmit_bytes_total", id=cg, interface="eth0")
        last.update(agent=(rx, tx), proc=(proc["rx_bytes"], proc["tx_bytes"]),
                    api=(api["eth0"]["rx_bytes"], api["eth0"]["tx_bytes"]), api_interfaces=sorted(api),
                    interfaces=sorted({s.labels["interface"]
                                       for s in m.select("container_network_receive_bytes_total", id=cg)}))
        # Idle after the pings: all three read the same kernel counters; allow a stray packet or two.
        return (rx >= minimum and tx >= minimum
                and within(rx, proc["rx_bytes"], 1024) and within(tx, proc["tx_bytes"], 1024)
                and within(rx, api["eth0"]["rx_bytes"], 1024) and within(tx, api["eth0"]["tx_bytes"], 1024))

    wait_for(agrees, timeout=3 * INTERVAL + SLACK, describe=lambda: f"{c.name} ({cg}): {last}",
             message=f"{c.name}'s eth0 bytes (>= {minimum}) to agree with /proc/{pid}/net/dev and the Docker API")
    print(f"network {c.name}: {last}")
    # As cAdvisor: lo (and veth*, docker*) are never reported.
    assert last["interfaces"] == ["eth0"], last
    assert last["api_interfaces"] == ["eth0"], last


# --- container churn --------------------------------------------------------------------------------


def test_removed_container_disappears_and_new_one_appears(base_agent: AgentProcess, containers: ContainerRunner,
                                                          docker_engine: DockerEngine) -> None:
    started = time.monotonic()
    c = containers.run(purpose="churn")
    cg = docker_engine.expected_cgroup(c)
    wait_seen(base_agent, cg, timeout=INTERVAL + SLACK)
    appeared = time.monotonic() - started

    containers.remove(c)
    removed = time.monotonic()
    wait_for(lambda: not series_of(base_agent.metrics(), cg), timeout=INTERVAL + SLACK,
             message=f"every series of the removed container {c.name} ({cg}) to be gone",
             describe=lambda: "\n".join(series_of(base_agent.metrics(), cg)[:20]))
    gone = time.monotonic() - removed
    print(f"appeared {appeared:.2f}s after docker run returned, gone {gone:.2f}s after docker rm -f")


# --- labels and env ---------------------------------------------------------------------------------


def test_docker_labels_become_container_label(base_agent: AgentProcess, sleeper: tuple[Container, str]) -> None:
    c, cg = sleeper
    m = wait_seen(base_agent, cg, c.name)
    for family in ("container_last_seen", "container_memory_usage_bytes", "container_spec_cpu_shares"):
        found = m.select(family, id=cg)
        assert len(found) == 1, m.describe(family, id=cg)
        labels = found[0].labels
        assert labels.get("container_label_com_example_team") == "api", found[0].line()
        assert labels.get("container_label_com_example_tier") == "backend", found[0].line()
        assert labels.get("container_label_lookout_test") == "1", found[0].line()
        # Label names sanitized to [a-zA-Z0-9_]; values escaped so that a parser gets them back exactly.
        assert labels.get("container_label_com_example_note_text") == AWKWARD, found[0].line()
        # No env metadata without --env-metadata-allowlist.
        assert not [k for k in labels if k.startswith("container_env_")], found[0].line()


def test_env_and_labels_allowlists(agent: Callable[..., AgentProcess], sleeper: tuple[Container, str]) -> None:
    c, cg = sleeper
    lookout = agent("--env-metadata-allowlist", "LOOKOUT_TEST_", "--container-labels-allowlist", "com.example.team")
    labels = labels_of(wait_seen(lookout, cg, c.name), cg)
    assert labels.get("container_env_LOOKOUT_TEST_COLOR") == "blue", labels
    assert "container_env_OTHER_SECRET" not in labels, labels
    assert labels.get("container_label_com_example_team") == "api", labels
    extra = sorted(k for k in labels if k.startswith("container_label_") and k != "container_label_com_example_team")
    assert not extra, f"labels outside --container-labels-allowlist: {extra}"


def test_metadata_from_disk_without_docker_socket(agent: Callable[..., AgentProcess], containers: ContainerRunner,
                                                  sleeper: tuple[Container, str], docker_engine: DockerEngine) -> None:
    c, cg = sleeper
    lookout = agent("--docker-socket", "", "--docker-root", docker_engine.root_dir)
    labels = labels_of(wait_seen(lookout, cg, c.name), cg)
    assert labels.get("name") == c.name and labels.get("image") == IMAGE, labels
    assert labels.get("container_label_com_example_team") == "api", labels

    # A container started after the agent: its config.v2.json is new; no Docker events here, so the
    # next housekeeping cycle must pick it up (and drop it again after removal).
    late = containers.run("--label", "com.example.team=late", purpose="late")
    late_cg = docker_engine.expected_cgroup(late)
    labels = labels_of(wait_seen(lookout, late_cg, late.name, timeout=2 * INTERVAL + SLACK), late_cg)
    assert labels.get("image") == IMAGE and labels.get("container_label_com_example_team") == "late", labels
    containers.remove(late)
    wait_for(lambda: not series_of(lookout.metrics(), late_cg), timeout=2 * INTERVAL + SLACK,
             message=f"the removed {late.name} to disappear without the Docker API")
    assert "docker_api_unavailable" not in lookout.log(), "an empty --docker-socket must not try the API"


# --- a real Prometheus ------------------------------------------------------------------------------


@pytest.mark.prometheus
def test_prometheus_scrapes_the_agent(base_agent: AgentProcess, prometheus: Callable[..., PrometheusServer],
                                      sleeper: tuple[Container, str]) -> None:
    c, cg = sleeper
    wait_seen(base_agent, cg, c.name)
    server = prometheus(base_agent)

    def up() -> list[dict]:
        return [r for r in server.query(f'up{{job="lookout",instance="{base_agent.address}"}}')
                if r["value"][1] == "1"]

    # up == 1 means Prometheus parsed the whole body: any format error fails the scrape.
    wait_for(up, timeout=15, message="up == 1 for the agent's target", describe=server.describe_targets)

    memory = wait_for(lambda: server.query(f'container_memory_usage_bytes{{name="{c.name}"}}'), timeout=10,
                      message=f"container_memory_usage_bytes for {c.name} in Prometheus",
                      describe=server.describe_targets)
    assert len(memory) == 1 and memory[0]["metric"]["id"] == cg, memory
    assert float(memory[0]["value"][1]) > 0, memory

    # rate() over 5 s needs two scrapes of the counter in the window.
    rates = wait_for(lambda: server.query(f'rate(container_cpu_usage_seconds_total{{name="{c.name}"}}[5s])'),
                     timeout=15, message=f"rate(container_cpu_usage_seconds_total[5s]) for {c.name}")
    assert all(math.isfinite(float(r["value"][1])) and float(r["value"][1]) >= 0 for r in rates), rates
    assert {r["metric"]["id"] for r in rates} == {cg}, rates


@pytest.mark.prometheus
def test_promtool_check_metrics_finds_no_format_errors(base_agent: AgentProcess, promtool: str,
                                                       sleeper: tuple[Container, str]) -> None:
    """``promtool check metrics`` both parses and lints. Exit 1 with "error while linting: text format
    parsing error ..." is a format error: a failure. Exit 3 lists lint *warnings* ("counter metrics
    should have "_total" suffix" for container_memory_failcnt, "non-counter metrics should not have
    "_total" suffix" for container_fs_inodes_total, camelCase label names of cadvisor_version_info):
    those are cAdvisor's own names, which Lookout keeps on purpose, so they are accepted. Lint
    findings on Lookout's own ``lookout_*`` metrics, whose names we choose, are failures.
    """
    c, cg = sleeper
    wait_seen(base_agent, cg, c.name)  # the body holds its series, with the AWKWARD label value
    body = base_agent.get("/metrics").body
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode in (0, 3), f"promtool check metrics exited {proc.returncode}:\n{output}"
    assert "error while linting" not in output and "parsing error" not in output, output
    findings = [line for line in output.splitlines() if line.strip()]
    own = [line for line in findings if line.startswith("lookout_")]
    assert not own, "lint findings on Lookout's own metrics:\n" + "\n".join(own)
    print(f"promtool exit {proc.returncode}; accepted lint warnings on cAdvisor names:\n" + "\n".join(findings))


# --- exposition formats -----------------------------------------------------------------------------


def _container_lines(text: str) -> list[str]:
    """The snapshot part of a body (cAdvisor families), without the agent's own changing self-metrics."""
    return [line for line in text.splitlines()
            if line.split("{")[0].split(" ")[0].startswith(("container_", "machine_", "cadvisor_"))
            or line.startswith(("# HELP container_", "# TYPE container_", "# HELP machine_", "# TYPE machine_"))]


def test_gzip_body_is_the_same_metrics(base_agent: AgentProcess, sleeper: tuple[Container, str]) -> None:
    c, cg = sleeper
    wait_seen(base_agent, cg, c.name)

    def same_snapshot() -> tuple[bytes, str, str] | None:
        plain1 = base_agent.get("/metrics")
        zipped = base_agent.get("/metrics", headers={"Accept-Encoding": "gzip"})
        plain2 = base_agent.get("/metrics")
        if _container_lines(plain1.text) != _container_lines(plain2.text):
            return None  # a new snapshot was published in between: try again
        assert zipped.status == 200 and zipped.headers.get("content-encoding") == "gzip", zipped.headers
        return zipped.body, plain1.text, zipped.headers.get("content-type", "")

    raw, plain, content_type = wait_for(same_snapshot, timeout=10, message="three scrapes of one snapshot")
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    # The cached snapshot and the self-metrics are two gzip members: a client must read both.
    first = zlib.decompressobj(16 + zlib.MAX_WBITS)
    first.decompress(raw)
    assert first.unused_data, "expected a multi-member gzip body (cached snapshot + self metrics)"
    text = gzip.decompress(raw).decode()
    assert _container_lines(text) == _container_lines(plain)
    assert {s.name for s in parse(text)} == {s.name for s in parse(plain)}
    assert parse(text).select("container_last_seen", id=cg, name=c.name)


def test_openmetrics_when_asked(base_agent: AgentProcess, sleeper: tuple[Container, str]) -> None:
    c, cg = sleeper
    wait_seen(base_agent, cg, c.name)
    for compress in (False, True):
        headers = {"Accept": "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"}
        if compress:
            headers["Accept-Encoding"] = "gzip"
        resp = base_agent.get("/metrics", headers=headers)
        assert resp.status == 200
        assert resp.headers.get("content-type", "").startswith("application/openmetrics-text"), resp.headers
        text = gzip.decompress(resp.body).decode() if compress else resp.text
        assert text.endswith("# EOF\n") and text.count("# EOF") == 1, text[-300:]
        families = {f.name: f for f in parse_openmetrics(text)}  # raises on any OpenMetrics violation
        assert families["container_cpu_usage_seconds"].type == "counter"
        samples = [s for s in families["container_last_seen"].samples if s.labels.get("id") == cg]
        assert len(samples) == 1 and samples[0].labels["name"] == c.name, samples


def test_healthz_landing_page_and_containers_api(base_agent: AgentProcess, sleeper: tuple[Container, str]) -> None:
    c, cg = sleeper
    wait_seen(base_agent, cg, c.name)

    health = base_agent.get("/healthz")
    assert (health.status, health.text) == (200, "ok")

    landing = base_agent.get("/")
    assert landing.status == 200 and landing.headers.get("content-type", "").startswith("text/html")
    for path in ("/metrics", "/healthz", "/api/v1/containers"):
        assert f'href="{path}"' in landing.text, landing.text

    resp = base_agent.get("/api/v1/containers")
    assert resp.status == 200 and resp.headers.get("content-type", "").startswith("application/json")
    doc = json.loads(resp.body)
    mine = [x for x in doc["containers"] if x["info"]["name"] == c.name]
    assert len(mine) == 1, sorted(x["info"]["name"] or x["info"]["cgroup"] for x in doc["containers"])
    info, stats = mine[0]["info"], mine[0]["stats"]
    assert info["cgroup"] == cg and info["container_id"] == c.id and info["image"] == IMAGE, info
    assert info["labels"].get("com.example.team") == "api", info
    assert stats["memory"]["usage"] > 0 and stats["cpu"]["usage_ns"] > 0, stats

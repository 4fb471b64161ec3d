"""Issue #12: real Podman and containerd containers beside Docker's, end to end.

The agent runs as a real process with no runtime API at all: it reads libpod's database, containerd's
``meta.db`` and bundles, containers/storage and the cgroup tree (tests/helpers/runtimes.py starts the runtimes).

- Podman (Debian's ``podman``, cgroupfs manager, vfs storage): ``/libpod_parent/libpod-<id>`` with its name,
  image, labels, env vars by the allowlist (keys lower-cased, as cAdvisor's Podman handler), CPU and memory against
  the kernel's files, its writable layer's usage, and its ``k8s-file`` log shipped through a ``file://`` route.
- containerd (Debian's ``containerd``, ``ctr -n k8s.io``): a container under ``/kubepods/besteffort/pod<uid>``
  with kubelet's ``io.kubernetes.*`` labels, as a node's cAdvisor shows it (name = id, pod/namespace/container),
  CPU and memory against the kernel, and its output written in CRI's format to ``/var/log/pods`` (what the CRI
  plugin would do; tests/helpers/cri_logger.py does it here, as no kubelet runs) shipped with containerd's metadata.

Waiting is polling with a timeout, never a fixed sleep. Containers are removed at teardown.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import kernel
from tests.helpers.agent import AgentProcess
from tests.helpers.deps import unavailable
from tests.helpers.runtimes import (
    CONTAINERD_IMAGE,
    PODMAN_IMAGE,
    CtrContainer,
    CtrRunner,
    PodmanRunner,
    RuntimeCommandError,
    RuntimeUnavailable,
    ensure_containerd,
    ensure_containerd_image,
    ensure_podman,
    podman,
    sweep_stale,
)
from tests.helpers.wait import wait_for

AgentFactory = Callable[..., AgentProcess]
INTERVAL = 1.0  # the agents' --housekeeping-interval
SLACK = 2.0  # one collection cycle + one scrape on a busy 2-core machine
MiB = 1024 * 1024
# A label value with the text format's escapes and UTF-8.
AWKWARD = 'say "hi"\\ to C:\\temp \u2013 ünïcode'


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman_ready() -> str:
    try:
        version = ensure_podman()
        sweep_stale()
    except (RuntimeUnavailable, RuntimeCommandError) as exc:
        unavailable(f"no usable podman: {exc}")
    return version


@pytest.fixture(scope="module")
def containerd_ready() -> None:
    try:
        ensure_containerd()
        ensure_containerd_image()
        sweep_stale()
    except (RuntimeUnavailable, RuntimeCommandError) as exc:
        unavailable(f"no usable containerd: {exc}")


@pytest.fixture
def pods(podman_ready: str) -> Iterator[PodmanRunner]:
    runner = PodmanRunner()
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.fixture
def ctrs(containerd_ready: None) -> Iterator[CtrRunner]:
    runner = CtrRunner()
    try:
        yield runner
    finally:
        runner.cleanup()


# --- helpers ----------------------------------------------------------------------------------------


def seen(agent: AgentProcess, cgroup: str, name: str, timeout: float = 15.0) -> dict[str, str]:
    """The labels of the container's ``container_last_seen`` once it is there with ``name``."""

    def found() -> dict[str, str] | None:
        series = agent.metrics().select("container_last_seen", id=cgroup)
        if series and series[0].labels.get("name") == name:
            return dict(series[0].labels)
        return None

    return wait_for(found, timeout, message=f"container_last_seen{{id={cgroup!r}, name={name!r}}}",
                    describe=lambda: agent.metrics().describe("container_last_seen"))


def within(actual: float, expected: float, absolute: float, relative: float = 0.0) -> bool:
    return abs(actual - expected) <= max(absolute, relative * abs(expected))


def check_cpu_and_memory_against_kernel(agent: AgentProcess, cgroup: str, quota_cores: float,
                                        memory_limit: int) -> None:
    """The spec families equal the limits set; CPU usage is the kernel's counter of the snapshot's moment (the
    kernel can only be ahead, by what the burner used since); memory usage settles on the kernel's value."""
    m = agent.metrics()
    assert m.value("container_spec_memory_limit_bytes", id=cgroup) == memory_limit
    assert m.value("container_spec_cpu_quota", id=cgroup) == round(quota_cores * 100000)
    assert m.value("container_spec_cpu_period", id=cgroup) == 100000

    def cpu_point() -> tuple[float, float] | None:
        scraped = agent.metrics()
        kernel_usage = kernel.cpu_usage_seconds(cgroup)
        age = time.time() - scraped.value("container_last_seen", id=cgroup)
        agent_usage = scraped.total("container_cpu_usage_seconds_total", id=cgroup)
        return (kernel_usage - agent_usage, age) if agent_usage > 0.05 else None

    ahead, age = wait_for(cpu_point, timeout=10, message=f"CPU usage of {cgroup} above 0.05 s")
    assert -0.001 <= ahead <= quota_cores * 1.2 * age + 0.15, f"kernel ahead of the agent by {ahead:.4f}s, age {age}"

    last: dict[str, float] = {}

    def memory_agrees() -> bool:
        last["agent"] = agent.metrics().value("container_memory_usage_bytes", id=cgroup)
        last["kernel"] = kernel.memory_usage_bytes(cgroup)
        return last["agent"] > 0 and within(last["agent"], last["kernel"], MiB, 0.02)

    wait_for(memory_agrees, timeout=3 * INTERVAL + SLACK, describe=lambda: f"agent vs kernel: {last}",
             message=f"container_memory_usage_bytes of {cgroup} to agree with the kernel's")


class Ndjson:
    """The output file of a ``file://`` route."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in data.split(b"\n") if line]


def cri_records(path: str) -> list[tuple[str, str]]:
    """(stream, message) of a CRI-format file, partial records joined per stream: what the route must ship."""
    out: list[tuple[str, str]] = []
    pending: dict[str, str] = {}
    with open(path, "rb") as fh:
        for line in fh.read().decode().splitlines():
            _time, stream, tag, *rest = line.split(" ", 3)
            text = pending.pop(stream, "") + (rest[0] if rest else "")
            if tag == "P":
                pending[stream] = text
            else:
                out.append((stream, text))
    return out


# --- Podman -----------------------------------------------------------------------------------------


LOG_SCRIPT = ("i=0; while [ $i -lt 20 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done; "
              "head -c 20000 /dev/zero | tr '\\0' x; echo; echo done")


@pytest.mark.podman
def test_podman_container_metadata_cpu_memory_and_layer(agent: AgentFactory, pods: PodmanRunner) -> None:
    c = pods.run("--label", "com.example.team=api", "--label", f"com.example/note={AWKWARD}",
                 "--env", "LOOKOUT_TEST_Color=blue", "--env", "OTHER_SECRET=hunter2",
                 "--cpus", "0.5", "--memory", "64m", purpose="podman",
                 cmd=["sh", "-c", "dd if=/dev/zero of=/tmp/blob bs=1024 count=3072 2>/dev/null; while :; do :; done"])
    cgroup = c.cgroup
    assert cgroup == f"/libpod_parent/libpod-{c.id}", cgroup
    lookout = agent("--env-metadata-allowlist", "LOOKOUT_TEST_", "--fs-usage-interval", "1s")
    labels = seen(lookout, cgroup, c.name)
    assert labels["image"] == PODMAN_IMAGE
    assert labels["container_label_com_example_team"] == "api"
    assert labels["container_label_com_example_note"] == AWKWARD
    assert labels["container_label_lookout_test"] == "1"
    assert labels["container_label_lookout_test_image_recipe"] == "2"  # the image's label, as podman inspect has it
    assert labels["container_env_lookout_test_color"] == "blue"  # the key lower-cased, as cAdvisor's Podman handler
    assert not [k for k in labels if k.startswith("container_env_") and k != "container_env_lookout_test_color"]
    inspect = c.inspect()
    assert inspect["Config"]["Labels"]["com.example.team"] == "api"
    # libpod's start time (podman inspect's RFC 3339 with nanoseconds), to the microsecond
    stamp = re.fullmatch(r"(.{19})(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", inspect["State"]["StartedAt"])
    assert stamp is not None, inspect["State"]["StartedAt"]
    zone = "+00:00" if stamp[3] == "Z" else stamp[3]
    started = datetime.fromisoformat(stamp[1] + zone).timestamp() + float("0." + (stamp[2] or "0"))
    assert lookout.metrics().value("container_start_time_seconds", id=cgroup) == pytest.approx(started, abs=1e-5)

    check_cpu_and_memory_against_kernel(lookout, cgroup, 0.5, 64 * MiB)

    # The writable layer (vfs: a full copy of the image, plus the 3 MiB written into /tmp) and the container's own
    # directory, measured as du does: what podman counts (``inspect --size``: the image's size and the changes)
    # plus the blocks around it (directories, the last block of each file, the container's few small files).
    sizes = podman("inspect", "--size", "--format", "{{.SizeRootFs}} {{.SizeRw}}", c.id).stdout.split()
    image_size, changes = int(sizes[0]), int(sizes[1])
    assert changes >= 3 * MiB, sizes

    def layer_usage() -> float | None:
        found = lookout.metrics().select("container_fs_usage_bytes", id=cgroup)
        return found[0].value if found and found[0].value >= image_size + changes else None

    used = wait_for(layer_usage, timeout=15, message=f"container_fs_usage_bytes >= {image_size + changes}",
                    describe=lambda: lookout.metrics().describe("container_fs_usage_bytes", id=cgroup))
    assert used <= image_size + changes + MiB, f"{used} bytes used, podman counts {image_size} + {changes}"


@pytest.mark.podman
def test_podman_labels_allowlist(agent: AgentFactory, pods: PodmanRunner) -> None:
    c = pods.run("--label", "com.example.team=api", "--label", "com.example.tier=backend", purpose="podallow")
    lookout = agent("--container-labels-allowlist", "com.example.team")
    labels = seen(lookout, c.cgroup, c.name)
    assert labels["container_label_com_example_team"] == "api"
    assert [k for k in labels if k.startswith("container_label_")] == ["container_label_com_example_team"]


@pytest.mark.podman
def test_podman_k8s_file_log_is_shipped_with_its_name(agent: AgentFactory, pods: PodmanRunner,
                                                      tmp_path: Path) -> None:
    out = Ndjson(tmp_path / "out.ndjson")
    lookout = agent("--route", f"file://{out.path}")
    c = pods.run("--label", "com.example.team=logs", purpose="podlog",
                 cmd=["sh", "-c", LOG_SCRIPT])  # started after the agent: a new source, found by discovery
    assert c.log_path.endswith(f"/{c.id}/userdata/ctr.log"), c.log_path
    wait_for(lambda: not c.running(), timeout=30, message=f"{c.name} to exit")
    expected = cri_records(c.log_path)  # conmon's own file, partial records joined
    assert expected[-1] == ("stdout", "done") and ("stdout", "x" * 20000) in expected
    assert sum(1 for line in Path(c.log_path).read_text().splitlines() if " P " in line[:50]) >= 2  # split by conmon

    def shipped() -> list[dict[str, Any]] | None:
        mine = [r for r in out.records() if r["container_id"] == c.id]
        return mine if len(mine) >= len(expected) else None

    mine = wait_for(shipped, timeout=30, message=f"{len(expected)} records of {c.name} in {out.path}",
                    describe=lambda: lookout.log(30))
    assert [(r["stream"], r["message"]) for r in mine] == expected
    first = mine[0]
    assert (first["container_name"], first["image"]) == (c.name, PODMAN_IMAGE)
    assert first["labels"]["com.example.team"] == "logs"
    assert first["file"] == c.log_path
    for stream, prefix in (("stdout", "out"), ("stderr", "err")):  # each stream in the order written
        got = [r["message"] for r in mine if r["stream"] == stream and r["message"].startswith(("out ", "err "))]
        assert got == [f"{prefix} {i}" for i in range(20)], got


# --- containerd -------------------------------------------------------------------------------------


@pytest.mark.containerd
def test_containerd_kubernetes_container_like_a_nodes_cadvisor(agent: AgentFactory, ctrs: CtrRunner) -> None:
    c = ctrs.run("--env", "LOOKOUT_TEST_COLOR=green", "--env", "OTHER_SECRET=hunter2",
                 "--cpus", "0.5", "--memory-limit", str(64 * MiB), pod="shop-7d9f", namespace="lookout-test",
                 container="api", labels={"com.example.team": "api"}, cmd=["sh", "-c", "while :; do :; done"])
    lookout = agent("--env-metadata-allowlist", "LOOKOUT_TEST_")
    labels = seen(lookout, c.cgroup, c.id)  # cAdvisor's containerd name: the container id
    assert (labels["image"], labels["pod"], labels["namespace"], labels["container"]) == (
        CONTAINERD_IMAGE, "shop-7d9f", "lookout-test", "api")
    # containerd's own labels (ctr containers info), the io.kubernetes.* ones included
    for key, value in c.labels.items():
        assert labels["container_label_" + key.replace(".", "_").replace("-", "_")] == value, key
    assert labels["container_label_lookout_test_image_recipe"] == "2"  # the image config's label, as containerd
    assert labels["container_env_LOOKOUT_TEST_COLOR"] == "green"  # the key as it is (cAdvisor's containerd handler)
    assert "container_env_OTHER_SECRET" not in labels
    m = lookout.metrics()
    # a pod's app container shares the sandbox's network namespace: no network series (cAdvisor)
    assert not m.select("container_network_receive_bytes_total", id=c.cgroup)
    # the pod's cgroup is a raw cgroup with the pod's uid
    assert m.select("container_last_seen", id=f"/kubepods/besteffort/pod{c.pod_uid}")

    check_cpu_and_memory_against_kernel(lookout, c.cgroup, 0.5, 64 * MiB)


@pytest.mark.containerd
def test_containerd_cri_log_is_shipped_with_containerds_metadata(agent: AgentFactory, ctrs: CtrRunner,
                                                                 tmp_path: Path) -> None:
    out = Ndjson(tmp_path / "out.ndjson")
    lookout = agent("--route", f"file://{out.path}")
    c: CtrContainer = ctrs.run(pod="logs-5c4b", container="writer", labels={"com.example.team": "logs"},
                               cmd=["sh", "-c", LOG_SCRIPT.replace("20000", "40000")], cri_log=True)
    wait_for(lambda: not c.running(), timeout=30, message=f"{c.id} to exit")
    expected = cri_records(c.log_file)
    # The logging binary copies stdout and stderr in a thread each: "done" is the last stdout record, not
    # necessarily the file's last line.
    assert [r for r in expected if r[0] == "stdout"][-1] == ("stdout", "done") and ("stdout", "x" * 40000) in expected

    def shipped() -> list[dict[str, Any]] | None:
        mine = [r for r in out.records() if r["container_id"] == c.id]
        return mine if len(mine) >= len(expected) else None

    mine = wait_for(shipped, timeout=30, message=f"{len(expected)} records of {c.id} in {out.path}",
                    describe=lambda: lookout.log(30))
    assert [(r["stream"], r["message"]) for r in mine] == expected
    first = mine[0]
    assert (first["pod"], first["namespace"], first["container"]) == ("logs-5c4b", "lookout-test", "writer")
    assert (first["container_name"], first["image"]) == (c.id, CONTAINERD_IMAGE)
    assert first["labels"]["com.example.team"] == "logs"
    assert first["labels"]["io.kubernetes.pod.uid"] == c.pod_uid
    assert first["file"] == c.log_file

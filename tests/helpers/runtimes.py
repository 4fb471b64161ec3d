"""Podman and containerd for the integration tests: the daemon, the test image, containers with cleanup.

Standard library only, so ``.ci/run`` can use it before the test dependencies are installed::

    python -m tests.helpers.runtimes ensure-containerd ensure-images sweep-stale

- Podman runs as root on its default storage with ``--storage-driver vfs --cgroup-manager cgroupfs`` (no systemd
  here) and ``--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`` on every ``run`` (without CAP_SYS_RESOURCE
  its default ulimits cannot be set): its containers are ``/libpod_parent/libpod-<id>``.
- containerd is the host's own at ``/run/containerd/containerd.sock`` (root ``/var/lib/containerd``, state
  ``/run/containerd``: the paths a Kubernetes node has and the agent reads). When none answers it is started
  (root only) with those paths and the CRI plugin disabled, and keeps running afterwards, as dockerd does.
  Containers run in namespace ``k8s.io`` with the ``native`` snapshotter under a kubepods-style cgroup
  ``/kubepods/besteffort/pod<uid>/<id>`` and kubelet's ``io.kubernetes.*`` labels.
- The image ``lookout-test-busybox`` is the Docker tests' root filesystem (``tests.helpers.docker.image_tar``:
  Debian's busybox-static), packed here as a ``docker save`` archive and loaded into each runtime, so no Docker
  engine and no registry is needed.
- Containers are labelled ``lookout.test=1`` and ``lookout.test.owner=<pid>:<start time>``; ``sweep_stale``
  removes those whose test process is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.docker import (
    IMAGE,
    IMAGE_RECIPE,
    IMAGE_RECIPE_LABEL,
    LABEL,
    NAME_PREFIX,
    OWNER_LABEL,
    DockerUnavailable,
    _process_start,
    _tail,
    find_busybox,
    image_tar,
    owner_token,
)

PODMAN_GLOBAL = ("--storage-driver", "vfs", "--cgroup-manager", "cgroupfs")
PODMAN_RUN = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
PODMAN_IMAGE = f"localhost/{IMAGE}:latest"
CONTAINERD_SOCKET = os.environ.get("LOOKOUT_TEST_CONTAINERD_SOCKET", "/run/containerd/containerd.sock")
CONTAINERD_NAMESPACE = "k8s.io"
CONTAINERD_IMAGE = f"docker.io/library/{IMAGE}:latest"
CONTAINERD_LOG = Path(os.environ.get("LOOKOUT_TEST_CONTAINERD_LOG", "/tmp/lookout-test-containerd.log"))
CONTAINERD_CONFIG = Path("/tmp/lookout-test-containerd.toml")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class RuntimeUnavailable(Exception):
    """Podman or containerd cannot be used here; the message says precisely why (the pytest skip reason)."""


class RuntimeCommandError(Exception):
    """A podman or ctr command failed; the message carries the command and its stderr."""


def _log(message: str) -> None:
    print(f"[tests.helpers.runtimes] {message}", file=sys.stderr, flush=True)


def _run(tool: str, args: Sequence[str], check: bool, timeout: float, input: bytes | None,
         hint: str) -> subprocess.CompletedProcess[str]:
    cli = shutil.which(tool)
    if cli is None:
        raise RuntimeUnavailable(f"{tool} is not installed ({hint})")
    try:
        proc = subprocess.run([cli, *args], input=input, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeCommandError(f"{tool} {' '.join(args)}: no answer within {timeout}s") from exc
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeCommandError(f"{tool} {' '.join(args)} exited {proc.returncode}: {err.strip() or out.strip()}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def podman(*args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
           ) -> subprocess.CompletedProcess[str]:
    return _run("podman", [*PODMAN_GLOBAL, *args], check, timeout, input, "Debian: apt-get install podman")


def ctr(*args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
        ) -> subprocess.CompletedProcess[str]:
    return _run("ctr", ["--address", CONTAINERD_SOCKET, "-n", CONTAINERD_NAMESPACE, *args], check, timeout, input,
                "Debian: apt-get install containerd")


# --- the image ------------------------------------------------------------------------------------


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def image_archive(busybox: Path) -> bytes:
    """``docker save``'s format (manifest.json, the image config, one layer) around the busybox root filesystem."""
    layer = image_tar(busybox)
    diff_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": _arch(), "os": "linux", "created": "2026-11-28T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Labels": {IMAGE_RECIPE_LABEL: IMAGE_RECIPE}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "2026-11-28T00:00:00Z", "created_by": "tests/helpers/runtimes.py"}],
    }, separators=(",", ":")).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_id}.json", "RepoTags": [f"{IMAGE}:latest"],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in ((f"{diff_id}/layer.tar", layer), (f"{config_id}.json", config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _busybox() -> Path:
    try:
        return find_busybox()
    except DockerUnavailable as exc:
        raise RuntimeUnavailable(str(exc)) from exc


# --- Podman ---------------------------------------------------------------------------------------


def ensure_podman() -> str:
    """``podman info`` answers and the test image is loaded; returns podman's version."""
    info = podman("info", "--format", "{{.Version.Version}}|{{.Store.GraphRoot}}", check=False, timeout=60)
    if info.returncode != 0:
        raise RuntimeUnavailable(f"podman info fails: {info.stderr.strip() or info.stdout.strip()}")
    label = podman("image", "inspect", "--format", "{{index .Labels \"" + IMAGE_RECIPE_LABEL + "\"}}", PODMAN_IMAGE,
                   check=False)
    if label.returncode != 0 or label.stdout.strip() != IMAGE_RECIPE:
        _log(f"loading {PODMAN_IMAGE} into podman")
        podman("load", input=image_archive(_busybox()), timeout=300)
    return info.stdout.strip()


@dataclass
class PodmanContainer:
    name: str
    id: str

    def inspect(self) -> dict[str, Any]:
        return json.loads(podman("inspect", self.id).stdout)[0]

    @property
    def cgroup(self) -> str:
        """The ``id`` label: libpod's cgroup path (``/libpod_parent/libpod-<id>`` with cgroupfs)."""
        return str(self.inspect()["State"]["CgroupPath"])

    @property
    def log_path(self) -> str:
        return str(self.inspect()["HostConfig"]["LogConfig"]["Path"])

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])


@dataclass
class PodmanRunner:
    names: list[str] = field(default_factory=list)

    def run(self, *options: str, cmd: Sequence[str] = ("sleep", "3600"), purpose: str = "c") -> PodmanContainer:
        name = f"{NAME_PREFIX}{purpose}-{secrets.token_hex(4)}"
        self.names.append(name)
        cid = podman("run", "-d", "--name", name, *PODMAN_RUN, "--label", f"{LABEL}=1",
                     "--label", f"{OWNER_LABEL}={owner_token()}", *options, PODMAN_IMAGE, *cmd).stdout.strip()
        return PodmanContainer(name, cid.splitlines()[-1])

    def cleanup(self) -> None:
        if self.names:
            podman("rm", "-f", "-i", "--time", "0", *self.names, check=False, timeout=180)
            self.names.clear()


# --- containerd -----------------------------------------------------------------------------------


def containerd_answers() -> tuple[bool, str]:
    try:
        proc = ctr("version", check=False, timeout=15)
    except (RuntimeCommandError, RuntimeUnavailable) as exc:
        return False, str(exc)
    if proc.returncode == 0 and "Server:" in proc.stdout:
        return True, ""
    return False, proc.stderr.strip() or proc.stdout.strip() or f"ctr version exited {proc.returncode}"


def ensure_containerd(timeout: float = 60.0, start: bool | None = None) -> str:
    """Make ``ctr version`` answer at CONTAINERD_SOCKET, starting containerd when allowed (as root)."""
    ok, error = containerd_answers()
    if ok:
        return "containerd already answering"
    if start is None:
        start = os.geteuid() == 0 and CONTAINERD_SOCKET == "/run/containerd/containerd.sock"
    binary = shutil.which("containerd")
    if not start or binary is None:
        why = "containerd is not installed (Debian: apt-get install containerd)" if binary is None else \
            "it can only be started as root at the default socket"
        raise RuntimeUnavailable(f"ctr version fails at {CONTAINERD_SOCKET} ({error}) and {why}")
    CONTAINERD_CONFIG.write_text('version = 2\nroot = "/var/lib/containerd"\nstate = "/run/containerd"\n'
                                 'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                                 f'[grpc]\n  address = "{CONTAINERD_SOCKET}"\n')
    _log(f"ctr version fails ({error}); starting {binary} --config {CONTAINERD_CONFIG} (log: {CONTAINERD_LOG})")
    with open(CONTAINERD_LOG, "ab") as log:
        offset = log.tell()
        # A new session: the daemon outlives this process (and the test session) on purpose.
        proc = subprocess.Popen([binary, "--config", str(CONTAINERD_CONFIG)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok, error = containerd_answers()
        if ok:
            return f"started containerd (pid {proc.pid})"
        if proc.poll() is not None and not containerd_answers()[0]:
            time.sleep(2)  # another session may have started it at the same moment
            if containerd_answers()[0]:
                return "containerd started by another session"
            break
        time.sleep(0.2)
    raise RuntimeUnavailable(f"started containerd but ctr version still fails ({error}); its log "
                             f"({CONTAINERD_LOG}):\n{_tail(CONTAINERD_LOG, 40, offset)}")


def ensure_containerd_image() -> None:
    """Import the test image unless containerd has it from the current recipe (kept as an image label)."""
    want = f"{IMAGE_RECIPE_LABEL}={IMAGE_RECIPE}"
    for line in ctr("images", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == CONTAINERD_IMAGE and want in fields[-1].split(","):
            return
    _log(f"importing {CONTAINERD_IMAGE} into containerd")
    ctr("images", "import", "--snapshotter", "native", "-", input=image_archive(_busybox()), timeout=300)
    ctr("images", "label", CONTAINERD_IMAGE, want)


@dataclass
class CtrContainer:
    id: str
    pod_uid: str
    labels: dict[str, str]
    log_file: str = ""  # its CRI log, /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log, when it has one

    @property
    def cgroup(self) -> str:
        return f"/kubepods/besteffort/pod{self.pod_uid}/{self.id}"

    def running(self) -> bool:
        return any(line.split()[:1] == [self.id] and "RUNNING" in line
                   for line in ctr("tasks", "ls").stdout.splitlines()[1:])


@dataclass
class CtrRunner:
    """``ctr run -d`` containers as a kubelet would place them; tasks, containers, pod cgroups and log files
    removed at ``cleanup()``."""

    pods_root: Path = Path("/var/log/pods")
    links_root: Path = Path("/var/log/containers")
    containers: list[CtrContainer] = field(default_factory=list)

    def run(self, *options: str, pod: str = "web-0", namespace: str = "lookout-test", container: str = "app",
            labels: dict[str, str] | None = None, cmd: Sequence[str] = ("sleep", "3600"),
            cri_log: bool = False) -> CtrContainer:
        """A container in pod ``pod`` (a fresh uid) with kubelet's labels and ``labels``. With ``cri_log`` its
        output goes where the kubelet has containerd write it, ``/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log``
        in CRI's format (tests/helpers/cri_logger.py), with kubelet's ``/var/log/containers`` link; else nowhere."""
        cid = secrets.token_hex(32)
        pod_uid = str(uuid.uuid4())
        all_labels = {"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": namespace,
                      "io.kubernetes.pod.uid": pod_uid, "io.kubernetes.container.name": container,
                      "io.cri-containerd.kind": "container", LABEL: "1", OWNER_LABEL: owner_token(),
                      **(labels or {})}
        c = CtrContainer(cid, pod_uid, all_labels)
        self.containers.append(c)
        args = ["run", "-d", "--snapshotter", "native", "--cgroup", c.cgroup]
        for key, value in all_labels.items():
            args += ["--label", f"{key}={value}"]
        if cri_log:  # as the kubelet: the container's log directory first, its link once it started
            c.log_file = str(self.pods_root / f"{namespace}_{pod}_{pod_uid}" / container / "0.log")
            Path(c.log_file).parent.mkdir(parents=True, exist_ok=True)
            args += ["--log-uri", f"binary://{cri_logger_wrapper()}?{c.log_file}"]
        else:
            args += ["--null-io"]
        ctr(*args, *options, CONTAINERD_IMAGE, cid, *cmd)
        if cri_log:
            self.links_root.mkdir(parents=True, exist_ok=True)
            (self.links_root / f"{pod}_{namespace}_{container}-{cid}.log").symlink_to(c.log_file)
        return c

    def cleanup(self) -> None:
        for c in self.containers:
            remove_ctr_container(c.id, c.pod_uid, self.pods_root, self.links_root)
        self.containers.clear()


def cri_logger_wrapper() -> str:
    """An executable that runs tests/helpers/cri_logger.py with this interpreter (a logging binary must be one
    path: containerd passes the URI's query as its arguments)."""
    script = Path(__file__).with_name("cri_logger.py")
    path = Path(f"/tmp/lookout-test-cri-logger-{os.getpid()}")
    if not path.exists():
        path.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
        path.chmod(0o755)
    return str(path)


def remove_ctr_container(cid: str, pod_uid: str = "", pods_root: Path = Path("/var/log/pods"),
                         links_root: Path = Path("/var/log/containers")) -> None:
    """Kill and remove the task and the container, and what a kubelet would remove with its pod: the pod's
    cgroup (runc leaves it), its log directory and the container's log link."""
    ctr("tasks", "rm", "-f", cid, check=False, timeout=60)
    ctr("containers", "rm", cid, check=False, timeout=60)
    for link in links_root.glob(f"*-{cid}.log"):
        link.unlink(missing_ok=True)
    if pod_uid:
        for pod_logs in pods_root.glob(f"*_{pod_uid}"):
            shutil.rmtree(pod_logs, ignore_errors=True)
        for pod_dir in CGROUP_ROOT.glob(f"*/kubepods/besteffort/pod{pod_uid}"):
            with contextlib.suppress(OSError):  # not empty: another container of the pod is still there
                pod_dir.rmdir()


# --- stale containers -----------------------------------------------------------------------------


def _stale(owner: str) -> bool:
    pid, _, start = owner.partition(":")
    return not pid.isdigit() or _process_start(int(pid)) != start


def sweep_stale() -> list[str]:
    """Remove test containers of both runtimes whose owning test process is gone."""
    removed = []
    if shutil.which("podman"):
        proc = podman("ps", "-a", "--filter", f"label={OWNER_LABEL}",
                      "--format", '{{.ID}} {{index .Labels "' + OWNER_LABEL + '"}}', check=False)
        stale = [line.split()[0] for line in proc.stdout.splitlines()
                 if line.strip() and _stale(line.partition(" ")[2])]
        if stale:
            podman("rm", "-f", "--time", "0", *stale, check=False, timeout=180)
            removed += stale
    if shutil.which("ctr") and containerd_answers()[0]:
        for cid in ctr("containers", "ls", "-q").stdout.split():
            info = ctr("containers", "info", cid, check=False)
            if info.returncode != 0:
                continue
            labels = json.loads(info.stdout).get("Labels") or {}
            if OWNER_LABEL in labels and _stale(labels[OWNER_LABEL]):
                remove_ctr_container(cid, labels.get("io.kubernetes.pod.uid", ""))
                removed.append(cid)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.runtimes", description=__doc__.split("\n")[0])
    parser.add_argument("steps", nargs="+", choices=["ensure-containerd", "ensure-images", "sweep-stale"])
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        for step in args.steps:
            if step == "ensure-containerd":
                _log(ensure_containerd(args.timeout))
            elif step == "ensure-images":
                _log(f"podman {ensure_podman()}: {PODMAN_IMAGE} ready")
                ensure_containerd_image()
                _log(f"containerd: {CONTAINERD_IMAGE} ready")
            elif step == "sweep-stale":
                _log(f"removed stale test containers: {sweep_stale() or 'none'}")
    except (RuntimeUnavailable, RuntimeCommandError) as exc:
        _log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

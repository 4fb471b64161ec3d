"""Docker for the integration tests: the daemon, the test image, the test network, containers with cleanup.

Standard library only, so ``.ci/run`` can use it before the test dependencies are installed::

    python -m tests.helpers.docker ensure-daemon ensure-image ensure-network

Everything is idempotent and safe to run from several test sessions at once.

- The daemon is started (root only) as ``dockerd --storage-driver=vfs --iptables=false
  --ip6tables=false --bridge=none`` when ``docker info`` fails; it keeps running afterwards. A
  containerd socket left at /run/containerd by a containerd that no longer runs (a machine restored
  from a snapshot, a killed test containerd) is removed first: dockerd uses that path whenever it
  exists and would otherwise fail with "failed to dial /run/containerd/containerd.sock".
- The image ``lookout-test-busybox`` is built without any registry: ``/bin/busybox`` (Debian's
  ``busybox-static``) plus a symlink per applet, imported with ``docker import``.
- The network ``lookout-test-net`` is a bridge on a /24 inside 198.18.0.0/15 (the benchmarking
  range, RFC 2544), so only our own test containers ever talk on it.
- Containers are named ``lookout-test-<purpose>-<random>`` and labelled ``lookout.test=1`` and
  ``lookout.test.owner=<pid>:<start time>``; ``ContainerRunner.cleanup`` removes them with
  ``docker rm -f``, and ``sweep_stale`` removes those left by test processes that no longer exist.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE = "lookout-test-busybox"
# Bump when ``image_tar`` changes: an image built by an older recipe (e.g. one without /tmp) is rebuilt.
IMAGE_RECIPE = "2"
IMAGE_RECIPE_LABEL = "lookout.test.image-recipe"
NETWORK = "lookout-test-net"
# Candidate /24s inside 198.18.0.0/15; the first is used unless another network already holds it.
SUBNETS = tuple(f"198.18.{n}.0/24" for n in range(0, 16))
NAME_PREFIX = "lookout-test-"
LABEL = "lookout.test"
OWNER_LABEL = "lookout.test.owner"
DOCKERD_ARGS = ("--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none")
DOCKERD_LOG = Path(os.environ.get("LOOKOUT_TEST_DOCKERD_LOG", "/tmp/lookout-test-dockerd.log"))
_HOST = os.environ.get("DOCKER_HOST", "")
DOCKER_SOCKET = os.environ.get("LOOKOUT_TEST_DOCKER_SOCKET") or (
    _HOST[len("unix://"):] if _HOST.startswith("unix://") else "/var/run/docker.sock")


class DockerUnavailable(Exception):
    """No usable Docker engine; the message says precisely why (used as the pytest skip reason)."""


class DockerError(Exception):
    """A docker command failed; the message carries the command and its stderr."""


def _log(message: str) -> None:
    print(f"[tests.helpers.docker] {message}", file=sys.stderr, flush=True)


# --- docker CLI -------------------------------------------------------------------------------------


def docker(*args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
           ) -> subprocess.CompletedProcess[str]:
    """Run ``docker ARGS``; with ``check``, a non-zero exit raises ``DockerError`` with stderr."""
    cli = shutil.which("docker")
    if cli is None:
        raise DockerUnavailable("the docker CLI is not installed (Debian: apt-get install docker.io)")
    try:
        proc = subprocess.run([cli, *args], input=input, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"docker {' '.join(args)}: no answer within {timeout}s") from exc
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} exited {proc.returncode}: {err.strip() or out.strip()}")
    return result


def docker_info() -> tuple[bool, str]:
    """(daemon answers, docker info's error text when it does not)."""
    try:
        proc = docker("info", "--format", "{{json .ServerVersion}}", check=False, timeout=15)
    except DockerError as exc:
        return False, str(exc)
    if proc.returncode == 0 and proc.stdout.strip() not in ("", '""', "null"):
        return True, ""
    return False, (proc.stderr.strip() or proc.stdout.strip() or f"docker info exited {proc.returncode}")


def _tail(path: Path, lines: int = 60, offset: int = 0) -> str:
    """The last ``lines`` lines of ``path`` written after byte ``offset``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


SYSTEM_CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")


def remove_stale_socket(path: Path) -> bool:
    """Remove the Unix socket ``path`` (and its ``.ttrpc`` sibling) when nothing listens on it any more."""
    try:
        if not path.is_socket():
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
            return False  # someone answers: not stale
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        except OSError:
            return False  # busy or unreadable: leave it alone
    for stale in (path, path.with_name(path.name + ".ttrpc")):
        stale.unlink(missing_ok=True)
    _log(f"removed {path}: no containerd listens on it any more (dockerd would try to use it)")
    return True


def ensure_daemon(timeout: float = 60.0, start: bool | None = None) -> str:
    """Make ``docker info`` answer, starting dockerd when allowed; return a short description.

    ``start`` defaults to "running as root". Raises ``DockerUnavailable`` with the precise reason.
    """
    ok, error = docker_info()
    if ok:
        return "docker engine already answering"
    if start is None:
        start = os.geteuid() == 0
    if not start:
        raise DockerUnavailable(f"docker info fails ({error}) and dockerd can only be started as root")
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise DockerUnavailable(f"docker info fails ({error}) and dockerd is not installed "
                                "(Debian: apt-get install docker.io)")
    remove_stale_socket(SYSTEM_CONTAINERD_SOCKET)
    _log(f"docker info fails ({error}); starting {dockerd} {' '.join(DOCKERD_ARGS)} (log: {DOCKERD_LOG})")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(DOCKERD_LOG, "ab") as log:
        offset = log.tell()
        # A new session: the daemon outlives this process (and the test session) on purpose.
        proc = subprocess.Popen([dockerd, *DOCKERD_ARGS], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    exited_at: float | None = None
    while time.monotonic() < deadline:
        ok, error = docker_info()
        if ok:
            _log(f"dockerd answers (pid {proc.pid})")
            return f"started dockerd (pid {proc.pid})"
        if proc.poll() is not None:
            # Another session may have started the daemon at the same moment (pid file taken):
            # give it a few seconds to answer before giving up.
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 5:
                break
        time.sleep(0.5)
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"still running (pid {proc.pid})"
    raise DockerUnavailable(f"started dockerd but docker info still fails after {time.monotonic() - started:.0f}s "
                            f"({error}); dockerd {state}; its log ({DOCKERD_LOG}):\n{_tail(DOCKERD_LOG, 60, offset)}")


# --- image ------------------------------------------------------------------------------------------


def image_exists(name: str = IMAGE) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", name, check=False).returncode == 0


def image_recipe(name: str = IMAGE) -> str | None:
    """The recipe label of the image ``name`` ("" without one), None when there is no such image."""
    proc = docker("image", "inspect", "--format", "{{index .Config.Labels \"" + IMAGE_RECIPE_LABEL + "\"}}", name,
                  check=False)
    if proc.returncode != 0:
        return None
    value = proc.stdout.strip()
    return "" if value == "<no value>" else value


def find_busybox() -> Path:
    for candidate in (os.environ.get("LOOKOUT_TEST_BUSYBOX"), "/bin/busybox", "/usr/bin/busybox",
                      shutil.which("busybox")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise DockerUnavailable("busybox is not installed, the test image cannot be built "
                            "(Debian: apt-get install busybox-static)")


def _applets(busybox: Path) -> list[str]:
    """Applet paths relative to / (``bin/sh``, ``usr/bin/wc``, ...)."""
    for flag, prefix in (("--list-full", ""), ("--list", "bin/")):
        proc = subprocess.run([str(busybox), flag], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return [prefix + line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip()]
    raise DockerError(f"{busybox} --list fails: cannot enumerate its applets")


def image_tar(busybox: Path) -> bytes:
    """A root filesystem: /bin/busybox, one symlink per applet, /etc/passwd, /tmp, mount points."""
    buf = io.BytesIO()
    now = int(time.time())

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, now, 0, 0
        info.linkname = link
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "var",
                "var/run", "run"}
        applets = [a for a in _applets(busybox) if a != "bin/busybox"]
        for applet in applets:
            parent = applet.rpartition("/")[0]
            while parent:
                dirs.add(parent)
                parent = parent.rpartition("/")[0]
        for d in sorted(dirs):
            add(d, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in sorted(set(applets)):
            add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def build_image(name: str = IMAGE) -> None:
    """``docker import`` a busybox root filesystem as ``name`` and check that it runs."""
    busybox = find_busybox()
    _log(f"building image {name} from {busybox}")
    docker("import", "--change", f"LABEL {IMAGE_RECIPE_LABEL}={IMAGE_RECIPE}", "-", name, input=image_tar(busybox),
           timeout=300)
    smoke = docker("run", "--rm", "--network", "none", "--label", f"{LABEL}=1", name, "sh", "-c", "echo ok",
                   check=False, timeout=120)
    if smoke.returncode != 0 or smoke.stdout.strip() != "ok":
        docker("image", "rm", "-f", name, check=False)
        raise DockerError(f"the freshly built image {name} does not run ({smoke.stderr.strip()}); "
                          f"{busybox} must be a statically linked busybox (Debian: busybox-static)")


def ensure_image(name: str = IMAGE) -> bool:
    """Build the image unless it exists from the current recipe; True when it was built now."""
    recipe = image_recipe(name)
    if recipe == IMAGE_RECIPE:
        return False
    if recipe is not None:
        _log(f"image {name} was built by recipe {recipe or '(none)'}, not {IMAGE_RECIPE}: rebuilding")
        docker("image", "rm", "-f", name, check=False)
    build_image(name)
    return True


# --- network ----------------------------------------------------------------------------------------


def network_subnet(name: str = NETWORK) -> str | None:
    proc = docker("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", name,
                  check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or "?"


def ensure_network(name: str = NETWORK) -> str:
    """Create the bridge network on the first free /24 of SUBNETS unless it exists; return its subnet."""
    existing = network_subnet(name)
    if existing is not None:
        return existing
    last = ""
    for subnet in SUBNETS:
        proc = docker("network", "create", "--driver", "bridge", "--subnet", subnet, "--label", f"{LABEL}=1",
                      name, check=False)
        if proc.returncode == 0:
            _log(f"created network {name} on {subnet}")
            return subnet
        last = proc.stderr.strip()
        if "already exists" in last:  # created by a concurrent session
            return network_subnet(name) or subnet
        if "overlap" not in last:
            break
    raise DockerError(f"cannot create network {name} on any of {SUBNETS[0]}..{SUBNETS[-1]}: {last}")


# --- Engine API over the unix socket ------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def api(path: str, socket_path: str = DOCKER_SOCKET, timeout: float = 30) -> Any:
    """GET ``path`` from the Engine API (e.g. ``/containers/<id>/stats?stream=false``), decoded JSON."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", path, headers={"Host": "docker"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise DockerError(f"GET {path} on {socket_path}: HTTP {resp.status}: {body[:500]!r}")
    return json.loads(body)


# --- containers -------------------------------------------------------------------------------------


def _process_start(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (start time in ticks): with the pid it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_process_start(pid)}"


def sweep_stale() -> list[str]:
    """Remove test containers whose owning test process is gone (a crashed or killed earlier run).

    Containers of live test sessions (other terminals, parallel runs) are never touched.
    """
    proc = docker("ps", "-a", "--filter", f"label={OWNER_LABEL}",
                  "--format", '{{.ID}} {{.Label "' + OWNER_LABEL + '"}}', check=False)
    stale = []
    for line in proc.stdout.splitlines():
        cid, _, owner = line.partition(" ")
        pid, _, start = owner.partition(":")
        if not pid.isdigit() or _process_start(int(pid)) != start:
            stale.append(cid)
    if stale:
        docker("rm", "-f", "-v", *stale, check=False)
    return stale


@dataclass
class Container:
    """A running test container (``docker run -d``)."""

    name: str
    id: str
    args: tuple[str, ...] = ()

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.id).stdout)[0]

    @property
    def pid(self) -> int:
        """Its main process in the host's pid namespace (``.State.Pid``)."""
        return int(self.inspect()["State"]["Pid"])

    def ip(self, network: str = NETWORK) -> str:
        return self.inspect()["NetworkSettings"]["Networks"][network]["IPAddress"]

    def exec(self, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.id, *cmd, timeout=timeout, check=check)

    def logs(self) -> str:
        proc = docker("logs", self.id, check=False)
        return proc.stdout + proc.stderr

    def stats(self) -> dict[str, Any]:
        """One stats document from the Engine API (no two-sample wait: ``one-shot``)."""
        return api(f"/containers/{self.id}/stats?stream=false&one-shot=true")


@dataclass
class ContainerRunner:
    """Starts containers and removes every one of them at ``cleanup()`` (also after a failed start)."""

    image: str = IMAGE
    names: list[str] = field(default_factory=list)

    def run(self, *options: str, cmd: Sequence[str] = ("sleep", "3600"), purpose: str = "c") -> Container:
        """``docker run -d --name lookout-test-<purpose>-<rand> [options] IMAGE cmd``."""
        name = f"{NAME_PREFIX}{purpose}-{secrets.token_hex(4)}"
        self.names.append(name)  # before starting: a half-created container is removed too
        args = ("run", "-d", "--name", name, "--label", f"{LABEL}=1", "--label", f"{OWNER_LABEL}={owner_token()}",
                *options, self.image, *cmd)
        cid = docker(*args).stdout.strip()
        return Container(name, cid, tuple(options))

    def remove(self, container: Container) -> None:
        docker("rm", "-f", "-v", container.id)
        if container.name in self.names:
            self.names.remove(container.name)

    def cleanup(self) -> None:
        if self.names:
            proc = docker("rm", "-f", "-v", *self.names, check=False)
            # "No such container" is fine (never started, or removed by the test itself).
            errors = [line for line in proc.stderr.splitlines() if "No such container" not in line]
            if errors:
                _log("cleanup: " + "; ".join(errors))
            self.names.clear()


def docker_root() -> str:
    return docker("info", "--format", "{{.DockerRootDir}}").stdout.strip() or "/var/lib/docker"


@dataclass(frozen=True)
class DockerEngine:
    """What the ``docker_engine`` fixture provides."""

    image: str
    network: str
    subnet: str
    root_dir: str
    socket: str
    cgroup_driver: str
    server_version: str

    def expected_cgroup(self, container: Container) -> str:
        """The agent's ``id`` label for a container: its cgroup path (cAdvisor's container name)."""
        parent = container.inspect()["HostConfig"].get("CgroupParent") or ""
        if self.cgroup_driver == "systemd":
            return f"/{parent or 'system.slice'}/docker-{container.id}.scope"
        return f"{parent.rstrip('/') or '/docker'}/{container.id}"


# --- command line (.ci/run) -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.docker",
                                     description="Prepare Docker for Lookout's integration tests (idempotent).")
    parser.add_argument("steps", nargs="+", choices=["ensure-daemon", "ensure-image", "ensure-network",
                                                     "sweep-stale"])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for dockerd (default 60)")
    args = parser.parse_args(argv)
    try:
        for step in args.steps:
            if step == "ensure-daemon":
                _log(ensure_daemon(timeout=args.timeout))
            elif step == "ensure-image":
                _log(f"image {IMAGE}: " + ("built" if ensure_image() else "present"))
            elif step == "ensure-network":
                _log(f"network {NETWORK}: {ensure_network()}")
            elif step == "sweep-stale":
                _log(f"removed {len(sweep_stale())} stale test container(s)")
    except (DockerUnavailable, DockerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A private second Docker engine that a test owns: started, stopped (SIGTERM), started again, destroyed.

Standard library only, like ``tests.helpers.docker``. The machine's main engine (/var/run/docker.sock) is shared
with other test sessions and is never touched; this one has its own everything under a short temporary directory
(a unix socket path is limited to 108 bytes)::

    <base>/docker.sock   -H unix://...
    <base>/root          --data-root (what the agent reads as --docker-root)
    <base>/exec          --exec-root (its own containerd's socket and state live below it)
    <base>/docker.pid    --pidfile
    <base>/dockerd.log   dockerd's and its containerd's output

with ``--storage-driver=vfs --iptables=false --ip6tables=false --bridge=none`` (what this kind of machine supports)
and ``--cgroup-parent /lookout-test-engine2``, so its containers' cgroups are apart from the main engine's.

No ``--containerd``: dockerd then starts its own containerd under the exec root, unless
``/run/containerd/containerd.sock`` exists, which dockerd 20.10 uses whenever it is there (and on a test machine a
test containerd usually is). So dockerd runs in a private mount namespace (``unshare -m``) with an empty tmpfs over
/run/containerd: it finds no system containerd and starts its own; the namespace (and the mounts dockerd makes in
it) goes away with dockerd, while everything the agent reads (data root, cgroups, /proc) is the host's.

``destroy()`` always leaves nothing behind: dockerd stopped (SIGKILL after a grace period), any of its containerd,
shims and container processes that survived killed by pid (found by the base path in their command line and by the
engine's own container ids in the cgroup tree), the cgroups removed and the tree deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers.docker import DOCKERD_ARGS, IMAGE, DockerError, DockerUnavailable, docker

CGROUP_PARENT = "/lookout-test-engine2"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The engine's own programs, the only ones ``destroy`` looks for by the base path in their command line.
ENGINE_PROGRAMS = frozenset({"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "runc",
                             "docker-proxy", "docker-init"})
# Run by ``sh`` inside the new mount namespace: hide the system containerd's socket, then become dockerd.
_START = ('if [ -d /run/containerd ]; then mount -t tmpfs -o size=1m,mode=0700 lookout-engine2 /run/containerd '
          '|| exit 97; fi\nexec "$@"\n')


class EngineUnavailable(Exception):
    """A second engine cannot run here; the message says why (the test's skip reason)."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class Engine2:
    """``start()``, ``stop()``, ``start()`` again on the same data root, ``docker(...)``, ``destroy()``."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="lke2-", dir="/tmp"))
        self.socket = self.base / "docker.sock"
        self.root = self.base / "root"
        self.exec_root = self.base / "exec"
        self.pidfile = self.base / "docker.pid"
        self.log_path = self.base / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        if len(str(self.exec_root / "containerd/containerd.sock.ttrpc")) > 100:
            raise EngineUnavailable(f"{self.base} is too long a path for the engine's unix sockets")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def command(self) -> list[str]:
        return [str(shutil.which("dockerd")), "-H", self.host, "--data-root", str(self.root),
                "--exec-root", str(self.exec_root), "--pidfile", str(self.pidfile), *DOCKERD_ARGS,
                "--cgroup-parent", CGROUP_PARENT]

    def docker(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
               ) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://<base>/docker.sock ARGS`` (see ``tests.helpers.docker.docker``)."""
        return docker("-H", self.host, *args, check=check, timeout=timeout, input=input)

    def answers(self) -> bool:
        try:
            return self.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=10).returncode == 0
        except DockerError:
            return False

    @property
    def pid(self) -> int:
        """dockerd's pid (``unshare`` and ``sh`` exec into it, so it is the child's)."""
        return self.proc.pid if self.proc is not None else 0

    def start(self, timeout: float = 60.0) -> Engine2:
        if os.geteuid() != 0:
            raise EngineUnavailable("a second Docker engine needs root")
        for tool in ("dockerd", "unshare", "docker"):
            if shutil.which(tool) is None:
                raise EngineUnavailable(f"{tool} is not installed")
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the second engine is already running")
        self.root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", _START, "sh",
                                          *self.command()], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineUnavailable(f"the second dockerd exited with {self.proc.returncode} "
                                        f"(97: no private tmpfs over /run/containerd); its log:\n"
                                        f"{_tail(self.log_path)}")
            if self.answers():
                return self
            time.sleep(0.25)
        raise EngineUnavailable(f"the second dockerd did not answer within {timeout:.0f}s; its log:\n"
                                f"{_tail(self.log_path)}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM to dockerd (it stops its containers and its containerd) and wait for it to exit; SIGKILL after
        ``timeout``. Returns its exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def load_image(self, image: str = IMAGE) -> None:
        """``docker save IMAGE`` from the main engine, ``docker load`` into this one."""
        saved = subprocess.run(["docker", "save", image], capture_output=True, timeout=120, check=False)
        if saved.returncode != 0:
            raise DockerUnavailable(f"docker save {image}: {saved.stderr.decode(errors='replace').strip()}")
        self.docker("load", input=saved.stdout, timeout=120)

    def container_ids(self) -> list[str]:
        try:
            return [e.name for e in os.scandir(self.root / "containers") if e.is_dir()]
        except OSError:
            return []

    def _leftover_pids(self) -> set[int]:
        """Processes of this engine still alive: its containerd and shims (the base path is in their command line)
        and its containers' processes (in the cgroups named by its container ids)."""
        pids: set[int] = set()
        marker = str(self.base).encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
                if os.path.basename(argv[0]).decode(errors="replace") in ENGINE_PROGRAMS and marker in b" ".join(argv):
                    pids.add(int(entry.name))
            except OSError:
                continue
        for cid in self.container_ids():
            for procs in CGROUP_ROOT.glob(f"*{CGROUP_PARENT}/{cid}/cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except (OSError, ValueError):
                    continue
        return pids

    def _remove_cgroups(self) -> None:
        """The engine's containers' cgroups, then the parent where it is empty (another test's second engine may
        still have containers in it: rmdir leaves a cgroup with children alone)."""
        for cid in self.container_ids():
            for path in CGROUP_ROOT.glob(f"*{CGROUP_PARENT}/{cid}"):
                with contextlib.suppress(OSError):
                    path.rmdir()
        for path in CGROUP_ROOT.glob(f"*{CGROUP_PARENT}"):
            with contextlib.suppress(OSError):
                path.rmdir()

    def destroy(self) -> list[str]:
        """Stop everything of this engine and remove its tree; returns what had to be cleaned up by force."""
        notes = []
        code = self.stop(timeout=60)
        if code not in (0, None):
            notes.append(f"dockerd exited {code}")
        for _ in range(3):
            left = {pid for pid in self._leftover_pids() if _pid_alive(pid)}
            if not left:
                break
            notes.append(f"killed leftover processes {sorted(left)}")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(_pid_alive(pid) for pid in left):
                time.sleep(0.1)
        self._remove_cgroups()
        shutil.rmtree(self.base, ignore_errors=True)
        if self.base.exists():
            notes.append(f"{self.base} could not be removed entirely")
        return notes

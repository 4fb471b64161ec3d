"""The agent as a real subprocess: ``python -m agent run`` on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.helpers.metrics import Metrics, Response, http_get, scrape

REPO_ROOT = Path(__file__).resolve().parents[2]

# Agents alive right now, so a failing test's report can show their logs (see conftest.py).
LIVE: list[AgentProcess] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class AgentError(Exception):
    """The agent did not come up; the message includes its log."""


class AgentProcess:
    def __init__(self, workdir: Path, extra_args: Sequence[str] = (), interval: str = "1s",
                 env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = dict(env or {})  # added to the environment (e.g. libfaketime's LD_PRELOAD, tests/integration)
        self.state_dir = workdir / "state"
        self.log_path = workdir / "agent.log"
        self.extra_args = tuple(extra_args)
        self.interval = interval
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "agent", "run", "--listen", self.address, "--state-dir", str(self.state_dir),
                "--housekeeping-interval", self.interval, "--log-format", "json", *self.extra_args]

    def start(self, timeout: float = 30.0, port: int | None = None) -> AgentProcess:
        """Start on a free port, or on ``port`` (e.g. the one of this agent's previous run, for its clients)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # the free port may be taken between probing and binding
            self.port = port or free_port()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
            with open(self.log_path, "ab") as log:
                log.write(f"--- start #{attempt + 1}: {' '.join(self.command())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(self.command(), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            if self not in LIVE:  # a restart after kill() is the same agent
                LIVE.append(self)
            try:
                self._wait_ready(timeout)
                return self
            except AgentError:
                self.stop()
                if "listen_failed" in tail(self.log_path, 20) and attempt < 2:
                    continue
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        """Until /healthz answers and a snapshot is published (``container_last_seen`` on /metrics)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        stage = "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AgentError(f"agent exited with {self.proc.returncode} before it was ready; "
                                 f"{' '.join(self.command())}\n{tail(self.log_path)}")
            try:
                if stage == "/healthz":
                    if http_get(self.url + "/healthz", timeout=2).status == 200:
                        stage = "/metrics"
                        continue
                elif b"\ncontainer_last_seen{" in http_get(self.url + "/metrics", timeout=5).body:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AgentError(f"agent not ready within {timeout}s (waiting for {stage}); "
                         f"{' '.join(self.command())}\n{tail(self.log_path)}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return http_get(self.url + path, headers=headers)

    def metrics(self) -> Metrics:
        return scrape(self.url)

    def log(self, lines: int = 80) -> str:
        return tail(self.log_path, lines)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        proc = self.proc
        if self in LIVE:
            LIVE.remove(self)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

"""Issue #13, the terminal side: ``lookout top`` and ``lookout tail`` against a real agent.

``top`` runs in a real terminal (a detached tmux session, 160x40, tests/helpers/tmux.py): the tests read the screen
with ``capture-pane``, type keys with ``send-keys`` and wait for what the screen shows, never a fixed time. The agent
reads a fixture host tree (tests/fixtures/trees.py: Docker containers ``api`` with 77.1 MiB of memory and ``worker``
with 46.2 MiB) or, in the tests marked docker, the real host with busybox containers.

``top --once`` and ``tail`` run as subprocesses whose standard output is a pipe: the plain forms for scripts.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures import trees
from tests.helpers.agent import REPO_ROOT, AgentProcess, free_port
from tests.helpers.deps import unavailable
from tests.helpers.docker import ContainerRunner
from tests.helpers.tmux import TmuxPane, tmux_binary
from tests.helpers.wait import wait_for

AgentFactory = Callable[..., AgentProcess]
LOOKOUT = [sys.executable, "-m", "agent"]


def client_env(**extra: str) -> dict[str, str]:
    """The clients' whole environment: this checkout first on the path, a UTF-8 locale, a 256-colour terminal."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            "PYTHONPATH": str(REPO_ROOT), "LANG": "C.UTF-8", "TERM": "screen-256color", **extra}


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[TmuxPane]:
    if tmux_binary() is None:
        unavailable("no tmux binary (Debian: apt-get install tmux)")
    terminal = TmuxPane(tmp_path / "tmux")
    try:
        yield terminal
    finally:
        terminal.kill()


@pytest.fixture
def tree_agent(agent: AgentFactory, tmp_path: Path) -> AgentProcess:
    """An agent on the cgroup v2 Docker fixture tree: containers ``api`` and ``worker``, no Docker socket."""
    tree = trees.build("v2_docker_systemd", tmp_path / "host")
    return agent("--host-root", str(tree.root), "--docker-socket", "")


def rows_in_order(screen: str, *names: str) -> list[str]:
    """The given container names in the order their rows appear on the screen."""
    found = []
    for line in screen.splitlines():
        first = line.split(" ", 1)[0]
        if first in names:
            found.append(first)
    return found


def header(screen: str) -> str:
    return next(line for line in screen.splitlines() if line.startswith("NAME"))


# --- top -------------------------------------------------------------------------------------------------------


def test_top_shows_the_containers_and_sorts_by_the_key_pressed_and_q_quits(tree_agent: AgentProcess,
                                                                            pane: TmuxPane) -> None:
    pane.start([*LOOKOUT, "top", "--url", tree_agent.url, "--interval", "500ms"], client_env(), REPO_ROOT)
    screen = pane.wait_screen(lambda s: "api" in s and "worker" in s, message="the containers api and worker")
    assert header(screen).split() == ["NAME", "ID", "CPU", "%", "▼", "MEM", "LIMIT", "MEM", "%", "NET", "RX/s", "NET",
                                      "TX/s", "LOGS/s", "IMAGE"]
    assert f"lookout top  {tree_agent.url}" in screen
    assert "registry.example.com/shop/api:2.3.1" in screen and "77.1MiB" in screen and "46.2MiB" in screen
    assert "c cpu  m memory  n net  l logs  a name  r reverse  q quit" in screen

    pane.keys("m")  # memory, biggest first
    screen = pane.wait_screen(lambda s: "MEM ▼" in header(s), message="MEM ▼ in the header")
    assert "CPU % ▼" not in screen
    assert rows_in_order(screen, "api", "worker") == ["api", "worker"]  # 77.1 MiB, 46.2 MiB

    pane.keys("m")  # the same key again: the other way round
    screen = pane.wait_screen(lambda s: "MEM ▲" in header(s), message="MEM ▲ in the header")
    assert rows_in_order(screen, "api", "worker") == ["worker", "api"]

    pane.keys("a")  # names, A to Z
    screen = pane.wait_screen(lambda s: "NAME ▼" in header(s), message="NAME ▼ in the header")
    assert rows_in_order(screen, "api", "worker", "/system.slice/ssh.service") == [
        "/system.slice/ssh.service", "api", "worker"]
    pane.keys("r")
    screen = pane.wait_screen(lambda s: "NAME ▲" in header(s), message="NAME ▲ in the header")
    assert rows_in_order(screen, "api", "worker", "/system.slice/ssh.service") == [
        "worker", "api", "/system.slice/ssh.service"]

    pane.keys("q")
    assert pane.wait_exit() == 0
    assert "NAME" not in pane.screen()  # the alternate screen is left: the terminal is as before


def test_top_says_when_the_agent_goes_away_and_carries_on_when_it_is_back(tree_agent: AgentProcess,
                                                                          pane: TmuxPane) -> None:
    pane.start([*LOOKOUT, "top", "--url", tree_agent.url, "--interval", "300ms"], client_env(), REPO_ROOT)
    pane.wait_screen(lambda s: "worker" in s, message="the container worker")
    tree_agent.stop()
    gone = f"cannot reach the agent at {tree_agent.url}"
    screen = pane.wait_screen(lambda s: gone in s, message="the error on screen")
    assert "worker" in screen  # the last numbers stay
    assert pane.exit_status() is None  # still running: an agent restart does not end the view
    tree_agent.start(port=tree_agent.port)
    pane.wait_screen(lambda s: gone not in s and "host: cpu" in s, message="the agent's numbers again")
    pane.keys("C-c")  # Ctrl-C ends it as quietly as q
    assert pane.wait_exit() == 0
    assert "Traceback" not in pane.screen()


def test_top_once_prints_one_plain_table_for_scripts(tree_agent: AgentProcess) -> None:
    proc = subprocess.run([*LOOKOUT, "top", "--once", "--url", tree_agent.url, "--interval", "200ms", "--sort",
                           "memory"], cwd=REPO_ROOT, env=client_env(), capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "\x1b" not in proc.stdout  # no colour, no cursor movement: standard output is a pipe
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("host: cpu ")
    assert lines[2].split()[:3] == ["NAME", "ID", "CPU"]
    assert [line.split()[0] for line in lines[3:6]] == ["api", "worker", "/system.slice/ssh.service"]
    api = lines[3].split()
    assert api[1] == "ba7b10d15d16" and api[-1] == "registry.example.com/shop/api:2.3.1" and "77.1MiB" in api
    assert lines[-1] == "routes: none"


def test_top_without_a_terminal_prints_the_plain_table_once(tree_agent: AgentProcess) -> None:
    proc = subprocess.run([*LOOKOUT, "top", "--url", tree_agent.url, "--interval", "200ms"], cwd=REPO_ROOT,
                          env=client_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "\x1b" not in proc.stdout
    assert {"api", "worker"} <= {line.split()[0] for line in proc.stdout.splitlines() if line}


def test_top_and_tail_say_in_one_line_when_the_agent_cannot_be_reached() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["top", "--once"], ["top"], ["tail"]):
        proc = subprocess.run([*LOOKOUT, *command, "--url", url], cwd=REPO_ROOT, env=client_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc
        assert proc.stderr.startswith(f"lookout {command[0]}: cannot reach the agent at {url}: "), proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stdout == ""


class TlsAgent(AgentProcess):
    """An agent serving HTTPS (--tls-cert/--tls-key): ready once /healthz answers over TLS."""

    ca = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float) -> None:
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=self.ca)

        def up() -> bool:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2, context=context) as response:
                return response.status == 200

        wait_for(up, timeout, message=f"{self.url}/healthz", describe=self.log)


def test_top_and_tail_reach_an_agent_over_https_with_cacert_or_insecure(tmp_path: Path) -> None:
    import shutil

    from tests.helpers.rsyslog import make_certs

    if shutil.which("openssl") is None:
        unavailable("no openssl CLI to make the TLS test certificates (Debian: apt-get install openssl)")
    certs = make_certs(tmp_path / "certs")
    token = tmp_path / "token"
    token.write_text("tls-token\n")
    tree = trees.build("v2_docker_systemd", tmp_path / "host")
    agent = TlsAgent(tmp_path / "agent", ("--host-root", str(tree.root), "--docker-socket", "", "--tls-cert",
                                          certs.server_cert, "--tls-key", certs.server_key,
                                          "--api-token-file", str(token)))
    agent.ca = certs.ca
    agent.start()

    def lookout(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*LOOKOUT, *args, "--url", agent.url], cwd=REPO_ROOT, env=client_env(),
                              capture_output=True, text=True, timeout=60)

    try:
        for trust in (["--cacert", certs.ca], ["--insecure"]):
            proc = lookout("top", "--once", "--interval", "200ms", *trust)
            assert proc.returncode == 0, proc.stderr
            assert {"api", "worker"} <= {line.split()[0] for line in proc.stdout.splitlines() if line}
        for command in (["top", "--once"], ["top", "--once", "--cacert", certs.other_ca], ["tail"]):
            proc = lookout(*command)
            assert proc.returncode == 1 and proc.stdout == ""
            assert proc.stderr.startswith(f"lookout {command[0]}: cannot reach the agent at {agent.url}: ")
            assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        wrong = tmp_path / "wrong-token"
        wrong.write_text("not-the-token\n")
        proc = lookout("tail", "--cacert", certs.ca, "--api-token-file", str(wrong))  # TLS fine, token wrong
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"lookout tail: GET {agent.url}/logs: 401 Unauthorized: "), proc.stderr
    finally:
        agent.stop()


# --- with real containers --------------------------------------------------------------------------------------

BUSY = "while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done"


@pytest.mark.docker
def test_top_puts_a_busy_container_above_an_idle_one(agent: AgentFactory, containers: ContainerRunner,
                                                     pane: TmuxPane) -> None:
    busy = containers.run(cmd=["sh", "-c", BUSY], purpose="top-busy")
    idle = containers.run("-m", "64m", purpose="top-idle")
    running = agent()
    pane.start([*LOOKOUT, "top", "--url", running.url, "--interval", "1s"], client_env(), REPO_ROOT)

    def busy_first(screen: str) -> bool:
        order = rows_in_order(screen, busy.name, idle.name)
        if order != [busy.name, idle.name]:
            return False
        cpu = next(line for line in screen.splitlines() if line.startswith(busy.name)).split()[2]
        return cpu.endswith("%") and float(cpu[:-1]) > 20  # the shell loop keeps about one core busy

    screen = pane.wait_screen(busy_first, timeout=30, message=f"{busy.name} above {idle.name} with its CPU %")
    idle_line = next(line for line in screen.splitlines() if line.startswith(idle.name))
    assert "64.0MiB" in idle_line and busy.id[:12] in screen
    pane.keys("q")
    assert pane.wait_exit() == 0


# --- tail ------------------------------------------------------------------------------------------------------

COUNTER = "i=0; while true; do i=$((i+1)); echo line-$i; echo err-$i >&2; sleep 0.2; done"


class Lines:
    """A subprocess's standard output, read line by line in a thread (so a test can wait with a deadline)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))

    def poll(self) -> list[str]:
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return self.lines


@pytest.fixture
def token_agent(agent: AgentFactory, tmp_path: Path) -> tuple[AgentProcess, Path]:
    """An agent on the real host with an API token (so /logs answers) and no routes."""
    token = tmp_path / "token"
    token.write_text("test-token-0123456789\n")
    token.chmod(0o600)
    return agent("--api-token-file", str(token)), token


@pytest.fixture
def tail_proc() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[str]:
        # SIGINT as a terminal delivers it: a test run started in the background (`bash .ci/run &`) hands its
        # children SIGINT ignored, and Python then leaves it ignored, so "Ctrl-C" would never reach tail.
        proc = subprocess.Popen([*LOOKOUT, "tail", *args], cwd=REPO_ROOT, env=client_env(**env), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def in_sequence(lines: list[str], prefix: str, count: int) -> list[int]:
    """The numbers N of ``prefix + str(N)`` lines, when at least ``count`` consecutive ones have arrived."""
    numbers = [int(line[len(prefix):]) for line in lines if line.startswith(prefix)]
    return numbers if len(numbers) >= count and numbers[-count:] == list(range(numbers[-count],
                                                                              numbers[-count] + count)) else []


@pytest.mark.docker
def test_tail_follows_a_containers_lines_plain_through_a_pipe(token_agent: tuple[AgentProcess, Path],
                                                               containers: ContainerRunner,
                                                               tail_proc: Callable[..., subprocess.Popen[str]]
                                                               ) -> None:
    running, token = token_agent
    counter = containers.run(cmd=["sh", "-c", COUNTER], purpose="tail")
    other = containers.run(cmd=["sh", "-c", COUNTER], purpose="tail-other")  # filtered out by --name
    proc = tail_proc("--url", running.url, "--name", counter.name, "--api-token-file", str(token))
    out = Lines(proc)
    wait_for(lambda: in_sequence(out.poll(), f"{counter.name}|line-", 5), timeout=30,
             message=f"five consecutive {counter.name}|line-N lines",
             describe=lambda: "\n".join(out.poll()[-20:]) + f"\nstderr: {proc.stderr}")
    lines = out.poll()
    assert f"{counter.name}|err-" in "\n".join(lines)  # both streams
    assert not [line for line in lines if other.name in line]
    assert all(line.startswith(f"{counter.name}|") for line in lines), lines[:10]
    assert "\x1b" not in "".join(lines)
    proc.send_signal(2)  # Ctrl-C: a quiet exit 0
    assert proc.wait(10) == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


@pytest.mark.docker
def test_tail_on_a_terminal_colours_the_name_and_stderr(token_agent: tuple[AgentProcess, Path],
                                                         containers: ContainerRunner, pane: TmuxPane) -> None:
    from agent.tail import colour_for

    running, token = token_agent
    counter = containers.run(cmd=["sh", "-c", COUNTER], purpose="tail-tty")
    pane.start([*LOOKOUT, "tail", "--url", running.url, "--name", counter.name, "--api-token-file", str(token)],
               client_env(), REPO_ROOT)
    pane.wait_screen(lambda s: f"{counter.name} stderr | err-" in s and f"{counter.name} stdout | line-" in s,
                     timeout=30, message="stdout and stderr lines on the terminal")
    coloured = pane.screen(escapes=True)
    sgr = {"cyan": "36", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "bright_cyan": "96",
           "bright_green": "92", "bright_blue": "94", "bright_magenta": "95"}.get(colour_for(counter.name))
    if sgr:  # a 16-colour name; dark_orange and the like come as 256-colour codes
        assert f"\x1b[{sgr}m{counter.name}" in coloured, coloured[:2000]
    else:
        assert "\x1b[38;5;" in coloured.split(counter.name)[0][-16:], coloured[:2000]
    assert "\x1b[31mstderr" in coloured and "\x1b[31merr-" in coloured  # stderr in red
    pane.keys("C-c")
    assert pane.wait_exit() == 0


@pytest.mark.docker
def test_tail_filters_by_stream_sends_the_last_records_first_and_passes_json_through(
        token_agent: tuple[AgentProcess, Path], containers: ContainerRunner,
        tail_proc: Callable[..., subprocess.Popen[str]]) -> None:
    import json

    running, token = token_agent
    done = containers.run(cmd=["sh", "-c", "for i in 1 2 3 4 5; do echo out-$i; echo err-$i >&2; done; sleep 3600"],
                          purpose="tail-json")
    wait_for(lambda: "err-5" in done.logs(), timeout=20, message="the container's ten lines logged")
    proc = tail_proc("--url", running.url, "--name", done.name, "--stream", "stderr", "--tail", "2", "--json",
                     LOOKOUT_API_TOKEN_FILE=str(token))
    out = Lines(proc)
    lines = wait_for(lambda: len(out.poll()) >= 2 and out.poll(), timeout=30, message="two NDJSON records",
                     describe=lambda: "\n".join(out.poll()))
    records = [json.loads(line) for line in lines]  # --json: the agent's records as they are
    assert [(r["stream"], r["message"], r["container_name"]) for r in records] == [
        ("stderr", "err-4", done.name), ("stderr", "err-5", done.name)]
    assert records[0]["container_id"] == done.id and records[0]["time"].endswith("Z")
    proc.terminate()
    proc.wait(10)


@pytest.mark.docker
def test_tail_with_a_wrong_token_prints_the_agents_line_and_exits_1(token_agent: tuple[AgentProcess, Path],
                                                                     tmp_path: Path) -> None:
    running, _token = token_agent
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    for args in (["--api-token-file", str(wrong)], []):
        proc = subprocess.run([*LOOKOUT, "tail", "--url", running.url, *args], cwd=REPO_ROOT, env=client_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith(f"lookout tail: GET {running.url}/logs: 401 Unauthorized"), proc.stderr
        assert proc.stderr.count("\n") == 1


@pytest.mark.docker
def test_tail_reconnects_when_the_agent_restarts(token_agent: tuple[AgentProcess, Path], containers: ContainerRunner,
                                                tail_proc: Callable[..., subprocess.Popen[str]]) -> None:
    running, token = token_agent
    counter = containers.run(cmd=["sh", "-c", COUNTER], purpose="tail-restart")
    proc = tail_proc("--url", running.url, "--name", counter.name, "--stream", "stdout",
                     "--api-token-file", str(token))
    out = Lines(proc)
    prefix = f"{counter.name}|line-"
    wait_for(lambda: in_sequence(out.poll(), prefix, 2), timeout=30, message="the first lines")
    assert running.proc is not None
    running.proc.kill()  # a crash: the connection ends at once (SIGTERM would wait for the stream to end)
    running.proc.wait(10)
    before = len(out.poll())
    running.start(port=running.port)  # the same address
    wait_for(lambda: len([line for line in out.poll()[before:] if line.startswith(prefix)]) >= 3, timeout=60,
             message="lines again after the agent's restart", describe=lambda: "\n".join(out.poll()[-10:]))
    assert proc.poll() is None
    proc.terminate()
    proc.wait(10)
    assert proc.stderr is not None
    notices = proc.stderr.read()
    assert "lookout tail: disconnected (" in notices and "reconnecting in 0.5s" in notices
    assert "lookout tail: reconnected (lines logged while disconnected are not shown)" in notices


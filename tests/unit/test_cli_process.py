"""The ``lookout`` command line as a real process: what a user sees on stderr, the exit code, and what is left on
disk; the agent on a port in use; a first run as a user who is not root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.agent import REPO_ROOT, free_port
from tests.helpers.metrics import http_get
from tests.helpers.wait import wait_for

NON_ROOT_USER = "lookouttest"


def lookout(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=REPO_ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_check_config_names_the_key_and_the_file_and_changes_nothing_on_disk(tmp_path: Path) -> None:
    toml = tmp_path / "lookout.toml"
    toml.write_text('store-container-labels = 1\nroute = ["file:///x.ndjson"]\n')
    state = tmp_path / "state"
    proc = lookout("check-config", "--config", str(toml), "--state-dir", str(state))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"lookout: invalid configuration: --config: store-container-labels in {toml}: expected true or false, got 1"]

    toml.write_text(f'route = [1]\nmax-line-bytes = 65536\nlog-workers = 2\n'
                    f'routes_file_unused = "{tmp_path}/out/x.ndjson"\n')
    proc = lookout("check-config", "--config", str(toml), "--state-dir", str(state))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"lookout: invalid configuration: --config: unknown setting 'routes_file_unused' in {toml}; "
        f"--config: route in {toml}: expected a route URI or a list of them (strings), got [1]"]

    # a good configuration: checked, and still nothing created (not the state dir, not the file route's directory)
    toml.write_text(f'route = ["file://{tmp_path}/out/x.ndjson"]\nmax-line-bytes = 65536\nlog-workers = 2\n')
    proc = lookout("check-config", "--config", str(toml), "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("lookout: configuration ok") and f"state in {state}" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lookout.toml"]


def test_a_port_in_use_says_which_flag_changes_it(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = lookout("run", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state"),
                       "--host-root", str(tmp_path), "--docker-socket", "", "--log-format", "json")
    message = f"address 127.0.0.1:{port} is in use (change it with --listen)"
    assert proc.returncode == 1, proc.stderr
    assert f"lookout: {message}" in proc.stderr.splitlines()
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "listen_failed"]
    assert [e["error"] for e in failed] == [message]
    assert "Traceback" not in proc.stderr


# --- a first run as a user who is not root -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def non_root() -> pwd.struct_passwd:
    """A user who is not root, created if need be (only root can switch to one)."""
    if os.geteuid() != 0:
        pytest.skip("switching to a user who is not root needs root")
    try:
        return pwd.getpwnam(NON_ROOT_USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip(f"no user {NON_ROOT_USER!r} and no useradd to create one")
    made = subprocess.run(["useradd", "-m", NON_ROOT_USER], capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        pytest.skip(f"useradd -m {NON_ROOT_USER} failed: {made.stderr.strip()}")
    return pwd.getpwnam(NON_ROOT_USER)


def as_user(user: pwd.struct_passwd) -> dict[str, object]:
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@pytest.fixture
def user_tmp(non_root: pwd.struct_passwd) -> Iterator[Path]:
    """A directory the user owns (pytest's tmp_path is root's own, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="lookout-user-"))
    os.chown(path, non_root.pw_uid, non_root.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def user_env(user: pwd.struct_passwd, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOKOUT_", "XDG_"))}
    return {**env, "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p), **extra}


def test_a_first_run_without_routes_as_a_user_who_is_not_root_works(non_root: pwd.struct_passwd,
                                                                     user_tmp: Path) -> None:
    env = user_env(non_root, XDG_STATE_HOME=str(user_tmp / "xdg"))
    try:
        probe = subprocess.run([sys.executable, "-c", "import agent.cli, aiohttp"], env=env, cwd=user_tmp,
                               capture_output=True, text=True, timeout=60,
                               **as_user(non_root))  # type: ignore[call-overload]
        why = probe.stderr.strip()[-300:] if probe.returncode else ""
    except OSError as exc:
        why = f"{exc.strerror}: {exc.filename}"
    if why:
        pytest.skip(f"user {non_root.pw_name!r} cannot run {sys.executable} with the agent's packages (run the tests "
                    f"with an interpreter and packages that user can read): {why}")

    port = free_port()
    log_path = user_tmp / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--listen", f"127.0.0.1:{port}",
                                 "--log-format", "json", "--housekeeping-interval", "1s"],
                                env=env, cwd=user_tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                **as_user(non_root))  # type: ignore[call-overload]
    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"the agent exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
            return http_get(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200

        wait_for(healthy, timeout=30, message="/healthz of the agent run as a user who is not root",
                 describe=lambda: log_path.read_text()[-2000:])
        events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        [fallback] = [e for e in events if e["event"] == "state_dir_fallback"]
        assert fallback["state_dir"] == str(user_tmp / "xdg/lookout")
        assert fallback["why"].startswith("/var/lib/lookout cannot be ")
        assert (user_tmp / "xdg/lookout").is_dir()
        assert (user_tmp / "xdg/lookout").stat().st_uid == non_root.pw_uid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, log_path.read_text()[-2000:]

    # check-config as that user says the same, and creates nothing
    shutil.rmtree(user_tmp / "xdg")
    check = subprocess.run([sys.executable, "-m", "agent", "check-config", "--route", "stdout://"], env=env,
                           cwd=user_tmp, capture_output=True, text=True, timeout=60,
                           **as_user(non_root))  # type: ignore[call-overload]
    assert check.returncode == 0, check.stderr
    assert f"state is kept in {user_tmp / 'xdg/lookout'}" in check.stdout, check.stdout
    assert not (user_tmp / "xdg").exists()
    # a state directory that was given and cannot be written stays an error
    check = subprocess.run([sys.executable, "-m", "agent", "check-config", "--route", "stdout://", "--state-dir",
                            "/var/lib/lookout-test"], env=env, cwd=user_tmp, capture_output=True, text=True,
                           timeout=60, **as_user(non_root))  # type: ignore[call-overload]
    assert check.returncode == 2
    assert check.stderr.splitlines() == [
        "lookout: invalid configuration: --state-dir: /var/lib/lookout-test cannot be created in /var/lib "
        "(permission denied)"]

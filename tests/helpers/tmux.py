"""A real terminal for tests of interactive commands: a detached tmux session on a private server.

``TmuxPane.start(command)`` runs ``command`` in a new session of its own tmux server (``-L lookout-test-<pid>-<hex>``,
no user configuration), ``screen()`` reads what the terminal shows (``capture-pane -p``), ``keys()`` types, and
``wait_screen(predicate)`` polls the screen until the predicate holds. ``exit_status()`` is what the command exited
with, once it has; the pane stays after that (``remain-on-exit``), so its last screen can still be read.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.helpers.wait import wait_for

SESSION = "test"


def tmux_binary() -> str | None:
    return shutil.which("tmux")


class TmuxPane:
    def __init__(self, workdir: Path, width: int = 160, height: int = 40) -> None:
        binary = tmux_binary()
        if binary is None:
            raise RuntimeError("tmux is not installed (Debian: apt-get install tmux)")
        self.binary = binary
        self.workdir = workdir
        self.server = f"lookout-test-{os.getpid()}-{secrets.token_hex(4)}"  # -L: a socket name, not a long tmp path
        self.config = workdir / "tmux.conf"
        self.status_file = workdir / "exit-status"
        self.width, self.height = width, height
        self.started = False

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, "-L", self.server, "-f", str(self.config), *args],
                              capture_output=True, text=True, timeout=20, check=check)

    def start(self, command: Sequence[str], env: Mapping[str, str], cwd: Path) -> TmuxPane:
        """Run ``command`` (with exactly ``env``, in ``cwd``) on a ``width`` x ``height`` terminal.

        A shell around it writes its exit status to a file: that is how ``exit_status`` knows, rather than from
        tmux's ``pane_dead``, which tmux 3.3a sometimes never sets (the pane's process stays a zombie, unreaped).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("set -g remain-on-exit on\nset -g status off\nset -g history-limit 1000\n")
        self.status_file.unlink(missing_ok=True)
        run = "env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + shlex.join(command)
        # "trap : INT": Ctrl-C (send-keys C-c) reaches the command, and the shell lives on to write its status
        # (a trap with a command, unlike an ignored signal, is not inherited by the command).
        shell = f"trap : INT; {run}; echo $? > {shlex.quote(str(self.status_file))}"
        self.tmux("new-session", "-d", "-s", SESSION, "-x", str(self.width), "-y", str(self.height),
                  "-c", str(cwd), "/bin/sh", "-c", shell)
        self.started = True
        return self

    def screen(self, escapes: bool = False) -> str:
        """What the terminal shows; with ``escapes``, with its colours as SGR escape sequences (``capture-pane -e``)."""
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", SESSION).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", SESSION, *keys)

    def wait_screen(self, predicate: Callable[[str], object], timeout: float = 20.0, message: str = "") -> str:
        """The screen, as soon as ``predicate(screen)`` is true; on timeout the assertion shows the last screen."""

        def shown() -> str | None:
            text = self.screen()
            return text if predicate(text) else None

        return wait_for(shown, timeout, interval=0.1, message=message or "the screen", describe=self.describe)

    def exit_status(self) -> int | None:
        """The command's exit status once it ended, else None."""
        try:
            text = self.status_file.read_text()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None  # a complete line: written

    def describe(self) -> str:
        """The screen and the pane's processes (for a test that timed out)."""
        pid = self.tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}", check=False).stdout.strip()
        processes = ""
        if pid.isdigit():  # the pane's process leads a session of its own
            processes = subprocess.run(["ps", "-o", "pid,stat,wchan:24,args", "-s", pid], capture_output=True,
                                       text=True, check=False).stdout
        return f"screen:\n{self.screen()}\npane processes:\n{processes}"

    def wait_exit(self, timeout: float = 10.0) -> int:
        def ended() -> tuple[int] | None:
            status = self.exit_status()
            return None if status is None else (status,)  # a tuple: exit status 0 is an answer too

        return wait_for(ended, timeout, interval=0.1, message="the command to exit", describe=self.describe)[0]

    def kill(self) -> None:
        if self.started:
            self.tmux("kill-server", check=False)
            self.started = False

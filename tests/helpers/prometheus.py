"""A real Prometheus server (Debian's /usr/bin/prometheus) scraping given targets every second."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.helpers.agent import free_port, tail
from tests.helpers.metrics import http_get

# Servers alive right now, so a failing test's report can show their logs (see conftest.py).
LIVE: list[PrometheusServer] = []


def find_binary(name: str) -> str | None:
    """``LOOKOUT_TEST_<NAME>`` if set, else /usr/bin/<name>, else PATH."""
    override = os.environ.get(f"LOOKOUT_TEST_{name.upper()}")
    if override:
        return override if Path(override).is_file() else None
    if Path(f"/usr/bin/{name}").is_file():
        return f"/usr/bin/{name}"
    return shutil.which(name)


def where(name: str) -> str:
    """Where ``find_binary`` looked, for skip reasons."""
    var = f"LOOKOUT_TEST_{name.upper()}"
    if os.environ.get(var):
        return f"{var}={os.environ[var]} is not a file"
    return f"neither /usr/bin/{name} nor {name} on PATH"


class PrometheusServer:
    def __init__(self, binary: str, workdir: Path, targets: Sequence[str], job: str = "lookout") -> None:
        self.binary = binary
        self.workdir = workdir
        self.targets = list(targets)
        self.job = job
        self.port = 0
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        targets = ", ".join(f"'{t}'" for t in self.targets)
        return (
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {self.job}\n    static_configs:\n      - targets: [{targets}]\n"
        )

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config())
        self.port = free_port()
        cmd = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"]
        with open(self.log_path, "ab") as log:
            log.write(f"--- {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        LIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                if http_get(self.url + "/-/ready", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready within {timeout}s:\n{tail(self.log_path)}")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` and raises when the status is not success."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        resp = http_get(f"{self.url}/api/v1/{path}{query}")
        doc = json.loads(resp.body)
        if doc.get("status") != "success":
            raise AssertionError(f"prometheus /api/v1/{path}{query}: HTTP {resp.status} {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the vector's elements (``{"metric": {...}, "value": [ts, "v"]}``)."""
        data = self.api("query", query=expr)
        return list(data["result"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def describe_targets(self) -> str:
        try:
            return "\n".join(f"{t['scrapeUrl']}: health={t['health']} lastError={t['lastError']!r}"
                             for t in self.active_targets())
        except Exception as exc:
            return f"(cannot list targets: {exc!r})"

    def log(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def stop(self, timeout: float = 10.0) -> None:
        if self in LIVE:
            LIVE.remove(self)
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

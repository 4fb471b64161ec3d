"""The agent's periodic work parses no paths.

pathlib interns every part of every path it parses (``sys.intern``), and an interned string leaves the interpreter's
table of interned strings when it dies. A ``Path`` made every cycle with a part nothing else keeps interned (a
temporary file's name, a container id, a mount point) adds an entry and removes it again; the removed entries use
up the table's slots, and once they are used up the table is rebuilt at twice its size: the one-hour soak's RSS rose
by ~1.3 MiB in one step at minute 44 (BENCHMARKS section 18, "The step at minute 44"). These tests count the calls
to ``sys.intern`` while each periodic operation runs again after its first run, which made its long-lived paths.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.model import ContainerInfo, Runtime
from collectors.host import HostFilesystems
from collectors.logs.checkpoints import CheckpointStore, write_atomic
from collectors.logs.journal import JournalSpool
from collectors.manager import FsUsage
from collectors.podman import PodmanMetadata

PODMAN_DB = Path(__file__).resolve().parent.parent / "fixtures/data/runtime-db/podman-4.3.1-bolt_state.db.gz"
ROUNDS = 20


@contextmanager
def counting_interns(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Every ``sys.intern`` call while the block runs, by the string interned."""
    calls: collections.Counter[str] = collections.Counter()
    intern = sys.intern

    def counting(text: str) -> str:
        calls[text] += 1
        return intern(text)

    with monkeypatch.context() as patch:
        patch.setattr(sys, "intern", counting)
        yield calls


def interns_per_round(monkeypatch: pytest.MonkeyPatch, operation: Callable[[], object]) -> collections.Counter[str]:
    operation()  # the first run makes what lives on (the objects' own paths)
    with counting_interns(monkeypatch) as calls:
        for _ in range(ROUNDS):
            operation()
    return calls


def test_the_counter_sees_a_path_being_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What makes the other tests able to fail: parsing a path calls ``sys.intern`` for its parts."""
    with counting_interns(monkeypatch) as calls:
        (tmp_path / "checkpoints.json").with_name(".checkpoints.json.tmp")
    assert calls[".checkpoints.json.tmp"] == 1


def test_checkpoint_writes_parse_no_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    points = CheckpointStore(tmp_path)
    offsets = iter(range(1, 10 * ROUNDS))

    def write() -> None:
        points.ack("route", "key", "/var/lib/docker/containers/c1/c1-json.log", next(offsets))
        assert points.flush()

    assert interns_per_round(monkeypatch, write) == {}
    assert json.loads((tmp_path / "checkpoints.json").read_bytes())["routes"]["route"]["key"]["offset"] == ROUNDS + 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoints.json"]  # the temporary file was renamed every time


def test_write_atomic_takes_a_relative_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    write_atomic("routes.json", b"{}")  # its directory is the working directory: fsynced as "."
    assert (tmp_path / "routes.json").read_bytes() == b"{}" and os.listdir(tmp_path) == ["routes.json"]


def test_podman_refresh_parses_no_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    storage = tmp_path / "var/lib/containers/storage"
    (storage / "libpod").mkdir(parents=True)
    (storage / "libpod/bolt_state.db").write_bytes(gzip.decompress(PODMAN_DB.read_bytes()))
    (storage / "vfs-containers").mkdir()
    (storage / "vfs-containers/containers.json").write_text(json.dumps(
        [{"id": "c" * 64, "layer": "l" * 64, "names": ["web"], "metadata": "{}"}]))
    meta = PodmanMetadata(tmp_path)

    assert interns_per_round(monkeypatch, meta.refresh) == {}
    assert meta.containers  # the bbolt database was read
    assert meta.storage.by_id["c" * 64][0] == f"{storage}/vfs/dir/{'l' * 64}"  # and containers.json


def test_host_filesystems_parse_no_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "proc/1").mkdir(parents=True)
    (root / "data/volume").mkdir(parents=True)
    (root / "proc/1/mounts").write_text("/dev/sdz1 / ext4 rw 0 0\n/dev/sdz2 /data/volume xfs rw 0 0\n")
    (root / "proc/diskstats").write_text("")
    fs = HostFilesystems(root)

    assert interns_per_round(monkeypatch, fs.stats) == {}
    assert fs.mounts() == [("/dev/sdz1", str(root)), ("/dev/sdz2", str(root / "data/volume"))]


def test_fs_usage_parses_no_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docker_root = tmp_path / "var/lib/docker"
    layer = tmp_path / "layer"
    (layer / "tmp").mkdir(parents=True)
    (layer / "tmp/f").write_bytes(b"x" * 4096)
    (docker_root / "containers" / ("d" * 64)).mkdir(parents=True)
    fs = FsUsage(HostFilesystems(tmp_path), docker_root)
    containers = [ContainerInfo("", Runtime.DOCKER, "d" * 64, rw_layer=str(layer)),
                  ContainerInfo("", Runtime.PODMAN, "p" * 64, rw_layer=str(layer), storage_dir=str(tmp_path))]

    assert interns_per_round(monkeypatch, lambda: fs.measure(containers)) == {}
    docker = fs.get("d" * 64)
    assert docker is not None and docker.usage >= 4096


def test_journal_spool_garbage_collection_parses_no_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docker_root = tmp_path / "docker"
    spool = JournalSpool(tmp_path / "journal", Path("/"), [], "head", docker_root=docker_root)
    for cid in ("a" * 64, "b" * 64):
        (tmp_path / "journal/docker" / cid).mkdir(parents=True)
        (tmp_path / "journal/docker" / cid / f"{cid}-json.log").write_bytes(b"{}\n")
        (docker_root / "containers" / cid).mkdir(parents=True)  # both running: their spools stay

    assert interns_per_round(monkeypatch, spool.collect_garbage) == {}
    assert sorted(os.listdir(tmp_path / "journal/docker")) == ["a" * 64, "b" * 64]

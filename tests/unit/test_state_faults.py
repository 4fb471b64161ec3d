"""The state directory's faults at the checkpoint store (collectors.logs.checkpoints) and the pipeline's group commit
(agent.logs.pipeline): a corrupted or truncated checkpoint file is set aside and never trusted, a full file system
never leaves a part of a checkpoint behind, and a failed write is said once, counted, retried and its recovery said.

The full file system is a real one (a 64 KiB tmpfs, mounted as root; skipped without root). End to end with a real
agent and real containers: tests/integration/test_state_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from agent.logs.metrics import LogMetrics
from agent.logs.pipeline import LogPipeline
from collectors.logs.checkpoints import FILENAME, CheckpointStore, write_atomic

GOOD = {"version": 1, "first_start": 1700000000.5,
        "routes": {"r1": {"k1": {"path": "/var/lib/docker/containers/a/a-json.log", "offset": 4096, "source": "a"}}}}


def write(state: Path, body: bytes) -> Path:
    path = state / FILENAME
    path.write_bytes(body)
    return path


def corrupt_files(state: Path) -> list[Path]:
    return sorted(state.glob(f"{FILENAME}.corrupt-*"))


def test_a_good_file_is_loaded(tmp_path: Path) -> None:
    write(tmp_path, orjson.dumps(GOOD))
    store = CheckpointStore(tmp_path)
    assert store.offset("r1", "k1") == 4096 and store.first_start == 1700000000.5 and store.existed
    assert store.set_aside is None and not corrupt_files(tmp_path)


BAD = {
    "truncated": orjson.dumps(GOOD)[:37],
    "empty": b"",
    "zeros (a power cut on some file systems)": b"\0" * 512,
    "not JSON": b"checkpoints? no",
    "a list": b"[1, 2]",
    "unknown version": orjson.dumps({**GOOD, "version": 2}),
    "routes a list": orjson.dumps({**GOOD, "routes": ["r1"]}),
    "offset a string": orjson.dumps({**GOOD, "routes": {"r1": {"k1": {"path": "/x", "offset": "12"}}}}),
    "offset negative": orjson.dumps({**GOOD, "routes": {"r1": {"k1": {"path": "/x", "offset": -1}}}}),
    "offset a float": orjson.dumps({**GOOD, "routes": {"r1": {"k1": {"path": "/x", "offset": 1.5}}}}),
    "offset true": orjson.dumps({**GOOD, "routes": {"r1": {"k1": {"path": "/x", "offset": True}}}}),
    "no path": orjson.dumps({**GOOD, "routes": {"r1": {"k1": {"offset": 3}}}}),
    "entry a number": orjson.dumps({**GOOD, "routes": {"r1": {"k1": 3}}}),
    "first_start a string": orjson.dumps({**GOOD, "first_start": "yesterday"}),
}


@pytest.mark.parametrize("body", BAD.values(), ids=BAD.keys())
def test_a_bad_file_is_set_aside_logged_and_not_trusted(tmp_path: Path, body: bytes) -> None:
    path = write(tmp_path, body)
    with capture_logs() as logs:
        store = CheckpointStore(tmp_path)
    aside = corrupt_files(tmp_path)
    assert len(aside) == 1 and aside[0].read_bytes() == body, "the bad file is kept, byte for byte, for inspection"
    assert not path.exists() and store.set_aside == aside[0]
    assert store.routes() == {} and store.offset("r1", "k1") is None, "nothing of it is trusted"
    assert store.existed, "not a first start: --read-from tail must not skip what was never shipped"
    events = [e for e in logs if e["event"] == "checkpoints_corrupt"]
    assert len(events) == 1 and events[0]["log_level"] == "error" and events[0]["moved_to"] == str(aside[0])
    store.ack("r1", "k1", "/x", 10)
    assert store.flush()
    assert aside[0].read_bytes() == body, "the next write does not touch the set-aside file"
    assert CheckpointStore(tmp_path).offset("r1", "k1") == 10


def test_a_bad_file_that_cannot_be_moved_is_still_not_trusted(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may rename in a read-only directory")
    write(tmp_path, b"{\"version\": 1, \"rou")
    tmp_path.chmod(0o500)
    try:
        with capture_logs() as logs:
            store = CheckpointStore(tmp_path)
    finally:
        tmp_path.chmod(0o700)
    assert store.routes() == {} and store.set_aside is None
    assert [e["moved_to"] for e in logs if e["event"] == "checkpoints_corrupt"] == [None]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (unmounted at teardown)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill ``directory``'s file system until fewer than ``leave`` bytes can still be written."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"x" * 1024):
                pass
    finally:
        os.close(fd)
    if leave:
        with open(filler, "r+b") as fh:
            fh.truncate(max(filler.stat().st_size - leave, 0))
    return filler


def test_a_full_file_system_never_leaves_a_part_of_a_checkpoint(tiny_fs: Path) -> None:
    store = CheckpointStore(tiny_fs)
    store.ack("r", "k0", "/x", 1)
    store.flush()
    before = (tiny_fs / FILENAME).read_bytes()
    fill(tiny_fs, leave=4096)  # room for a part of the next write (a short write, no error) but not for all of it
    for i in range(100):  # ~25 KiB
        store.ack("r", f"key-{i:04}", f"/var/lib/docker/containers/{i:064}/{i:064}-json.log", i)
    with pytest.raises(OSError) as raised:
        store.flush()
    assert raised.value.errno == errno.ENOSPC
    assert (tiny_fs / FILENAME).read_bytes() == before, "the last good checkpoint stays whole"
    assert not list(tiny_fs.glob(".*.tmp")), "the part written is removed, its blocks given back"
    (tiny_fs / "filler").unlink()
    assert store.flush(), "what failed is written by the next flush, with no new acknowledgement"
    assert CheckpointStore(tiny_fs).offset("r", "key-0099") == 99


def test_write_atomic_into_a_read_only_directory_raises_and_changes_nothing(tiny_fs: Path) -> None:
    path = tiny_fs / FILENAME
    write_atomic(path, b"old")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(OSError) as raised:
        write_atomic(path, b"new")
    assert raised.value.errno == errno.EROFS and path.read_bytes() == b"old"


def test_the_group_commit_says_a_failure_once_counts_every_one_and_says_the_recovery(tiny_fs: Path) -> None:
    registry = CollectorRegistry()
    metrics = LogMetrics(registry)
    store = CheckpointStore(tiny_fs)
    pipeline = LogPipeline([], store, dict, list, metrics=metrics)
    filler = fill(tiny_fs)

    async def run() -> list[bool]:
        results = []
        for i in range(3):
            store.ack("r", "k", "/x", 100 + i)
            results.append(await pipeline._flush())
        filler.unlink()
        results.append(await pipeline._flush())
        return results

    with capture_logs() as logs:
        results = asyncio.run(run())
    assert results == [False, False, False, True]
    failed = [e for e in logs if e["event"] == "checkpoint_write_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error" and "restart" in failed[0]["consequence"]
    assert registry.get_sample_value("lookout_checkpoint_write_failures_total") == 3
    assert [e["failures"] for e in logs if e["event"] == "checkpoint_write_recovered"] == [3]
    assert CheckpointStore(tiny_fs).offset("r", "k") == 102


def test_a_dead_letter_write_on_a_full_state_dir_leaves_no_torn_line(tiny_fs: Path) -> None:
    from exporters.http.common import DeadLetters

    dead = DeadLetters(tiny_fs, "route-1")
    dead.write([{"status": 400, "error": "mapping", "record": {"message": "first"}}])
    before = dead.path.read_bytes()
    fill(tiny_fs, leave=2048)  # room for a part of the next write only
    big = [{"status": 400, "error": "mapping", "record": {"message": "x" * 500, "n": i}} for i in range(40)]
    with pytest.raises(OSError) as raised:
        dead.write(big)
    assert raised.value.errno == errno.ENOSPC
    assert dead.path.read_bytes() == before, "the part written is taken back: no torn line"
    (tiny_fs / "filler").unlink()
    dead.write(big)  # the retry, once there is room
    lines = dead.path.read_bytes().splitlines()
    assert len(lines) == 41 and all(orjson.loads(line)["status"] == 400 for line in lines)

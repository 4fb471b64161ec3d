"""CheckpointStore.flush from several threads at once (the flusher's thread and the pipeline's final flush)."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from collectors.logs.checkpoints import CheckpointStore


def test_concurrent_flushes_never_fail_and_the_last_state_is_written(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def flusher(n: int) -> None:
        start.wait()
        try:
            for i in range(200):
                store.ack("route", f"key-{n}", f"/log/{n}", i)
                store.flush()
        except BaseException as exc:  # before the write lock: FileNotFoundError renaming the shared temp file
            errors.append(exc)

    threads = [threading.Thread(target=flusher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    store.flush()
    written = orjson.loads((tmp_path / "checkpoints.json").read_bytes())["routes"]["route"]
    assert {k: v["offset"] for k, v in written.items()} == {f"key-{n}": 199 for n in range(4)}

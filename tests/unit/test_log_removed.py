"""Issue #15 (churn): a container removed right after its last lines. Its files are read to the end (the open
descriptors still read them) under the name it had, and what the agent kept about it is forgotten afterwards."""

from __future__ import annotations

import shutil

import orjson
import pytest

from agent.logs.batch import Batch
from collectors.docker import info_from_inspect
from tests.unit.test_log_pipeline import Harness, wait_for


@pytest.fixture
async def harness(tmp_path):  # type: ignore[no-untyped-def]
    h = Harness(tmp_path)
    yield h
    await h.stop()


def _names(batch: Batch) -> list[tuple[str, str]]:
    return [(seg.source.container.name, rec[2]) for seg in batch.segments for rec in seg.records]


async def test_a_removed_containers_last_lines_are_read_before_its_source_is_dropped(harness: Harness):
    """Issue #15 (churn): a container writes its last lines and is removed at once. The reader had read the file to
    its end before them, so its last look at the file's size is stale: the source may be dropped only once the open
    file (deleted, still readable) has nothing left, and its lines go out under the name the container had."""
    c = harness.container("brief")
    first = c.write(5)
    pipeline = harness.start(run=False)
    runner = pipeline.runners[0]
    follower = runner.follower
    follower.offer(pipeline.scan())
    assert runner.read_batch(100, 1 << 20).count == len(first)
    last = c.write(5)  # the last lines ...
    shutil.rmtree(c.dir)  # ... and the container removed right after them
    follower.offer(pipeline.scan())
    follower.collect_garbage()
    batch = runner.read_batch(100, 1 << 20)
    assert _names(batch) == [("brief", m) for m in last]
    assert follower.states  # dropped only at a read that finds nothing left
    runner.read_batch(100, 1 << 20)
    follower.collect_garbage()
    runner.read_batch(100, 1 << 20)
    assert not follower.states


async def test_a_container_gone_from_the_api_keeps_its_name_for_its_last_lines(harness: Harness):
    """With the Engine API, a ``destroy`` event drops the container from the API's cache and its config.v2.json is
    gone too: a source already resolved keeps its metadata, and one not resolved yet finds the removed container's
    metadata the API remembered."""
    seen, unseen = harness.container("seen"), harness.container("unseen")
    pipeline = harness.start(run=False)
    runner = pipeline.runners[0]
    follower = runner.follower
    docker = follower.lookup.docker  # type: ignore[attr-defined]
    for c in (seen, unseen):
        docker.containers[c.cid] = info_from_inspect(orjson.loads((c.dir / "config.v2.json").read_bytes()), ())
    docker.api_ok = True
    first = seen.write(3)
    scan = pipeline.scan()
    follower.offer(scan)
    assert _names(runner.read_batch(100, 1 << 20)) == [("seen", m) for m in first]
    last = seen.write(3)
    docker.containers.pop(seen.cid)  # the destroy event, of a container the API no longer remembers
    shutil.rmtree(seen.dir)
    assert _names(runner.read_batch(100, 1 << 20)) == [("seen", m) for m in last]

    [unseen_spec] = [spec for spec in scan.values() if spec.container_id == unseen.cid]
    docker._remember_removed(unseen.cid, docker.containers.pop(unseen.cid))  # the destroy event
    shutil.rmtree(unseen.dir)
    info = follower.lookup(unseen_spec)
    assert info is not None and info.name == "unseen"


async def test_a_removed_containers_delivered_count_is_forgotten_with_its_source(harness: Harness):
    """The per-container count of delivered records (the API's log rate) goes with the container's source: under
    churn it would otherwise grow for as long as the agent runs."""
    c = harness.container("short")
    c.write(3)
    pipeline = harness.start()
    runner = pipeline.runners[0]
    await wait_for(lambda: runner.lines.get(c.cid) == 3)
    runner.forget_gone_lines()
    assert runner.lines[c.cid] == 3  # still being read: kept
    shutil.rmtree(c.dir)
    await wait_for(lambda: not runner.follower.states)
    runner.forget_gone_lines()
    assert c.cid not in runner.lines

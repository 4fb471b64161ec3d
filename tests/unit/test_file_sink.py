"""The file:// route after a crash: a torn last line never swallows the next record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from agent.model import ContainerInfo, LogSource, Segment
from exporters.logs.file import FileSink


def _source(tmp_path: Path) -> LogSource:
    info = ContainerInfo(cgroup="", container_id="ab" * 32, name="web-1", image="nginx:1.27")
    return LogSource(str(tmp_path / "c-json.log"), "1:2:abc", info, "host-a")


def _send(sink: FileSink, segments: list[Segment]) -> None:
    result = asyncio.run(sink.send(sink.encode(segments)))
    assert result.delivered == sum(len(s.records) for s in segments)


def test_a_torn_last_line_is_ended_before_the_next_batch(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    out.write_bytes(b'{"message":"complete"}\n{"message":"torn by kill -')  # what kill -9 mid-write leaves
    sink = FileSink(str(out))
    record = ("2026-11-28T10:00:00.000000001Z", "stdout", "after the crash", 0, False)
    _send(sink, [Segment(_source(tmp_path), [record])])
    asyncio.run(sink.close())
    lines = out.read_bytes().split(b"\n")
    assert lines[:2] == [b'{"message":"complete"}', b'{"message":"torn by kill -']
    assert orjson.loads(lines[2])["message"] == "after the crash" and lines[3:] == [b""]


def test_an_intact_file_is_only_appended_to(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    out.write_bytes(b'{"message":"old"}\n')
    sink = FileSink(str(out))
    records = [("2026-11-28T10:00:00Z", "stderr", f"m{i}", i * 10, False) for i in range(3)]
    _send(sink, [Segment(_source(tmp_path), records)])
    _send(sink, [Segment(_source(tmp_path), records[:1])])
    asyncio.run(sink.close())
    lines = out.read_bytes().splitlines()
    assert lines[0] == b'{"message":"old"}'
    assert [orjson.loads(x)["message"] for x in lines[1:]] == ["m0", "m1", "m2", "m0"]

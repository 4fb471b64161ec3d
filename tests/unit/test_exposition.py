"""Exposition: which formats a cycle pre-renders, and /metrics served from the cached gzip body."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from agent.model import MachineInfo, Snapshot
from exporters.prometheus import exposition
from exporters.prometheus.http import Exposition, compress_chunks, decompress_pieces, make_app

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class FakeRenderer:
    """Records which formats were rendered; each format has a recognisable body."""

    def __init__(self, lines: int = 3) -> None:
        self.calls: list[bool] = []
        self.lines = lines

    def chunks(self, snap: Snapshot, openmetrics: bool = False) -> Iterator[str]:
        self.calls.append(openmetrics)
        kind = "om" if openmetrics else "text"
        for i in range(self.lines):
            yield f'container_x{{id="/c{i}",form="{kind}"}} {i}\n'


def snapshot() -> Snapshot:
    return Snapshot(1.0, [], MachineInfo(), "", False, False)


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("lookout_test", "A self-metric.", registry=reg).inc()
    return reg


def test_publish_renders_text_until_a_client_asks() -> None:
    exp, renderer = Exposition(registry()), FakeRenderer()
    exp.publish(snapshot(), renderer.chunks)
    assert renderer.calls == [False]
    assert exp.eager_formats == {False}


def test_publish_renders_what_was_asked_and_keeps_it_when_nobody_scrapes() -> None:
    exp, renderer = Exposition(registry()), FakeRenderer()
    exp.publish(snapshot(), renderer.chunks)
    exp.asked(True)  # Prometheus
    assert b'form="om"' in exp.body(True, False)  # rendered on demand for this snapshot
    renderer.calls.clear()
    exp.publish(snapshot(), renderer.chunks)
    assert renderer.calls == [True]
    exp.body(True, True)  # served from the pre-rendered body: no render
    assert renderer.calls == [True]
    renderer.calls.clear()
    exp.publish(snapshot(), renderer.chunks)  # no scrape in between (longer scrape interval): same formats
    assert renderer.calls == [True]


def test_publish_renders_both_formats_when_both_were_asked_then_drops_the_unused_one() -> None:
    exp, renderer = Exposition(registry()), FakeRenderer()
    exp.asked(True)
    exp.asked(False)
    exp.publish(snapshot(), renderer.chunks)
    assert sorted(renderer.calls) == [False, True]
    renderer.calls.clear()
    exp.asked(True)
    exp.publish(snapshot(), renderer.chunks)
    assert renderer.calls == [True]
    assert b'form="text"' in exp.body(False, False)  # still served, rendered on request
    assert renderer.calls == [True, False]


def test_decompress_pieces_is_bounded_and_lossless(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(exposition, "STREAM_INPUT", 1000)
    monkeypatch.setattr(exposition, "STREAM_OUTPUT", 4096)
    chunks = [f"line {i} {'x' * (i % 97)}\n" for i in range(20_000)]
    packed = compress_chunks(iter(chunks))
    text = "".join(chunks).encode()
    assert packed.text_bytes == len(text)
    assert gzip.decompress(packed.body) == text
    pieces = list(decompress_pieces(packed.body))
    assert len(pieces) > 10 and max(map(len, pieces)) <= 4096
    assert b"".join(pieces) == text


async def test_metrics_handler_serves_every_form_with_its_length() -> None:
    exp, renderer = Exposition(registry()), FakeRenderer(lines=50_000)
    exp.publish(snapshot(), renderer.chunks)
    async with TestClient(TestServer(make_app(exp))) as client:
        resp = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        plain = await resp.read()
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        assert int(resp.headers["Content-Length"]) == len(plain)
        assert plain.startswith(b'container_x{id="/c0",form="text"} 0\n')
        assert plain.count(b"\n") > 50_000 and b"lookout_test_total 1.0\n" in plain

        resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        raw = await resp.read()
        assert resp.headers["Content-Encoding"] == "gzip"
        assert int(resp.headers["Content-Length"]) == len(raw)
        assert gzip.decompress(raw) == plain

        resp = await client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"},
                                auto_decompress=False)
        om = gzip.decompress(await resp.read())
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.startswith(b'container_x{id="/c0",form="om"} 0\n') and om.endswith(b"# EOF\n")

        resp = await client.head("/metrics")
        assert resp.status == 200 and await resp.read() == b""
    renderer.calls.clear()
    exp.publish(snapshot(), renderer.chunks)
    assert sorted(renderer.calls) == [False, True]  # both forms were scraped since the last publish


async def test_metrics_before_the_first_snapshot() -> None:
    exp = Exposition(registry())
    async with TestClient(TestServer(make_app(exp))) as client:
        resp = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        body = await resp.read()
        assert resp.status == 200 and b"lookout_test_total 1.0" in body
        assert int(resp.headers["Content-Length"]) == len(body)


def test_render_chunks_are_bounded_and_join_to_the_same_text(make_tree, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from exporters.prometheus import render
    from tests.unit.support import run_tree

    run = run_tree(make_tree("v1_docker_cgroupfs"), tmp=tmp_path)
    whole = run.agent.renderer.render(run.snapshot, openmetrics=True)
    monkeypatch.setattr(render, "CHUNK_LINES", 3)
    chunks = list(run.agent.renderer.chunks(run.snapshot, openmetrics=True))
    assert "".join(chunks) == whole
    assert len(chunks) > len(run.agent.renderer.families)
    # A chunk holds fewer than CHUNK_LINES lines before its last container's, and a family header.
    widest = max(len(list(fam.get(s.info, s.stats))) for fam in run.agent.renderer.families
                 for s in run.snapshot.containers)
    assert max(c.count("\n") for c in chunks[:-1]) <= 2 + widest + 2

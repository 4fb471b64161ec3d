"""Exposition: which formats a cycle pre-renders, and /metrics served from the cached gzip body."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from agent.model import MachineInfo, Snapshot
from exporters.prometheus import exposition, http
from exporters.prometheus.http import Exposition, compress_chunks, decompress_pieces
from exporters.web.app import make_app

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


def test_the_previous_snapshot_and_bodies_are_let_go_before_the_new_bodies_are_built() -> None:
    """At the peak of a cycle only the new snapshot and the body being built are held, not the old ones too."""
    exp, renderer = Exposition(registry()), FakeRenderer()
    exp.asked(True)
    exp.asked(False)
    old = snapshot()
    exp.publish(old, renderer.chunks)  # both formats
    held_during_render: list[tuple[set[bool], bool]] = []

    def chunks(snap: Snapshot, openmetrics: bool = False) -> Iterator[str]:
        held_during_render.append((set(exp._gzip), exp.snapshot is old))
        yield from renderer.chunks(snap, openmetrics)

    exp.asked(True)
    exp.publish(snapshot(), chunks)
    assert held_during_render == [(set(), False)]
    assert b'form="om"' in exp.body(True, False)


def test_a_scrape_that_must_render_waits_for_a_running_publish_instead_of_rendering_beside_it() -> None:
    exp, renderer = Exposition(registry()), FakeRenderer()
    exp.publish(snapshot(), renderer.chunks)  # text only
    inside, release = threading.Event(), threading.Event()
    running, most = [0], [0]

    def chunks(snap: Snapshot, openmetrics: bool = False) -> Iterator[str]:
        running[0] += 1
        most[0] = max(most[0], running[0])
        inside.set()
        release.wait(5)
        yield from renderer.chunks(snap, openmetrics)
        running[0] -= 1

    exp.asked(True)  # the next publish renders OpenMetrics
    new = snapshot()
    publisher = threading.Thread(target=exp.publish, args=(new, chunks))
    publisher.start()
    assert inside.wait(5)
    got: list[bytes] = []
    scraper = threading.Thread(target=lambda: got.append(exp.body(True, False)))
    scraper.start()
    scraper.join(0.3)
    assert scraper.is_alive()  # waits for the publish rather than rendering the old snapshot beside it
    release.set()
    publisher.join(5)
    scraper.join(5)
    assert most[0] == 1 and got and b'form="om"' in got[0]
    assert exp.snapshot is new and renderer.calls.count(True) == 1  # the publish's body served the scrape


def test_a_failing_render_is_raised_once_and_scrapes_then_get_the_self_metrics_without_rendering_again() -> None:
    exp, renderer = Exposition(registry()), FakeRenderer()
    exp.asked(True)
    exp.asked(False)
    exp.publish(snapshot(), renderer.chunks)
    calls: list[bool] = []

    def broken(snap: Snapshot, openmetrics: bool = False) -> Iterator[str]:
        calls.append(openmetrics)
        if openmetrics:
            raise RuntimeError("a getter bug")
        yield from renderer.chunks(snap, openmetrics)

    exp.asked(True)
    exp.asked(False)
    with pytest.raises(RuntimeError, match="a getter bug"):
        exp.publish(snapshot(), broken)
    assert sorted(calls) == [False, True]  # the other format was still rendered
    assert exp.compressed(True) is None and exp.compressed(True) is None  # not rendered again per scrape
    assert b"lookout_test_total 1.0" in exp.body(True, False) and b"container_x" not in exp.body(True, False)
    assert b'form="text"' in exp.body(False, False)
    assert sorted(calls) == [False, True]
    exp.publish(snapshot(), renderer.chunks)  # the next snapshot renders afresh
    assert b'form="om"' in exp.body(True, False)


def test_during_a_collection_a_cached_format_is_ready_and_a_missing_one_waits() -> None:
    exp, renderer = Exposition(registry()), FakeRenderer()
    exp.publish(snapshot(), renderer.chunks)  # text only
    got: list[bytes] = []
    with exp.exclusive():  # what Agent.cycle holds while it collects
        assert exp.ready(False) is not None and exp.ready(True) is None
        scraper = threading.Thread(target=lambda: got.append(exp.body(True, False)))
        scraper.start()
        scraper.join(0.3)
        assert scraper.is_alive() and renderer.calls == [False]  # no render beside the collection
    scraper.join(5)
    assert got and b'form="om"' in got[0] and renderer.calls == [False, True]


def test_decompress_pieces_is_bounded_and_lossless(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(exposition, "STREAM_INPUT", 1000)
    monkeypatch.setattr(exposition, "STREAM_OUTPUT", 4096)
    chunks = [f"line {i} {'x' * (i % 97)}\n" for i in range(20_000)]
    packed = compress_chunks(iter(chunks))
    text = "".join(chunks).encode()
    assert packed.text_bytes == len(text)
    assert gzip.decompress(packed.body) == text
    assert packed.size == len(packed.body)
    pieces = list(decompress_pieces(packed.parts))
    assert len(pieces) > 10 and max(map(len, pieces)) <= 4096
    assert b"".join(pieces) == text


def test_compressed_body_is_kept_in_the_compressors_pieces() -> None:
    """A ~2.7 MB text is not joined into one body after compression: the pieces are what a scrape writes."""
    chunks = ["".join(f"line {i} x\n" for i in range(start, start + 2000)) for start in range(0, 200_000, 2000)]
    packed = compress_chunks(chunks)
    assert len(packed.parts) > 1 and packed.size == sum(map(len, packed.parts))
    assert gzip.decompress(packed.body) == "".join(chunks).encode()
    assert b"".join(decompress_pieces(packed.parts)) == "".join(chunks).encode()


async def test_metrics_handler_serves_every_form_with_its_length(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(http, "WRITE_PIECE", 1000)  # the gzip body's pieces are written in slices
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

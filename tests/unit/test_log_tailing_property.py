"""The tailer and the decoders together, as the pipeline uses them: whatever byte boundaries the runtime's
writes and the reader's reads fall on, the records are the lines written, in the order written."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.logs.decoders import CriDecoder, JsonFileDecoder
from collectors.logs.files import Tail
from tests.unit.test_log_decoders import cri_lines, docker_lines

entries = st.lists(
    st.tuples(st.sampled_from(["stdout", "stderr"]),
              st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=200)),
    min_size=1, max_size=25,
)


def tail_in_pieces(path: Path, data: bytes, writes: list[int], reads: list[int], decoder: JsonFileDecoder | CriDecoder,
                   limit: int) -> list[tuple[str, str, int]]:
    """Append ``data`` to ``path`` in pieces cut at ``writes`` (any byte, mid-line and mid-UTF-8 too), reading
    with a ``limit``-byte buffer after the pieces listed in ``reads``; (stream, message, offset) per record."""
    cuts = sorted({c % (len(data) + 1) for c in writes} | {len(data)})
    path.write_bytes(b"")
    tail: Tail | None = None
    out: list[tuple[str, str, int]] = []

    def drain() -> None:
        nonlocal tail
        if tail is None:
            tail = Tail.open(str(path))  # None until the first line is complete, as in the pipeline
            if tail is None:
                return
        while True:
            chunk, start, skipped = tail.read(limit)
            assert not skipped
            if not chunk:
                return
            out.extend((r[1], r[2], r[3]) for r in decoder.decode(chunk, start).records)

    pos = 0
    for i, cut in enumerate(cuts):
        with path.open("ab") as fh:
            fh.write(data[pos:cut])
        pos = cut
        if i in reads:
            drain()
    drain()
    if tail is not None:
        tail.close()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries, st.integers(1, 64), st.lists(st.integers(0, 10_000), max_size=12),
       st.sets(st.integers(0, 12)), st.sampled_from([1 << 20, 4096]))
def test_json_file_tailed_at_any_byte_boundaries(tmp_path: Path, written, chunk, writes, reads, limit):
    data = docker_lines(written, chunk_chars=chunk)
    got = tail_in_pieces(tmp_path / "c-json.log", data, writes, reads, JsonFileDecoder(), limit)
    assert [(s, m) for s, m, _ in got] == written  # every line, once, in the order written (across streams)
    # each record's offset is where its first part starts in the file
    starts = []
    pos = 0
    for stream, message in written:
        starts.append(pos)
        pos += len(docker_lines([(stream, message)], chunk_chars=chunk))
    assert [o for *_, o in got] == starts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries, st.integers(4, 64), st.lists(st.integers(0, 10_000), max_size=12),
       st.sets(st.integers(0, 12)))
def test_cri_tailed_at_any_byte_boundaries(tmp_path: Path, written, chunk, writes, reads):
    # P parts are cut on characters (a runtime may cut a UTF-8 sequence; then bytes are replaced, tested elsewhere)
    data = b"".join(cri_lines([(s, m)], chunk_bytes=chunk) if m.isascii() else cri_lines([(s, m)], 1 << 20)
                    for s, m in written)
    got = tail_in_pieces(tmp_path / "0.log", data, writes, reads, CriDecoder(), 1 << 20)
    assert [(s, m) for s, m, _ in got] == written

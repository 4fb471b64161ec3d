"""The hot path's fast paths agree with the careful per-record code they skip, on any input.

``JsonFileDecoder`` decodes a chunk of well-formed lines with one comprehension and checks afterwards;
``NdjsonEncoder`` formats plain segments with the stream baked into the template; ``SyslogEncoder`` builds
RFC 5424 messages from one bytes template per stream. Each must give exactly
what the per-record code gives (records, errors, held partials, checkpoint offsets; bytes): here the fast
path is switched off in a twin and both are fed the same input, including the inputs the fast path
must refuse (partials, bad lines, truncation, odd times and streams).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.logs.routes import parse_route
from agent.model import ContainerInfo, LogRecord, LogSource, Segment
from collectors.logs.decoders import _LINES, CriDecoder, JsonFileDecoder
from exporters.http.elasticsearch import ElasticsearchSink
from exporters.logs import ndjson
from exporters.logs.ndjson import NdjsonEncoder
from exporters.syslog.format import SyslogEncoder, SyslogFormat


class CarefulJsonFileDecoder(JsonFileDecoder):
    """The decoder with its fast path switched off: every chunk goes through the per-line loop."""

    def _decode_fast(self, docs: list[Any], lines: list[bytes], base_offset: int) -> None:
        return None


TIMES = ["2026-11-28T04:14:51.685761325Z", "2026-11-28T04:14:51.6857613Z", "2026-11-28T04:14:51Z",
         "2026-11-28T06:14:51.1+02:00", "", "zeit-ü", '"quoted"', "back\\slash", "tab\tbed"]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@st.composite
def docker_line(draw: st.DrawFn) -> bytes:
    """One json-file line: mostly what Docker writes, sometimes a partial, sometimes something broken."""
    kind = draw(st.sampled_from(["line"] * 8 + ["partial", "long", "odd", "broken"]))
    stream = draw(st.sampled_from(["stdout", "stderr"]))
    time = draw(st.sampled_from(TIMES))
    if kind == "line":
        return orjson.dumps({"log": draw(text) + "\n", "stream": stream, "time": time})
    if kind == "partial":
        return orjson.dumps({"log": draw(text), "stream": stream, "time": time})
    if kind == "long":
        return orjson.dumps({"log": draw(text) * 40 + "é" * draw(st.integers(0, 300)) + "\n", "stream": stream,
                             "time": time})
    if kind == "odd":
        doc = draw(st.sampled_from([
            {"log": "x\n", "stream": "stdin", "time": time},
            {"log": "x\n", "stream": stream, "time": 5},
            {"log": ["x\n"], "stream": stream, "time": time},
            {"log": {"a": "\n"}, "stream": stream, "time": time},
            {"stream": stream, "time": time},
            {"log": "x\n", "time": time},
            {"log": "", "stream": stream, "time": time},
            {"log": "\n", "stream": stream, "time": time},
            {"log": "x\n", "stream": stream, "time": time, "attrs": {"tag": "a"}},
            {"log": "x\n", "stream": ["stdout"], "time": time},
        ]))
        return orjson.dumps(doc)
    return draw(st.sampled_from([b"", b"[1,2]", b'"text"', b"7", b'{"log":"torn', b'{"log":"bad \xff\\n","stream":'
                                 b'"stdout","time":"t"}', b"null", b"1,2", b"   ", b" \t",
                                 b'{"log":"a\\n","stream":"stdout","time":"t"} '
                                 b'{"log":"b\\n","stream":"stdout","time":"t"}']))


def decode_all(decoder: JsonFileDecoder, data: bytes, cuts: list[int]) -> list[object]:
    """Feed ``data`` in line-aligned chunks; everything the decoder says and holds, after every chunk."""
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    bounds = sorted({c % (len(lines) + 1) for c in cuts} | {len(lines)})
    seen: list[object] = []
    offset = pos = 0
    decoder.file = "f"
    for bound in bounds:
        chunk = b"".join(lines[pos:bound])
        pos = bound
        if not chunk:
            continue
        out = decoder.decode(chunk, offset)
        offset += len(chunk)
        held = sorted((s, p.time, p.offset, p.parts, p.size, p.truncated) for s, p in decoder.pending.items())
        seen.append((out.records, out.errors, out.truncated, decoder.safe_offset(offset, "f"), held))
    return seen


@settings(max_examples=400, deadline=None)
@given(st.lists(docker_line(), min_size=1, max_size=40), st.lists(st.integers(0, 60), max_size=5),
       st.sampled_from([1 << 20, 1024, 200, 64]))
def test_json_file_fast_path_decodes_exactly_as_the_loop(lines: list[bytes], cuts: list[int], cap: int) -> None:
    data = b"".join(line + b"\n" for line in lines)
    assert decode_all(JsonFileDecoder(cap), data, cuts) == decode_all(CarefulJsonFileDecoder(cap), data, cuts)


def fast_path(decoder: JsonFileDecoder, lines: list[bytes], base_offset: int) -> list[LogRecord] | None:
    """What ``decode`` gets from its fast path for these lines: None where it falls back to the loop."""
    try:
        docs = _LINES.decode_lines(b"".join(line + b"\n" for line in lines))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return decoder._decode_fast(docs, lines, base_offset)


def test_the_fast_path_takes_well_formed_chunks_and_refuses_the_rest() -> None:
    good = b"".join(orjson.dumps({"log": f"line {i} ✓\n", "stream": "stdout", "time": TIMES[0]}) + b"\n"
                    for i in range(50))
    decoder = JsonFileDecoder()
    lines = good.split(b"\n")[:-1]
    fast = fast_path(decoder, lines, 100)
    assert fast is not None and fast == CarefulJsonFileDecoder().decode(good, 100).records
    assert fast[1] == ("2026-11-28T04:14:51.685761325Z", "stdout", "line 1 ✓", 100 + len(lines[0]) + 1, False)
    with_attrs = orjson.dumps({"log": "x\n", "stream": "stdout", "attrs": {"tag": "web"}, "time": TIMES[0]})
    assert fast_path(decoder, [*lines, with_attrs], 0) is not None  # docker --log-opt labels=...: attrs ignored
    partial = orjson.dumps({"log": "no newline yet", "stream": "stdout", "time": TIMES[0]})
    line = orjson.dumps({"log": "x\n", "stream": "stdout", "time": TIMES[0]})
    for bad in (partial, orjson.dumps({"log": "x\n", "stream": "stdin", "time": TIMES[0]}),
                orjson.dumps({"log": "x\n", "stream": "stdout", "time": None}),
                orjson.dumps({"stream": "stdout", "time": TIMES[0]}),  # Docker omits an empty log
                b'{"log":"bad \xff\\n","stream":"stdout","time":"t"}',  # invalid UTF-8
                line + b"," + line, line + b" " + line,  # one line holding two records
                b"[1, 2]", b"", b" \t ", b"{"):
        assert fast_path(decoder, [*lines, bad], 0) is None, bad
    # Two values on one line and a blank line elsewhere: as many values as lines, but not one per line.
    assert fast_path(decoder, [*lines, line + b" " + line, b""], 0) is None
    assert fast_path(decoder, [line + b" " + line, *lines, b" " * 40], 0) is None
    long_line = orjson.dumps({"log": "é" * 300 + "\n", "stream": "stdout", "time": TIMES[0]})
    assert fast_path(JsonFileDecoder(1200), [long_line], 0) is None  # 301 > 1200 // 4


# --- NDJSON ------------------------------------------------------------------------------------------------


def source(labels: dict[str, str] | None = None, pod: str = "") -> LogSource:
    info = ContainerInfo(cgroup="", container_id="ab" * 32, name="web-1%s", image="nginx:1.27",
                         labels=labels or {"team": "a%db", "ü": '"q"'}, pod=pod, namespace="ns" if pod else "")
    return LogSource("/var/lib/docker/containers/x/x-json.log", "8:1:ab", info, "node-7")


record = st.tuples(st.sampled_from(TIMES + ["2026-11-28T04:14:51.685761325Z"] * 6),
                   st.sampled_from(["stdout", "stderr", "stdout", "stderr", "other", 'we"ird']),
                   text, st.integers(0, 1 << 40), st.sampled_from([False] * 6 + [True]))


def careful_ndjson(segments: list[Segment]) -> bytes:
    """The per-record template loop alone (the msgspec path switched off)."""
    encoder = NdjsonEncoder()
    out = []
    for seg in segments:
        plain, cut, _raw = encoder._source(seg.source)
        out.append(ndjson._careful(seg.records, plain, cut))
    return b"".join(out)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(record, max_size=12), min_size=1, max_size=4), st.booleans())
def test_ndjson_fast_path_writes_the_same_bytes(segments: list[list[LogRecord]], pod: bool) -> None:
    srcs = [source(), source(labels={}, pod="p" if pod else "")]
    segs = [Segment(srcs[i % 2], records) for i, records in enumerate(segments)]
    out = NdjsonEncoder().encode(segs)
    assert out == careful_ndjson(segs)
    assert [orjson.loads(line)["message"] for line in out.splitlines()] == [r[2] for s in segments for r in s]


def test_ndjson_lines_are_the_documented_record() -> None:
    src = source(pod="web-0")
    records: list[LogRecord] = [(TIMES[0], "stdout", 'a "quoted"\ttab ✓', 7, False),
                                ("zeit-ü", "stderr", "cut", 1 << 40, True)]
    out = NdjsonEncoder().encode([Segment(src, records)])
    first, second = (orjson.loads(line) for line in out.splitlines())
    assert out.endswith(b"\n") and out.count(b"\n") == 2
    assert list(first) == ["time", "stream", "message", "container_id", "container_name", "image", "labels", "pod",
                           "namespace", "container", "host", "file", "offset"]
    assert first["message"] == 'a "quoted"\ttab ✓' and first["offset"] == 7 and first["labels"] == src.container.labels
    assert (second["time"], second["truncated"], second["offset"]) == ("zeit-ü", True, 1 << 40)


def test_ndjson_encoding_errors_are_the_loops_errors() -> None:
    bad: list[LogRecord] = [(TIMES[0], "stdout", "lone \ud800 surrogate", 0, False)]
    with pytest.raises(orjson.JSONEncodeError):
        NdjsonEncoder().encode([Segment(source(), bad)])


def test_a_stream_that_is_not_a_string_is_a_counted_error_not_a_crash() -> None:
    line = b'{"log":"x\\n","stream":["stdout"],"time":"2026-11-28T04:14:51Z"}\n'
    ok = orjson.dumps({"log": "y\n", "stream": "stdout", "time": TIMES[0]}) + b"\n"
    out = JsonFileDecoder().decode(line + ok, 0)
    assert out.errors == [(0, "missing or invalid log, stream or time")]
    assert [r[2] for r in out.records] == ["y"]


# --- syslog -------------------------------------------------------------------------------------------------


class CarefulSyslogEncoder(SyslogEncoder):
    """The encoder with its fast path switched off: every segment goes through the per-record loop."""

    def _fast(self, seg: Segment, framed: bool) -> None:
        return None


UNIFORM = ["2026-11-28T04:14:51.685761325Z", "2026-11-28T23:59:59.000000000Z", "2026-11-28T04:14:51.999999999Z"]
ODD_TIMES = ["2026-11-28T04:14:51.68ZZZZZZZZZ", "2026.11-28T04:14:51.685761325Z", "2026-11-28T04:14:51.6857613251Z",
             "x" * 30, "2026-11-28T04:14:51.12345Z", "2026-11-28T04:14:51.1234567890123Z",  # 26 + 34 = 2 * 30
             "2026-11-28T04:14:51.5Z", "2026-11-28T04:14:51.123456Z", "2026-11-28T04:14:51.1234567Z", "Z.", ".Z"]
syslog_time = st.sampled_from(UNIFORM * 4 + TIMES + ODD_TIMES)
syslog_record = st.tuples(syslog_time, st.sampled_from(["stdout", "stderr", "stdout", "stderr", "other"]),
                          st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120)
                          | st.sampled_from(["a\nb\n", "%d %s", "\udcff escaped byte", "]\"\\"]),
                          st.integers(0, 1 << 40), st.sampled_from([False] * 8 + [True]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(syslog_record, max_size=10), min_size=1, max_size=3),
       st.sampled_from([("rfc5424", "octet"), ("rfc5424", "lf"), ("rfc5424", "none"), ("rfc3164", "lf")]),
       st.sampled_from([65536, 600, 480]), st.booleans())
def test_syslog_fast_path_writes_the_same_bytes(segments: list[list[LogRecord]], fmt: tuple[str, str], limit: int,
                                                 pod: bool) -> None:
    rfc, framing = fmt
    syslog_fmt = SyslogFormat(rfc=rfc, framing=framing, max_message_bytes=limit, tag="{container_name}%s")
    srcs = [source(), source(labels={}, pod="p%d" if pod else "")]
    segs = [Segment(srcs[i % 2], records) for i, records in enumerate(segments)]
    fast, careful = SyslogEncoder(syslog_fmt), CarefulSyslogEncoder(syslog_fmt)
    # RFC 3164 stamps a damaged time with the current one: one clock for both, or a second's tick between the
    # two encodes would tell them apart (it did, on a loaded machine).
    with mock.patch("exporters.syslog.format.utc_now_rfc3339", return_value="2026-12-04T19:30:00.123456Z"):
        assert outcome(fast.encode, segs) == outcome(careful.encode, segs)
        assert fast.last_truncated == careful.last_truncated
        assert outcome(fast.messages, segs) == outcome(careful.messages, segs)
        assert fast.last_truncated == careful.last_truncated


def outcome(encode: Any, segments: list[Segment]) -> object:
    """What an encoder returns, or the error it raises (RFC 3164 cannot date a time it cannot parse)."""
    try:
        return encode(segments)
    except ValueError as exc:
        return type(exc), str(exc)


def test_syslog_fast_path_takes_plain_segments_and_refuses_the_rest() -> None:
    enc = SyslogEncoder(SyslogFormat())
    plain: list[LogRecord] = [(UNIFORM[0], "stdout", "a", 0, False),
                              ("2026-11-28T04:14:51.6Z", "stderr", "é", 1, False)]
    assert enc._fast(Segment(source(), plain), framed=True) is not None
    assert enc._fast(Segment(source(), plain[:1]), framed=True) == CarefulSyslogEncoder(SyslogFormat()).encode(
        [Segment(source(), plain[:1])]).split(b"\x00")  # one frame: the whole payload
    for odd in [(UNIFORM[0], "stdout", "a", 0, True), (UNIFORM[0], "stdout", "x" * 70000, 0, False),
                (UNIFORM[0], "stdout", "lone \ud800", 0, False)]:
        assert enc._fast(Segment(source(), [*plain, odd]), framed=True) is None  # type: ignore[list-item]
    assert SyslogEncoder(SyslogFormat(rfc="rfc3164"))._fast(Segment(source(), plain), framed=True) is None


@pytest.mark.parametrize("times", [
    ["2026-11-28T04:14:51.12345Z", "2026-11-28T04:14:51.1234567890123Z"],  # 60 characters, yet not 2 x 30
    ["2026-11-28T04:14:51.685761325Z", "2026-11-28T04:14:51.6857613Z", "2026-11-28T04:14:51.5Z"],  # Go's trimming
    ["2026-11-28T04:14:51.685761325Z", "2026-11-28T04:14:51Z"],  # a whole second has no fraction at all
    UNIFORM,
])
def test_syslog_timestamps_of_every_shape_in_one_segment(times: list[str]) -> None:
    records: list[LogRecord] = [(t, "stdout", f"m{i}", i, False) for i, t in enumerate(times)]
    for framing in ("octet", "lf"):
        fmt = SyslogFormat(framing=framing)
        assert SyslogEncoder(fmt).encode([Segment(source(), records)]) == \
            CarefulSyslogEncoder(fmt).encode([Segment(source(), records)])


# --- CRI -----------------------------------------------------------------------------------------------------


class CarefulCriDecoder(CriDecoder):
    """The CRI decoder with its fast path switched off: every chunk goes through the per-line loop."""

    def _decode_fast(self, chunk: bytes, base_offset: int) -> None:
        return None


CRI_TIMES = [b"2026-11-28T04:14:51.685761325Z", b"2026-11-28T04:14:51Z", b"2026-11-28T06:14:51.1+02:00",
             b"2026-11-28T00:30:00.123456789-05:30", b"", b"Z", b"abc", b"zeit-\xc3\xbc", b"t\xff", b"a\tb"]
cri_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=60)


@st.composite
def cri_line(draw: st.DrawFn) -> bytes:
    """One CRI line: mostly a full line, sometimes a partial, tagged, long, odd or broken."""
    kind = draw(st.sampled_from(["full"] * 8 + ["partial", "tagged", "long", "odd", "broken"]))
    time = draw(st.sampled_from(CRI_TIMES[:2] * 4 + CRI_TIMES))
    stream = draw(st.sampled_from([b"stdout", b"stderr"]))
    content = draw(cri_text).encode()
    if kind == "full":
        return time + b" " + stream + b" F " + content
    if kind == "partial":
        return time + b" " + stream + b" P " + content
    if kind == "tagged":
        return time + b" " + stream + b" " + draw(st.sampled_from([b"F:x", b"P:x", b"X", b"", b"PF"])) + b" " + content
    if kind == "long":
        return time + b" " + stream + b" F " + content * 30 + "é".encode() * draw(st.integers(0, 300))
    if kind == "odd":
        return draw(st.sampled_from([
            time + b" " + stream + b" F",  # no space after the tag
            time + b" " + stream + b" F  two spaces",
            time + b" " + stream + b" F a stdout F b",  # the separator again in the content
            time + b" " + stream + b" F caf\xc3 \xff bytes\r",
            b"a b " + stream + b" F space in the time",
            time + b" stdin F x",
            time + b" " + stream,
        ]))
    return draw(st.sampled_from([b"", b"garbage line", b" ", b"\xff\xfe", b"2026-11-28T04:14:51Z stdout"]))


def cri_decode_all(decoder: CriDecoder, data: bytes, cuts: list[int]) -> list[object]:
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    bounds = sorted({c % (len(lines) + 1) for c in cuts} | {len(lines)})
    seen: list[object] = []
    offset = pos = 0
    decoder.file = "f"
    for bound in bounds:
        chunk = b"".join(lines[pos:bound])
        pos = bound
        if not chunk:
            continue
        out = decoder.decode(chunk, offset)
        offset += len(chunk)
        held = sorted((s, p.time, p.offset, p.parts, p.size, p.truncated) for s, p in decoder.pending.items())
        seen.append((out.records, out.errors, out.truncated, decoder.safe_offset(offset, "f"), held))
    return seen


@settings(max_examples=400, deadline=None)
@given(st.lists(cri_line(), min_size=1, max_size=40), st.lists(st.integers(0, 60), max_size=5),
       st.sampled_from([1 << 20, 1024, 200, 64]))
def test_cri_fast_path_decodes_exactly_as_the_loop(lines: list[bytes], cuts: list[int], cap: int) -> None:
    data = b"".join(line + b"\n" for line in lines)
    assert cri_decode_all(CriDecoder(cap), data, cuts) == cri_decode_all(CarefulCriDecoder(cap), data, cuts)


def test_the_cri_fast_path_takes_full_lines_and_refuses_the_rest() -> None:
    good = b"".join(b"2026-11-28T04:14:51.68576132%dZ std%s F line %d \xe2\x9c\x93\n" % (i % 10, b"err" if i % 3 else
                    b"out", i) for i in range(50))
    fast = CriDecoder()._decode_fast(good, 100)
    assert fast is not None and fast == CarefulCriDecoder().decode(good, 100).records
    line0 = good.split(b"\n")[0]
    assert fast[1] == ("2026-11-28T04:14:51.685761321Z", "stderr", "line 1 ✓", 100 + len(line0) + 1, False)
    for also in (b"2026-11-28T06:14:51.1+02:00 stdout F x\n", b"2026-11-28T04:14:51Z stdout F a stdout F b\n",
                 b"2026-11-28T04:14:51Z stdout F \n", b"2026-11-28T04:14:51Z stderr F  two\r\n"):
        assert CriDecoder()._decode_fast(good + also, 0) == CarefulCriDecoder().decode(good + also, 0).records
    for bad in (b"2026-11-28T04:14:51Z stdout P half\n", b"2026-11-28T04:14:51Z stdout F:x tagged\n",
                b"2026-11-28T04:14:51Z stdout F\n", b"garbage\n", b"\n", b"t\xff stdout F x\n",
                b"a b stdout F space in the time\n", b"2026-11-28T04:14:51Z stdout F no newline"):
        assert CriDecoder()._decode_fast(good + bad, 0) is None, bad
    assert CriDecoder(max_line_bytes=64)._decode_fast(good + b"t stdout F " + b"x" * 64 + b"\n", 0) is None


# --- the encoders' per-source caches under rotation ------------------------------------------------------------


def _live_sources(marker: str) -> int:
    """LogSources still alive whose file key ends with ``marker`` (this test's own: other tests' do not count)."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is LogSource and obj.file_key.endswith(marker))


@pytest.mark.parametrize("kind", ["syslog", "ndjson", "elasticsearch"])
def test_rotations_do_not_pile_up_in_the_encoders_caches(kind: str, tmp_path: Path) -> None:
    """The follower makes a LogSource per file, so every rotation hands the encoders a new one for the same
    container and file name. Their caches of pre-encoded parts are keyed by what those are made of: the files of a
    finished rotation leave nothing behind (the soak's RSS grew ~2-3 KB per rotated file, for hours, when they were
    keyed by the LogSource), and the bytes are the same as for the first file."""
    encode: Any
    if kind == "syslog":
        encode = SyslogEncoder(SyslogFormat(framing="lf")).encode
    elif kind == "ndjson":
        encode = NdjsonEncoder().encode
    else:
        uri = "elasticsearch+http://127.0.0.1:9/logs-%Y.%m.%d"
        sink = ElasticsearchSink(uri, "http", tmp_path, parse_route(uri).id)

        def encode(segments: list[Segment]) -> bytes:  # the documents, not their action lines (whose _id is per file)
            return b"".join(item.split(b"\n", 1)[1] for item in sink.encode(segments).data)
    first = source()
    info, path = first.container, first.path
    record = ("2026-11-28T04:14:51.685761325Z", "stdout", "hello", 0, False)
    expected = encode([Segment(first, [record])])
    marker = f":rotated-{kind}"
    for n in range(200):  # 200 rotations: a new file (key) under the live file's name each time
        rotated = LogSource(path, f"8:{n + 2}{marker}", info, first.host)
        assert encode([Segment(rotated, [record])]) == expected
        del rotated
    assert _live_sources(marker) == 0  # no finished file's source is kept by the encoder

    # A container whose metadata changed (a new ContainerInfo) gets parts made from the new metadata.
    renamed = ContainerInfo(cgroup="", container_id=info.container_id, name="web-2", image=info.image,
                            labels=info.labels)
    out = encode([Segment(LogSource(path, "8:999:ab", renamed, first.host), [record])])
    assert b"web-2" in out and b"web-1" not in out
    # ... and another host or file name its own (the records' host and log.file.path).
    other = encode([Segment(LogSource(path + ".1", "8:1000:ab", info, "node-8"), [record])])
    assert b"node-8" in other
    if kind != "syslog":
        assert orjson.dumps(path + ".1") in other

"""Decoders for Docker json-file and CRI lines: joining partial lines, the size cap, broken input."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.logs.decoders import CriDecoder, JsonFileDecoder, time_order_key, to_utc

TIME = "2026-11-28T04:14:51.685761325Z"


def docker_lines(entries: list[tuple[str, str]], chunk_chars: int = 16384) -> bytes:
    """What Docker's json-file driver writes: lines longer than the chunk become partials without a newline."""
    out = []
    for stream, message in entries:
        text = message + "\n"
        parts = [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]
        for part in parts:
            out.append(orjson.dumps({"log": part, "stream": stream, "time": TIME}) + b"\n")
    return b"".join(out)


def cri_lines(entries: list[tuple[str, str]], chunk_bytes: int = 16384) -> bytes:
    out = []
    for stream, message in entries:
        data = message.encode()
        parts = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
        for i, part in enumerate(parts):
            tag = b"F" if i == len(parts) - 1 else b"P"
            out.append(TIME.encode() + b" " + stream.encode() + b" " + tag + b" " + part + b"\n")
    return b"".join(out)


def decode_in_pieces(decoder: JsonFileDecoder | CriDecoder, data: bytes, cuts: list[int]) -> list:
    """Feed ``data`` in pieces that end on line boundaries chosen by ``cuts``, as the tailer does."""
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    records, offset, pos = [], 0, 0
    bounds = sorted({c % (len(lines) + 1) for c in cuts} | {len(lines)})
    for bound in bounds:
        chunk = b"".join(lines[pos:bound])
        pos = bound
        if chunk:
            records.extend(decoder.decode(chunk, offset).records)
            offset += len(chunk)
    return records


def by_stream(records: list) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for _time, stream, message, _offset, _truncated in records:
        out[stream].append(message)
    return out


messages = st.lists(
    st.tuples(st.sampled_from(["stdout", "stderr"]),
              st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
                      max_size=300)),
    min_size=1, max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(messages, st.integers(1, 64), st.lists(st.integers(0, 200), max_size=8))
def test_json_file_any_split_decodes_to_the_written_lines(entries, chunk, cuts):
    data = docker_lines(entries, chunk_chars=chunk)
    records = decode_in_pieces(JsonFileDecoder(), data, cuts)
    expected = {"stdout": [m for s, m in entries if s == "stdout"], "stderr": [m for s, m in entries if s == "stderr"]}
    assert by_stream(records) == expected
    assert all(r[0] == TIME and not r[4] for r in records)


@settings(max_examples=200, deadline=None)
@given(messages, st.integers(1, 64), st.lists(st.integers(0, 200), max_size=8))
def test_cri_any_split_decodes_to_the_written_lines(entries, chunk, cuts):
    # Split on characters so no UTF-8 sequence is cut (the kernel may cut one; then bytes are replaced).
    data = b"".join(cri_lines([(s, m)], chunk_bytes=max(chunk, 4)) if m.isascii() else cri_lines([(s, m)], 1 << 20)
                    for s, m in entries)
    records = decode_in_pieces(CriDecoder(), data, cuts)
    expected = {"stdout": [m for s, m in entries if s == "stdout"], "stderr": [m for s, m in entries if s == "stderr"]}
    assert by_stream(records) == expected


def test_docker_splits_a_40000_character_line_and_it_is_joined_back():
    line = "x" * 39_999 + "é"
    data = docker_lines([("stdout", line), ("stdout", "next")])
    assert data.count(b"\n") == 4  # 16384 + 16384 + 7232 (+ newline) chunks, then "next"
    records = JsonFileDecoder().decode(data, 0).records
    assert [r[2] for r in records] == [line, "next"]
    assert records[0][3] == 0 and records[1][3] == data.index(b'{"log":"next')


def test_a_held_partial_pins_the_checkpoint_before_its_first_part():
    decoder = JsonFileDecoder()
    first = orjson.dumps({"log": "complete\n", "stream": "stdout", "time": TIME}) + b"\n"
    part = orjson.dumps({"log": "half", "stream": "stdout", "time": TIME}) + b"\n"
    decoder.file = "f"
    out = decoder.decode(first + part, 0)
    assert [r[2] for r in out.records] == ["complete"]
    assert decoder.safe_offset(len(first + part), "f") == len(first)
    assert decoder.safe_offset(99, "other-file") == 99
    rest = orjson.dumps({"log": " done\n", "stream": "stdout", "time": TIME}) + b"\n"
    out = decoder.decode(rest, len(first + part))
    assert [(r[2], r[3]) for r in out.records] == [("half done", len(first))]
    assert decoder.safe_offset(500, "f") == 500


def test_records_over_max_line_bytes_are_cut_marked_and_the_next_line_is_intact():
    decoder = JsonFileDecoder(max_line_bytes=1000)
    data = docker_lines([("stdout", "a" * 5000), ("stdout", "short"), ("stderr", "é" * 600)], chunk_chars=700)
    out = decoder.decode(data, 0)
    assert [(len(r[2].encode()), r[4]) for r in out.records] == [(1000, True), (5, False), (1000, True)]
    assert out.truncated == 2
    assert out.records[2][2] == "é" * 500  # cut on a UTF-8 boundary


def test_unterminated_single_line_over_the_cap_is_truncated_too():
    out = JsonFileDecoder(max_line_bytes=1024).decode(docker_lines([("stdout", "b" * 4096)], chunk_chars=1 << 20), 0)
    assert [(len(r[2]), r[4]) for r in out.records] == [(1024, True)]


def test_broken_lines_are_reported_with_offsets_and_good_lines_survive():
    good1 = orjson.dumps({"log": "one\n", "stream": "stdout", "time": TIME}) + b"\n"
    torn = b'{"log":"tw'  # a line torn by a crash, then the daemon went on writing
    good2 = orjson.dumps({"log": "three\x00nul\n", "stream": "stderr", "time": TIME}) + b"\n"
    empty = b"\n"
    array = b"[1,2]\n"
    nostream = orjson.dumps({"log": "x\n", "time": TIME}) + b"\n"
    good3 = orjson.dumps({"log": "\n", "stream": "stdout", "time": TIME}) + b"\n"
    data = good1 + torn + b"\n" + good2 + empty + array + nostream + good3
    out = JsonFileDecoder().decode(data, 100)
    assert [r[2] for r in out.records] == ["one", "three\x00nul", ""]
    offsets = [e[0] for e in out.errors]
    assert offsets == [100 + len(good1), 100 + len(good1) + len(torn) + 1 + len(good2),
                       100 + len(good1) + len(torn) + 1 + len(good2) + 1,
                       100 + len(good1) + len(torn) + 1 + len(good2) + 1 + len(array)]


def test_cri_invalid_utf8_is_replaced_and_tags_and_offsets_handled():
    data = (b"2026-11-28T06:14:51.1+02:00 stdout F caf\xc3 bad\n"
            b"garbage line\n"
            b"2026-11-28T04:14:52Z stderr P:extra one \n"
            b"2026-11-28T04:14:53Z stderr F two\r\n"
            b"2026-11-28T04:14:54Z stdout F\n")
    out = CriDecoder().decode(data, 0)
    assert [(r[0], r[1], r[2]) for r in out.records] == [
        ("2026-11-28T04:14:51.1Z", "stdout", "caf\ufffd bad"),
        ("2026-11-28T04:14:52Z", "stderr", "one two\r"),
        ("2026-11-28T04:14:54Z", "stdout", ""),
    ]
    assert out.errors == [(data.index(b"garbage"), "not a CRI log line")]


def test_to_utc_keeps_nanoseconds_and_converts_offsets():
    assert to_utc("2026-11-28T00:30:00.123456789-05:30") == "2026-11-28T06:00:00.123456789Z"
    assert to_utc("2026-11-28T00:30:00Z") == "2026-11-28T00:30:00Z"
    assert to_utc("2026-01-01T01:00:00+02:00") == "2025-12-31T23:00:00Z"


# --- json-file lines with bad bytes in a string: delivered with U+FFFD, as the CRI path does ------------------

RAW_FF = b'{"log":"caf\xff bad\\n","stream":"stdout","time":"2026-11-28T04:14:51.685761325Z"}'  # a raw 0xff byte
LONE_LOW = b'{"log":"lone \\udc80 low\\n","stream":"stderr","time":"2026-11-28T04:14:52Z"}'  # an escaped lone surrogate
LONE_HIGH = (b'{"log":"high \\ud800x, pair \\ud83d\\ude00, slash \\\\udc80 \\u00e9\\n","stream":"stdout",'
             b'"attrs":{"tag":"w\xc3"},"time":"2026-11-28T04:14:53Z"}')  # a pair and an escaped backslash stay


def test_json_file_bad_bytes_in_a_string_are_replaced_and_the_record_delivered():
    good = [orjson.dumps({"log": f"good {i}\n", "stream": "stdout", "time": TIME}) for i in range(4)]
    lines = [good[0], RAW_FF, good[1], LONE_LOW, good[2], LONE_HIGH, good[3]]
    data = b"".join(line + b"\n" for line in lines)
    out = JsonFileDecoder().decode(data, 1000)
    starts = [1000 + sum(len(line) + 1 for line in lines[:i]) for i in range(len(lines))]
    assert out.errors == []
    assert out.records == [
        (TIME, "stdout", "good 0", starts[0], False),
        ("2026-11-28T04:14:51.685761325Z", "stdout", "caf\ufffd bad", starts[1], False),
        (TIME, "stdout", "good 1", starts[2], False),
        ("2026-11-28T04:14:52Z", "stderr", "lone \ufffd low", starts[3], False),
        (TIME, "stdout", "good 2", starts[4], False),
        ("2026-11-28T04:14:53Z", "stdout", "high \ufffdx, pair \U0001f600, slash \\udc80 \u00e9", starts[5], False),
        (TIME, "stdout", "good 3", starts[6], False),
    ]


def test_a_damaged_partial_is_joined_and_a_damaged_line_that_is_no_json_stays_an_error():
    part = b'{"log":"first \\udc80 half","stream":"stdout","time":"2026-11-28T04:14:51Z"}\n'
    rest = b'{"log":" second \xff half\\n","stream":"stdout","time":"2026-11-28T04:14:52Z"}\n'
    torn = b'{"log":"torn \xff\n'
    out = JsonFileDecoder().decode(part + torn + rest, 0)
    assert [(r[2], r[3]) for r in out.records] == [("first \ufffd half second \ufffd half", 0)]
    assert len(out.errors) == 1 and out.errors[0][0] == len(part) and out.errors[0][1].startswith("invalid JSON")


def test_replaced_records_encode_as_ndjson_and_syslog():
    from agent.model import ContainerInfo, LogSource, Segment
    from exporters.logs.ndjson import NdjsonEncoder
    from exporters.syslog.format import SyslogEncoder, SyslogFormat

    data = b"".join(line + b"\n" for line in (RAW_FF, LONE_LOW, LONE_HIGH))
    records = JsonFileDecoder().decode(data, 0).records
    assert len(records) == 3 and not any(0xD800 <= ord(c) <= 0xDFFF for r in records for c in r[2])
    src = LogSource("/x-json.log", "8:1:ab", ContainerInfo(cgroup="", container_id="ab" * 32, name="web"), "node")
    payload = NdjsonEncoder().encode([Segment(src, records)])
    assert [orjson.loads(line)["message"] for line in payload.splitlines()] == [r[2] for r in records]
    frames = SyslogEncoder(SyslogFormat(framing="lf")).encode([Segment(src, records)]).decode("utf-8").splitlines()
    assert [f.endswith(r[2]) for f, r in zip(frames, records, strict=True)] == [True, True, True]


def test_a_damaged_first_line_still_gives_its_time_for_ordering():
    assert time_order_key(LONE_LOW, "json-file") == "2026-11-28T04:14:52.000000000"
    assert time_order_key(RAW_FF, "json-file") == "2026-11-28T04:14:51.685761325"
    assert time_order_key(b'{"time":"2026-11-28T04:14:52Z","log":"torn \xff', "json-file") == ""


def test_cri_offsets_of_every_record_around_partials_and_errors():
    lines = [b"2026-11-28T04:14:51Z stdout F one", b"2026-11-28T04:14:52Z stdout P par",
             b"2026-11-28T04:14:52Z stderr F err", b"bad", b"2026-11-28T04:14:53Z stdout P t",
             b"2026-11-28T04:14:53Z stdout F ial", b"2026-11-28T04:14:54Z stdout F after"]
    starts = [7 + sum(len(line) + 1 for line in lines[:i]) for i in range(len(lines))]
    decoder = CriDecoder()
    decoder.file = "f"
    first = decoder.decode(b"".join(line + b"\n" for line in lines[:2]), 7)
    assert [(r[2], r[3]) for r in first.records] == [("one", starts[0])]
    assert decoder.safe_offset(starts[2], "f") == starts[1]
    rest = decoder.decode(b"".join(line + b"\n" for line in lines[2:]), starts[2])
    assert [(r[1], r[2], r[3]) for r in rest.records] == [
        ("stderr", "err", starts[2]), ("stdout", "partial", starts[1]), ("stdout", "after", starts[6])]
    assert rest.errors == [(starts[3], "not a CRI log line")]
    assert decoder.safe_offset(starts[6] + len(lines[6]) + 1, "f") == starts[6] + len(lines[6]) + 1


def test_cri_times_too_short_for_an_offset_are_kept_not_fatal():
    out = CriDecoder().decode(b"abc stdout F x\n stderr F y\n", 0)
    assert [(r[0], r[2]) for r in out.records] == [("abc", "x"), ("", "y")]
    assert to_utc("+02:00") == "+02:00" and to_utc("2026-11-28T04:14:51+02:00") == "2026-11-28T02:14:51Z"

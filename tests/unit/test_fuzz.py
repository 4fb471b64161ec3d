"""Property tests at scale (issue #15, fuzzing): every property runs twice, a quick run in the default unit run and a
run of thousands of examples marked ``slow`` (``python -m pytest -m slow tests/unit/test_fuzz.py``).

- json-file and CRI decoders with the partial-line joiner: any messages, any split into partials, the two streams
  interleaved line by line, lines of random bytes between records, any ``max_line_bytes`` and any cut of the file
  into chunks: every good record comes out once, in order per stream, with its offset, cut on a character boundary
  exactly when it is too long, and every bad line is reported at its offset.
- RFC 5424 and RFC 3164 encoders: every message a strict parser written from the RFCs (tests/helpers/syslog_strict)
  accepts, and the message, the structured data and the header fields come back.
- NDJSON and Elasticsearch ``_bulk`` encoders: every line strict JSON (orjson) with every field back.
- Every cgroup and procfs parser: random bytes (and random lines built from the files' own words) give a value or
  the documented ``ValueError``, never another exception.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.model import RFC3339_UTC, ContainerInfo, LogRecord, LogSource, Runtime, Segment
from collectors.cgroups import parsers as p
from collectors.cgroups.mounts import parse_mountinfo
from collectors.diskstats import parse_diskstats
from collectors.docker import parse_time
from collectors.host import read_machine_info
from collectors.logs.decoders import CriDecoder, JsonFileDecoder
from collectors.topology import parse_cpu_list
from exporters.http.elasticsearch import ElasticsearchSink
from exporters.logs.ndjson import NdjsonEncoder
from exporters.syslog.format import SyslogEncoder, SyslogFormat
from tests.helpers.syslog_strict import octet_frames, parse_3164, parse_5424

QUICK, SLOW = 60, 2500
_SLOW_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))


def quick_and_slow(quick: int = QUICK, slow: int = SLOW, **strategies: Any
                   ) -> Callable[[Callable[..., None]], tuple[Callable[..., None], Callable[..., None]]]:
    """The property as two tests: ``quick`` examples in the default run, ``slow`` examples marked slow."""

    def wrap(check: Callable[..., None]) -> tuple[Callable[..., None], Callable[..., None]]:
        fast = settings(max_examples=quick, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
            given(**strategies)(check))
        big = pytest.mark.slow(settings(max_examples=slow, **_SLOW_SETTINGS)(given(**strategies)(check)))
        return fast, big

    return wrap


TIME = "2026-11-28T04:14:51.685761325Z"
STREAMS = ("stdout", "stderr")
line_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=200)


# --- decoders and the partial-line joiner -----------------------------------------------------------------------


def docker_parts(stream: str, message: str, chunk: int) -> list[bytes]:
    text = message + "\n"
    return [orjson.dumps({"log": text[i:i + chunk], "stream": stream, "time": TIME}) + b"\n"
            for i in range(0, len(text), chunk)]


def cri_parts(stream: str, message: str, chunk: int) -> list[bytes]:
    pieces = [message[i:i + chunk] for i in range(0, len(message), chunk)] or [""]
    return [f"{TIME} {stream} {'F' if i == len(pieces) - 1 else 'P'} {piece}\n".encode()
            for i, piece in enumerate(pieces)]


def is_good_line(fmt: str, line: bytes) -> bool:
    """Could a decoder take this garbage line for a record? (Then it is not garbage.)"""
    if fmt == "cri":
        fields = line.split(b" ", 3)
        return len(fields) >= 3 and fields[1] in (b"stdout", b"stderr") and fields[2] in (b"F", b"P")
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def expected_cut(message: str, limit: int) -> tuple[str, bool]:
    data = message.encode()
    if len(data) <= limit:
        return message, False
    return data[:limit].decode("utf-8", "ignore"), True


@quick_and_slow(fmt=st.sampled_from(["json-file", "cri"]),
                entries=st.lists(st.tuples(st.sampled_from(STREAMS), line_text), min_size=1, max_size=25),
                chunk=st.integers(1, 48), limit=st.one_of(st.just(1 << 20), st.integers(1, 300)),
                data=st.data())
def check_decoder(fmt: str, entries: list[tuple[str, str]], chunk: int, limit: int, data: st.DataObject) -> None:
    parts = docker_parts if fmt == "json-file" else cri_parts
    queues: dict[str, list[list[bytes]]] = {stream: [parts(t, m, chunk) for t, m in entries if t == stream]
                                            for stream in STREAMS}
    wanted: dict[str, list[tuple[str, bool, int]]] = {s: [] for s in STREAMS}
    messages = {s: [m for t, m in entries if t == s] for s in STREAMS}
    lines: list[bytes] = []
    garbage_at: list[int] = []
    offset = 0
    pending = {s: False for s in STREAMS}  # a record of the stream begun and not ended
    while any(queues.values()):
        if not any(pending.values()) and data.draw(st.integers(0, 5), label="garbage?") == 0:
            junk = data.draw(st.binary(max_size=60).filter(lambda b: b"\n" not in b), label="garbage")
            if not is_good_line(fmt, junk):
                lines.append(junk + b"\n")
                garbage_at.append(offset)
                offset += len(junk) + 1
        stream = data.draw(st.sampled_from([s for s in STREAMS if queues[s]]), label="stream")
        record = queues[stream][0]
        if not pending[stream]:
            message = messages[stream].pop(0)
            wanted[stream].append((*expected_cut(message, limit), offset))
        line = record.pop(0)
        pending[stream] = bool(record)
        if not record:
            queues[stream].pop(0)
        lines.append(line)
        offset += len(line)
    decoder = JsonFileDecoder(limit) if fmt == "json-file" else CriDecoder(limit)
    decoder.file = "f"
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(lines)), max_size=6), label="cuts")) | {len(lines)})
    got: dict[str, list[tuple[str, bool, int]]] = {s: [] for s in STREAMS}
    errors: list[int] = []
    pos, base = 0, 0
    for cut in cuts:
        chunk_bytes = b"".join(lines[pos:cut])
        pos = cut
        if not chunk_bytes:
            continue
        out = decoder.decode(chunk_bytes, base)
        base += len(chunk_bytes)
        for time, stream, message, rec_offset, truncated in out.records:
            assert time == TIME
            got[stream].append((message, truncated, rec_offset))
        errors += [at for at, _why in out.errors]
        assert decoder.safe_offset(base, "f") <= base
    assert got == wanted
    assert errors == garbage_at, "every bad line reported, at its offset, and nothing else"
    assert decoder.safe_offset(base, "f") == base, "nothing is left held"


test_decoders_and_joiner, test_decoders_and_joiner_at_scale = check_decoder


# --- sources and records for the encoders --------------------------------------------------------------------------

any_text = st.text(max_size=80)
valid_times = st.builds(lambda y, mo, d, h, mi, s, frac: f"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z",
                        st.integers(1970, 2200), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
                        st.integers(0, 59), st.integers(0, 59),
                        st.sampled_from(["", ".1", ".123456", ".685761325", ".000000001"]))
times = st.one_of(valid_times, st.just(TIME), any_text)


@st.composite
def sources(draw: st.DrawFn) -> LogSource:
    pod = draw(st.one_of(st.just(""), any_text))
    info = ContainerInfo(cgroup="", container_id=draw(st.one_of(st.text("0123456789abcdef", min_size=64,
                                                                        max_size=64), any_text)),
                         name=draw(any_text), image=draw(any_text),
                         labels=draw(st.dictionaries(any_text, any_text, max_size=4)),
                         pod=pod, namespace=draw(any_text) if pod else "", container=draw(any_text) if pod else "")
    return LogSource(draw(any_text), draw(any_text), info, draw(any_text))


@st.composite
def record_lists(draw: st.DrawFn, valid_time: bool = False) -> list[LogRecord]:
    n = draw(st.integers(1, 8))
    offsets = sorted(draw(st.sets(st.integers(0, 1 << 40), min_size=n, max_size=n)))
    return [(draw(valid_times if valid_time else times), draw(st.sampled_from(STREAMS)), draw(st.text(max_size=300)),
             offset, draw(st.booleans())) for offset in offsets]


# --- RFC 5424 / RFC 3164 --------------------------------------------------------------------------------------------


@quick_and_slow(slow=2000, src=sources(), records=record_lists(), rfc=st.sampled_from(["rfc5424", "rfc3164"]),
                framing=st.sampled_from(["octet", "lf", "none"]), facility=st.integers(0, 23),
                hostname=st.one_of(st.just(""), any_text), limit=st.one_of(st.just(65536), st.integers(480, 4096)),
                tag=st.sampled_from(["{container_name}", "{image}", "app-{stream}", "{label:team}", "{pod}"]))
def check_syslog(src: LogSource, records: list[LogRecord], rfc: str, framing: str, facility: int, hostname: str,
                 limit: int, tag: str) -> None:
    encoder = SyslogEncoder(SyslogFormat(rfc=rfc, framing=framing, facility=facility, hostname=hostname, tag=tag,
                                         max_message_bytes=limit))
    seg = Segment(src, records)
    if framing == "none":
        frames = encoder.messages([seg])
    else:
        wire = encoder.encode([seg])
        if framing == "octet":
            frames = octet_frames(wire)
        else:
            assert wire.endswith(b"\n")
            frames = wire[:-1].split(b"\n")
    assert len(frames) == len(records)
    for (time, stream, message, _offset, cut), frame in zip(records, frames, strict=True):
        assert len(frame) <= limit
        sent = message.replace("\n", " ") if framing == "lf" else message
        pri = facility * 8 + (6 if stream == "stdout" else 3)
        if rfc == "rfc5424":
            m = parse_5424(frame)
            assert m.pri == pri
            if RFC3339_UTC.match(time):
                assert m.timestamp[:19] == time[:19] and m.timestamp.endswith("Z")
            assert (m.procid, m.msgid) == ("-", "-")
            params = m.sd["lookout@32473"]
            if "container_id" not in params:
                # The container's metadata alone is over the maximum: only the mark is left, and the message cut.
                prefix, suffix = encoder._head(src, stream)
                assert params == {"truncated": "true"} and len(prefix) + 27 + len(suffix) > limit - 20
                assert sent.startswith(m.msg)
                continue

            def sd(value: str) -> str:
                return value.replace("\n", " ") if framing == "lf" else value

            assert params["container_id"] == sd(src.container.container_id)
            assert params["container_name"] == sd(src.container.name) and params["image"] == sd(src.container.image)
            assert params["stream"] == stream
            if src.container.pod:
                assert (params["pod"], params["namespace"], params["container"]) == (
                    sd(src.container.pod), sd(src.container.namespace), sd(src.container.container))
            truncated = params.get("truncated") == "true"
            assert truncated or not cut, "a record cut upstream is marked"
            if truncated:
                assert sent.startswith(m.msg)
            else:
                assert m.msg == sent
        else:
            m3 = parse_3164(frame)
            assert m3.pri == pri
            if m3.msg.endswith("...") and m3.msg != sent:
                assert sent.startswith(m3.msg[:-3]), "cut on a character boundary, marked"
            else:
                assert m3.msg == sent and not cut


test_syslog_strict_parsers_accept_everything, test_syslog_strict_parsers_accept_everything_at_scale = check_syslog


# --- NDJSON and _bulk ---------------------------------------------------------------------------------------------


def check_ndjson(src: LogSource, records: list[LogRecord]) -> None:
    out = NdjsonEncoder().encode([Segment(src, records)])
    assert out.endswith(b"\n")
    lines = out[:-1].split(b"\n")
    assert len(lines) == len(records)
    info = src.container
    for (time, stream, message, offset, cut), line in zip(records, lines, strict=True):
        doc = orjson.loads(line)
        assert (doc["time"], doc["stream"], doc["message"], doc["offset"]) == (time, stream, message, offset)
        assert doc.get("truncated", False) is cut
        assert (doc["container_id"], doc["container_name"], doc["image"], doc["labels"]) == (
            info.container_id, info.name, info.image, info.labels)
        assert (doc["host"], doc["file"]) == (src.host, src.path)
        assert ("pod" in doc) is bool(info.pod)


_STATE = Path(tempfile.mkdtemp(prefix="lookout-fuzz-"))
_SINK = ElasticsearchSink("elasticsearch+http://127.0.0.1:9/logs-%Y.%m.%d", "http", _STATE, "fuzz")


def check_bulk(src: LogSource, records: list[LogRecord], op: str) -> None:
    _SINK.op = op
    payload = _SINK.encode([Segment(src, records)])
    assert isinstance(payload.data, list) and len(payload.data) == len(records)
    ids = set()
    for (time, stream, message, offset, _cut), item in zip(records, payload.data, strict=True):
        assert item.endswith(b"\n") and item.count(b"\n") == 2, "an action line and a document line"
        action_line, doc_line = item[:-1].split(b"\n")
        action, doc = orjson.loads(action_line), orjson.loads(doc_line)
        meta = action[op]
        ids.add(meta["_id"])
        assert meta["_index"].startswith("logs-") and RFC3339_UTC.match(doc["@timestamp"])
        if RFC3339_UTC.match(time):
            assert doc["@timestamp"] == time and meta["_index"] == f"logs-{time[:4]}.{time[5:7]}.{time[8:10]}"
        assert (doc["message"], doc["stream"]) == (message, stream)
        assert doc["log"] == {"file": {"path": src.path}, "offset": offset}
        container = doc["container"]
        assert (container["id"], container["name"], container["image"]["name"]) == (
            src.container.container_id, src.container.name, src.container.image)
        assert not any("." in key for key in container["labels"])
        assert doc["host"]["name"] == src.host
    assert len(ids) == len(records), "one _id per (file, offset)"
    again = _SINK.encode([Segment(src, records)])
    assert [i.split(b"\n")[0] for i in again.data] == [i.split(b"\n")[0] for i in payload.data], "deterministic"



@quick_and_slow(slow=2000, src=sources(), records=record_lists(), op=st.sampled_from(["create", "index"]))
def check_json_encoders(src: LogSource, records: list[LogRecord], op: str) -> None:
    """NDJSON and _bulk on the same inputs (drawing them is most of the cost)."""
    check_ndjson(src, records)
    check_bulk(src, records, op)


test_ndjson_and_bulk_are_strict_json, test_ndjson_and_bulk_are_strict_json_at_scale = check_json_encoders


# --- cgroup and procfs parsers ---------------------------------------------------------------------------------------

WORDS = [b"max", b"0", b"1", b"-1", b"18446744073709551615", b"99999999999999999999999", b"8:0", b"253:1", b"rbytes=1",
         b"wbytes=", b"rios=x", b"some", b"full", b"avg10=0.00", b"total=12", b"total=", b"N0=1", b"N1=", b"total",
         b"Read", b"Write", b"Total", b"TcpExt:", b"Tcp:", b"Udp:", b"Max open files", b"unlimited", b"files",
         b"lo:", b"eth0:", b"veth1:", b"0A", b"01", b"00000000:0050", b"anon", b"file", b"Referenced:", b"kB",
         b"1e999", b"nan", b"", b"-", b"0-3", b"2-1", b"0-4294967296", b"cgroup2", b"cgroup", b"\\040", b"\\xff"]
lines_of_words = st.lists(st.lists(st.sampled_from(WORDS), max_size=16).map(b" ".join), max_size=12).map(
    lambda ls: b"\n".join(ls) + b"\n")
random_input = st.one_of(st.binary(max_size=600), lines_of_words)

PARSERS: dict[str, Callable[[bytes], object]] = {
    "parse_int": p.parse_int, "parse_flat": p.parse_flat, "parse_percpu": p.parse_percpu,
    "parse_cpu_max": p.parse_cpu_max, "parse_blkio": p.parse_blkio, "parse_io_stat": p.parse_io_stat,
    "parse_psi": p.parse_psi, "parse_net_dev": p.parse_net_dev, "parse_pids": p.parse_pids,
    "parse_nofile_soft": p.parse_nofile_soft, "parse_numa_stat_v1": p.parse_numa_stat_v1,
    "parse_numa_stat_v2": lambda b: p.parse_numa_stat_v2(b, 4096), "parse_tcp": p.parse_tcp,
    "parse_udp": p.parse_udp, "parse_mib": lambda b: p.parse_mib(b, {}), "parse_schedstat": p.parse_schedstat,
    "parse_referenced_kb": p.parse_referenced_kb, "parse_diskstats": parse_diskstats,
    "parse_mountinfo": lambda b: parse_mountinfo(b.decode("utf-8", "surrogateescape")),
    "parse_cpu_list": lambda b: parse_cpu_list(b.decode("latin-1")),
    "hugepage_size_name": lambda b: p.hugepage_size_name(b.decode("latin-1")),
    "parse_time": lambda b: parse_time(b.decode("latin-1")),
}


@quick_and_slow(quick=40, slow=3000, name=st.sampled_from(sorted(PARSERS)), data=random_input)
def check_parser(name: str, data: bytes) -> None:
    with contextlib.suppress(ValueError):  # the documented parse error (UnicodeDecodeError is one)
        PARSERS[name](data)


test_parsers_raise_only_value_error, test_parsers_raise_only_value_error_at_scale = check_parser

def test_found_by_the_fuzzer_parse_mib_with_a_names_line_and_an_empty_values_line() -> None:
    into: dict[str, int] = {}
    p.parse_mib(b"TcpExt:\n\nTcp: RtoMin\nTcp: 200\n", into)  # was IndexError
    assert into == {"rtomin": 200}


HOST_FILES = ("proc/cpuinfo", "proc/meminfo", "etc/os-release", "proc/sys/kernel/osrelease", "etc/machine-id",
              "proc/sys/kernel/random/boot_id", "sys/class/dmi/id/product_uuid")
host_words = st.lists(st.sampled_from([b"processor", b"physical id", b"core id", b"MemTotal", b"SwapTotal",
                                       b"PRETTY_NAME=", b":", b" ", b"\xff", b"12", b"kB", b'"x"', b"\n"]),
                      max_size=40).map(b"".join)


@quick_and_slow(quick=20, slow=400, contents=st.fixed_dictionaries({f: st.one_of(st.binary(max_size=200), host_words)
                                                                    for f in HOST_FILES}))
def check_machine_info(contents: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as root:
        for name, body in contents.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(body)
        info = read_machine_info(Path(root))  # a damaged file gives a partial answer, never an exception
        assert info.cpu_cores >= 1 and info.memory_bytes >= 0


test_machine_info_survives_any_proc_files, test_machine_info_survives_any_proc_files_at_scale = check_machine_info


def test_syslog_header_over_the_maximum_keeps_the_limit() -> None:
    """Found by the slow run: a pod's metadata (long names in 4-byte characters) larger than UDP's 480 bytes made an
    RFC 5424 message of 498. The metadata's parameters go, ``truncated="true"`` stays, the message is cut."""
    info = ContainerInfo(cgroup="", runtime=Runtime.RAW, container_id="0" * 64, pod="p" * 8 + "\U00010000" * 60,
                         namespace="\xf7\x9e\x83\xd2\x8a\xee\x86\U000ca2c7",
                         container="\xa1\x00\U000daa91\xde\\S\xb8\U0007af8c\xdb\xb8\xc9")
    src = LogSource("", "", info)
    for framing in ("octet", "lf", "none"):
        encoder = SyslogEncoder(SyslogFormat(rfc="rfc5424", framing=framing, hostname="h" * 8 + "\U00010000" * 40,
                                             tag="{pod}", max_message_bytes=480))
        records: list[LogRecord] = [("1970-01-01T00:00:00Z", "stdout", "", 0, False),
                                    ("1970-01-01T00:00:00Z", "stderr", "x" * 600, 1, False)]
        seg = Segment(src, records)
        frames = encoder.messages([seg]) if framing == "none" else (
            octet_frames(encoder.encode([seg])) if framing == "octet" else encoder.encode([seg])[:-1].split(b"\n"))
        assert len(frames) == 2
        for frame in frames:
            assert len(frame) <= 480, len(frame)
            assert parse_5424(frame).sd["lookout@32473"] == {"truncated": "true"}

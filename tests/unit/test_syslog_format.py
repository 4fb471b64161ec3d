"""The syslog encoder, without a network: golden RFC 5424 and RFC 3164 lines, SD escaping, header
sanitising, truncation at UTF-8 boundaries, octet and LF framing, timestamps, PRI; and a property test
that any message text round-trips through a strict RFC 5424 parser written here, SD intact."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model import ContainerInfo, LogRecord, LogSource, Segment
from exporters.syslog.format import (
    FACILITIES,
    SyslogEncoder,
    SyslogFormat,
    cut_utf8,
    printusascii,
    sd_escape,
    timestamp_3164,
    timestamp_5424,
)
from exporters.syslog.sink import SyslogConfigError, SyslogSink, parse_options

CID = "3f2a9c0d" * 8


def source(name: str = "web-1", image: str = "nginx:1.27", pid: int = 4242, host: str = "node-7",
           labels: dict[str, str] | None = None, pod: str = "", namespace: str = "", container: str = "") -> LogSource:
    info = ContainerInfo(cgroup="", container_id=CID, name=name, image=image, labels=labels or {}, pid=pid,
                         pod=pod, namespace=namespace, container=container)
    return LogSource("/var/lib/docker/containers/x/x-json.log", "8:1:ab", info, host)


def encode(records: list[LogRecord], src: LogSource | None = None, **fmt: object) -> bytes:
    return SyslogEncoder(SyslogFormat(**fmt)).encode([Segment(src or source(), records)])  # type: ignore[arg-type]


REC: LogRecord = ("2026-11-28T04:05:06.123456789Z", "stdout", "GET /health 200", 0, False)
SD = f'[lookout@32473 container_id="{CID}" container_name="web-1" image="nginx:1.27" stream="stdout"]'


# --- golden lines ---------------------------------------------------------------------------------------


def test_golden_rfc5424_octet_counted() -> None:
    msg = f"<14>1 2026-11-28T04:05:06.123456Z node-7 web-1 - - {SD} GET /health 200".encode()
    assert encode([REC]) == b"%d " % len(msg) + msg


def test_golden_rfc5424_stderr_lf_framed_with_kubernetes_fields() -> None:
    src = source(pod="shop-7f9c", namespace="prod", container="web")
    rec: LogRecord = ("2026-11-28T04:05:06Z", "stderr", "boom", 10, False)
    sd = (f'[lookout@32473 container_id="{CID}" container_name="web-1" image="nginx:1.27" stream="stderr" '
          'pod="shop-7f9c" namespace="prod" container="web"]')
    assert encode([rec], src, framing="lf", facility=16) == \
        f"<131>1 2026-11-28T04:05:06.000000Z node-7 web-1 - - {sd} boom\n".encode()


def test_golden_rfc3164() -> None:
    assert encode([REC], rfc="rfc3164", framing="lf") == b"<14>Nov 28 04:05:06 node-7 web-1[4242]: GET /health 200\n"
    early: LogRecord = ("2026-01-02T03:04:05.9Z", "stderr", "x", 0, False)
    assert encode([early], source(pid=0), rfc="rfc3164", framing="none", facility=3) == \
        b"<27>Jan  2 03:04:05 node-7 web-1: x"  # space-padded day, no [PID] when unknown


def test_hostname_and_tag_template_parameters() -> None:
    src = source(labels={"app": "shop"})
    out = SyslogSink("syslog+udp", "127.0.0.1", 9, {"hostname": "edge 01", "tag": "{label:app}.{stream}"})
    (msg,) = out.encode([Segment(src, [REC])]).data
    assert msg.startswith(b"<14>1 2026-11-28T04:05:06.123456Z edge_01 shop.stdout - - [lookout@32473 ")


@pytest.mark.parametrize("facility", sorted(FACILITIES))
def test_pri_is_facility_times_8_plus_severity_from_the_stream(facility: str) -> None:
    fmt, _ = parse_options("syslog+tcp", {"facility": facility, "framing": "lf"})
    enc = SyslogEncoder(fmt)
    out = enc.encode([Segment(source(), [REC, ("2026-11-28T04:05:06Z", "stderr", "e", 1, False)])])
    code = FACILITIES[facility]
    assert [line.split(b">")[0] for line in out.splitlines()] == [b"<%d" % (code * 8 + 6), b"<%d" % (code * 8 + 3)]


def test_bad_route_options_are_refused() -> None:
    for params in ({"format": "rfc9999"}, {"framing": "nul"}, {"facility": "nope"}, {"max_message_bytes": "100"},
                   {"max_message_bytes": "x"}, {"verify": "maybe"}):
        with pytest.raises(SyslogConfigError):
            parse_options("syslog+tls", params)
    assert parse_options("syslog+udp", {})[0].max_message_bytes == 2048
    assert parse_options("syslog+tcp", {})[0].max_message_bytes == 65536
    assert parse_options("syslog+udp", {"framing": "lf"})[0].framing == "none"  # one message per datagram


# --- header fields and SD ---------------------------------------------------------------------------------


def test_sd_param_values_escape_quote_backslash_and_bracket() -> None:
    assert sd_escape('a"b\\c]d[e') == 'a\\"b\\\\c\\]d[e'
    out = encode([REC], source(image='img"x\\y]z'), framing="lf")
    assert b'image="img\\"x\\\\y\\]z"' in out


def test_app_name_is_printable_ascii_and_at_most_48_characters() -> None:
    assert printusascii("web 1\tünï", 48) == "web_1__n_"
    assert printusascii("", 48) == "-"
    long_name = "a" * 60
    out = encode([REC], source(name=long_name), framing="lf")
    assert out.split(b" ")[3] == b"a" * 48
    bsd = encode([REC], source(name="my app/ü" + "b" * 40), rfc="rfc3164", framing="lf")
    assert bsd.split(b" ")[4] == ("my_app/_" + "b" * 24 + "[4242]:").encode()  # TAG: 32 characters


@pytest.mark.parametrize(("given_time", "expected"), [
    ("2026-11-28T04:05:06.123456789Z", "2026-11-28T04:05:06.123456Z"),  # ns cut to µs, never rounded up
    ("2026-11-28T04:05:06.999999999Z", "2026-11-28T04:05:06.999999Z"),
    ("2026-11-28T04:05:06.5Z", "2026-11-28T04:05:06.500000Z"),
    ("2026-11-28T04:05:06Z", "2026-11-28T04:05:06.000000Z"),  # second precision
])
def test_timestamps_have_microseconds_in_utc(given_time: str, expected: str) -> None:
    assert timestamp_5424(given_time) == expected


def test_rfc3164_timestamp() -> None:
    assert timestamp_3164("2026-11-28T04:05:06.123Z") == "Nov 28 04:05:06"
    assert timestamp_3164("2026-03-07T23:59:59Z") == "Mar  7 23:59:59"


# --- truncation and framing -------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["a", "é", "✓", "\U0001f600"])
def test_cut_utf8_never_splits_a_character(char: str) -> None:
    data = (char * 50).encode()
    width = len(char.encode())
    for limit in range(len(data) + 2):
        cut = cut_utf8(data, limit)
        assert len(cut) <= limit and len(cut) == min(limit, len(data)) // width * width
        cut.decode("utf-8")  # strict: a partial sequence would raise


@pytest.mark.parametrize("rfc", ["rfc5424", "rfc3164"])
def test_long_messages_are_cut_marked_and_counted(rfc: str) -> None:
    sink = SyslogSink("syslog+udp", "127.0.0.1", 9, {"max_message_bytes": "600", "format": rfc})
    text = "é" * 200 + "✓" * 200  # 1000 bytes
    payload = sink.encode([Segment(source(), [(*REC[:2], text, 0, False), (*REC[:2], "short", 9, False)])])
    long_msg, short = payload.data
    assert payload.truncated == 1 and payload.count == 2
    assert len(long_msg) <= 600 and len(long_msg) >= 597
    decoded = long_msg.decode("utf-8")  # whole characters only
    if rfc == "rfc5424":
        assert ' stream="stdout" truncated="true"] ' in decoded
        body = decoded.split('truncated="true"] ', 1)[1]
    else:
        assert decoded.endswith("...")
        body = decoded.split("[4242]: ", 1)[1][:-3]
    assert text.startswith(body) and len(body) > 100
    assert short.endswith(b" short") and b"truncated" not in short


def test_records_cut_upstream_are_marked_too() -> None:
    out = encode([(*REC[:4], True)], framing="lf")
    assert b'stream="stdout" truncated="true"] GET /health 200\n' in out


def test_rfc3164_records_cut_upstream_are_marked_even_when_they_fit() -> None:
    out = encode([(*REC[:4], True)], rfc="rfc3164", framing="lf")
    assert out == b"<14>Nov 28 04:05:06 node-7 web-1[4242]: GET /health 200...\n"


def test_lf_framing_keeps_a_newline_in_metadata_from_ending_the_frame() -> None:
    out = encode([REC], source(pod="a\nb", namespace="ns", container="c"), framing="lf")
    assert out.count(b"\n") == 1 and b'pod="a b"' in out


def parse_octet_frames(payload: bytes) -> list[bytes]:
    """RFC 6587 §3.4.1: ``MSG-LEN SP SYSLOG-MSG``, MSG-LEN counting octets."""
    out, pos = [], 0
    while pos < len(payload):
        space = payload.index(b" ", pos)
        length = payload[pos:space]
        assert re.fullmatch(rb"[1-9][0-9]*", length), length
        end = space + 1 + int(length)
        assert end <= len(payload), "frame longer than the payload"
        out.append(payload[space + 1 : end])
        pos = end
    return out


def test_octet_framing_counts_bytes_not_characters() -> None:
    texts = ["ünïcödé ✓ 日本語 \U0001f600", "a\nb\n<13>1 - forged", ""]
    payload = encode([(*REC[:2], t, i, False) for i, t in enumerate(texts)])
    frames = parse_octet_frames(payload)
    assert [f.rsplit(b"] ", 1)[1].decode() for f in frames] == texts


def test_lf_framing_replaces_embedded_newlines() -> None:
    texts = ["one\ntwo", "\n<13>1 2026-01-01T00:00:00Z forged app - - - injected\n", "plain"]
    payload = encode([(*REC[:2], t, i, False) for i, t in enumerate(texts)], framing="lf")
    lines = payload.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert [line.rsplit(b"] ", 1)[1].decode() for line in lines[:-1]] == [t.replace("\n", " ") for t in texts]


# --- a strict RFC 5424 parser and the property --------------------------------------------------------------


@dataclass
class Parsed:
    pri: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: str


_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) "
                     rb"([\x21-\x7e]{1,32}) ")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_SD_NAME = re.compile(rb'[\x21-\x7e]{1,32}')


def parse_5424(message: bytes) -> Parsed:
    m = _HEADER.match(message)
    assert m, f"bad header: {message[:120]!r}"
    pri = int(m.group(1))
    assert 0 <= pri <= 191
    timestamp = m.group(2).decode()
    assert _TIMESTAMP.fullmatch(timestamp), timestamp
    pos = m.end()
    sd: dict[str, dict[str, str]] = {}
    if message[pos : pos + 1] == b"-":
        pos += 1
    else:
        while message[pos : pos + 1] == b"[":
            pos += 1
            name_end = min(i for i in (message.find(b" ", pos), message.find(b"]", pos)) if i >= 0)
            sd_id = message[pos:name_end]
            assert _SD_NAME.fullmatch(sd_id) and not set(sd_id.decode()) & set('= ]"'), sd_id
            params: dict[str, str] = {}
            pos = name_end
            while message[pos : pos + 1] == b" ":
                eq = message.index(b"=", pos)
                name = message[pos + 1 : eq]
                assert _SD_NAME.fullmatch(name) and not set(name.decode()) & set('= ]"'), name
                assert message[eq + 1 : eq + 2] == b'"'
                value = bytearray()
                pos = eq + 2
                while True:
                    c = message[pos : pos + 1]
                    assert c, "unterminated PARAM-VALUE"
                    if c == b"\\" and message[pos + 1 : pos + 2] in (b'"', b"\\", b"]"):
                        value += message[pos + 1 : pos + 2]
                        pos += 2
                    elif c == b'"':
                        pos += 1
                        break
                    else:
                        assert c != b"]", "unescaped ] in PARAM-VALUE"
                        value += c
                        pos += 1
                params[name.decode()] = value.decode("utf-8")
            assert message[pos : pos + 1] == b"]", message[pos : pos + 20]
            pos += 1
            sd[sd_id.decode()] = params
    rest = message[pos:]
    assert rest == b"" or rest.startswith(b" ")
    return Parsed(pri, timestamp, m.group(3).decode(), m.group(4).decode(), m.group(5).decode(),
                  m.group(6).decode(), sd, rest[1:].decode("utf-8"))


def test_parser_rejects_unescaped_brackets_and_bad_headers() -> None:
    with pytest.raises(AssertionError):
        parse_5424(b'<14>1 2026-11-28T04:05:06Z h a - - [x@1 k="v]"] m')
    with pytest.raises(AssertionError):
        parse_5424(b"<14>1 2026-11-28T04:05:06.1234567Z h a - - - m")  # seven fraction digits
    assert parse_5424(b'<14>1 2026-11-28T04:05:06Z h a - - [x@1 k="v\\]\\"\\\\"] m').sd == {"x@1": {"k": 'v]"\\'}}


any_text = st.text(max_size=300)  # every code point but surrogates: ] " \ newlines NUL non-ASCII ...


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(any_text, min_size=1, max_size=5), name=st.text(max_size=60), image=any_text,
       pod=any_text, stream=st.sampled_from(["stdout", "stderr"]))
def test_any_text_round_trips_through_an_rfc5424_parser(messages: list[str], name: str, image: str, pod: str,
                                                          stream: str) -> None:
    src = source(name=name, image=image, pod=pod, namespace="ns]" if pod else "", container='c"' if pod else "")
    records = [("2026-11-28T04:05:06.123456789Z", stream, m, i, False) for i, m in enumerate(messages)]
    frames = parse_octet_frames(encode(records, src, max_message_bytes=1 << 20))
    assert len(frames) == len(messages)
    for text, frame in zip(messages, frames, strict=True):
        p = parse_5424(frame)
        assert p.msg == text
        assert (p.pri, p.timestamp, p.hostname, p.procid, p.msgid) == (
            14 if stream == "stdout" else 11, "2026-11-28T04:05:06.123456Z", "node-7", "-", "-")
        assert p.app == printusascii(name, 48)
        expected = {"container_id": CID, "container_name": name, "image": image, "stream": stream}
        if pod:
            expected |= {"pod": pod, "namespace": "ns]", "container": 'c"'}
        assert p.sd == {"lookout@32473": expected}


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(any_text, min_size=1, max_size=5))
def test_lf_framing_never_yields_more_records_than_it_was_given(messages: list[str]) -> None:
    records = [("2026-11-28T04:05:06Z", "stdout", m, i, False) for i, m in enumerate(messages)]
    lines = encode(records, framing="lf", max_message_bytes=1 << 20).split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(messages)
    assert [parse_5424(line).msg for line in lines[:-1]] == [m.replace("\n", " ") for m in messages]


@settings(max_examples=200, deadline=None)
@given(text=any_text.map(lambda t: t * 8), limit=st.integers(480, 2048), rfc=st.sampled_from(["rfc5424", "rfc3164"]))
def test_truncation_stays_within_the_limit_on_a_character_boundary(text: str, limit: int, rfc: str) -> None:
    enc = SyslogEncoder(SyslogFormat(rfc=rfc, framing="none", max_message_bytes=limit))
    (msg,) = enc.messages([Segment(source(), [("2026-11-28T04:05:06Z", "stdout", text, 0, False)])])
    assert len(msg) <= limit
    decoded = msg.decode("utf-8")
    if rfc == "rfc5424":
        parsed = parse_5424(msg)
        assert text.startswith(parsed.msg)
        assert (parsed.sd["lookout@32473"].get("truncated") == "true") == (enc.last_truncated == 1)
        assert enc.last_truncated == (parsed.msg != text)
    else:
        body = decoded.split("[4242]: ", 1)[1]
        assert body == text or (body.endswith("...") and text.startswith(body[:-3]) and enc.last_truncated == 1)


# --- damaged times ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_time", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-28 04:05:06Z",
                                      "2026-11-28T04:05:06+02:00", "2026-11-28T04:05:06.Z", "٢٠٢٦-11-28T04:05:06Z"])
@pytest.mark.parametrize("rfc", ["rfc5424", "rfc3164"])
def test_a_record_with_a_damaged_time_is_still_sent_with_a_valid_timestamp(bad_time: str, rfc: str) -> None:
    """A json-file line whose ``time`` is not RFC 3339 UTC (a damaged file) must neither stop the route's
    encoder nor make an unparsable message: RFC 5424 sends the NILVALUE, RFC 3164 the relay's own time."""
    good: LogRecord = ("2026-11-28T04:05:06.5Z", "stdout", "before", 0, False)
    bad: LogRecord = (bad_time, "stdout", "damaged", 40, False)
    after: LogRecord = ("2026-11-28T04:05:07Z", "stderr", "after", 80, False)
    lines = encode([good, bad, after], rfc=rfc, framing="lf").splitlines()
    assert [line.rsplit(b" ", 1)[1] for line in lines] == [b"before", b"damaged", b"after"]
    if rfc == "rfc5424":
        assert lines[1].split(b" ")[:3] == [b"<14>1", b"-", b"node-7"]
        assert lines[0].split(b" ")[1] == b"2026-11-28T04:05:06.500000Z"
    else:
        now = time.gmtime()
        stamp = lines[1].split(b">", 1)[1][:15].decode()
        assert re.fullmatch(r"[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d", stamp)
        assert stamp[:6] == time.strftime("%b ", now) + f"{now.tm_mday:2d}"
        assert lines[2].split(b">", 1)[1][:15] == b"Nov 28 04:05:07"

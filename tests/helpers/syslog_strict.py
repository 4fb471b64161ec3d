"""Strict syslog parsers written from the RFCs alone (no code of exporters/syslog), for the fuzz tests.

``parse_5424`` follows the ABNF of RFC 5424 section 6 character by character: PRI (0-191, no leading zero),
VERSION 1, TIMESTAMP (RFC 3339 as section 6.2.3 restricts it: at most six fraction digits, a real calendar date and
time of day) or NILVALUE, HOSTNAME / APP-NAME / PROCID / MSGID as 1*255 / 1*48 / 1*128 / 1*32 PRINTUSASCII or
NILVALUE, STRUCTURED-DATA (SD-NAMEs of 1*32 PRINTUSASCII without ``= ] "`` and space; PARAM-VALUEs UTF-8 with only
``"``, ``\\`` and ``]`` escaped, an unescaped ``"`` or ``]`` refused), then MSG (``BOM`` + UTF-8, or any octets,
here required to be UTF-8 too). ``parse_3164`` follows RFC 3164 section 4.1: ``<PRI>Mmm dd hh:mm:ss HOSTNAME
TAG[PID]: MSG`` with a TAG of 1 to 32 characters. ``octet_frames`` splits RFC 6587 octet counting. Every violation
raises ``SyslogSyntaxError`` saying where.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field


class SyslogSyntaxError(ValueError):
    pass


PRINTUSASCII = frozenset(range(33, 127))
SD_NAME_EXCLUDED = frozenset(b'= ]"')
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
BOM = b"\xef\xbb\xbf"


@dataclass
class Message5424:
    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]] = field(default_factory=dict)
    msg: str = ""


@dataclass
class Message3164:
    pri: int
    timestamp: str
    hostname: str
    tag: str
    pid: int | None
    msg: str


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> SyslogSyntaxError:
        return SyslogSyntaxError(f"{what} at byte {self.pos}: {self.data[max(0, self.pos - 20):self.pos + 20]!r}")

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos:self.pos + n]

    def expect(self, literal: bytes, what: str) -> None:
        if self.peek(len(literal)) != literal:
            raise self.fail(f"expected {what} {literal!r}")
        self.pos += len(literal)

    def digits(self, n: int, what: str) -> int:
        chunk = self.peek(n)
        if len(chunk) != n or not all(48 <= c <= 57 for c in chunk):
            raise self.fail(f"expected {n} digits of {what}")
        self.pos += n
        return int(chunk)

    def token(self, limit: int, what: str) -> str:
        """1*limit PRINTUSASCII up to the next SP."""
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] in PRINTUSASCII:
            self.pos += 1
        size = self.pos - start
        if size == 0 or size > limit:
            raise self.fail(f"{what} must be 1 to {limit} printable US-ASCII characters, got {size}")
        return self.data[start:self.pos].decode("ascii")


def _pri(cur: _Cursor) -> int:
    cur.expect(b"<", "PRI")
    start = cur.pos
    while cur.peek() and 48 <= cur.peek()[0] <= 57 and cur.pos - start < 3:
        cur.pos += 1
    text = cur.data[start:cur.pos]
    if not text or (len(text) > 1 and text[0:1] == b"0") or int(text) > 191:
        raise cur.fail(f"PRIVAL {text!r} is not 0-191")
    cur.expect(b">", "PRI")
    return int(text)


def _timestamp_5424(cur: _Cursor) -> str:
    if cur.peek() == b"-":
        cur.pos += 1
        return "-"
    start = cur.pos
    year = cur.digits(4, "DATE-FULLYEAR")
    cur.expect(b"-", "date")
    month = cur.digits(2, "DATE-MONTH")
    cur.expect(b"-", "date")
    day = cur.digits(2, "DATE-MDAY")
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise cur.fail("no such date")
    cur.expect(b"T", "T")
    hour = cur.digits(2, "TIME-HOUR")
    cur.expect(b":", "time")
    minute = cur.digits(2, "TIME-MINUTE")
    cur.expect(b":", "time")
    second = cur.digits(2, "TIME-SECOND")
    if hour > 23 or minute > 59 or second > 59:  # RFC 5424 6.2.3: no leap second
        raise cur.fail("no such time of day")
    if cur.peek() == b".":
        cur.pos += 1
        n = 0
        while cur.peek() and 48 <= cur.peek()[0] <= 57:
            cur.pos += 1
            n += 1
        if not 1 <= n <= 6:
            raise cur.fail(f"TIME-SECFRAC of {n} digits (1 to 6)")
    if cur.peek() == b"Z":
        cur.pos += 1
    elif cur.peek() in (b"+", b"-"):
        cur.pos += 1
        if cur.digits(2, "offset hour") > 23:
            raise cur.fail("offset hour")
        cur.expect(b":", "offset")
        if cur.digits(2, "offset minute") > 59:
            raise cur.fail("offset minute")
    else:
        raise cur.fail("TIME-OFFSET")
    return cur.data[start:cur.pos].decode("ascii")


def _sd_name(cur: _Cursor, what: str) -> str:
    start = cur.pos
    while cur.pos < len(cur.data) and cur.data[cur.pos] in PRINTUSASCII and cur.data[cur.pos] not in SD_NAME_EXCLUDED:
        cur.pos += 1
    if not 1 <= cur.pos - start <= 32:
        raise cur.fail(f"{what} must be 1 to 32 characters")
    return cur.data[start:cur.pos].decode("ascii")


def _param_value(cur: _Cursor) -> str:
    out = bytearray()
    while True:
        c = cur.peek()
        if not c:
            raise cur.fail("unterminated PARAM-VALUE")
        if c == b"\\":
            nxt = cur.peek(2)[1:]
            if nxt in (b'"', b"\\", b"]"):
                out += nxt
                cur.pos += 2
                continue
            out += c  # RFC 5424 6.3.3: a backslash before anything else is kept
            cur.pos += 1
        elif c == b'"':
            cur.pos += 1
            break
        elif c == b"]":
            raise cur.fail("unescaped ] in PARAM-VALUE")
        else:
            out += c
            cur.pos += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise cur.fail(f"PARAM-VALUE is not UTF-8 ({exc})") from None


def _structured_data(cur: _Cursor) -> dict[str, dict[str, str]]:
    if cur.peek() == b"-":
        cur.pos += 1
        return {}
    if cur.peek() != b"[":
        raise cur.fail("STRUCTURED-DATA")
    sd: dict[str, dict[str, str]] = {}
    while cur.peek() == b"[":
        cur.pos += 1
        sd_id = _sd_name(cur, "SD-ID")
        if sd_id in sd:
            raise cur.fail(f"SD-ID {sd_id} twice")  # RFC 5424 6.3.2
        params: dict[str, str] = {}
        while cur.peek() == b" ":
            cur.pos += 1
            name = _sd_name(cur, "PARAM-NAME")
            cur.expect(b'="', "PARAM")
            params[name] = _param_value(cur)
        cur.expect(b"]", "SD-ELEMENT end")
        sd[sd_id] = params
    return sd


def parse_5424(data: bytes) -> Message5424:
    cur = _Cursor(data)
    pri = _pri(cur)
    cur.expect(b"1 ", "VERSION 1")
    timestamp = _timestamp_5424(cur)
    cur.expect(b" ", "SP")
    hostname = cur.token(255, "HOSTNAME")
    cur.expect(b" ", "SP")
    app = cur.token(48, "APP-NAME")
    cur.expect(b" ", "SP")
    procid = cur.token(128, "PROCID")
    cur.expect(b" ", "SP")
    msgid = cur.token(32, "MSGID")
    cur.expect(b" ", "SP")
    sd = _structured_data(cur)
    rest = data[cur.pos:]
    if rest and not rest.startswith(b" "):
        raise cur.fail("SP before MSG")
    body = rest[1:]
    if body.startswith(BOM):
        body = body[3:]
    try:
        msg = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise cur.fail(f"MSG is not UTF-8 ({exc})") from None
    return Message5424(pri, timestamp, hostname, app, procid, msgid, sd, msg)


TAG_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-/")


def parse_3164(data: bytes) -> Message3164:
    cur = _Cursor(data)
    pri = _pri(cur)
    month = cur.peek(3).decode("latin-1")
    if month not in MONTHS:
        raise cur.fail("Mmm")
    cur.pos += 3
    cur.expect(b" ", "SP")
    day_text = cur.peek(2)
    if not ((day_text[:1] == b" " and day_text[1:].isdigit()) or (day_text.isdigit() and day_text[:1] != b"0")):
        raise cur.fail("dd (space-padded day)")
    day = int(day_text)
    if not 1 <= day <= 31:
        raise cur.fail("day")
    cur.pos += 2
    cur.expect(b" ", "SP")
    hour = cur.digits(2, "hh")
    cur.expect(b":", "time")
    minute = cur.digits(2, "mm")
    cur.expect(b":", "time")
    second = cur.digits(2, "ss")
    if hour > 23 or minute > 59 or second > 59:
        raise cur.fail("no such time of day")
    timestamp = data[cur.pos - 15:cur.pos].decode("ascii")
    cur.expect(b" ", "SP")
    hostname = cur.token(255, "HOSTNAME")
    cur.expect(b" ", "SP")
    start = cur.pos
    while cur.peek() and cur.peek()[0] in TAG_CHARS:
        cur.pos += 1
    if not 1 <= cur.pos - start <= 32:
        raise cur.fail("TAG of 1 to 32 alphanumeric characters")
    tag = data[start:cur.pos].decode("ascii")
    pid = None
    if cur.peek() == b"[":
        cur.pos += 1
        pstart = cur.pos
        while cur.peek().isdigit():
            cur.pos += 1
        if cur.pos == pstart:
            raise cur.fail("PID")
        pid = int(data[pstart:cur.pos])
        cur.expect(b"]", "PID end")
    cur.expect(b": ", "': ' after the TAG")
    try:
        msg = data[cur.pos:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise cur.fail(f"MSG is not UTF-8 ({exc})") from None
    return Message3164(pri, timestamp, hostname, tag, pid, msg)


def octet_frames(data: bytes) -> list[bytes]:
    """RFC 6587 3.4.1: ``MSG-LEN SP SYSLOG-MSG``, MSG-LEN a NONZERO-DIGIT then digits."""
    frames = []
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        length = data[pos:sp] if sp > 0 else b""
        if not length.isdigit() or length.startswith(b"0"):
            raise SyslogSyntaxError(f"MSG-LEN at byte {pos}: {data[pos:pos + 20]!r}")
        end = sp + 1 + int(length)
        if end > len(data):
            raise SyslogSyntaxError(f"frame at byte {pos} runs past the end")
        frames.append(data[sp + 1:end])
        pos = end
    return frames

"""The syslog route: ``syslog+udp|tcp|tls|relp://host:port?format=&framing=&facility=&hostname=&tag=
&max_message_bytes=&ca=&cert=&key=&verify=`` as a pipeline sink."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from agent.model import DeliveryResult, Payload, Segment
from agent.params import Param, one_of, parse_bool, parse_int, parse_params, text
from exporters.syslog.format import _TEMPLATE_FIELD, FACILITIES, SyslogEncoder, SyslogFormat
from exporters.syslog.transport import RelpBatch, RelpTransport, StreamTransport, TlsOptions
from exporters.syslog.udp import UdpTransport

DEFAULT_PORTS = {"syslog+udp": 514, "syslog+tcp": 514, "syslog+tls": 6514, "syslog+relp": 2514}
# RFC 5426 §3.2: IPv4 receivers SHOULD accept 2048 octets; TCP/TLS default to 64 KiB.
DEFAULT_MAX = {"syslog+udp": 2048}
UDP_MAX = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
# The fields of the tag template (``render_tag``); ``{label:KEY}`` as well.
TAG_FIELDS = frozenset({"container_name", "name", "container_id", "image", "pod", "namespace", "container", "host",
                        "stream", "label"})


class SyslogConfigError(ValueError):
    pass


def _tag(text: str) -> str:
    unknown = sorted({m.group(1) for m in _TEMPLATE_FIELD.finditer(text)} - TAG_FIELDS)
    if unknown:
        known = ", ".join("{" + name + "}" for name in sorted(TAG_FIELDS - {"label"}))
        raise ValueError(f"unknown field {', '.join(unknown)} (use {known} or {{label:KEY}})")
    return text


def _facility(text: str) -> int:
    name = text.strip().lower()
    if name not in FACILITIES:
        raise ValueError(f"{text!r}: use one of {', '.join(FACILITIES)}")
    return FACILITIES[name]


def _max_bytes(text: str) -> int:
    value = parse_int(text)
    if value < 480:
        raise ValueError("must be at least 480 (RFC 5424 §6.1)")
    return value


# The route options of ``syslog+udp|tcp|tls|relp://`` (agent.params.Param: name, parser, default, help).
PARAMS = (
    Param("format", one_of("rfc5424", "rfc3164"), "rfc5424", "message format: RFC 5424 or the BSD RFC 3164"),
    Param("framing", one_of("octet", "lf"), "octet", "TCP/TLS framing (RFC 6587): octet counting or LF"),
    Param("facility", _facility, FACILITIES["user"], "syslog facility name (user, daemon, local0..local7, ...)"),
    Param("hostname", text, "", "HOSTNAME field (default: the host's name)"),
    Param("tag", _tag, "{container_name}", "APP-NAME/TAG template: {container_name}, {pod}, {label:KEY}, ..."),
    Param("max_message_bytes", _max_bytes, None, "longest message; longer ones are cut and marked "
          "(default 2048 for UDP, 65536 otherwise)"),
    Param("ca", text, "", "TLS: CA bundle to verify the receiver with"),
    Param("cert", text, "", "TLS: client certificate (PEM)"),
    Param("key", text, "", "TLS: client key (PEM)"),
    Param("verify", parse_bool, True, "TLS: verify the receiver's certificate and name"),
    Param("server_name", text, "", "TLS: the name to verify (default: the host)"),
    Param("tls", parse_bool, False, "RELP: over TLS"),
)


def parse_options(scheme: str, params: Mapping[str, str]) -> tuple[SyslogFormat, TlsOptions | None]:
    try:
        opts = parse_params(PARAMS, params, scheme, pass_through=True)
    except ValueError as exc:
        raise SyslogConfigError(str(exc)) from None
    framing = opts["framing"]
    if scheme in ("syslog+udp", "syslog+relp"):
        framing = "none"  # one message per datagram / per RELP frame
    max_bytes = opts["max_message_bytes"] or DEFAULT_MAX.get(scheme, 65536)
    if scheme == "syslog+udp" and max_bytes > UDP_MAX:
        raise SyslogConfigError(f"max_message_bytes for UDP is at most {UDP_MAX} (one IPv4 datagram)")
    fmt = SyslogFormat(rfc=opts["format"], framing=framing, facility=opts["facility"], hostname=opts["hostname"],
                       tag=opts["tag"], max_message_bytes=max_bytes)
    tls = None
    if scheme == "syslog+tls" or opts["tls"]:
        tls = TlsOptions(ca=opts["ca"], cert=opts["cert"], key=opts["key"], verify=opts["verify"],
                         server_name=opts["server_name"])
    return fmt, tls


class SyslogSink:
    def __init__(self, scheme: str, host: str, port: int | None, params: Mapping[str, str]) -> None:
        fmt, tls = parse_options(scheme, params)
        self.scheme = scheme
        self.encoder = SyslogEncoder(fmt)
        port = port or DEFAULT_PORTS[scheme]
        self.transport: UdpTransport | StreamTransport | RelpTransport
        if scheme == "syslog+udp":
            self.transport = UdpTransport(host, port)
        elif scheme == "syslog+relp":
            self.transport = RelpTransport(host, port, tls)
        else:
            self.transport = StreamTransport(host, port, tls)
        self._refused_of: Payload | None = None  # the UDP payload being sent, and ``refused`` before its first try
        self._refused_base = 0

    @property
    def refused(self) -> int:
        """UDP datagrams that are lost and will not be sent again, as their own kernel reported them (only grows;
        0 for TCP, TLS and RELP, whose losses the pipeline retries): the datagrams an ICMP error (port or host
        unreachable) reported undelivered, and those the kernel refused for good (EMSGSIZE). A receiver that
        drops datagrams in its own full socket buffer reports nothing; see ``UdpTransport``."""
        return self.transport.refused if isinstance(self.transport, UdpTransport) else 0

    def encode(self, segments: Sequence[Segment]) -> Payload:
        count = sum(len(s.records) for s in segments)
        if self.scheme in ("syslog+tcp", "syslog+tls"):
            return Payload(self.encoder.encode(segments), count, self.encoder.last_truncated)
        messages = self.encoder.messages(segments)
        done = [False] * len(messages) if self.scheme == "syslog+relp" else None  # RELP resends only the unanswered
        return Payload(messages, count, self.encoder.last_truncated, done)

    def offload_spec(self) -> tuple[str, SyslogFormat] | None:
        """How a chunk worker encodes for this sink (agent.logs.offload): TCP and TLS payloads are framed bytes that
        concatenate; UDP datagrams and RELP frames are lists and stay in the reader."""
        return ("syslog", self.encoder.fmt) if self.scheme in ("syslog+tcp", "syslog+tls") else None

    async def send(self, payload: Payload) -> DeliveryResult:
        data = payload.data
        if isinstance(self.transport, RelpTransport):
            assert isinstance(data, list) and payload.done is not None
            pending = len(payload.pending())  # an earlier attempt may have delivered some: they are not resent
            await asyncio.to_thread(self.transport.send, RelpBatch(data, payload.done))
            return DeliveryResult(delivered=pending)
        if isinstance(self.transport, UdpTransport):
            assert isinstance(data, list)
            # Refusals are counted from the payload's first attempt: a retry resumes where the failed one stopped.
            if self._refused_of is not payload:
                self._refused_of, self._refused_base = payload, self.transport.refused
            await asyncio.to_thread(self.transport.send, data)
            refused = min(self.transport.refused - self._refused_base, payload.count)
            self._refused_of = None
            return DeliveryResult(delivered=payload.count - refused, dropped={"refused": refused} if refused else {})
        else:
            assert isinstance(data, bytes)
            await asyncio.to_thread(self.transport.send, data)
        return DeliveryResult(delivered=payload.count)

    async def close(self) -> None:
        await asyncio.to_thread(self.transport.close)

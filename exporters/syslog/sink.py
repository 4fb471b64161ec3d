"""The syslog route: ``syslog+udp|tcp|tls|relp://host:port?format=&framing=&facility=&hostname=&tag=
&max_message_bytes=&ca=&cert=&key=&verify=`` as a pipeline sink."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence

from agent.model import Segment
from agent.routes import bool_param
from exporters.syslog.format import _TEMPLATE_FIELD, FACILITIES, SyslogEncoder, SyslogFormat
from exporters.syslog.transport import RelpBatch, RelpTransport, StreamTransport, TlsOptions, UdpTransport

DEFAULT_PORTS = {"syslog+udp": 514, "syslog+tcp": 514, "syslog+tls": 6514, "syslog+relp": 2514}
# RFC 5426 §3.2: IPv4 receivers SHOULD accept 2048 octets; TCP/TLS default to 64 KiB.
DEFAULT_MAX = {"syslog+udp": 2048}
UDP_MAX = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
# The fields of the tag template (``render_tag``); ``{label:KEY}`` as well.
TAG_FIELDS = frozenset({"container_name", "name", "container_id", "image", "pod", "namespace", "container", "host",
                        "stream", "label"})


class SyslogConfigError(ValueError):
    pass


def parse_options(scheme: str, params: Mapping[str, str]) -> tuple[SyslogFormat, TlsOptions | None]:
    rfc = params.get("format", "rfc5424").lower()
    if rfc not in ("rfc5424", "rfc3164"):
        raise SyslogConfigError(f"format={rfc!r}: use rfc5424 or rfc3164")
    framing = params.get("framing", "octet").lower()
    if framing not in ("octet", "lf"):
        raise SyslogConfigError(f"framing={framing!r}: use octet or lf")
    if scheme in ("syslog+udp", "syslog+relp"):
        framing = "none"  # one message per datagram / per RELP frame
    facility = params.get("facility", "user").lower()
    if facility not in FACILITIES:
        raise SyslogConfigError(f"facility={facility!r}: use one of {', '.join(FACILITIES)}")
    try:
        max_bytes = int(params.get("max_message_bytes", DEFAULT_MAX.get(scheme, 65536)))
    except ValueError as exc:
        raise SyslogConfigError(f"max_message_bytes: {exc}") from exc
    if max_bytes < 480:
        raise SyslogConfigError("max_message_bytes must be at least 480 (RFC 5424 §6.1)")
    if scheme == "syslog+udp" and max_bytes > UDP_MAX:
        raise SyslogConfigError(f"max_message_bytes for UDP is at most {UDP_MAX} (one IPv4 datagram)")
    tag = params.get("tag", "{container_name}")
    unknown = sorted({m.group(1) for m in _TEMPLATE_FIELD.finditer(tag)} - TAG_FIELDS)
    if unknown:
        known = ", ".join("{" + name + "}" for name in sorted(TAG_FIELDS - {"label"}))
        raise SyslogConfigError(f"tag: unknown field {', '.join(unknown)} (use {known} or {{label:KEY}})")
    fmt = SyslogFormat(rfc=rfc, framing=framing, facility=FACILITIES[facility],
                       hostname=params.get("hostname", ""), tag=tag,
                       max_message_bytes=max_bytes)
    tls = None
    if scheme == "syslog+tls" or params.get("tls"):
        try:
            verify = bool_param(params, "verify", True)
        except ValueError as exc:
            raise SyslogConfigError(str(exc)) from None
        tls = TlsOptions(ca=params.get("ca", ""), cert=params.get("cert", ""), key=params.get("key", ""),
                         verify=verify, server_name=params.get("server_name", ""))
    return fmt, tls


class SyslogSink:
    def __init__(self, scheme: str, host: str, port: int | None, params: Mapping[str, str]) -> None:
        fmt, tls = parse_options(scheme, params)
        self.scheme = scheme
        self.encoder = SyslogEncoder(fmt)
        self.events: Counter[str] = Counter()
        port = port or DEFAULT_PORTS[scheme]
        self.transport: UdpTransport | StreamTransport | RelpTransport
        if scheme == "syslog+udp":
            self.transport = UdpTransport(host, port)
        elif scheme == "syslog+relp":
            self.transport = RelpTransport(host, port, tls)
        else:
            self.transport = StreamTransport(host, port, tls)

    @property
    def refused(self) -> int:
        """UDP datagrams that are lost and will not be sent again, as their own kernel reported them (only grows;
        0 for TCP, TLS and RELP, whose losses the pipeline retries): the datagrams an ICMP error (port or host
        unreachable) reported undelivered, and those the kernel refused for good (EMSGSIZE). A receiver that
        drops datagrams in its own full socket buffer reports nothing; see ``UdpTransport``."""
        return self.transport.refused if isinstance(self.transport, UdpTransport) else 0

    def encode(self, segments: Sequence[Segment]) -> object:
        if self.scheme in ("syslog+tcp", "syslog+tls"):
            payload: object = self.encoder.encode(segments)
        else:
            messages = self.encoder.messages(segments)
            payload = RelpBatch(messages) if self.scheme == "syslog+relp" else messages
        if self.encoder.last_truncated:
            self.events["truncated"] += self.encoder.last_truncated
        return payload

    def offload_spec(self) -> tuple[str, SyslogFormat] | None:
        """How a chunk worker encodes for this sink (agent.offload): TCP and TLS payloads are framed bytes that
        concatenate; UDP datagrams and RELP frames are lists and stay in the reader."""
        return ("syslog", self.encoder.fmt) if self.scheme in ("syslog+tcp", "syslog+tls") else None

    async def send(self, payload: object, count: int) -> None:
        await asyncio.to_thread(self.transport.send, payload)  # type: ignore[arg-type]

    async def close(self) -> None:
        await asyncio.to_thread(self.transport.close)

"""Syslog routes: RFC 5424 / RFC 3164 formatting (pure) and UDP, TCP, TLS and RELP transports."""

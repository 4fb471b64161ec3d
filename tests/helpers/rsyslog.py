"""A real rsyslogd for the syslog route tests: loopback inputs, per-input JSON output files, TLS certificates.

``Rsyslog(workdir, inputs).start()`` writes a configuration and runs ``rsyslogd -n -f <conf> -i <pidfile>``
in the foreground (its own work directory, no system files touched). Every input has its own ruleset
that parses RFC 5424 structured data with ``mmpstrucdata`` and appends one JSON object per message
(rsyslog's own parse: ``pri``, ``hostname``, ``app``, ``procid``, ``msgid``, ``sd`` as received, ``sdp``
the parsed SD as JSON, ``msg``, ``ts``, ``input``) to ``<workdir>/out-<input name>.json``.

The main queue is ``Direct`` and omfile writes at the end of every transaction, so a message rsyslog
has acknowledged (RELP ``rsp 200``) is already in the output file: ``kill -9`` loses nothing that was
acknowledged at the application level. TCP has no application-level acknowledgement; what its kernel
had acknowledged but rsyslogd had not yet read is gone after ``kill -9`` (``recv_queue`` measures it).

``make_certs(dir)`` creates a CA, a server certificate for 127.0.0.1/localhost signed by it, a client
certificate (CN ``lookout-client``) and a second, unrelated CA, with the ``openssl`` CLI.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.agent import tail

MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog",
               "/usr/lib64/rsyslog")
# Module .so files each input kind needs (mmpstrucdata parses the structured data for every input).
MODULES = {"udp": ("imudp",), "tcp": ("imtcp",), "tls": ("imtcp", "lmnsd_gtls"), "relp": ("imrelp",)}
BASE_MODULES = ("mmpstrucdata",)
DEBIAN_PACKAGES = {"lmnsd_gtls": "rsyslog-gnutls", "imrelp": "rsyslog-relp", "omrelp": "rsyslog-relp"}


def find_rsyslogd() -> str | None:
    """``LOOKOUT_TEST_RSYSLOGD`` if set, else /usr/sbin/rsyslogd, else PATH."""
    override = os.environ.get("LOOKOUT_TEST_RSYSLOGD")
    if override:
        return override if Path(override).is_file() else None
    if Path("/usr/sbin/rsyslogd").is_file():
        return "/usr/sbin/rsyslogd"
    return shutil.which("rsyslogd")


def module_dir() -> Path | None:
    found = [d for d in MODULE_DIRS if Path(d, "imtcp.so").is_file()]
    if not found:  # another multiarch triplet: one directory level only (never a recursive walk)
        found = [str(Path(p).parent) for p in glob.glob("/usr/lib*/*/rsyslog/imtcp.so")]
    return Path(found[0]) if found else None


def missing(*kinds: str, extra: tuple[str, ...] = ()) -> str | None:
    """Why rsyslog cannot serve these input kinds here (a precise skip reason), or None."""
    binary = find_rsyslogd()
    if binary is None:
        override = os.environ.get("LOOKOUT_TEST_RSYSLOGD")
        if override:
            return f"no rsyslogd: LOOKOUT_TEST_RSYSLOGD={override} is not a file"
        return "no rsyslogd (neither /usr/sbin/rsyslogd nor rsyslogd on PATH; Debian: apt-get install rsyslog)"
    mods = module_dir()
    if mods is None:
        return f"rsyslogd at {binary} but no module directory with imtcp.so in {', '.join(MODULE_DIRS)}"
    wanted = list(BASE_MODULES) + [m for kind in kinds for m in MODULES[kind]] + list(extra)
    absent = sorted({m for m in wanted if not (mods / f"{m}.so").is_file()})
    if absent:
        packages = sorted({DEBIAN_PACKAGES.get(m, "rsyslog") for m in absent})
        return (f"rsyslog module(s) {', '.join(m + '.so' for m in absent)} missing in {mods} "
                f"(Debian: apt-get install {' '.join(packages)})")
    if shutil.which("openssl") is None and "tls" in kinds:
        return "no openssl CLI to make the TLS test certificates (Debian: apt-get install openssl)"
    return None


# --- certificates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    dir: Path

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    @property
    def server_cert(self) -> str:
        return str(self.dir / "server.pem")

    @property
    def server_key(self) -> str:
        return str(self.dir / "server.key")

    @property
    def client_cert(self) -> str:
        return str(self.dir / "client.pem")

    @property
    def client_key(self) -> str:
        return str(self.dir / "client.key")

    @property
    def other_ca(self) -> str:
        """A CA that signed nothing of ours: verifying the server against it must fail."""
        return str(self.dir / "other-ca.pem")


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=Lookout test {ca}", cwd=d)
    for name, cn, ext in (("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                                  "extendedKeyUsage=serverAuth\n"),
                          ("client", "lookout-client", "subjectAltName=DNS:lookout-client\n"
                                                       "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return Certs(d)


# --- rsyslogd ------------------------------------------------------------------------------------------


def free_port(kind: str = "tcp") -> int:
    import socket

    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Input:
    """One listening input. ``kind``: udp, tcp (octet counting and LF framing on one port), tls, relp."""

    kind: str
    name: str = ""
    port: int = 0
    auth_mode: str = "anon"  # TLS: anon, x509/certvalid or x509/name
    permitted_peers: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)  # extra input() parameters

    def __post_init__(self) -> None:
        self.name = self.name or self.kind
        if not self.port:
            self.port = free_port("udp" if self.kind == "udp" else "tcp")


JSON_TEMPLATE = (
    'template(name="lookout_json" type="list" option.jsonf="on") {\n'
    '  property(outname="pri" name="pri" format="jsonf")\n'
    '  property(outname="hostname" name="hostname" format="jsonf")\n'
    '  property(outname="app" name="app-name" format="jsonf")\n'
    '  property(outname="procid" name="procid" format="jsonf")\n'
    '  property(outname="msgid" name="msgid" format="jsonf")\n'
    '  property(outname="sd" name="structured-data" format="jsonf")\n'
    '  property(outname="sdp" name="$!rfc5424-sd" format="jsonf")\n'
    '  property(outname="msg" name="msg" format="jsonf")\n'
    '  property(outname="ts" name="timereported" dateFormat="rfc3339" format="jsonf")\n'
    '  property(outname="input" name="inputname" format="jsonf")\n'
    "}\n"
)


class Rsyslog:
    def __init__(self, workdir: Path, inputs: list[Input], certs: Certs | None = None,
                 max_message_size: str = "64k") -> None:
        self.workdir = workdir
        self.inputs = {i.name: i for i in inputs}
        self.certs = certs
        self.max_message_size = max_message_size
        self.conf = workdir / "rsyslog.conf"
        self.pidfile = workdir / "rsyslogd.pid"
        self.log_path = workdir / "rsyslogd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def out(self, name: str) -> Path:
        return self.workdir / f"out-{name}.json"

    def config(self) -> str:
        work = self.workdir / "work"
        lines = [f'global(workDirectory="{work}" maxMessageSize="{self.max_message_size}" '
                 'parser.escapeControlCharactersOnReceive="off" parser.dropTrailingLFOnReception="off")',
                 'main_queue(queue.type="Direct")',
                 'module(load="mmpstrucdata")']
        loaded = set()
        for inp in self.inputs.values():
            module = {"udp": "imudp", "tcp": "imtcp", "tls": "imtcp", "relp": "imrelp"}[inp.kind]
            if module not in loaded:
                lines.append(f'module(load="{module}")')
                loaded.add(module)
        lines.append(JSON_TEMPLATE)
        for inp in self.inputs.values():
            lines.append(f'ruleset(name="r_{inp.name}") {{ action(type="mmpstrucdata") '
                         f'action(type="omfile" file="{self.out(inp.name)}" template="lookout_json") }}')
            module = {"udp": "imudp", "tcp": "imtcp", "tls": "imtcp", "relp": "imrelp"}[inp.kind]
            params = {"type": module, "port": str(inp.port), "address": "127.0.0.1", "ruleset": f"r_{inp.name}"}
            if inp.kind == "tls":
                assert self.certs is not None, "a tls input needs certs"
                params.update({"streamDriver.name": "gtls", "streamDriver.mode": "1",
                               "streamDriver.authMode": inp.auth_mode, "streamDriver.CAFile": self.certs.ca,
                               "streamDriver.CertFile": self.certs.server_cert,
                               "streamDriver.KeyFile": self.certs.server_key})
            params.update(inp.options)
            text = " ".join(f'{k}="{v}"' for k, v in params.items())
            if inp.permitted_peers:
                text += " permittedPeer=[" + ",".join(f'"{p}"' for p in inp.permitted_peers) + "]"
            lines.append(f"input({text})")
        # rsyslogd's own messages (errors, TLS handshake failures) for failure reports.
        lines.append(f'action(type="omfile" file="{self.workdir / "internal.log"}")')
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> Rsyslog:
        binary = find_rsyslogd()
        assert binary is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "work").mkdir(exist_ok=True)
        self.conf.write_text(self.config())
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}:\n{self.describe()}")
            if all(self.listening(i) for i in self.inputs.values()):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"rsyslogd inputs not listening within {timeout}s:\n{self.describe()}")

    @staticmethod
    def listening(inp: Input) -> bool:
        """The port is bound (LISTEN for TCP, any socket for UDP), read from /proc/net."""
        table = "/proc/net/udp" if inp.kind == "udp" else "/proc/net/tcp"
        want = f"0100007F:{inp.port:04X}"
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == want and (inp.kind == "udp" or fields[3] == "0A"):
                return True
        return False

    @staticmethod
    def recv_queue(port: int) -> int:
        """Bytes the kernel acknowledged on established TCP connections to 127.0.0.1:``port`` that the
        server process has not read yet (the ``rx_queue`` column of /proc/net/tcp)."""
        want = f"0100007F:{port:04X}"
        total = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "01":
                total += int(fields[4].split(":")[1], 16)
        return total

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill9(self) -> None:
        """``kill -9``; a record omfile was half-way through writing stays torn, so the output files are ended
        with a newline: otherwise the restarted rsyslogd's first record would be glued to the torn one and
        read as lost, although the receiver got it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for path in self.workdir.glob("out-*.json"):
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                with path.open("ab") as fh:
                    fh.write(b"\n")

    def records(self, name: str) -> list[dict[str, Any]]:
        """Every message the input ``name`` received, as rsyslog parsed it (``sdp`` decoded to a dict)."""
        path = self.out(name)
        if not path.exists():
            return []
        out = []
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line omfile is still writing
            sdp = rec.get("sdp") or ""
            rec["sdp"] = json.loads(sdp) if sdp.startswith("{") else {}
            out.append(rec)
        return out

    def count(self, name: str) -> int:
        """How many messages the input ``name`` has written so far (cheap: counts lines)."""
        try:
            return self.out(name).read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def describe(self) -> str:
        parts = [f"rsyslogd log ({self.log_path}):\n{tail(self.log_path, 30)}"]
        internal = self.workdir / "internal.log"
        if internal.exists():
            parts.append(f"rsyslogd internal messages:\n{tail(internal, 30)}")
        for name in self.inputs:
            parts.append(f"{name}: {len(self.records(name))} record(s) in {self.out(name)}")
        return "\n".join(parts)

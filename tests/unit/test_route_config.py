"""Every documented route URI passes ``lookout check-config`` and builds its sink; every bad one is refused
with a line naming it, together with every other problem of the configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.cli import main
from agent.logs.routes import LogOptions, make_sink, parse_route, route_options
from agent.params import parse_listen
from tests.helpers.rsyslog import Certs, make_certs

# The route URIs of README's "Shipping logs" table, with every parameter it documents.
DOCUMENTED = [
    "file:///var/log/lookout/out.ndjson?filter.name=web-*&filter.id=3f2a&filter.labels=team:api,tier:web"
    "&filter.image=nginx:*&filter.sources=stdout,stderr&name=main&batch=500&batch_bytes=2MiB&flush=1s",
    "stdout://",
    "syslog+udp://127.0.0.1:514?format=rfc3164&facility=local0&hostname=node-1&tag={container_name}"
    "&max_message_bytes=1200",
    "syslog+tcp://logs.example:514?format=rfc5424&framing=octet&tag={label:app}-{stream}",
    "syslog+tcp://logs.example:514?framing=lf&max_message_bytes=8192&tag={pod}/{namespace}/{container}",
    "syslog+tls://logs.example:6514?verify=false&server_name=relay",
    "syslog+relp://logs.example:2514?tag={container_id}@{host}&facility=daemon",
    "http://collector:8080/ingest?batch=1000&flush=1s&batch_bytes=5MiB&gzip=true&tenant=a",
    "https://user:p%40ss@collector:8443/ingest?gzip=false&verify=false",
    "elasticsearch+http://elastic:secret@es:9200/logs-lookout-%25Y.%25m.%25d?op=create&pipeline=p&gzip=true",
    "elasticsearch+https://es:9200/logs?op=index&verify=false&batch=200",
    # Processing (README "Processing"): every route takes these.
    "file:///var/log/lookout/out.ndjson?parse=json&time_key=ts&time_format=unix&drop_field=password,token"
    "&add_field=env:prod,team:shop&include=GET|POST&exclude=healthz&level_min=warn&fields_key=app",
    "syslog+tcp://logs.example:514?parse=logfmt&time_key=time&time_format=%25d/%25b/%25Y:%25H:%25M:%25S%20%25z",
    "elasticsearch+http://es:9200/logs?parse=json&time_format=rfc3339&time_key=time&level_min=info",
]


@pytest.fixture(autouse=True)
def _no_lookout_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("LOOKOUT_")]:
        monkeypatch.delenv(key)


@pytest.mark.parametrize("uri", DOCUMENTED)
def test_documented_routes_pass_check_config_and_build_their_sinks(uri: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--state-dir", str(tmp_path / "s"), "--route", uri]) == 0, capsys.readouterr().err
    route = parse_route(uri)
    assert make_sink(route, tmp_path) is not None
    assert route_options(route, LogOptions()).batch_records >= 1


BAD = {
    "file://relative/out.ndjson": "absolute file path",
    "file:///var/log/out.ndjson?formta=x": "unknown parameter formta",
    "stdout://?filter.nmae=web": "unknown filter filter.nmae",
    "syslog+tcp://h:514?formta=rfc3164": "unknown parameter formta",
    "syslog+tcp://h:514?tag={nonexistent}": "tag: unknown field nonexistent",
    "syslog+udp://h:514?max_message_bytes=100000": "at most 65507",
    "syslog+tls://h:6514?verify=maybe": "verify",
    "syslog+tcp://h:514?format=rfc9999": "format",
    "https://h/x?batch=0": "batch: must be at least 1",
    "elasticsearch+https://h:9200/?op=create": "needs an index",
    "elasticsearch+http://h:9200/logs?op=upsert": "op=",
}


def test_bad_routes_are_all_refused_at_once_with_the_other_problems(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = ["check-config", "--state-dir", str(tmp_path / "s"), "--log-level", "loud"]
    for uri in BAD:
        args += ["--route", uri]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--log-level" in err
    for uri, problem in BAD.items():
        assert problem in err, f"{uri}: expected {problem!r} in {err}"


def test_routes_from_the_environment_keep_their_commas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOOKOUT_ROUTE", "file:///tmp/a.ndjson?filter.labels=team:api,tier:web\n"
                                        "  syslog+tcp://h:514?filter.sources=stdout,stderr")
    assert main(["check-config", "--state-dir", str(tmp_path / "s")]) == 0, capsys.readouterr().err
    assert "2 route(s)" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["bad host:80", "[node-1]:80", "-x:80", "a..b:80", "host_1:80"])
def test_listen_host_must_be_an_address_or_host_name(text: str) -> None:
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        parse_listen(text)


@pytest.mark.parametrize(("text", "want"), [(":9338", ("0.0.0.0", 9338)), ("[::1]:80", ("::1", 80)),
                                            ("node-1.example:80", ("node-1.example", 80)),
                                            ("127.0.0.1:9", ("127.0.0.1", 9))])
def test_listen_good_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("uri", ["file:///tmp/out.ndjson", "stdout://", "syslog+tcp://127.0.0.1:514",
                                 "syslog+relp://127.0.0.1:2514"])
def test_file_and_syslog_routes_are_built_and_wired_without_aiohttp(uri: str, tmp_path: Path) -> None:
    """The agent builds its parts and starts such routes before it imports aiohttp (~0.1 s) for its HTTP server
    and the Docker API, so they start shipping that much sooner (agent.runtime.serve). A fresh interpreter
    shows what each step imports."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from agent.cli import _parser\n"
            "from agent.config import load_config\n"
            "from agent.wiring import build\n"
            f"args, unknown = _parser().parse_known_args(['run', '--route', {uri!r}, '--state-dir', {str(tmp_path)!r},"
            f" '--host-root', {str(tmp_path)!r}, '--docker-socket', ''])\n"
            "agent = build(load_config(args, environ={}, unknown=unknown))\n"
            "agent.routes.load()\n"
            "assert agent.routes.pipeline is not None\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# --- route option errors in the project's own words ----------------------------------------------------------------

# Words of Python or OpenSSL, not of Lookout: none may reach a user.
FOREIGN = ("Errno", "invalid literal", "could not be cast", "Invalid IPv6", "_ssl.c", "Traceback", "PEM lib",
           "out of range 0-65535")


def check_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *routes: str) -> str:
    args = ["check-config", "--state-dir", str(tmp_path / "s")]
    for uri in routes:
        args += ["--route", uri]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for words in FOREIGN:
        assert words not in err, err
    return err


@pytest.mark.parametrize(("uri", "problem"), [
    ("syslog+tcp://h:abc", "--route: 'syslog+tcp://h:abc': port: expected a number from 1 to 65535, got 'abc'"),
    ("https://h:99999/x", "--route: 'https://h:99999/x': port: expected a number from 1 to 65535, got '99999'"),
    ("syslog+tcp://u:secret@[::1", "--route: 'syslog+tcp://u:***@[::1': malformed URI: an IPv6 address needs both"),
    ("https://h/x?timeout=x", "--route: 'https://h/x?timeout=x': timeout: expected a duration like 10s, 500ms or "
                              "1m30s, got 'x'"),
    ("https://h/x?timeout=nan", "timeout: expected a duration like 30s or a number of seconds, got 'nan'"),
    ("file:///tmp/o.ndjson?batch=1_000", "batch: expected a whole number, got '1_000'"),
    ("syslog+udp://h?max_message_bytes=x", "max_message_bytes: expected a whole number, got 'x'"),
    ("http://h/x?batch_bytes=1x", "batch_bytes: expected a size like 65536, 64KiB or 1MiB, got '1x'"),
    ("syslog+relp://h?tls=maybe", "tls: expected true or false, got 'maybe'"),
])
def test_route_option_errors_name_the_option_in_lookouts_words(uri: str, problem: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    err = check_config_error(tmp_path, capsys, uri)
    assert problem in err
    assert "secret" not in err


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make test certificates (Debian: apt-get install openssl)")
    made = make_certs(tmp_path_factory.mktemp("certs"))
    subprocess.run(["openssl", "rsa", "-in", made.client_key, "-aes256", "-passout", "pass:secret", "-out",
                    str(made.dir / "encrypted.key")], check=True, capture_output=True, timeout=60)
    return made


@pytest.mark.parametrize("scheme", ["syslog+tls://h:6514", "syslog+relp://h:2514?tls=true&", "https://h/x",
                                    "elasticsearch+https://h:9200/logs"])
def test_tls_file_errors_name_the_option_and_the_file(scheme: str, certs: Certs, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sep = "" if scheme.endswith("&") else "?"
    cases = {
        f"ca={tmp_path}/x/ca.pem": f"ca: {tmp_path}/x/ca.pem does not exist",
        f"cert={tmp_path}/c.pem&key={certs.client_key}": f"cert: {tmp_path}/c.pem does not exist",
        f"ca={certs.client_key}": f"ca: {certs.client_key} holds no PEM certificate",
        f"ca={tmp_path}": f"ca: {tmp_path} is a directory, not a file",
        f"cert={certs.client_key}&key={certs.client_key}": f"cert: {certs.client_key} holds no PEM certificate",
        f"cert={certs.client_cert}&key={certs.server_key}":
            f"key: {certs.server_key} is not the key of the certificate in {certs.client_cert}",
        f"cert={certs.client_cert}": f"cert: {certs.client_cert} holds no private key (give key too)",
        f"cert={certs.client_cert}&key={certs.dir}/encrypted.key": f"key: {certs.dir}/encrypted.key is encrypted",
        f"key={certs.client_key}": "key: needs cert too",
    }
    for query, problem in cases.items():
        uri = f"{scheme}{sep}{query}"
        assert problem in check_config_error(tmp_path, capsys, uri), uri
    uri = f"{scheme}{sep}ca={certs.ca}&cert={certs.client_cert}&key={certs.client_key}"
    assert main(["check-config", "--state-dir", str(tmp_path / "s"), "--route", uri]) == 0, capsys.readouterr().err


def test_unreadable_tls_file_says_so_with_its_path(certs: Certs, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file: an unreadable one needs a non-root user")
    locked = tmp_path / "ca.pem"
    shutil.copy(certs.ca, locked)
    locked.chmod(0)
    err = check_config_error(tmp_path, capsys, f"syslog+tls://h:6514?ca={locked}")
    assert f"ca: {locked} cannot be read (Permission denied)" in err


# --- Elasticsearch index names -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("index", "problem"), [
    ("Logs-%25Y.%25m.%25d", "index 'Logs-%Y.%m.%d': Elasticsearch index names are lower case"),
    ("logs%20lookout", "index 'logs lookout': Elasticsearch index names cannot hold a space"),
    ("logs-%25Q", "index 'logs-%Q': unknown field %Q"),
    ("logs-%25-d", "index 'logs-%-d': unknown field %-"),
    ("logs-%25b", "index 'logs-%b': %b gives upper case"),
    ("logs-%25e", "index 'logs-%e': %e gives a space"),
    ("logs-%25D", "index 'logs-%D': %D gives '/'"),
    ("logs-%25", "index 'logs-%': a % at the end"),
    ("logs:x", "index 'logs:x': Elasticsearch index names cannot hold ':'"),
    ("a*b%3Fc%23d,e", "cannot hold '#', '*', ',', '?'"),
    ("_logs", "index '_logs': Elasticsearch index names cannot start with '_'"),
    ("-logs", "cannot start with '-'"),
    ("+logs", "cannot start with '+'"),
    ("..", "index '..': Elasticsearch index names cannot be . or .."),
    ("logs/x", "index 'logs/x': Elasticsearch index names cannot hold '/'"),
    ("l" * 250 + "-%25Y.%25m", "are 258 bytes long; Elasticsearch takes at most 255"),
])
def test_elasticsearch_index_names_elasticsearch_would_refuse_are_refused(index: str, problem: str, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    err = check_config_error(tmp_path, capsys, f"elasticsearch+http://h:9200/{index}")
    assert problem in err


@pytest.mark.parametrize("index", ["logs-lookout-%25Y.%25m.%25d", "logs-%Y.%m.%d-%H%M", "logs-%25G-w%25V",
                                   "logs-100%25%25", "%25Y-logs", ".hidden-logs", "l" * 255])
def test_elasticsearch_index_names_elasticsearch_takes_pass(index: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["check-config", "--state-dir", str(tmp_path / "s"), "--route", f"elasticsearch+http://h:9200/{index}"]
    assert main(args) == 0, capsys.readouterr().err


def test_filter_namespace_matches_the_kubernetes_namespace_by_glob() -> None:
    from agent.logs.routes import parse_filter
    from agent.model import ContainerInfo

    flt = parse_filter({"filter.namespace": "team-*"})
    assert flt.match(ContainerInfo("/kubepods/x", namespace="team-a", pod="p"))
    assert not flt.match(ContainerInfo("/kubepods/y", namespace="kube-system", pod="p"))
    assert not flt.match(ContainerInfo("/docker/z"))  # no namespace: not a match
    assert parse_route("file:///x?filter.namespace=prod").filter.namespace == "prod"

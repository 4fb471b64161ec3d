"""agent.config.load_config and the CLI: precedence, every error at once, exit codes."""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest

from agent import __version__
from agent.cli import main
from agent.config import Config, ConfigError, load_config, server_ssl_context
from agent.options import DEFAULT_DISABLED_METRICS, METRIC_KINDS, add_arguments
from agent.wiring import check_route
from tests.helpers.rsyslog import Certs, make_certs
from tests.unit.support import config_from


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


def test_defaults(state: str) -> None:
    c = config_from(["--state-dir", state])
    assert (c.listen_host, c.listen_port) == ("0.0.0.0", 9338)
    assert c.host_root == Path("/") and c.docker_root == Path("/var/lib/docker")
    assert c.docker_socket == "/var/run/docker.sock"
    assert (c.housekeeping_interval, c.fs_usage_interval) == (10.0, 60.0)
    assert c.store_container_labels is True and c.container_labels_allowlist == ()
    assert c.disabled_metrics == DEFAULT_DISABLED_METRICS and "process" not in c.disabled_metrics
    assert c.metrics_timestamps is False and c.routes == ()
    assert Path(state).is_dir()  # created and write-tested


def test_precedence_flag_env_file_default(tmp_path: Path, state: str) -> None:
    toml = tmp_path / "lookout.toml"
    toml.write_text('housekeeping-interval = "30s"\nfs-usage-interval = "5m"\nlisten = "127.0.0.1:9100"\n'
                    'log_level = "warning"\nroutes = ["file:///var/log/all.ndjson"]\n'
                    'store-container-labels = false\n')
    env = {"LOOKOUT_HOUSEKEEPING_INTERVAL": "20s", "LOOKOUT_LISTEN": "127.0.0.1:9200"}
    c = config_from(["--config", str(toml), "--state-dir", state, "--housekeeping-interval", "500ms"], env)
    assert c.housekeeping_interval == 0.5  # flag beats env and file
    assert (c.listen_host, c.listen_port) == ("127.0.0.1", 9200)  # env beats file
    assert c.fs_usage_interval == 300.0  # file beats default
    assert c.log_level == "warning" and c.routes == ("file:///var/log/all.ndjson",)
    assert c.store_container_labels is False
    assert c.config_file == toml
    assert config_from(["--state-dir", state], env).housekeeping_interval == 20.0
    # the file can come from LOOKOUT_CONFIG too
    assert config_from(["--state-dir", state], {"LOOKOUT_CONFIG": str(toml)}).fs_usage_interval == 300.0


def test_host_root_prefixes_docker_root_and_explicit_docker_root(tmp_path: Path, state: str) -> None:
    c = config_from(["--state-dir", state, "--host-root", "/rootfs", "--docker-socket", ""])
    assert c.host_root == Path("/rootfs") and c.docker_root == Path("/rootfs/var/lib/docker")
    assert c.docker_socket == ""
    assert config_from(["--state-dir", state, "--docker-root", "/data/docker"]).docker_root == Path("/data/docker")


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0),
                                               ("1.5s", 1.5), ("250us", 0.00025)])
def test_durations(text: str, seconds: float, state: str) -> None:
    assert config_from(["--state-dir", state, "--housekeeping-interval", text]).housekeeping_interval == seconds


def test_bools_lists_and_metric_kinds(state: str) -> None:
    c = config_from(["--state-dir", state, "--store-container-labels", "--metrics-timestamps=true",
                     "--env-metadata-allowlist", "APP_, LOG_", "--disable-metrics", "network,percpu"])
    assert c.store_container_labels is True and c.metrics_timestamps is True
    assert c.env_metadata_allowlist == ("APP_", "LOG_")
    # Kinds --disable-metrics leaves on but Lookout never serves (or this host cannot feed) are turned off and listed.
    assert {"app", "cpuLoad", "perf_event"} <= c.metrics_unfed.keys()
    assert c.disabled_metrics == frozenset({"network", "percpu"}) | c.metrics_unfed.keys()
    c = config_from(["--state-dir", state, "--enable-metrics", "cpu,memory", "--disable-metrics", "cpu"])
    assert c.disabled_metrics == METRIC_KINDS - {"cpu", "memory"}  # enable overrides disable
    assert config_from(["--state-dir", state, "--no-store-container-labels"]).store_container_labels is False
    # an allowlist implies --store-container-labels=false unless that is given
    assert config_from(["--state-dir", state, "--container-labels-allowlist", "a"]).store_container_labels is False
    assert config_from(["--state-dir", state, "--container-labels-allowlist", "a",
                        "--store-container-labels=true"]).store_container_labels is True


def test_every_problem_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as err:
        config_from(["--bogus", "--housekeeping-interval", "10x", "--listen", "nope", "--route", "gopher://x",
                     "--disable-metrics", "cpu,blinkenlights", "--state-dir", str(blocker / "state")])
    problems = err.value.problems
    assert len(problems) == 6, problems
    text = str(err.value)
    for culprit in ("'--bogus'", "--housekeeping-interval", "'10x'", "--listen", "'nope'", "--route",
                    "'gopher'", "--disable-metrics", "blinkenlights", "--state-dir", str(blocker / "state")):
        assert culprit in text
    assert "\n" not in text


def test_cli_exit_2_with_one_line_naming_each_culprit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["check-config", "--bogus", "--fs-usage-interval", "soon", "--listen", "0.0.0.0:99999",
                 "--route", "ftp://host/x", "--enable-metrics", "cpu,nope", "--state-dir", str(blocker / "s")])
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lookout: invalid configuration: ")
    for culprit in ("--bogus", "--fs-usage-interval", "soon", "--listen", "0.0.0.0:99999", "--route", "ftp",
                    "--enable-metrics", "nope", "--state-dir"):
        assert culprit in lines[0]


def test_cli_run_with_bad_config_exits_2_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--state-dir", str(tmp_path / "s"), "--log-level", "loud"]) == 2
    assert "--log-level" in capsys.readouterr().err


def test_env_errors_are_reported_like_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOOKOUT_HOUSEKEEPING_INTERVAL", "often")
    assert main(["check-config", "--state-dir", str(tmp_path / "s")]) == 2
    assert "--housekeeping-interval" in capsys.readouterr().err


def test_unknown_toml_key(tmp_path: Path, state: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('housekeeping_interval = "5s"\nfrobnicate = 1\n')
    with pytest.raises(ConfigError, match="frobnicate"):
        config_from(["--config", str(toml), "--state-dir", state])
    with pytest.raises(ConfigError, match="does not exist"):
        config_from(["--config", str(tmp_path / "missing.toml"), "--state-dir", state])


def test_check_config_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("LOOKOUT_")]:
        monkeypatch.delenv(key)
    code = main(["check-config", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:9338",
                 "--route", "file:///tmp/x.ndjson", "--host-root", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "configuration ok" in out and "127.0.0.1:9338" in out and "1 route(s)" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"lookout {__version__}"


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err.lower()


def test_usage_errors_are_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", "--state-dir", str(tmp_path / "s"), "--housekeeping-interval", "-1s"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lookout: invalid configuration:")
    assert "--housekeeping-interval" in err[0]


def test_log_workers(state: str) -> None:
    assert config_from(["--state-dir", state]).log_workers == -1  # auto: agent.logs.offload.default_workers()
    assert config_from(["--state-dir", state, "--log-workers", "AUTO"]).log_workers == -1
    assert config_from(["--state-dir", state, "--log-workers", "0"]).log_workers == 0
    assert config_from(["--state-dir", state, "--log-workers", "3"]).log_workers == 3
    for bad in ("-1", "many", "65", "1.5"):
        with pytest.raises(ConfigError, match="--log-workers: use auto or a number from 0 to 64"):
            config_from(["--state-dir", state, "--log-workers", bad])


def check_from(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    """``load_config`` as ``check-config`` calls it: the state directory is only looked at."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args, unknown = parser.parse_known_args(argv)
    return load_config(args, environ={} if environ is None else environ, unknown=unknown, check_route=check_route,
                       create_state_dir=False)


def problems_of(argv: list[str], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        check_from(argv, environ)
    return err.value.problems


# --- a TOML value of the wrong type is a problem naming the key and the file, never a traceback ---------------------

@pytest.mark.parametrize(("line", "problem"), [
    ("store-container-labels = 1", "store-container-labels in {f}: expected true or false, got 1"),
    ("metrics_timestamps = [true]", "metrics_timestamps in {f}: expected true or false, got [true]"),
    ("route = [1]", "route in {f}: expected a route URI or a list of them (strings), got [1]"),
    ("routes = 5", "routes in {f}: expected a route URI or a list of them (strings), got 5"),
    ('route = ["file:///tmp/a.ndjson", 2]', "route in {f}: expected a route URI or a list of them (strings), "
                                            "got ['file:///tmp/a.ndjson', 2]"),
    ("[route]\nx = 1", "route in {f}: expected a route URI or a list of them (strings), got a table"),
    ("disable-metrics = [1]", "disable-metrics in {f}: expected a list of strings or a comma-separated string, "
                              "got [1]"),
    ("env-metadata-allowlist = 5", "env-metadata-allowlist in {f}: expected a list of strings or a comma-separated "
                                   "string, got 5"),
    ("housekeeping-interval = true", "housekeeping-interval in {f}: expected a duration like 10s or a number of "
                                     "seconds, got true"),
    ("fs-usage-interval = nan", "fs-usage-interval in {f}: expected a duration like 10s or a number of seconds, "
                                "got nan"),
    ("housekeeping-interval = 0", "housekeeping-interval in {f}: must be positive"),
    ("max-line-bytes = 1.5", "max-line-bytes in {f}: expected a number of bytes or a size like 1MiB, got 1.5"),
    ("max-line-bytes = 100", "max-line-bytes in {f}: expected at least 1KiB, got 100"),
    ('max-line-bytes = "1x"', "max-line-bytes in {f}: expected a size like 65536, 64KiB or 1MiB, got '1x'"),
    ("log-workers = 65", "log-workers in {f}: use auto or a number from 0 to 64, not 65"),
    ("log-workers = false", "log-workers in {f}: expected auto or a number from 0 to 64, got false"),
    ("listen = 9338", 'listen in {f}: expected an address like "0.0.0.0:9338", got 9338'),
    ("state-dir = 1979-05-27", "state-dir in {f}: expected a path (a string), got 1979-05-27"),
    ("log-level = 1", "log-level in {f}: expected a string, got 1"),
    ('log-level = "loud"', "log-level in {f}: unknown level 'loud'"),
    ('read-from = "middle"', "read-from in {f}: use head or tail, not 'middle'"),
    ('enable-metrics = ["cpu", "blinken"]', "enable-metrics in {f}: unknown metric kind(s) blinken"),
    ('route = ["gopher://x"]', "route in {f}: 'gopher://x': unknown scheme 'gopher'"),
    ('route = "syslog+tcp://h:514?format=x"', "route in {f}: 'syslog+tcp://h:514?format=x': format: 'x': use "
                                              "rfc5424 or rfc3164"),
])
def test_toml_values_name_the_key_and_the_file(line: str, problem: str, tmp_path: Path, state: str) -> None:
    toml = tmp_path / "lookout.toml"
    toml.write_text(line + "\n")
    [found] = problems_of(["--config", str(toml), "--state-dir", state])
    assert found.startswith("--config: " + problem.format(f=toml)), found


def test_a_bad_value_in_the_file_is_reported_even_where_a_flag_overrides_it(tmp_path: Path, state: str) -> None:
    toml = tmp_path / "lookout.toml"
    toml.write_text("max-line-bytes = 1.5\nroute = [1]\n")
    assert problems_of(["--config", str(toml), "--state-dir", state, "--max-line-bytes", "1MiB",
                        "--route", "stdout://"], {"LOOKOUT_ROUTE": "gopher://x"}) == [
        f"--config: max-line-bytes in {toml}: expected a number of bytes or a size like 1MiB, got 1.5",
        f"--config: route in {toml}: expected a route URI or a list of them (strings), got [1]"]


def test_toml_numbers_are_taken_where_a_number_is_meant(tmp_path: Path, state: str) -> None:
    toml = tmp_path / "lookout.toml"
    toml.write_text("max-line-bytes = 65536\nlog-workers = 2\nhousekeeping-interval = 10\nfs-usage-interval = 1.5\n"
                    'store-container-labels = "no"\ndisable-metrics = "cpu, network"\nroute = "stdout://"\n')
    c = check_from(["--config", str(toml), "--state-dir", state])
    assert (c.max_line_bytes, c.log_workers) == (65536, 2)
    assert (c.housekeeping_interval, c.fs_usage_interval) == (10.0, 1.5)
    assert c.store_container_labels is False and c.disabled_metrics - c.metrics_unfed.keys() == {"cpu", "network"}
    assert c.routes == ("stdout://",)
    toml.write_text('max-line-bytes = "64KiB"\nlog-workers = "auto"\n')
    c = check_from(["--config", str(toml), "--state-dir", state])
    assert (c.max_line_bytes, c.log_workers) == (65536, -1)


def test_flags_and_variables_are_named_as_such(state: str) -> None:
    assert problems_of(["--state-dir", state, "--max-line-bytes", "5", "--route", "syslog+tcp://h:x"]) == [
        "--max-line-bytes: expected at least 1KiB, got '5'",
        "--route: 'syslog+tcp://h:x': port: expected a number from 1 to 65535, got 'x'"]
    env = {"LOOKOUT_MAX_LINE_BYTES": "huge", "LOOKOUT_ROUTE": "stdout:// gopher://x"}
    assert problems_of(["--state-dir", state], env) == [
        "--max-line-bytes (LOOKOUT_MAX_LINE_BYTES): expected a size like 65536, 64KiB or 1MiB, got 'huge'",
        "--route (LOOKOUT_ROUTE): 'gopher://x': unknown scheme 'gopher' (known: elasticsearch+http, "
        "elasticsearch+https, file, http, https, stdout, syslog+relp, syslog+tcp, syslog+tls, syslog+udp)"]


@pytest.mark.parametrize(("content", "problem"), [
    (b'route = "\xff"\n', "is not UTF-8 text (byte 9)"),
    (b"route = [\n", "is not valid TOML: "),
])
def test_a_file_that_is_not_toml_is_one_problem(content: bytes, problem: str, tmp_path: Path, state: str) -> None:
    toml = tmp_path / "lookout.toml"
    toml.write_bytes(content)
    [found] = problems_of(["--config", str(toml), "--state-dir", state])
    assert found.startswith(f"--config: {toml} {problem}")
    assert problems_of(["--config", str(tmp_path), "--state-dir", state]) == [
        f"--config: {tmp_path} cannot be read (Is a directory)"]


# --- the state directory: check-config writes nothing; a default that cannot be written falls back -----------------

def test_check_config_does_not_create_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    c = check_from(["--state-dir", str(state), "--route", f"file://{tmp_path}/out/x.ndjson"])
    assert c.state_dir == state and c.state_dir_note == ""
    assert list(tmp_path.iterdir()) == []  # neither the state dir nor the route's file or directory
    config_from(["--state-dir", str(state)])  # as run: created and write-tested
    assert state.is_dir() and list(state.iterdir()) == []


@pytest.mark.parametrize("create", [False, True])
def test_a_state_dir_that_was_given_must_be_usable(tmp_path: Path, create: bool) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for routes in ([], ["--route", "stdout://"]):
        with pytest.raises(ConfigError) as err:
            (config_from if create else check_from)(["--state-dir", str(blocker / "state"), *routes])
        assert err.value.problems == [f"--state-dir: {blocker / 'state'} cannot be created: {blocker} is a file"]
    with pytest.raises(ConfigError, match=f"--state-dir: {blocker} is not a directory"):
        check_from(["--state-dir", str(blocker)])


@pytest.fixture
def unusable_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default state directory made unusable, as /var/lib/lookout is for a user who is not root."""
    blocker = tmp_path / "var-lib"
    blocker.write_text("")
    monkeypatch.setattr("agent.config.DEFAULT_STATE_DIR", blocker / "lookout")
    return blocker / "lookout"


@pytest.mark.parametrize("create", [False, True])
@pytest.mark.parametrize("routes", [[], ["--route", "stdout://"]])
def test_the_default_state_dir_falls_back_to_a_per_user_one(unusable_default: Path, tmp_path: Path, create: bool,
                                                            routes: list[str]) -> None:
    xdg = tmp_path / "xdg"
    load = config_from if create else check_from
    c = load(routes, {"XDG_STATE_HOME": str(xdg), "HOME": str(tmp_path / "home")})
    assert c.state_dir == xdg / "lookout"
    assert c.state_dir_note == (f"{unusable_default} cannot be created: {unusable_default.parent} is a file: "
                                f"state is kept in {xdg / 'lookout'}")
    assert (xdg / "lookout").is_dir() is create  # check-config only looks
    # without XDG_STATE_HOME (or with a relative one, which the XDG spec says to ignore): ~/.local/state/lookout
    c = load(routes, {"XDG_STATE_HOME": "relative", "HOME": str(tmp_path / "home")})
    assert c.state_dir == tmp_path / "home/.local/state/lookout"


def test_without_any_usable_state_dir_only_routes_fail(unusable_default: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "home-file"
    blocker.write_text("")
    env = {"HOME": str(blocker)}
    c = check_from([], env)  # nothing needs the state
    assert c.state_dir == unusable_default and "no state is kept" in c.state_dir_note
    assert problems_of(["--route", "stdout://"], env) == [
        f"--state-dir: {unusable_default} cannot be created: {unusable_default.parent} is a file, nor can "
        f"{blocker}/.local/state/lookout be used ({blocker}/.local/state/lookout cannot be created: {blocker} is a "
        "file); give a writable --state-dir"]


def test_cli_check_config_says_where_state_is_kept(unusable_default: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert main(["check-config", "--listen", "127.0.0.1:9338"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"state in {tmp_path / 'xdg/lookout'})")
    assert out[1] == f"lookout: {unusable_default} cannot be created: {unusable_default.parent} is a file: " \
                     f"state is kept in {tmp_path / 'xdg/lookout'}"
    assert not (tmp_path / "xdg").exists()


# --- access: --api-token-file, --tls-cert and --tls-key ------------------------------------------------------------

TOKEN = "s3cr3t-t0ken_value"


def test_api_token_file_from_flag_env_and_file(tmp_path: Path, state: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {TOKEN}\n")
    c = check_from(["--state-dir", state, "--api-token-file", str(token_file)])
    assert (c.api_token, c.api_token_file) == (TOKEN, token_file)
    assert TOKEN not in repr(c)
    assert check_from(["--state-dir", state], {"LOOKOUT_API_TOKEN_FILE": str(token_file)}).api_token == TOKEN
    toml = tmp_path / "lookout.toml"
    toml.write_text(f'api-token-file = "{token_file}"\n')
    assert check_from(["--state-dir", state, "--config", str(toml)]).api_token == TOKEN
    assert check_from(["--state-dir", state]).api_token is None


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "is empty (it must hold the API token)"),
    (b" \n\t\n", "is empty (it must hold the API token)"),
    (f"{TOKEN} {TOKEN}\n".encode(), "must hold one token of printable ASCII characters without spaces"),
    (f"{TOKEN}\n{TOKEN}\n".encode(), "must hold one token of printable ASCII characters without spaces"),
    (f"{TOKEN}\xe9".encode(), "must hold one token of printable ASCII characters without spaces"),
    (TOKEN.encode() * 300, "is larger than 4096 bytes (it must hold only the API token)"),
], ids=["empty", "blank", "two-words", "two-lines", "non-ascii", "too-large"])
def test_a_bad_token_file_names_the_flag_and_the_file_never_the_token(content: bytes, problem: str, tmp_path: Path,
                                                                       state: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(content)
    assert problems_of(["--state-dir", state, "--api-token-file", str(token_file)]) == [
        f"--api-token-file: {token_file} {problem}"]
    toml = tmp_path / "lookout.toml"
    toml.write_text(f'api_token_file = "{token_file}"\n')
    assert main(["check-config", "--state-dir", state, "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert f"--config: api_token_file in {toml}: {token_file} {problem}" in err
    assert TOKEN not in err


def test_a_missing_token_file_is_a_problem(tmp_path: Path, state: str) -> None:
    assert problems_of(["--state-dir", state, "--api-token-file", str(tmp_path / "nope")]) == [
        f"--api-token-file: {tmp_path / 'nope'} does not exist"]
    assert problems_of(["--state-dir", state, "--api-token-file", str(tmp_path)]) == [
        f"--api-token-file: {tmp_path} is a directory, not a file"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make test certificates (Debian: apt-get install openssl)")
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_tls_cert_and_key_both_or_neither(certs: Certs, tmp_path: Path, state: str) -> None:
    assert problems_of(["--state-dir", state, "--tls-cert", certs.server_cert]) == [
        "--tls-cert: needs --tls-key too (both or neither)"]
    assert problems_of(["--state-dir", state], {"LOOKOUT_TLS_KEY": certs.server_key}) == [
        "--tls-key (LOOKOUT_TLS_KEY): needs --tls-cert too (both or neither)"]
    c = check_from(["--state-dir", state])
    assert (c.tls_cert, c.tls_key, server_ssl_context(c)) == (None, None, None)


def test_tls_files_that_do_not_load_are_named(certs: Certs, tmp_path: Path, state: str) -> None:
    def problems(cert: str, key: str) -> list[str]:
        return problems_of(["--state-dir", state, "--tls-cert", cert, "--tls-key", key])

    assert problems(str(tmp_path / "no.pem"), certs.server_key) == [f"--tls-cert: {tmp_path / 'no.pem'} does not exist"]
    assert problems(certs.server_cert, str(tmp_path)) == [f"--tls-key: {tmp_path} is a directory, not a file"]
    assert problems(certs.server_key, certs.server_key) == [
        f"--tls-cert: {certs.server_key} holds no PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)"]
    assert problems(certs.server_cert, certs.server_cert) == [
        f"--tls-key: {certs.server_cert} holds no PEM private key"]
    assert problems(certs.server_cert, certs.client_key) == [
        f"--tls-key: {certs.client_key} is not the key of the certificate in {certs.server_cert}"]
    toml = tmp_path / "lookout.toml"
    toml.write_text(f'tls-cert = "{certs.server_cert}"\ntls-key = "{certs.client_key}"\n')
    assert problems_of(["--state-dir", state, "--config", str(toml)]) == [
        f"--config: tls-key in {toml}: {certs.client_key} is not the key of the certificate in {certs.server_cert}"]


def test_server_ssl_context_serves_https_with_the_configured_pair(certs: Certs, state: str) -> None:
    c = check_from(["--state-dir", state, "--tls-cert", certs.server_cert, "--tls-key", certs.server_key])
    assert (c.tls_cert, c.tls_key) == (Path(certs.server_cert), Path(certs.server_key))
    server_ctx = server_ssl_context(c)
    assert server_ctx is not None
    client_ctx = ssl.create_default_context(cafile=certs.ca)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result: list[str] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                result.append(tls.recv(5).decode())

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(b"hello")
        thread.join(10)
    assert result == ["hello"]


def test_server_ssl_context_reports_files_that_changed_since(certs: Certs, tmp_path: Path, state: str) -> None:
    cert = tmp_path / "cert.pem"
    shutil.copy(certs.server_cert, cert)
    c = check_from(["--state-dir", state, "--tls-cert", str(cert), "--tls-key", certs.server_key])
    cert.unlink()
    with pytest.raises(ConfigError, match=f"--tls-cert: {cert} does not exist"):
        server_ssl_context(c)


def test_journal_units_from_flag_env_and_toml(state: str, tmp_path: Path) -> None:
    assert config_from(["--state-dir", state]).journal_units == ()
    assert config_from(["--state-dir", state, "--journal-units", "nginx, cron.service"]).journal_units == \
        ("nginx", "cron.service")
    assert config_from(["--state-dir", state], {"LOOKOUT_JOURNAL_UNITS": "a,b@1.service"}).journal_units == \
        ("a", "b@1.service")
    toml = tmp_path / "lookout.toml"
    toml.write_text('journal-units = ["sshd", "getty@tty1"]\n')
    assert config_from(["--state-dir", state, "--config", str(toml)]).journal_units == ("sshd", "getty@tty1")
    with pytest.raises(ConfigError, match=r"--journal-units: not unit names: a/b, \.service"):
        config_from(["--state-dir", state, "--journal-units", "ok,a/b,.service"])


def test_journal_auto_or_off_by_flag_and_env(state: str) -> None:
    assert config_from(["--state-dir", state]).journal == "auto"
    assert config_from(["--state-dir", state, "--journal", "off"]).journal == "off"
    assert config_from(["--state-dir", state], {"LOOKOUT_JOURNAL": "off"}).journal == "off"
    assert config_from(["--state-dir", state, "--journal", "AUTO"], {"LOOKOUT_JOURNAL": "off"}).journal == "auto"
    with pytest.raises(ConfigError, match=r"--journal: use auto or off, not 'on'"):
        config_from(["--state-dir", state, "--journal", "on"])

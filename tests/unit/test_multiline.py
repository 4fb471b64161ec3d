"""Multiline joining (collectors.logs.multiline): real-looking stack traces per language, the size cap, the timeout,
and the property that joining never loses or reorders a byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.params import MULTILINE_MODES
from collectors.logs.multiline import MODES, Multiline, MultilineSpec, container_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "multiline"
TIME = "2026-12-04T10:15:01.000000000Z"
SEPARATOR = "#=="


def events_of(name: str) -> list[str]:
    """The events of a fixture file: its lines between ``#==`` separators, joined with newlines."""
    text = (FIXTURES / name).read_text()
    return [block.strip("\n") for block in text.split(f"\n{SEPARATOR}\n")]


def records(lines: list[str], stream: str = "stdout", start: int = 0) -> list[tuple]:
    """One record per line, offsets as a json-file of 100-byte lines would give them."""
    return [(TIME, stream, line, start + 100 * i, False) for i, line in enumerate(lines)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def join_all(spec: MultilineSpec, lines: list[str], max_bytes: int = 1 << 20, chunk: int = 0) -> list[tuple]:
    joiner = Multiline(spec, max_bytes)
    recs = records(lines)
    out: list[tuple] = []
    step = chunk or len(recs) or 1
    for i in range(0, len(recs), step):
        out += joiner.feed(recs[i:i + step], "file-1")
    out += joiner.flush()
    assert not joiner.held
    return out


FIXTURE_SPECS = {
    "java.log": MultilineSpec("java"),
    "python.log": MultilineSpec("python"),
    "go.log": MultilineSpec("go"),
    "ruby.log": MultilineSpec("ruby"),
    "indented.log": MultilineSpec("indented"),
    "regex.log": MultilineSpec("regex", r"^\[\d{4}-\d\d-\d\d "),
}


def test_every_mode_has_a_fixture_and_a_name() -> None:
    assert set(MODES) | {"regex"} == set(MULTILINE_MODES)
    assert {spec.mode for spec in FIXTURE_SPECS.values()} == set(MULTILINE_MODES)


@pytest.mark.parametrize("name", sorted(FIXTURE_SPECS))
@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_fixture_events_are_joined_exactly(name: str, chunk: int) -> None:
    events = events_of(name)
    assert len(events) >= 3
    lines = [line for event in events for line in event.split("\n")]
    out = join_all(FIXTURE_SPECS[name], lines, chunk=chunk)
    assert [r[2] for r in out] == events
    # Each record has its first line's offset and time, and is not marked truncated.
    firsts, i = [], 0
    for event in events:
        firsts.append(100 * i)
        i += event.count("\n") + 1
    assert [r[3] for r in out] == firsts
    assert {r[0] for r in out} == {TIME} and not any(r[4] for r in out)


def test_python_traceback_after_an_unrelated_line_is_its_own_event() -> None:
    lines = ["INFO:app:started", "Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
             "ValueError: x"]
    out = join_all(MultilineSpec("python"), lines)
    assert [r[2] for r in out] == [lines[0], "\n".join(lines[1:])]


def test_streams_are_joined_apart() -> None:
    joiner = Multiline(MultilineSpec("java"), 1 << 20)
    recs = [(TIME, "stderr", "java.lang.RuntimeException: boom", 0, False),
            (TIME, "stdout", "INFO request 1", 50, False),
            (TIME, "stderr", "\tat A.b(A.java:1)", 80, False),
            (TIME, "stdout", "INFO request 2", 120, False),
            (TIME, "stderr", "INFO after", 150, False)]
    out = joiner.feed(recs, "f")
    assert out == [(TIME, "stdout", "INFO request 1", 50, False),
                   (TIME, "stderr", "java.lang.RuntimeException: boom\n\tat A.b(A.java:1)", 0, False)]
    assert joiner.safe_offset("f") == 120 and joiner.safe_offset("other") is None
    assert joiner.flush() == [(TIME, "stdout", "INFO request 2", 120, False),
                              (TIME, "stderr", "INFO after", 150, False)]


def test_an_event_is_finished_at_max_line_bytes_cut_and_marked() -> None:
    lines = ["java.lang.RuntimeException: boom"] + [f"\tat A.m{i}(A.java:{i})" for i in range(100)] + ["INFO next"]
    out = join_all(MultilineSpec("java"), lines, max_bytes=200)
    first = out[0]
    assert first[4] is True and first[3] == 0
    assert len(first[2].encode()) == 200
    assert "\n".join(lines).startswith(first[2])
    # The rest of the trace is shipped on (frames joined from where the cap cut), the next line stays its own.
    assert out[-1][2] == "INFO next" and not out[-1][4]
    assert all(len(r[2].encode()) <= 200 for r in out)
    joiner = Multiline(MultilineSpec("java"), 200)
    joiner.feed(records(lines), "f")
    assert joiner.truncated >= 1


def test_multibyte_text_is_cut_on_a_character() -> None:
    lines = ["Exception in thread main", "\tat " + "ü" * 300]
    out = join_all(MultilineSpec("java"), lines, max_bytes=100)
    assert out[0][4] and len(out[0][2].encode()) <= 100
    assert out[0][2].encode().decode() == out[0][2]


def test_timeout_finishes_a_held_event_after_no_new_line() -> None:
    clock = Clock()
    joiner = Multiline(MultilineSpec("java", timeout=1.0), 1 << 20, clock=clock)
    out = joiner.feed(records(["Exception in thread main", "\tat A.b(A.java:1)"]), "f")
    assert out == [] and joiner.due() == 1001.0
    clock.now += 0.5
    assert joiner.expired() == []
    out = joiner.feed(records(["\tat A.c(A.java:2)"], start=200), "f")  # a new line: the timeout starts again
    clock.now += 0.9
    assert joiner.expired() == [] and joiner.safe_offset("f") == 0
    clock.now += 0.1
    assert joiner.expired() == [(TIME, "stdout", "Exception in thread main\n\tat A.b(A.java:1)\n\tat A.c(A.java:2)",
                                 0, False)]
    assert not joiner.held and joiner.due() is None and joiner.safe_offset("f") is None


def test_an_event_never_spans_two_files() -> None:
    joiner = Multiline(MultilineSpec("indented"), 1 << 20)
    assert joiner.feed(records(["head", "  a"]), "old") == []
    out = joiner.feed(records(["  b"]), "new")
    assert out == [(TIME, "stdout", "head\n  a", 0, False)]
    assert joiner.flush("old") == [] and joiner.holds("new")


def test_regex_lines_before_any_start_are_records_of_their_own() -> None:
    out = join_all(MultilineSpec("regex", r"^\d{4}-"), ["preamble", "more", "2026-12-04 a", "b", "2026-12-04 c"])
    assert [r[2] for r in out] == ["preamble", "more", "2026-12-04 a\nb", "2026-12-04 c"]


@pytest.mark.parametrize(("mode", "start", "problem"), [
    ("fortran", "", "multiline: unknown mode 'fortran'"),
    ("regex", "", "multiline: regex needs multiline_start"),
    ("regex", "([", "multiline_start: not a regular expression"),
    ("java", "^x", "multiline_start: only with multiline=regex"),
    ("", "^x", "multiline_start: needs multiline=regex"),
])
def test_bad_settings_name_the_option(mode: str, start: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace("[", r"\[")):
        MultilineSpec.parse(mode, start)


def test_container_labels() -> None:
    assert container_spec({}) is None
    assert container_spec({"lookout.multiline": "Java"}, 2.0) == MultilineSpec("java", "", 2.0)
    assert container_spec({"lookout.multiline": "regex", "lookout.multiline_start": "^x"}) == \
        MultilineSpec("regex", "^x")
    assert container_spec({"lookout.multiline": "off"}) is None
    with pytest.raises(ValueError, match=r"lookout\.multiline_start: needs lookout\.multiline=regex"):
        container_spec({"lookout.multiline_start": "^x"})


# --- joining never loses or reorders a byte ----------------------------------------------------------------------

_FIXTURE_LINES = sorted({line for name in FIXTURE_SPECS for e in events_of(name) for line in e.split("\n")})
_lines = st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                            st.one_of(st.sampled_from(_FIXTURE_LINES),
                                      st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                                     blacklist_characters="\n"), max_size=40))),
                  max_size=60)


@settings(max_examples=300, deadline=None)
@given(_lines, st.sampled_from(sorted(FIXTURE_SPECS)), st.lists(st.integers(1, 60), max_size=8),
       st.lists(st.integers(0, 60), max_size=4))
def test_joining_never_loses_or_reorders_a_byte(lines, name, chunks, expiries) -> None:
    """Per stream, the output messages joined with newlines are the input lines joined with newlines, in order; each
    output starts at an input line (its offset) and the offsets grow; the held event's first offset is always the
    safe offset. However the lines are cut into feeds and wherever timeouts fire."""
    clock = Clock()
    joiner = Multiline(FIXTURE_SPECS[name], 1 << 20, clock=clock)
    recs = [(TIME, stream, text, 10 * i, False) for i, (stream, text) in enumerate(lines)]
    out: list[tuple] = []
    pos = 0
    cuts = sorted({min(c, len(recs)) for c in chunks} | {len(recs)})
    for n, cut in enumerate(cuts):
        out += joiner.feed(recs[pos:cut], "f")
        pos = cut
        held = {s: joiner.first_offset(s) for s in joiner.held}
        assert joiner.safe_offset("f") == (min(held.values()) if held else None)  # type: ignore[type-var]
        # Nothing of a stream after its held event was let out before it.
        assert all(r[3] < held[r[1]] for r in out if r[1] in held)  # type: ignore[operator]
        if n in expiries:
            clock.now += 5.0
            out += joiner.expired()
            assert not joiner.held
    out += joiner.flush()
    offsets = {r[3]: r for r in recs}
    for stream in ("stdout", "stderr"):
        given_lines = [r[2] for r in recs if r[1] == stream]
        got = [r for r in out if r[1] == stream]
        assert "\n".join(r[2] for r in got) == "\n".join(given_lines)
        assert sum(r[2].count("\n") + 1 for r in got) == len(given_lines) or not given_lines
        assert [r[3] for r in got] == sorted(r[3] for r in got)
        for r in got:
            assert r[3] in offsets and r[2].startswith(offsets[r[3]][2]) and r[0] == TIME and not r[4]


# --- after the decoders' partial joining, json-file and CRI alike --------------------------------------------------

def _decoded_events(fmt: str, events: list[str], long_line: str) -> tuple[list[tuple], list[int]]:
    """Decode a log with ``long_line`` (over 16 KiB, so written as partials) inside a Java trace, line by line as
    the reader's smallest reads would give it; the records out, and the safe offset after each line."""
    from collectors.logs.decoders import CriDecoder, JsonFileDecoder
    from tests.unit.test_log_decoders import cri_lines, docker_lines

    entries = [("stderr", line) for event in events for line in event.split("\n")]
    entries.insert(2, ("stdout", long_line))  # a partial of the other stream in between
    data = docker_lines(entries) if fmt == "json-file" else cri_lines(entries)
    decoder = JsonFileDecoder() if fmt == "json-file" else CriDecoder()
    decoder.file = "k"
    decoder.multiline = Multiline(MultilineSpec("java"), 1 << 20)
    out, safe, offset = [], [], 0
    for line in data.splitlines(keepends=True):
        out += decoder.decode(line, offset).records
        offset += len(line)
        safe.append(decoder.safe_offset(offset, "k"))
    out += decoder.decode(b"", offset).records  # the file's end
    assert decoder.safe_offset(offset, "k") == offset
    return out, safe


@pytest.mark.parametrize("fmt", ["json-file", "cri"])
def test_partials_are_joined_first_then_events_per_stream(fmt: str) -> None:
    events = events_of("java.log")
    frame = "\tat " + "x" * 40_000 + "(Long.java:1)"
    trace = events[1].split("\n")
    events[1] = "\n".join([*trace[:3], frame, *trace[3:]])  # a frame of over 16 KiB: partials in the file
    out, safe = _decoded_events(fmt, events, "y" * 20_000)
    assert [r[2] for r in out if r[1] == "stderr"] == events
    assert [r[2] for r in out if r[1] == "stdout"] == ["y" * 20_000]
    # The safe offset never passes the first line of the event being joined, and never goes back.
    assert safe == sorted(safe)
    stderr = [r for r in out if r[1] == "stderr"]
    assert max(safe[:-1]) <= stderr[-1][3]


# --- the Kubernetes annotation, where the runtime shows it on the node -------------------------------------------

@pytest.mark.parametrize("annotations", [
    {"lookout.multiline": "go"},  # containerd with pod_annotations = ["lookout.multiline"], CRI-O allowed_annotations
    {"io.kubernetes.cri-o.Annotations": '{"lookout.multiline":"go","kubernetes.io/config.seen":"x"}'},
])
def test_a_pod_annotation_in_the_bundle_chooses_the_mode(tmp_path: Path, annotations: dict[str, str]) -> None:
    import json

    from agent.model import Runtime
    from collectors.cri import CriMetadata
    from collectors.discovery import CgroupRef

    cid = "c" * 64
    bundle = tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid / "config.json"
    bundle.parent.mkdir(parents=True)
    bundle.write_text(json.dumps({"process": {"env": []}, "annotations": {
        "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "api-0", **annotations}}))
    cri = CriMetadata(tmp_path)
    cri.refresh()
    info = cri.get(CgroupRef(f"/kubepods/pod1/{cid}", Runtime.CONTAINERD, cid, "1"))
    assert info is not None and info.labels["lookout.multiline"] == "go"
    assert container_spec(info.labels) == MultilineSpec("go")
    bundle.write_text(json.dumps({"annotations": {"io.kubernetes.pod.name": "api-0"}}))
    cri2 = CriMetadata(tmp_path)
    cri2.refresh()
    other = cri2.get(CgroupRef(f"/kubepods/pod1/{cid}", Runtime.CONTAINERD, cid, "1"))
    assert other is not None and "lookout.multiline" not in other.labels


# --- --multiline-timeout: flag, LOOKOUT_* variable, TOML; the route option wins -----------------------------------

def test_multiline_timeout_flag_env_and_file(tmp_path: Path) -> None:
    from agent.config import ConfigError
    from agent.logs.routes import LogOptions, parse_route, route_options
    from tests.unit.support import config_from

    state = ["--state-dir", str(tmp_path / "state")]
    assert config_from(state).multiline_timeout == 1.0
    assert config_from([*state, "--multiline-timeout", "250ms"]).multiline_timeout == 0.25
    assert config_from(state, {"LOOKOUT_MULTILINE_TIMEOUT": "3s"}).multiline_timeout == 3.0
    toml = tmp_path / "lookout.toml"
    toml.write_text("multiline-timeout = 2\n")
    assert config_from([*state, "--config", str(toml)]).multiline_timeout == 2.0
    for bad in ("0", "soon"):
        with pytest.raises(ConfigError, match="--multiline-timeout"):
            config_from([*state, "--multiline-timeout", bad])
    toml.write_text("multiline-timeout = -1\n")
    with pytest.raises(ConfigError, match="multiline-timeout in"):
        config_from([*state, "--config", str(toml)])
    base = LogOptions(multiline_timeout=0.25)
    opts = route_options(parse_route("file:///x.ndjson?multiline=go"), base)
    assert opts.multiline == MultilineSpec("go", "", 0.25) and opts.multiline_set
    opts = route_options(parse_route("file:///x.ndjson?multiline=go&multiline_timeout=5s"), base)
    assert opts.multiline == MultilineSpec("go", "", 5.0)
    opts = route_options(parse_route("file:///x.ndjson?multiline=off"), base)
    assert opts.multiline is None and opts.multiline_set
    opts = route_options(parse_route("file:///x.ndjson"), base)
    assert opts.multiline is None and not opts.multiline_set and opts.multiline_timeout == 0.25


def test_http_routes_keep_the_multiline_options_to_themselves() -> None:
    from exporters.http.common import Target

    target = Target.from_route("http://127.0.0.1:9/in?multiline=regex&multiline_start=%5E%5Cd&multiline_timeout=2s"
                               "&refresh=wait_for", "http")
    assert target.url == "http://127.0.0.1:9/in?refresh=wait_for"


@pytest.mark.parametrize("mode", ["go", "python", "ruby"])
def test_a_line_nothing_could_continue_is_never_held(mode: str) -> None:
    joiner = Multiline(MultilineSpec(mode), 1 << 20)
    assert joiner.feed(records(["2026/12/04 plain line"]), "f") == records(["2026/12/04 plain line"])
    assert not joiner.held and joiner.safe_offset("f") is None
    java = Multiline(MultilineSpec("java"), 1 << 20)  # a java line may still get its exception line
    assert java.feed(records(["plain"]), "f") == [] and java.safe_offset("f") == 0

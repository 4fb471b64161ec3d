"""collectors/cgroups/parsers.py on real kernel files (tests/fixtures/data) and on garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model import InterfaceStats
from collectors.cgroups import parsers as p
from tests.fixtures.trees import HOST_V1, SAMPLES

LABELS = HOST_V1 / "containers/labels"
LIMITED = HOST_V1 / "containers/limited"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


# --- flat keyed files ---------------------------------------------------------------------------


def test_flat_v1_memory_stat_coroot() -> None:
    s = p.parse_flat(sample("coroot/v1-docker-b43d/memory.stat"))  # ends with an empty line
    assert s["total_inactive_file"] == 1601998848
    assert s["total_cache"] == 3206844416
    assert s["hierarchical_memory_limit"] == 21474836480
    assert s["pgfault"] == 4304414697
    assert len(s) == 31


def test_flat_v1_memory_stat_captured_has_newer_keys() -> None:
    s = p.parse_flat((LIMITED / "cgroup/memory/memory.stat").read_bytes())
    assert s["hierarchical_memsw_limit"] == 134217728
    assert s["total_workingset_refault_file"] == 171
    assert s["total_inactive_file"] == 32768
    assert s["total_shmem"] == 0


def test_flat_v2_memory_stat_and_cpu_stat() -> None:
    s = p.parse_flat(sample("coroot/v2-docker-ba7b/memory.stat"))
    assert (s["anon"], s["file"], s["inactive_file"], s["file_dirty"]) == (75247616, 50835456, 50204672, 49152)
    cpu = p.parse_flat(sample("coroot/v2-docker-73051/cpu.stat"))
    assert cpu == {"usage_usec": 3795681254, "user_usec": 3160014031, "system_usec": 635667223,
                   "nr_periods": 809036, "nr_throttled": 76, "throttled_usec": 363166}
    # The cpu controller disabled: only the three core keys.
    assert p.parse_flat(sample("coroot/v2-ssh.service/cpu.stat")) == {
        "usage_usec": 151439967, "user_usec": 99140470, "system_usec": 52299496}


def test_flat_v1_cpu_stat_with_bursts_and_cpuacct_stat() -> None:
    cpu = p.parse_flat((LIMITED / "cgroup/cpu/cpu.stat").read_bytes())
    assert set(cpu) == {"nr_periods", "nr_throttled", "throttled_time", "nr_bursts", "burst_time"}
    assert p.parse_flat(sample("opencontainers/cpuacct.stat")) == {"user": 452278264, "system": 291429664}


def test_flat_memory_events_and_oom_control() -> None:
    assert p.parse_flat(sample("cadvisor/memory.events")) == {
        "low": 0, "high": 42, "max": 5, "oom": 1, "oom_kill": 0, "oom_group_kill": 0}
    assert p.parse_flat(b"") == {}  # an empty memory.events is tolerated (cAdvisor TestSetMemoryEvents)
    oom = p.parse_flat((LIMITED / "cgroup/memory/memory.oom_control").read_bytes())
    assert oom == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 0}


def test_flat_skips_header_and_non_numeric_lines() -> None:
    # cpuacct.usage_all's header ("cpu user system") and its 3-field rows are not key/value lines.
    assert p.parse_flat(sample("opencontainers/cpuacct.usage_all")) == {}


_KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=30)


@given(st.dictionaries(_KEY, st.integers(min_value=-(2**63), max_value=2**64)))
def test_flat_round_trip(values: dict[str, int]) -> None:
    text = "".join(f"{k} {v}\n" for k, v in values.items()).encode()
    assert p.parse_flat(text) == values


# --- single values, per-CPU, cpu.max, weight ------------------------------------------------------


def test_parse_int() -> None:
    assert p.parse_int(b"9223372036854771712\n") == p.UNLIMITED_THRESHOLD * 2 - 4096
    assert p.parse_int(b"max\n") == -1
    assert p.parse_int(b"-1\n") == -1
    with pytest.raises(ValueError):
        p.parse_int(b"garbage")


def test_percpu_samples() -> None:
    assert p.parse_percpu(sample("opencontainers/cpuacct.usage_percpu")) == [
        1564936537989058, 1583937096487821, 1604195415465681, 1596445226820187,
        1481069084155629, 1478735613864327, 1477610593414743, 1476362015778086]
    # The kernel ends the line with a space before the newline.
    raw = (LIMITED / "cgroup/cpuacct/cpuacct.usage_percpu").read_bytes()
    assert raw.endswith(b" \n")
    assert p.parse_percpu(raw) == [692544146, 659234355]


@pytest.mark.parametrize(("data", "expected"), [
    (b"max 100000\n", (0, 100000)),
    (b"10000 100000\n", (10000, 100000)),
    (b"20000 100010\n", (20000, 100010)),
    (b"max\n", (0, 100000)),
])
def test_cpu_max(data: bytes, expected: tuple[int, int]) -> None:
    assert p.parse_cpu_max(data) == expected


def test_cpu_max_samples() -> None:
    assert p.parse_cpu_max(sample("coroot/v2-docker-ba7b/cpu.max")) == (0, 100000)
    assert p.parse_cpu_max(sample("coroot/v2-docker-73051/cpu.max")) == (10000, 100000)
    assert p.parse_cpu_max(sample("cadvisor/v2-test1/cpu.max")) == (20000, 100010)


@pytest.mark.parametrize(("weight", "shares"), [(100, 2597), (39, 998), (1, 2), (10000, 262144), (50, 1286)])
def test_weight_to_shares(weight: int, shares: int) -> None:
    assert p.weight_to_shares(weight) == shares


# --- blkio and io.stat ----------------------------------------------------------------------------


def test_blkio_coroot_with_total_line() -> None:
    table = p.parse_blkio(sample("coroot/v1-docker-b43d/blkio.throttle.io_service_bytes"))
    assert sorted(table) == [(8, 0), (8, 16), (8, 32), (8, 48), (9, 1)]  # the bare "Total N" line is no device
    assert table[(8, 48)] == {"Read": 875529547776, "Write": 753046432768, "Sync": 753018997760,
                              "Async": 875556982784, "Total": 1628575980544}
    serviced = p.parse_blkio(sample("coroot/v1-docker-b43d/blkio.throttle.io_serviced"))
    assert serviced[(9, 1)] == {"Read": 633949, "Write": 4, "Sync": 0, "Async": 633953, "Total": 633953}


def test_blkio_discard_rows() -> None:
    table = p.parse_blkio(sample("blkio-discard/blkio.throttle.io_service_bytes_recursive"))
    assert table == {
        (8, 16): {"Read": 4223325184, "Write": 3207528448, "Sync": 5387592704, "Async": 2043260928,
                  "Discard": 0, "Total": 7430853632},
        (8, 0): {"Read": 5246572032, "Write": 2361737216, "Sync": 5575892480, "Async": 2032416768,
                 "Discard": 0, "Total": 7608309248},
    }


def test_blkio_idle_and_two_field_rows() -> None:
    assert p.parse_blkio((LIMITED / "cgroup/blkio/blkio.throttle.io_service_bytes").read_bytes()) == {}  # "Total 0"
    assert p.parse_blkio(b"8:0 1024\n") == {(8, 0): {"Count": 1024}}  # blkio.sectors/time shape


def test_io_stat() -> None:
    table = p.parse_io_stat(sample("coroot/v2-docker-73051/io.stat"))
    assert table == {
        (252, 0): {"rbytes": 11, "wbytes": 630538240, "rios": 22, "wios": 57111, "dbytes": 0, "dios": 0},
        (253, 0): {"rbytes": 33, "wbytes": 630538241, "rios": 44, "wios": 57056, "dbytes": 0, "dios": 0},
    }


def test_io_stat_iocost() -> None:
    row = p.parse_io_stat(sample("opencontainers/io.stat.iocost"))[(259, 0)]
    assert row["rbytes"] == 4085926524416 and row["wios"] == 40358485
    assert row["cost.usage"] == 1532009788 and row["cost.wait"] == 1477289869
    assert row["cost.vrate"] == 100  # "100.00"


# --- PSI ------------------------------------------------------------------------------------------


def test_psi() -> None:
    assert p.parse_psi(sample("coroot/v2-docker-73051/cpu.pressure")) == (465907442, 463529433)
    assert p.parse_psi(sample("coroot/v2-docker-73051/io.pressure")) == (17657662684, 17636951020)
    # opencontainers fs2/psi_test.go: a "some" line alone, non-zero averages.
    assert p.parse_psi(b"some avg10=1.71 avg60=2.36 avg300=2.57 total=230548833\n") == (230548833, 0)


# --- /proc/<pid>/net/dev and limits ---------------------------------------------------------------


def test_net_dev_cadvisor_sample_filters_lo_veth_docker() -> None:
    got = p.parse_net_dev(sample("cadvisor/procnetdev"))
    assert got == [
        InterfaceStats("wlp4s0", 1, 2, 3, 4, 9, 10, 11, 12),
        InterfaceStats("em1", 315849, 1172, 0, 0, 315850, 1173, 0, 0),
    ]


def test_net_dev_host_sample() -> None:
    got = {i.name: i for i in p.parse_net_dev((HOST_V1 / "host/net_dev").read_bytes())}
    assert sorted(got) == ["eth0", "ifb0", "ifb1"]  # "lo" dropped
    assert p.parse_net_dev((LABELS / "proc/10263/net_dev").read_bytes()) == []  # only lo in the netns


def test_net_dev_veth_and_nerdctl_dropped() -> None:
    text = (b"Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
            b"veth1a2b3c:  10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n"
            b"nerdctl0:  10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n"
            b"Docker_gwbridge:  10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n"
            b"eth0:  10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n")
    assert [i.name for i in p.parse_net_dev(text)] == ["eth0"]


def test_limits_file() -> None:
    assert p.parse_nofile_soft((LABELS / "proc/10263/limits").read_bytes()) == 20000
    assert p.parse_nofile_soft(b"Max open files            unlimited            unlimited            files\n") == -1
    assert p.parse_nofile_soft(b"Max processes 10 10 processes\n") is None


# --- memory limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    (9223372036854771712, 0),  # v1 unlimited (page-aligned LONG_MAX)
    (-1, 0),  # v2 "max" through parse_int
    ((1 << 62) + 1, 0),
    (1 << 62, 1 << 62),
    (67108864, 67108864),
    (0, 0),
])
def test_memory_limit(raw: int, expected: int) -> None:
    assert p.memory_limit(raw) == expected


def test_memory_limit_from_files() -> None:
    assert p.memory_limit(p.parse_int((LABELS / "cgroup/memory/memory.limit_in_bytes").read_bytes())) == 0
    assert p.memory_limit(p.parse_int((LIMITED / "cgroup/memory/memory.limit_in_bytes").read_bytes())) == 67108864
    assert p.memory_limit(p.parse_int(sample("coroot/v2-docker-73051/memory.max"))) == 0
    assert p.memory_limit(p.parse_int(sample("coroot/v2-docker-ba7b/memory.max"))) == 4294967296


_BLKIO_OPS = ["Read", "Write", "Sync", "Async", "Discard", "Total"]
_DEVICE = st.tuples(st.integers(0, 300), st.integers(0, 1 << 20))


@settings(max_examples=300)
@given(st.lists(st.tuples(_DEVICE, st.sampled_from(_BLKIO_OPS), st.integers(0, 1 << 64)), max_size=30),
       st.integers(0, 1 << 64), st.booleans())
def test_blkio_table_read_as_triples_as_line_by_line(rows: list[tuple[tuple[int, int], str, int]], total: int,
                                                     two_field_row: bool) -> None:
    """The kernel's tables (``MAJ:MIN Op value`` lines and ``Total N``) come out of the one-split way exactly as
    line by line, also with a row of another shape (which sends the whole table the line by line way)."""
    lines = [f"{major}:{minor} {op} {value}" for (major, minor), op, value in rows]
    if two_field_row:
        lines.insert(len(lines) // 2, "8:0 77")
    data = ("\n".join([*lines, f"Total {total}"]) + "\n").encode()
    table = p.parse_blkio(data)
    assert table == p._blkio_lines(data)
    if not two_field_row:
        expected: dict[tuple[int, int], dict[str, int]] = {}
        for device, op, value in rows:
            expected.setdefault(device, {})[op] = value
        assert table == expected


# --- garbage --------------------------------------------------------------------------------------
# Cgroup parsers run inside the collector's per-container guard, which catches OSError and
# ValueError (collectors/manager.py): on garbage they may raise ValueError, nothing else. The
# procfs parsers for net/dev and limits run outside it, so they must never raise.

_GUARDED = [p.parse_int, p.parse_flat, p.parse_percpu, p.parse_cpu_max, p.parse_blkio, p.parse_io_stat,
            p.parse_psi, p.parse_pids]
_TEXTISH = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"8:0", b"Read", b"some", b"full", b"total=", b"total=12", b"rbytes=1e999.",
                              b"max", b"1", b"-7", b"x", b"=", b":", b" ", b"\n", b"\t", b"lo:", b"\xff",
                              b"Max open files", b"1.5", b"nan."]), max_size=40).map(b"".join),
)


@settings(max_examples=300)
@given(_TEXTISH)
def test_cgroup_parsers_raise_only_value_error(data: bytes) -> None:
    for parse in _GUARDED:
        with contextlib.suppress(ValueError):
            parse(data)


@settings(max_examples=300)
@given(_TEXTISH)
def test_procfs_parsers_never_raise(data: bytes) -> None:
    p.parse_net_dev(data)
    p.parse_nofile_soft(data)


@given(st.binary(max_size=200))
def test_net_dev_keeps_good_lines_next_to_bad_ones(noise: bytes) -> None:
    head = sample("cadvisor/procnetdev")
    bad = b"bad0: " + b" ".join([b"x"] * 16) + b"\n"
    names = [i.name for i in p.parse_net_dev(head + bad + noise.replace(b"\n", b" ") + b"\n")]
    assert names[:2] == ["wlp4s0", "em1"]

"""Pure parsers for cgroup and procfs files. Each takes the file's bytes and returns plain values.

Formats follow the kernel's cgroup-v1/ and cgroup-v2.rst documentation; the fixture tests feed
them real files copied from hosts.
"""

from __future__ import annotations

from agent.model import InterfaceStats, NumaPages, UdpStats

# v1 reports "unlimited" as a page-aligned LONG_MAX (9223372036854771712); v2 writes "max".
# cAdvisor exports every memory limit above 2^62 as 0 (lib/metrics/prometheus.go specMemoryValue).
UNLIMITED_THRESHOLD = 1 << 62

# Interfaces never reported, as cAdvisor's scanInterfaceStats (lower-cased name prefixes).
_IGNORED_INTERFACES = (b"lo", b"veth", b"docker", b"nerdctl")


def parse_int(data: bytes) -> int:
    """A single-number file; ``max`` (v2) becomes -1."""
    text = data.strip()
    if text == b"max":
        return -1
    return int(text)


def parse_flat(data: bytes) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events, oom_control)."""
    fields = data.split()
    if len(fields) == 2 * data.count(b"\n"):
        # The well-formed case (every line exactly "key value"): one pass, no per-line splitting.
        try:
            it = iter(fields)
            return {key.decode(): int(value) for key, value in zip(it, it, strict=True)}
        except ValueError:
            pass
    out: dict[str, int] = {}
    for line in data.splitlines():
        key, _, value = line.partition(b" ")
        if value:
            try:
                out[key.decode()] = int(value)
            except ValueError:
                continue
    return out


def parse_percpu(data: bytes) -> list[int]:
    """cpuacct.usage_percpu: one ns counter per possible CPU, space separated."""
    return [int(v) for v in data.split()]


def parse_cpu_max(data: bytes) -> tuple[int, int]:
    """v2 cpu.max ``$MAX $PERIOD``: (quota µs or 0 for ``max``, period µs)."""
    parts = data.split()
    if not parts:
        raise ValueError("empty cpu.max")
    quota = 0 if parts[0] == b"max" else int(parts[0])
    period = int(parts[1]) if len(parts) > 1 else 100000
    return quota, period


def weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight to v1 cpu.shares, with cAdvisor's (runc's) integer formula."""
    if weight <= 0:
        return 0
    return 2 + ((weight - 1) * 262142) // 9999


# Device and operation names seen in blkio tables, parsed once (a host has a handful of each; bounded anyway).
_BLKIO_DEVICES: dict[bytes, tuple[int, int]] = {}
_BLKIO_OPS: dict[bytes, str] = {}


def parse_blkio(data: bytes) -> dict[tuple[int, int], dict[str, int]]:
    """v1 blkio tables: ``MAJ:MIN Op value`` lines, ``MAJ:MIN value`` (op ``Count``), bare ``Total N`` skipped."""
    fields = data.split()
    n = len(fields)
    if n % 3 == 2 and fields[-2] == b"Total":
        # The kernel's ``throttle.io_service*`` tables: ``MAJ:MIN Op value`` lines and one ``Total N``, read as
        # triples of one split (a third of the per-line cost; a cycle parses two per container). Anything else,
        # or a triple that does not parse, takes the line by line way below.
        try:
            return _blkio_triples(fields, n - 2)
        except ValueError:
            pass
    return _blkio_lines(data)


def _blkio_triples(fields: list[bytes], end: int) -> dict[tuple[int, int], dict[str, int]]:
    out: dict[tuple[int, int], dict[str, int]] = {}
    devices, ops = _BLKIO_DEVICES, _BLKIO_OPS
    for i in range(0, end, 3):
        dev = fields[i]
        key = devices.get(dev)
        if key is None:
            major, sep, minor = dev.partition(b":")
            if not sep:
                raise ValueError(dev)
            key = (int(major), int(minor))
            if len(devices) < 4096:
                devices[dev] = key
        raw_op = fields[i + 1]
        op = ops.get(raw_op)
        if op is None:
            if not raw_op.isalpha():
                raise ValueError(raw_op)
            op = raw_op.decode()
            if len(ops) < 256:
                ops[raw_op] = op
        values = out.get(key)
        if values is None:
            values = out[key] = {}
        values[op] = int(fields[i + 2])
    return out


def _blkio_lines(data: bytes) -> dict[tuple[int, int], dict[str, int]]:
    out: dict[tuple[int, int], dict[str, int]] = {}
    for line in data.splitlines():
        fields = line.split()
        if len(fields) < 2 or b":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(b":")
        try:
            key = (int(major), int(minor))
            if len(fields) == 2:
                out.setdefault(key, {})["Count"] = int(fields[1])
            else:
                out.setdefault(key, {})[fields[1].decode()] = int(fields[2])
        except ValueError:
            continue
    return out


def parse_io_stat(data: bytes) -> dict[tuple[int, int], dict[str, int]]:
    """v2 io.stat: ``MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=.. [cost.*=..]``."""
    out: dict[tuple[int, int], dict[str, int]] = {}
    for line in data.splitlines():
        fields = line.split()
        if not fields or b":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(b":")
        values: dict[str, int] = {}
        for field in fields[1:]:
            key, _, value = field.partition(b"=")
            try:
                values[key.decode()] = int(value) if b"." not in value else int(float(value))
            except (ValueError, OverflowError):  # OverflowError: int(float("1e999"))
                continue
        try:
            out[(int(major), int(minor))] = values
        except ValueError:
            continue
    return out


def parse_psi(data: bytes) -> tuple[int, int]:
    """``*.pressure``: the ``total=`` µs counters of the ``some`` and ``full`` lines."""
    some = full = 0
    for line in data.splitlines():
        kind, _, rest = line.partition(b" ")
        idx = rest.rfind(b"total=")
        total = rest[idx + 6 :].split()
        if idx < 0 or not total:
            continue
        value = int(total[0])
        if kind == b"some":
            some = value
        elif kind == b"full":
            full = value
    return some, full


def parse_net_dev(data: bytes) -> list[InterfaceStats]:
    """/proc/<pid>/net/dev, skipping lo, veth*, docker*, nerdctl* as cAdvisor does."""
    out: list[InterfaceStats] = []
    for line in data.splitlines()[2:]:
        name, sep, rest = line.partition(b":")
        if not sep:
            continue
        name = name.strip()
        if name.lower().startswith(_IGNORED_INTERFACES):
            continue
        f = rest.split()
        if len(f) != 16:
            continue
        try:  # read outside the per-container error guard: a bad line must not fail the snapshot
            out.append(
                InterfaceStats(
                    name.decode(errors="replace"),
                    int(f[0]), int(f[1]), int(f[2]), int(f[3]),
                    int(f[8]), int(f[9]), int(f[10]), int(f[11]),
                )
            )
        except ValueError:
            continue
    return out


def parse_pids(data: bytes) -> list[int]:
    """cgroup.procs / cgroup.threads: one pid per line."""
    return [int(v) for v in data.split()]


def parse_nofile_soft(data: bytes) -> int | None:
    """/proc/<pid>/limits: soft ``Max open files``, ``unlimited`` as -1 (cAdvisor's convention)."""
    for line in data.splitlines():
        if line.startswith(b"Max open files"):
            # Read outside the per-container error guard: malformed means unknown, never an error.
            soft = line[len(b"Max open files") :].split()[:1]
            if soft == [b"unlimited"]:
                return -1
            return int(soft[0]) if soft and soft[0].isdigit() else None
    return None


def memory_limit(value: int) -> int:
    """Normalize a memory limit: unlimited (v1 huge value, v2 ``max`` = -1) becomes 0."""
    if value < 0 or value > UNLIMITED_THRESHOLD:
        return 0
    return value


# --- the optional kinds (hugetlb, memory_numa, tcp, udp, advtcp, sched) ----------------------------------------

_NUMA_TYPES = ("file", "anon", "unevictable")


def hugepage_size_name(dirname: str) -> str | None:
    """``hugepages-2048kB`` (a ``/sys/kernel/mm/hugepages`` entry) as the hugetlb controller names its files and
    cAdvisor its ``pagesize`` label: ``2MB``, ``1GB``, or ``64KB``; None for any other name."""
    if not dirname.startswith("hugepages-") or not dirname.endswith("kB"):
        return None
    try:
        kb = int(dirname[10:-2])
    except ValueError:
        return None
    if kb >= 1 << 20:
        return f"{kb >> 20}GB"
    if kb >= 1 << 10:
        return f"{kb >> 10}MB"
    return f"{kb}KB"


def _numa_nodes(columns: list[bytes]) -> dict[int, int]:
    nodes = {}
    for column in columns:
        key, sep, value = column.partition(b"=")
        if sep and key[:1] == b"N" and key[1:].isdigit():
            nodes[int(key[1:])] = int(value)
    return nodes


def parse_numa_stat_v1(data: bytes) -> NumaPages:
    """cgroup v1 ``memory.numa_stat`` (pages): ``file=44428 N0=32614 N1=7335`` for the cgroup's own pages and
    ``hierarchical_file=...`` for its subtree; other lines (``total``, a kernel's ``numa_locality``) are skipped."""
    own: dict[str, dict[int, int]] = {}
    tree: dict[str, dict[int, int]] = {}
    for line in data.splitlines():
        columns = line.split()
        if not columns:
            continue
        key, sep, _total = columns[0].partition(b"=")
        if not sep:
            continue
        name = key.decode()
        if name in _NUMA_TYPES:
            own[name] = _numa_nodes(columns[1:])
        elif name.startswith("hierarchical_") and name[13:] in _NUMA_TYPES:
            tree[name[13:]] = _numa_nodes(columns[1:])
    return NumaPages(own or None, tree)


def parse_numa_stat_v2(data: bytes, page_size: int) -> NumaPages:
    """cgroup v2 ``memory.numa_stat`` (bytes, the cgroup and its descendants): ``anon N0=193236992 N1=4096``, in
    pages as cgroup v1 counts them. v2 has no count of a cgroup's own pages, so only ``hierarchy`` is set."""
    tree: dict[str, dict[int, int]] = {}
    for line in data.splitlines():
        columns = line.split()
        if columns and columns[0].decode() in _NUMA_TYPES:
            tree[columns[0].decode()] = {node: size // page_size for node, size in _numa_nodes(columns[1:]).items()}
    return NumaPages(None, tree)


# /proc/net/tcp[6] socket states (include/net/tcp_states.h, hex in the "st" column) and cAdvisor's names for them.
TCP_STATES = {
    b"01": "established", b"02": "synsent", b"03": "synrecv", b"04": "finwait1", b"05": "finwait2",
    b"06": "timewait", b"07": "close", b"08": "closewait", b"09": "lastack", b"0A": "listen", b"0B": "closing",
}


def parse_tcp(data: bytes) -> dict[str, int]:
    """Sockets per state in a ``/proc/<pid>/net/tcp`` or ``tcp6`` table (every state present, 0 when none)."""
    counts = dict.fromkeys(TCP_STATES.values(), 0)
    for line in data.splitlines()[1:]:
        fields = line.split(None, 4)
        if len(fields) > 3:
            state = TCP_STATES.get(fields[3])
            if state is not None:
                counts[state] += 1
    return counts


def parse_udp(data: bytes) -> UdpStats:
    """A ``/proc/<pid>/net/udp`` or ``udp6`` table: every socket (cAdvisor calls the count ``listen``), the summed
    ``drops`` and queues. The kernel prints ``tx_queue:rx_queue``; cAdvisor reads the pair the other way round,
    Lookout as the kernel writes it (README: Differences from cAdvisor)."""
    stats = UdpStats()
    for line in data.splitlines()[1:]:
        fields = line.split()
        if not fields:
            continue
        stats.listen += 1
        if len(fields) != 13:
            continue
        tx, _, rx = fields[4].partition(b":")
        try:
            stats.tx_queued += int(tx, 16)
            stats.rx_queued += int(rx, 16)
            stats.dropped += int(fields[12])
        except ValueError:
            continue
    return stats


def parse_mib(data: bytes, into: dict[str, int], prefixes: tuple[bytes, ...] = (b"TcpExt:", b"Tcp:")) -> None:
    """``/proc/<pid>/net/netstat`` or ``net/snmp``: pairs of lines, names then values, for each protocol; the
    counters of the protocols in ``prefixes`` go into ``into`` under their lower-cased names."""
    lines = data.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        keys, numbers = names.split(), values.split()
        if not keys or not numbers or keys[0] not in prefixes or keys[0] != numbers[0] or len(keys) != len(numbers):
            continue
        for key, number in zip(keys[1:], numbers[1:], strict=True):
            try:
                into[key.decode().lower()] = int(number)
            except ValueError:
                continue


def parse_schedstat(data: bytes) -> tuple[int, int, int] | None:
    """``/proc/<pid>/schedstat``: (ns on the CPU, ns waiting on a runqueue, timeslices run)."""
    fields = data.split()
    if len(fields) != 3:
        return None
    try:
        return int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None


def parse_referenced_kb(data: bytes) -> int:
    """The sum of the ``Referenced:`` lines (kB) of ``/proc/<pid>/smaps_rollup`` (one line) or ``smaps``."""
    total = 0
    start = data.find(b"Referenced:")
    while start >= 0:
        end = data.find(b"kB", start)
        if end < 0:
            break
        number = data[start + 11:end].strip()
        if number.isdigit():
            total += int(number)
        start = data.find(b"Referenced:", end)
    return total

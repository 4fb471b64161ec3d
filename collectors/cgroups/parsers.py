"""Pure parsers for cgroup and procfs files. Each takes the file's bytes and returns plain values.

Formats follow the kernel's cgroup-v1/ and cgroup-v2.rst documentation; the fixture tests feed
them real files copied from hosts.
"""

from __future__ import annotations

from agent.model import InterfaceStats

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


def parse_blkio(data: bytes) -> dict[tuple[int, int], dict[str, int]]:
    """v1 blkio tables: ``MAJ:MIN Op value`` lines, ``MAJ:MIN value`` (op ``Count``), bare ``Total N`` skipped."""
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

"""The kernel's own numbers, read directly, to check the agent against: cgroup files and /proc/<pid>/net/dev.

``cgroup`` arguments are the agent's ``id`` label: the cgroup path below the hierarchy root
(``/docker/<id>`` with Docker's cgroupfs driver).
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_version() -> int:
    """1 when the v1 controllers carry the stats (v1 and hybrid hosts), else 2."""
    return 1 if (CGROUP_ROOT / "memory").is_dir() or (CGROUP_ROOT / "cpuacct").is_dir() else 2


def _read(path: Path) -> str:
    return path.read_text()


def cpu_usage_seconds(cgroup: str) -> float:
    """v1 ``cpuacct.usage`` (ns) or v2 ``cpu.stat`` ``usage_usec``, in seconds."""
    if cgroup_version() == 1:
        return int(_read(CGROUP_ROOT / "cpuacct" / cgroup.lstrip("/") / "cpuacct.usage")) / 1e9
    for line in _read(CGROUP_ROOT / cgroup.lstrip("/") / "cpu.stat").splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise AssertionError(f"no usage_usec in {cgroup}/cpu.stat")


def cpu_usage_path(cgroup: str) -> Path:
    if cgroup_version() == 1:
        return CGROUP_ROOT / "cpuacct" / cgroup.lstrip("/") / "cpuacct.usage"
    return CGROUP_ROOT / cgroup.lstrip("/") / "cpu.stat"


def memory_usage_bytes(cgroup: str) -> int:
    """v1 ``memory.usage_in_bytes`` or v2 ``memory.current``."""
    if cgroup_version() == 1:
        return int(_read(CGROUP_ROOT / "memory" / cgroup.lstrip("/") / "memory.usage_in_bytes"))
    return int(_read(CGROUP_ROOT / cgroup.lstrip("/") / "memory.current"))


def memory_stat(cgroup: str) -> dict[str, int]:
    base = CGROUP_ROOT / "memory" if cgroup_version() == 1 else CGROUP_ROOT
    out = {}
    for line in _read(base / cgroup.lstrip("/") / "memory.stat").splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def net_dev(pid: int) -> dict[str, dict[str, int]]:
    """``/proc/<pid>/net/dev``: interface -> rx_bytes, rx_packets, tx_bytes, tx_packets."""
    out = {}
    for line in _read(Path(f"/proc/{pid}/net/dev")).splitlines()[2:]:
        name, _, rest = line.partition(":")
        f = rest.split()
        out[name.strip()] = {"rx_bytes": int(f[0]), "rx_packets": int(f[1]),
                             "tx_bytes": int(f[8]), "tx_packets": int(f[9])}
    return out

"""``/proc/diskstats``: the kernel's I/O counters per block device.

cAdvisor serves them for the root container ``/``, one series per mounted filesystem labelled with the
filesystem's device (``container_fs_reads_merged_total``, ``..._sector_reads_total``, ``..._io_time_seconds_total``
and the rest): the whole device's activity, not any container's. Fields after ``major minor name``
(Documentation/admin-guide/iostats.rst): reads completed, reads merged, sectors read, ms reading, writes
completed, writes merged, sectors written, ms writing, I/Os in progress, ms doing I/O, weighted ms doing I/O;
newer kernels append discard and flush fields, which are ignored.
"""

from __future__ import annotations

from agent.model import DiskStats


def parse_diskstats(data: bytes) -> dict[tuple[int, int], DiskStats]:
    """(major, minor) -> counters; malformed lines are skipped."""
    out: dict[tuple[int, int], DiskStats] = {}
    for line in data.splitlines():
        fields = line.split()
        if len(fields) < 14:
            continue
        try:
            out[(int(fields[0]), int(fields[1]))] = DiskStats(*(int(f) for f in fields[3:14]))
        except ValueError:
            continue
    return out

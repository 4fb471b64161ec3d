"""/proc/diskstats parsing (the root container's per-filesystem container_fs_* I/O families)."""

from __future__ import annotations

from agent.model import DiskStats
from collectors.diskstats import parse_diskstats

# Kernel 6.x lines: 11 classic fields, then discard (4) and flush (2) fields; an old 4.x line with 11 fields.
SAMPLE = b"""\
 259       0 nvme0n1 4455231 1523 358012946 1405842 31722418 9712521 1830442552 23129016 0 9261144 25160224 0 0 0 0 1068562 625365
 259       1 nvme0n1p1 4455104 1523 358006090 1405780 31722418 9712521 1830442552 23129016 7 9261084 24534796 0 0 0 0 0 0
   8      16 sdb 1000 2 80 30 500 1 4000 20 0 40 50
 253       0 dm-0 truncated line
   7       0 loop0 x 0 0 0 0 0 0 0 0 0 0
"""


def test_every_counter_of_a_device_in_kernel_order() -> None:
    stats = parse_diskstats(SAMPLE)
    assert stats[(259, 1)] == DiskStats(reads=4455104, reads_merged=1523, sectors_read=358006090, read_ms=1405780,
                                        writes=31722418, writes_merged=9712521, sectors_written=1830442552,
                                        write_ms=23129016, in_progress=7, io_ms=9261084, weighted_io_ms=24534796)
    assert stats[(8, 16)].weighted_io_ms == 50 and stats[(8, 16)].reads == 1000


def test_malformed_lines_are_skipped() -> None:
    assert set(parse_diskstats(SAMPLE)) == {(259, 0), (259, 1), (8, 16)}
    assert parse_diskstats(b"") == {} and parse_diskstats(b"\x00garbage\n") == {}

"""EXPERIMENT ONLY: does reading a few KB with ``os.pread(fd, 1 MiB, offset)`` fragment glibc's heap?

CPython's ``os.pread`` allocates a bytes object of the whole requested length and shrinks it to what was read. With
the agent's malloc settings (one arena, ``M_MMAP_THRESHOLD`` 32 MiB: agent.runtime.limit_malloc_arenas) the 1 MiB
block comes from the heap; the shrink leaves the data at the start of a 1 MiB hole and frees the rest, which other
blocks then split, so the next 1 MiB request no longer fits and extends the heap. This loop reads 200-8,000 bytes
at random offsets, keeps a rolling 300 medium blocks alive (as record batches would), and prints glibc's
``mallinfo2`` after a ``malloc_trim(0)`` every 50,000 reads:

    python bench/experiments/pread_fragmentation.py limit   # os.pread(fd, 1 MiB, ...) as Tail.read did
    python bench/experiments/pread_fragmentation.py exact   # os.pread(fd, what is there, ...) as it does now

Measured 2026-12-05 ~01:00 UTC (this VM, Python 3.11.7, glibc 2.36):

    limit  i=     0 arena    1.7 inuse  1.63 free    0.0 chunks    85
    limit  i= 50000 arena    8.2 inuse  2.19 free    6.0 chunks   264
    limit  i=100000 arena   14.2 inuse  2.17 free   12.0 chunks   266
    limit  i=150000 arena   23.2 inuse  2.20 free   21.0 chunks   275
    limit  i=199999 arena   32.2 inuse  2.17 free   30.0 chunks   293
    exact  i=     0 arena    1.7 inuse  1.63 free    0.0 chunks    85
    exact  i= 50000 arena    2.3 inuse  2.19 free    0.1 chunks   253
    exact  i=199999 arena    2.3 inuse  2.16 free    0.1 chunks   255

The heap grows without end with 1 MiB reads (~6 MiB per 50,000 reads, in use flat) and not at all with exact
reads; the soak's agent (BENCHMARKS 18, glibc's mallinfo2 every 10 s) showed the same signature: in use +0.33
MiB/h, free +5.27 MiB/h, heap +5.60 MiB/h. Here the trim gives the free pages back because nothing else lives in
the holes; in the agent other blocks do, and those pages stay resident.
"""

from __future__ import annotations

import ctypes
import os
import random
import sys


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def main() -> None:
    exact = sys.argv[1:] == ["exact"]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.mallopt(-8, 1)  # as agent.runtime.limit_malloc_arenas
    libc.mallopt(-3, 32 << 20)
    libc.mallopt(-1, 64 << 20)
    path = "/tmp/pread_fragmentation.dat"
    with open(path, "wb") as fh:
        fh.write(os.urandom(4 << 20))
    fd = os.open(path, os.O_RDONLY)
    random.seed(1)
    keep: list[bytes] = []
    for i in range(200_000):
        n = random.randint(200, 8000)
        offset = random.randint(0, (4 << 20) - n)
        data = os.pread(fd, n, offset) if exact else os.pread(fd, 1 << 20, offset)[:n]
        keep.append(bytes(data[: random.randint(600, 3000)]))
        if len(keep) > 300:
            keep.pop(random.randrange(len(keep)))
        del data
        if i % 50_000 == 0 or i == 199_999:
            libc.malloc_trim(0)
            mi = libc.mallinfo2()
            print(f"{'exact' if exact else 'limit':6} i={i:6d} arena {mi.arena / 2**20:6.1f} inuse "
                  f"{mi.uordblks / 2**20:5.2f} free {mi.fordblks / 2**20:6.1f} chunks {mi.ordblks:5d}")
    os.close(fd)
    os.unlink(path)


if __name__ == "__main__":
    main()

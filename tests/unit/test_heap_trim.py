"""agent.runtime.trim_heap: the heap's free holes go back to the kernel (the soak's RSS creep, BENCHMARKS 18)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# In a fresh interpreter, with the agent's malloc settings: 64 KiB blocks with small ones between them (as
# batches and the records that outlive them), the big ones freed: holes inside the heap that free() keeps.
SCRIPT = """
import json
from agent.runtime import limit_malloc_arenas, trim_heap
limit_malloc_arenas()

def rss_kib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))

big, keep = [], []
for i in range(600):
    big.append(bytearray(b"x" * (64 << 10)))
    keep.append(bytearray(b"k" * 2048))
del big
before = rss_kib()
trimmed = trim_heap()
print(json.dumps({"before": before, "after": rss_kib(), "trimmed": trimmed, "kept": len(keep)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_heap_gives_freed_holes_back() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO, timeout=60,
                         check=True)
    result = json.loads(out.stdout)
    assert result["trimmed"] is True
    # 600 x 64 KiB = 37.5 MiB of holes: most of it leaves the process's resident set.
    assert result["before"] - result["after"] >= 25 << 10, result


def test_trimming_once_a_minute_leaves_no_garbage_for_the_collector() -> None:
    """Each ``ctypes.CDLL`` is a new function-pointer class in reference cycles; made per trim, they waited for the
    agent's rare garbage collections (a 10-minute soak census found 9 of each). glibc is loaded once."""
    import ctypes
    import gc

    from agent.runtime import trim_heap

    if "libc.so.6" not in Path("/proc/self/maps").read_text():
        pytest.skip("not glibc")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            trim_heap()
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, ctypes.CDLL)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []

"""EXPERIMENT ONLY (bench/experiments/leak_hunt.py): tracemalloc inside the agent process it starts.

With ``LK_TM_DIR`` set, the process starts ``tracemalloc`` (``LK_TM_FRAMES`` frames, default 25; 0: not
traced) at interpreter start-up and a thread that every 60 s (``LK_TM_EVERY``) appends {t, rss, traced, peak,
malloc: glibc's ``mallinfo2`` (obtained, in use, free)} to
``$LK_TM_DIR/samples.ndjson`` and, at each of the seconds in ``LK_TM_AT`` (comma list), dumps
``$LK_TM_DIR/snap-<t>.pickle``; each sample also has ``sys.getallocatedblocks()`` and the collections per gc
generation (and ``gc.get_count()``); at each of the seconds in ``LK_GC_AT`` a full collection counts the cyclic
garbage it finds by type (kind "garbage"); every collection is a sample of its own (kind "gc": its generation,
what it freed, how long). With ``LK_INTERN`` set, ``sys.intern`` (which pathlib calls for every part of every
path it parses) is wrapped: each string it newly adds to the interpreter's table of interned strings is counted by
its caller outside pathlib, and every sample carries the counts so far (key "intern"). ``SIGUSR2`` appends
RSS before and after ``malloc_trim(0)`` (kind "trim"). The
variables are popped, so the agent's chunk workers (child processes) are not traced. ``LK_MMAP_THRESHOLD`` (bytes)
replaces ``agent.runtime.MMAP_THRESHOLD`` for an A/B of glibc's mmap threshold.
"""
import os
import sys

# ``LK_TM_ONLY``: hook only a process whose command line holds this string (e.g. "agent run"), so that a bench
# that starts the agent (bench/soak.py) can carry the variables down to it instead of taking them itself.
_only = os.environ.get("LK_TM_ONLY", "")
_dir = os.environ.pop("LK_TM_DIR", "") if not _only or _only in " ".join(sys.orig_argv) else ""
if _dir:
    import ctypes
    import gc
    import json
    import signal
    import threading
    import time
    import tracemalloc

    _frames = int(os.environ.pop("LK_TM_FRAMES", "25"))
    if _frames:  # 0: RSS samples and the malloc_trim only
        tracemalloc.start(_frames)
    _at = sorted(int(x) for x in os.environ.pop("LK_TM_AT", "").split(",") if x)
    _t0 = time.monotonic()

    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    class _MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallinfo2.restype = _MallInfo2
    _libc.mallopt(-8, 1)  # M_ARENA_MAX before this thread allocates: the agent's own limit_malloc_arenas comes later
    _mmap = os.environ.pop("LK_MMAP_THRESHOLD", "")
    if _mmap:  # an A/B of agent.runtime.MMAP_THRESHOLD (blocks at least this big are mmap'ed, not heap)
        import agent.runtime

        agent.runtime.MMAP_THRESHOLD = int(_mmap)

    def _malloc() -> dict:
        """glibc's view of its heap: bytes obtained from the system (arena), in use (uordblks), free (fordblks),
        free at the top (keepcost), in mmapped blocks (hblkhd)."""
        mi = _libc.mallinfo2()
        return {"arena": mi.arena, "inuse": mi.uordblks, "free": mi.fordblks, "keepcost": mi.keepcost,
                "mmapped": mi.hblkhd, "free_chunks": mi.ordblks}

    def _sample(kind: str, **extra) -> None:
        traced, peak = tracemalloc.get_traced_memory()
        doc = {"kind": kind, "t": round(time.monotonic() - _t0, 1), "rss": _rss(), "traced": traced, "peak": peak,
               "overhead": tracemalloc.get_tracemalloc_memory(), "malloc": _malloc(),
               "blocks": sys.getallocatedblocks(), "gc": [g["collections"] for g in gc.get_stats()],
               "gc_count": gc.get_count(), **({"intern": dict(_interned)} if _interned else {}), **extra}
        with open(os.path.join(_dir, "samples.ndjson"), "a") as fh:
            fh.write(json.dumps(doc) + "\n")

    def _loop() -> None:
        pending = list(_at)
        gc_pending = sorted(int(x) for x in os.environ.pop("LK_GC_AT", "").split(",") if x)
        every = float(os.environ.get("LK_TM_EVERY", "60"))
        next_sample = every
        while True:
            time.sleep(1.0)
            t = time.monotonic() - _t0
            if t >= next_sample:
                _sample("minute")
                next_sample += every
            while gc_pending and t >= gc_pending[0]:
                _garbage(gc_pending.pop(0))
            while pending and t >= pending[0]:
                at = pending.pop(0)
                if tracemalloc.is_tracing():
                    tracemalloc.take_snapshot().dump(os.path.join(_dir, f"snap-{at}.pickle"))
                _sample("snapshot", at=at)

    def _garbage(at: int) -> None:
        """``LK_GC_AT``: a full collection that keeps what it finds (``DEBUG_SAVEALL``), sampled by type: the cyclic
        garbage that waits for the next automatic collection (kind "garbage")."""
        import collections

        before = gc.get_count()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            found = gc.collect()
            types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        _sample("garbage", at=at, count_before=before, found=found, types=types.most_common(40))

    def _trim(signum, frame) -> None:
        before = _rss()
        _libc.malloc_trim(0)  # the handle loaded above: a new CDLL per call is itself cyclic garbage
        after = _rss()
        _sample("trim", before=before, after=after)

    _gc_started = [0.0]

    def _gc_callback(phase: str, info: dict) -> None:
        """Every automatic collection (rare with the agent's threshold of 50,000): when, which generation, how long,
        and what it freed (a step in RSS may be one)."""
        if phase == "start":
            _gc_started[0] = time.monotonic()
        else:
            _sample("gc", generation=info.get("generation"), collected=info.get("collected"),
                    uncollectable=info.get("uncollectable"), took=round(time.monotonic() - _gc_started[0], 4))

    _interned: dict[str, int] = {}

    if os.environ.pop("LK_INTERN", ""):
        _intern = sys.intern

        def _state(text: str) -> int:  # PyASCIIObject.state's "interned" bits (CPython 3.11: offset 32)
            return ctypes.c_uint32.from_address(id(text) + 32).value & 3

        def _counting_intern(text: str) -> str:
            fresh = type(text) is str and not _state(text)
            result = _intern(text)
            if fresh and result is text:  # no equal string was interned: a new entry in the table
                frame = sys._getframe(1)
                while frame is not None and frame.f_code.co_filename.endswith("pathlib.py"):
                    frame = frame.f_back
                where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
                _interned[where] = _interned.get(where, 0) + 1
            return result

        sys.intern = _counting_intern

    gc.callbacks.append(_gc_callback)
    signal.signal(signal.SIGUSR2, _trim)
    threading.Thread(target=_loop, name="lk-tracemalloc", daemon=True).start()

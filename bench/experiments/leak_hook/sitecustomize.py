"""EXPERIMENT ONLY (bench/experiments/leak_hunt.py): tracemalloc inside the agent process it starts.

With ``LK_TM_DIR`` set, the process starts ``tracemalloc`` (``LK_TM_FRAMES`` frames, default 25; 0: not
traced) at interpreter start-up and a thread that every 60 s appends {t, rss, traced, peak} to
``$LK_TM_DIR/samples.ndjson`` and, at each of the seconds in ``LK_TM_AT`` (comma list), dumps
``$LK_TM_DIR/snap-<t>.pickle``. ``SIGUSR2`` appends RSS before and after ``malloc_trim(0)`` (kind "trim"). The
variables are popped, so the agent's chunk workers (child processes) are not traced.
"""
import os

_dir = os.environ.pop("LK_TM_DIR", "")
if _dir:
    import ctypes
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

    def _sample(kind: str, **extra) -> None:
        traced, peak = tracemalloc.get_traced_memory()
        doc = {"kind": kind, "t": round(time.monotonic() - _t0, 1), "rss": _rss(), "traced": traced, "peak": peak,
               "overhead": tracemalloc.get_tracemalloc_memory(), **extra}
        with open(os.path.join(_dir, "samples.ndjson"), "a") as fh:
            fh.write(json.dumps(doc) + "\n")

    def _loop() -> None:
        pending = list(_at)
        next_sample = 60.0
        while True:
            time.sleep(1.0)
            t = time.monotonic() - _t0
            if t >= next_sample:
                _sample("minute")
                next_sample += 60.0
            while pending and t >= pending[0]:
                at = pending.pop(0)
                if tracemalloc.is_tracing():
                    tracemalloc.take_snapshot().dump(os.path.join(_dir, f"snap-{at}.pickle"))
                _sample("snapshot", at=at)

    def _trim(signum, frame) -> None:
        before = _rss()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        after = _rss()
        _sample("trim", before=before, after=after)

    signal.signal(signal.SIGUSR2, _trim)
    threading.Thread(target=_loop, name="lk-tracemalloc", daemon=True).start()

"""EXPERIMENT ONLY, not project code: monkeypatches that measure suggested changes without editing the source.

Python imports ``sitecustomize`` at start-up, so putting this directory on PYTHONPATH applies the patches
to every agent process a benchmark starts. The log patches (``count``, ``poll``, ``onepass``, ``syscalls``,
``gauges``) patch ``agent.pipeline`` as it was before the log pipeline was split into stages (``e3cd204``): run
them against that tree; their results and what became of them are in BENCHMARKS.md section 9.
``LK_PATCH`` is a comma list of:

- ``subchunk``: the renderer yields at most 256 containers' lines of a family per chunk;
- ``trim``: ``malloc_trim(0)`` after every cycle;
- ``nomallopt``: glibc's own mmap and trim thresholds (only ``M_ARENA_MAX`` set), i.e. without ``09ae94d``.

    LK_PATCH=trim PYTHONPATH=bench/experiments \
        python bench/bench_metrics.py --skip inprocess,scrape --cpu-cycles 10 --prom-scrapes 10

Idle-ish logging (``bench_steady.py --cases logging``: 100 containers, a line every 5 s each, syslog TCP):

- ``count``: per-function calls/s and thread CPU to ``$LK_COUNT_FILE`` (the bench prints them);
- ``poll`` (``LK_POLL``, default 1.0 s): the reader's poll interval instead of 0.25 s;
- ``onepass``: each wake visits every source once, and no second pass after handing a batch to the sender;
- ``syscalls``: no directory stat per visit while inotify watches it, no stat of a lone live file's path at its
  end, no pread when fstat shows nothing new;
- ``gauges``: no ``update_gauges`` after every ``read_batch``; the flusher's fresh one every 10 s.

Combine with ``+`` in the bench's ``--variants`` (e.g. ``onepass+syscalls+gauges+poll``). Measured 2026-12-04
10:58-11:13, 60 s windows, same containers (bench/results/steady-20261204-110816.json): shipped 2.965 / 2.915 %,
onepass 1.949 %, syscalls 2.199 %, poll 2.166 % (1.349 % at 10:50), onepass+syscalls+gauges 1.499 %,
all four 0.933 / 0.966 % of one core; gauges alone was inconclusive (3.7 %: other engineers' containers came and
went during both of its windows).

The earlier ``eager``, ``sockets6`` and ``nlink`` patches are now in the source (``Exposition.publish``,
``HostReader.add_process_stats``, ``discovery.walk``; see BENCHMARKS.md section 5) and were removed here.
``subchunk`` overrides the source's ``Renderer.chunks`` (which now chunks by lines) with the older one.
"""
import os

_patches = set(filter(None, os.environ.get("LK_PATCH", "").split(",")))
if "subchunk" in _patches:
    # Yield at most ~256 containers' lines of a family per chunk (bounded transient strings).
    from exporters.prometheus.render import Renderer
    def chunks(self, snap, openmetrics=False):
        containers = [(self._base(c.info), c.info, c.stats) for c in snap.containers]
        live = {c.info.cgroup for c in snap.containers}
        for stale in self._labels.keys() - live:
            del self._labels[stale]
        for fam in self.families:
            out = []
            add = out.append
            name = fam.name
            self._header(add, name, fam.type, fam.help, openmetrics)
            get = fam.get
            stamp = self.timestamps and fam.timestamped
            for i, (base, info, stats) in enumerate(containers, 1):
                suffix = f" {int(stats.timestamp * 1000)}\n" if stamp else "\n"
                if openmetrics and stamp:
                    suffix = f" {stats.timestamp:.3f}\n"
                for extra, value in get(info, stats):
                    add(f"{name}{{{base}{extra}}} {value}{suffix}")
                if i % 256 == 0 and out:
                    yield "".join(out)
                    out.clear()
            if out:
                yield "".join(out)
        out = []
        add = out.append
        self._header(add, "container_last_seen", "gauge", "Last time a container was seen by the exporter",
                     openmetrics)
        for base, _info, _stats in containers:
            add(f"container_last_seen{{{base}}} {snap.timestamp}\n")
        self._header(add, "container_scrape_error", "gauge",
                     "1 if there was an error while getting container metrics, 0 otherwise", openmetrics)
        add(f"container_scrape_error {int(snap.scrape_error)}\n")
        self._machine(add, snap, openmetrics)
        yield "".join(out)
    Renderer.chunks = chunks
if "trim" in _patches:
    # Give freed heap memory back to the OS after each cycle (glibc malloc_trim).
    import ctypes

    import agent.wiring as wiring
    _libc = ctypes.CDLL("libc.so.6")
    _orig_cycle = wiring.Agent.cycle
    def cycle(self):
        snap = _orig_cycle(self)
        _libc.malloc_trim(0)
        return snap
    wiring.Agent.cycle = cycle
if "nomallopt" in _patches:
    import ctypes

    import agent.runtime as runtime

    def limit_malloc_arenas(arenas: int = 1) -> None:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX only
    runtime.limit_malloc_arenas = limit_malloc_arenas

# --- the idle-logging case (bench_steady.py --cases logging) ---------------------------------------------------

# ``poll`` (with LK_POLL=seconds, default 1.0): the routes' reader poll interval instead of LogOptions' 0.25 s.
if "poll" in _patches:
    import dataclasses

    import agent.pipeline as _pl

    _poll = float(os.environ.get("LK_POLL", "1.0"))
    _orig_runner_init = _pl.RouteRunner.__init__

    def _runner_init(self, route, sink, store, metrics, options, *a, **kw):
        _orig_runner_init(self, route, sink, store, metrics, dataclasses.replace(options, poll_interval=_poll),
                          *a, **kw)
    _pl.RouteRunner.__init__ = _runner_init

# ``onepass``: a wake reads each source once, not "until n sources in a row were idle" (which reads up to 2n), and
# the reader waits after handing a batch to the sender unless that batch was full or a source may have more (a full
# chunk read, a file finished): today it reads every source once more right away, almost always for nothing.
if "onepass" in _patches:
    import asyncio
    import contextlib
    import time as _time

    import agent.pipeline as _pl

    _MORE = 64 << 10  # a read this large may not have drained the file

    def fill(self, batch, records, size):
        order = self._order
        if not order:
            return
        n = len(order)
        visited = 0
        self._lk_more = False
        while batch.size < size and batch.count < records:
            if visited >= n:
                if not self._lk_more:
                    return
                visited, self._lk_more = 0, False
            sid = order[self._rr % n]
            self._rr += 1
            visited += 1
            state = self.states.get(sid)
            if state is None:
                continue
            before = batch.size
            if self._read_source(state, batch):
                read = batch.size - before
                if read == 0 or read >= _MORE:  # finished/reordered a file, skipped a long line, or a big chunk
                    self._lk_more = True
        self._lk_more = True  # stopped because the batch is full: more may be ready
    _pl.RouteRunner.fill = fill

    async def reader(self):
        opts = self.options
        pending = _pl.Batch()
        while True:
            got = await asyncio.to_thread(self.read_batch, opts.batch_records - pending.count,
                                          opts.batch_bytes - pending.size)
            more = getattr(self, "_lk_more", False)
            if got.count and not pending.count:
                pending.started = _time.monotonic()
            pending.merge(got)
            waited = _time.monotonic() - pending.started
            full = pending.count >= opts.batch_records or pending.size >= opts.batch_bytes
            if pending.acks and (full or not pending.count or waited >= opts.flush_interval):
                overflow = pending.split(opts.batch_records) if pending.count > opts.batch_records else None
                if pending.count:
                    await asyncio.to_thread(self.encode, pending)
                await self.queue.put(pending)
                self.metrics.queue_depth.labels(self.label).set(self.queue.qsize())
                pending = overflow or _pl.Batch()
                if full or more or overflow:
                    continue
            elif got.count and more:
                continue
            timeout = opts.poll_interval
            if pending.count:
                timeout = max(0.0, min(timeout, opts.flush_interval - (_time.monotonic() - pending.started)))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
    _pl.RouteRunner.reader = reader

# ``syscalls``: per idle source and wake, only fstat: no stat of the source's directory while the inotify watch
# covers it (new files are pinned by ``pin_new_files``; ``dir_mtime == -1`` still forces a listing), no stat of the
# live file's path at its end while it is the source's only file (a rotation creates the next file, which inotify
# reports and pins first), and no pread when fstat says nothing was appended.
if "syscalls" in _patches:
    import threading

    import agent.pipeline as _pl

    import collectors.logs.files as _files

    _orig_refresh = _pl.RouteRunner._refresh_files
    _orig_read_source = _pl.RouteRunner._read_source
    _orig_replaced = _files.Tail.replaced
    _orig_tail_read = _files.Tail.read
    _local = threading.local()

    def _watched(self, state):
        w = self.watch
        return w is not None and w._fd >= 0 and state.spec.directory in w._dirs

    def _refresh_files(self, state, force=False):
        if not force and state.tails and state.dir_mtime != -1.0 and _watched(self, state):
            return
        _orig_refresh(self, state, force)
    _pl.RouteRunner._refresh_files = _refresh_files

    def _read_source(self, state, batch):
        _local.only = len(state.tails) == 1 and state.dir_mtime != -1.0 and _watched(self, state)
        try:
            return _orig_read_source(self, state, batch)
        finally:
            _local.only = False
    _pl.RouteRunner._read_source = _read_source

    def replaced(self):
        if getattr(_local, "only", False):
            return False
        return _orig_replaced(self)
    _files.Tail.replaced = replaced

    def read(self, limit=_files.READ_CHUNK):
        st = os.fstat(self.fd)
        if st.st_size == self.offset:
            self.size = st.st_size
            return b"", self.offset, 0
        return _orig_tail_read(self, limit)  # fstat again: only when there is something to read
    _files.Tail.read = read

# ``gauges``: the route gauges only from the flusher and there from the files (fstat per file, _unopened_lag) only
# every 10th second; not after every read_batch.
if "gauges" in _patches:
    import agent.pipeline as _pl

    _orig_update_gauges = _pl.RouteRunner.update_gauges

    def read_batch(self, records, size):
        if self._gc_due:
            self._collect_garbage()
        batch = _pl.Batch()
        self.fill(batch, records, size)
        return batch
    _pl.RouteRunner.read_batch = read_batch

    def update_gauges(self, fresh=False):
        self._lk_gauge_calls = getattr(self, "_lk_gauge_calls", 0) + 1
        if fresh and self._lk_gauge_calls % 10:
            return
        _orig_update_gauges(self, fresh)
    _pl.RouteRunner.update_gauges = update_gauges


# ``count``: calls and thread CPU of the log path's functions (inclusive of what they call), os.stat/fstat/pread/
# listdir/scandir by caller, and asyncio.to_thread hops by function, written to $LK_COUNT_FILE every second.
# Measurement only: the wrappers cost ~1-2 us a call, so a ``count`` run's CPU is a little above a shipped one's.
# It goes last: it wraps whatever the patches above put in place.
def _install_count():
    import asyncio
    import functools
    import json as _json
    import sys as _sys
    import threading
    import time as _time

    _counts: dict = {}
    _lock = threading.Lock()

    def _add(key, cpu):
        with _lock:
            entry = _counts.get(key)
            if entry is None:
                _counts[key] = [1, cpu]
            else:
                entry[0] += 1
                entry[1] += cpu

    def _wrap(owner, name, label):
        orig = getattr(owner, name)

        @functools.wraps(orig)
        def wrapper(*a, **kw):
            t0 = _time.thread_time()
            try:
                return orig(*a, **kw)
            finally:
                _add(label, _time.thread_time() - t0)
        setattr(owner, name, wrapper)

    def _wrap_os(name):
        orig = getattr(os, name)

        def wrapper(*a, **kw):
            t0 = _time.thread_time()
            try:
                return orig(*a, **kw)
            finally:
                f = _sys._getframe(1)
                _add(f"os.{name} <- {f.f_code.co_name}", _time.thread_time() - t0)
        setattr(os, name, wrapper)

    for _name in ("stat", "fstat", "pread", "listdir", "scandir"):
        _wrap_os(_name)

    _orig_to_thread = asyncio.to_thread

    async def to_thread(func, /, *args, **kwargs):
        _add(f"to_thread {getattr(func, '__qualname__', repr(func))}", 0.0)
        return await _orig_to_thread(func, *args, **kwargs)
    asyncio.to_thread = to_thread

    import importlib

    def _wrap_all(module, owner, names):
        """Wrap the names that exist (the pipeline's layout differs between trees)."""
        try:
            target = importlib.import_module(module)
        except ImportError:
            return
        if owner:
            target = getattr(target, owner, None)
            if target is None:
                return
        import inspect
        for _n in names:
            if hasattr(target, _n):
                static = isinstance(inspect.getattr_static(target, _n), staticmethod)
                _wrap(target, _n, f"{owner or module}.{_n}")
                if static:
                    setattr(target, _n, staticmethod(getattr(target, _n)))

    _wrap_all("agent.pipeline", "RouteRunner", (
        "read_batch", "fill", "_read_source", "_resolve", "_refresh_files", "_open_new_files", "update_gauges",
        "_unopened_lag", "encode", "_decode", "_prefetch", "_collect_garbage", "update_sources", "pin_new_files"))
    # the staged layout (agent/logs/, collectors/logs/follower.py)
    _wrap_all("agent.logs.runner", "RouteRunner", ("read_batch", "encode", "update_gauges", "_count_lines"))
    _wrap_all("collectors.logs.follower", "Follower", (
        "read", "resolve", "take_offers", "next_state", "_refresh_files", "_update_sources", "lag", "_watched",
        "_name_due", "ack"))
    _wrap_all("agent.logs.codec", "InlineCodec", ("chunk", "expire"))
    _wrap_all("agent.logs.process", "Processing", ("flush_due",))
    _wrap_all("collectors.logs.checkpoints", "CheckpointStore", ("flush", "_flush", "ack", "offset",
                                                                  "retain_sources"))
    _wrap_all("collectors.logs.files", "Tail", ("read", "replaced", "peek"))
    _wrap_all("collectors.logs.sources", "DirectoryWatch", ("_changed", "sync"))
    _wrap_all("collectors.logs.sources", "", ("scan",))
    _wrap_all("collectors.logs.sources", "SourceSpec", ("files",))
    _wrap_all("exporters.syslog.sink", "SyslogSink", ("encode",))
    _wrap_all("exporters.syslog.transport", "StreamTransport", ("send",))
    _wrap_all("exporters.syslog.transport", "", ("unacked_bytes",))

    _wrap_all("agent.wiring", "Agent", ("cycle",))
    _wrap_all("agent.wiring", "LogMetadata", ("__call__",))
    _wrap_all("collectors.logs.metadata", "LogMetadata", ("__call__",))
    _wrap_all("collectors.manager", "FsUsage", ("measure",))

    _count_file = os.environ.pop("LK_COUNT_FILE")  # not for the chunk workers this process may start

    def _dump_loop(path=_count_file):
        while True:
            _time.sleep(1.0)
            with _lock:
                doc = {"t": _time.monotonic(), "counts": {k: list(v) for k, v in _counts.items()}}
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                _json.dump(doc, fh)
            os.replace(tmp, path)
    threading.Thread(target=_dump_loop, name="lk-count-dump", daemon=True).start()


if "count" in _patches and os.environ.get("LK_COUNT_FILE"):
    _install_count()

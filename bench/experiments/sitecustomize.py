"""EXPERIMENT ONLY, not project code: monkeypatches that measure suggested changes without editing the source.

Python imports ``sitecustomize`` at start-up, so putting this directory on PYTHONPATH applies the patches
to every agent process a benchmark starts. ``LK_PATCH`` is a comma list of:

- ``eager``: publish pre-renders the format the last scrape asked for (Prometheus: OpenMetrics), not text;
- ``sockets6``: sockets (a readlink per fd) counted once every ~6 cycles per pid, fds every cycle;
- ``nlink``: discovery does not scandir leaf cgroups (``st_nlink == 2``: no subdirectories);
- ``subchunk``: the renderer yields at most 256 containers' lines of a family per chunk;
- ``trim``: ``malloc_trim(0)`` after every cycle.

    LK_PATCH=eager,sockets6,nlink PYTHONPATH=bench/experiments \
        python bench/bench_metrics.py --skip inprocess,scrape --cpu-cycles 10 --prom-scrapes 10
"""
import os

_patches = set(filter(None, os.environ.get("LK_PATCH", "").split(",")))
if "eager" in _patches:
    # Pre-render the format the last scrape asked for (Prometheus: OpenMetrics) instead of always text.
    import exporters.prometheus.http as http
    _orig_publish, _orig_compressed = http.Exposition.publish, http.Exposition._compressed
    def publish(self, snapshot, render):
        om = getattr(self, "_preferred", False)
        body = http.compress_chunks(render(snapshot, om))
        with self._lock:
            self.snapshot = snapshot
            self._gzip = {om: body}
            self._render = render
    def _compressed(self, openmetrics):
        self._preferred = openmetrics
        return _orig_compressed(self, openmetrics)
    http.Exposition.publish = publish
    http.Exposition._compressed = _compressed
if "sockets6" in _patches:
    # Count sockets (readlink of every fd) once every 6 cycles per pid; fds every cycle.
    import collectors.host as host
    from collectors.cgroups.parsers import parse_nofile_soft
    from collectors.cgroups.reader import read_file
    _cache = {}
    _tick = [0]
    def add_process_stats(self, proc, pids):
        _tick[0] += 1
        fds = sockets = 0
        for pid in pids:
            base = f"{self.proc}/{pid}/fd"
            try:
                names = os.listdir(base)
            except OSError:
                continue
            fds += len(names)
            hit = _cache.get(pid)
            if hit is not None and _tick[0] - hit[0] < 6 * 1100:  # ~6 cycles of ~1,000 calls
                sockets += hit[1]
                continue
            s = 0
            for name in names:
                try:
                    if os.readlink(f"{base}/{name}").startswith("socket:"):
                        s += 1
                except OSError:
                    continue
            _cache[pid] = (_tick[0], s)
            sockets += s
        proc.file_descriptors, proc.sockets = fds, sockets
        if pids:
            limits = read_file(f"{self.proc}/{pids[0]}/limits")
            proc.ulimit_nofile = parse_nofile_soft(limits) if limits else None
    host.HostReader.add_process_stats = add_process_stats
if "nlink" in _patches:
    # Do not scandir leaf cgroups: a directory with st_nlink == 2 has no subdirectories (kernfs, ext4).
    import collectors.discovery as discovery
    import collectors.manager as manager
    def walk(roots):
        found = {"/"}
        for root in roots:
            stack = [root]
            cut = len(root)
            while stack:
                current = stack.pop()
                try:
                    with os.scandir(current) as it:
                        for entry in it:
                            if entry.is_dir(follow_symlinks=False):
                                found.add(entry.path[cut:])
                                try:
                                    leaf = entry.stat(follow_symlinks=False).st_nlink == 2
                                except OSError:
                                    leaf = False
                                if not leaf:
                                    stack.append(entry.path)
                except OSError:
                    continue
        return found
    discovery.walk = manager.walk = walk
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

"""EXPERIMENT ONLY, not project code: monkeypatches that measure suggested changes without editing the source.

Python imports ``sitecustomize`` at start-up, so putting this directory on PYTHONPATH applies the patches
to every agent process a benchmark starts. ``LK_PATCH`` is a comma list of:

- ``subchunk``: the renderer yields at most 256 containers' lines of a family per chunk;
- ``trim``: ``malloc_trim(0)`` after every cycle;
- ``nomallopt``: glibc's own mmap and trim thresholds (only ``M_ARENA_MAX`` set), i.e. without ``09ae94d``.

    LK_PATCH=trim PYTHONPATH=bench/experiments \
        python bench/bench_metrics.py --skip inprocess,scrape --cpu-cycles 10 --prom-scrapes 10

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

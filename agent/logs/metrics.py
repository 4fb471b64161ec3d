"""The log path's self-metrics on /metrics (names fixed by the log collection issue), one series per route."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The reasons of lookout_route_records_dropped: filter.sources, refused by the receiver, refused by the kernel (UDP),
# and the processing stage's (agent.logs.process): include/exclude, level_min, the containers' rate limits.
DROP_REASONS = ("filtered", "rejected", "refused", "excluded", "level", "rate_limit")


class LogMetrics:
    """The log self-metrics on /metrics (names fixed by the log collection issue)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.records_read = Counter("lookout_log_records_read", "Log records decoded, per route reader.",
                                    ["route"], registry=r)
        self.bytes_read = Counter("lookout_log_bytes_read", "Log file bytes read, per route reader.",
                                  ["route"], registry=r)
        self.parse_errors = Counter("lookout_log_parse_errors", "Log lines that could not be decoded and were "
                                    "skipped (counted and logged with file and offset).", ["route"], registry=r)
        self.truncated = Counter("lookout_log_lines_truncated", "Log records cut at --max-line-bytes.",
                                 ["route"], registry=r)
        self.files_lost = Counter("lookout_log_files_lost", "Log files the runtime created and rotated away (deleted) "
                                  "before the route could open them: their lines are lost.", ["route"], registry=r)
        self.files_watched = Gauge("lookout_log_files_watched", "Log files open for reading, per route.",
                                   ["route"], registry=r)
        self.lag_bytes = Gauge("lookout_log_lag_bytes", "Bytes in watched log files not yet acknowledged by "
                               "the route (file size minus acknowledged offset).", ["route"], registry=r)
        self.sent = Counter("lookout_route_records_sent", "Records the route's receiver acknowledged.",
                            ["route"], registry=r)
        self.dropped = Counter("lookout_route_records_dropped", "Records not sent on purpose or by failure, by "
                               "reason.", ["route", "reason"], registry=r)
        self.rate_limited = Counter("lookout_route_records_rate_limited", "Records dropped over a container's rate "
                                    "limit (--log-rate-limit, label lookout.ratelimit), per route and container name; "
                                    "a series appears once the container is first limited.",
                                    ["route", "container_name"], registry=r)
        self.queue_depth = Gauge("lookout_route_queue_depth", "Batches read and waiting for the route's sender.",
                                 ["route"], registry=r)
        self.retries = Counter("lookout_route_retries", "Batch sends retried after a failure.", ["route"],
                               registry=r)
        self.truncated_out = Counter("lookout_route_records_truncated", "Records cut to fit the route's maximum "
                                     "message size.", ["route"], registry=r)
        self.rejected = Counter("lookout_route_records_rejected", "Records the receiver refused for good "
                                "(e.g. Elasticsearch mapping errors, HTTP 4xx).", ["route"], registry=r)
        self.dead_lettered = Counter("lookout_route_records_dead_lettered", "Rejected records written to the "
                                     "route's dead-letter file in the state dir.", ["route"], registry=r)
        self.item_retries = Counter("lookout_route_items_retried", "Single records resent after the receiver "
                                    "answered 429 or 5xx for them.", ["route"], registry=r)
        self.up = Gauge("lookout_route_up", "1 while the route's last send succeeded, 0 while it is failing.",
                        ["route"], registry=r)
        self.worker_chunks = Counter("lookout_log_worker_chunks", "Log chunks read ahead and given to a chunk "
                                     "worker process, by outcome: taken (shipped as the worker encoded it) or "
                                     "reread (decoded by the reader after all: a partial line, a bad line, a "
                                     "changed file or a late or failed worker).", ["route", "outcome"],
                                     registry=r)
        self.batch_latency = Histogram("lookout_route_batch_duration_seconds", "Time to deliver one batch, "
                                       "retries included.", ["route"],
                                       buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120), registry=r)

        self.checkpoint_write_failures = Counter(
            "lookout_checkpoint_write_failures", "Checkpoint writes that failed (state directory full or read-only): "
            "shipping goes on, but a restart sends again what was delivered since the last write.", registry=r)
        self.watch_fallbacks = Counter(
            "lookout_log_watch_fallbacks", "Times the log directory watch fell back to polling, by reason: "
            "no_instance (no inotify instance could be made: fs.inotify.max_user_instances), watch_limit (a "
            "directory over fs.inotify.max_user_watches), overflow (the kernel's event queue overflowed).",
            ["reason"], registry=r)
        for reason in ("no_instance", "watch_limit", "overflow"):
            self.watch_fallbacks.labels(reason)
        self.journal_restarts = Counter("lookout_journal_reader_restarts", "Times the journal reader (journalctl) "
                                        "exited or was killed and was started again from the saved cursor.",
                                        registry=r)
        self.journal_skipped = Counter("lookout_journal_entries_skipped", "Journal entries of a container or "
                                       "--journal-units unit not spooled: unreadable, or without a message or time "
                                       "(each logged).", registry=r)
        self.failed = Gauge("lookout_route_failed", "1 once the route stopped on a bug in its sink (logged once with "
                            "the traceback; its records stay in their files), else 0.", ["route"], registry=r)

    def route(self, label: str, offload: bool) -> None:
        """Every series of a route from the start, so rate() and increase() see the first events."""
        for counter in (self.records_read, self.bytes_read, self.parse_errors, self.truncated, self.files_lost,
                        self.sent, self.retries, self.truncated_out, self.rejected, self.dead_lettered,
                        self.item_retries):
            counter.labels(label)
        for reason in DROP_REASONS:
            self.dropped.labels(label, reason)
        if offload:
            for outcome in ("taken", "reread"):
                self.worker_chunks.labels(label, outcome)
        for gauge in (self.files_watched, self.lag_bytes, self.queue_depth, self.failed):
            gauge.labels(label).set(0)
        self.up.labels(label).set(1)

    def forget(self, label: str) -> None:
        """A route removed at run time: its series go (a route added again under the label starts from 0)."""
        for metric in (self.records_read, self.bytes_read, self.parse_errors, self.truncated, self.files_lost,
                       self.sent, self.retries, self.truncated_out, self.rejected, self.dead_lettered,
                       self.item_retries, self.files_watched, self.lag_bytes, self.queue_depth, self.failed,
                       self.up, self.batch_latency):
            with contextlib.suppress(KeyError):
                metric.remove(label)
        for reason in DROP_REASONS:
            with contextlib.suppress(KeyError):
                self.dropped.remove(label, reason)
        for labels in [k for k in self.rate_limited._metrics if k[0] == label]:
            self.rate_limited.remove(*labels)
        for outcome in ("taken", "reread"):
            with contextlib.suppress(KeyError):
                self.worker_chunks.remove(label, outcome)

"""containerd's own record of its containers: labels, image and creation time from its metadata database.

containerd keeps them in ``<root>/io.containerd.metadata.v1.bolt/meta.db`` (bbolt), bucket
``v1/<namespace>/containers/<id>``: a ``labels`` bucket (for a Kubernetes container the CRI plugin's
``io.kubernetes.*`` and ``io.cri-containerd.kind``, plus the image's labels), ``image`` (the reference it was
created from) and ``createdat`` (Go's ``time.MarshalBinary``). These are what cAdvisor's containerd handler
reports (``containers.Get``); the OCI bundle's ``config.json`` has the environment and the CRI annotations but
not the labels. The root is ``/var/lib/containerd``; the namespace, as cAdvisor's default, ``k8s.io``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import structlog

from collectors import bolt

log = structlog.get_logger("lookout.containerd")

DEFAULT_ROOT = "var/lib/containerd"
META_DB = "io.containerd.metadata.v1.bolt/meta.db"
NAMESPACE = "k8s.io"
_GO_EPOCH = 62135596800  # seconds from 0001-01-01 (Go's absolute time) to 1970-01-01


def go_time(raw: bytes | None) -> float | None:
    """A Go ``time.Time.MarshalBinary`` value (version 1 or 2) as a Unix time; None for none or zero."""
    if not raw or len(raw) < 15 or raw[0] not in (1, 2):
        return None
    sec, nsec = struct.unpack_from(">qi", raw, 1)
    if sec <= 0:
        return None
    return sec - _GO_EPOCH + nsec / 1e9


class ContainerdRecord:
    __slots__ = ("created", "image", "labels")

    def __init__(self, labels: dict[str, str], image: str, created: float | None) -> None:
        self.labels = labels
        self.image = image
        self.created = created


class ContainerdMetadata:
    """Container id -> ``ContainerdRecord`` of one namespace, read again when ``meta.db`` changes."""

    def __init__(self, host_root: Path, namespace: str = NAMESPACE, root: Path | None = None) -> None:
        self.path = str((root if root is not None else host_root / DEFAULT_ROOT) / META_DB)
        self.namespace = namespace
        self.records: dict[str, ContainerdRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._warned = ""

    def get(self, container_id: str) -> ContainerdRecord | None:
        return self.records.get(container_id)

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            self.records, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            records = bolt.read(self.path, self._visit)
        except (OSError, bolt.BoltError) as exc:
            if str(exc) != self._warned:
                log.warning("containerd_db_unreadable", path=self.path, error=str(exc))
                self._warned = str(exc)
            return  # the last good records stay
        self._warned = ""
        self.records, self._stamp = records, stamp

    def _visit(self, root: bolt.Bucket) -> dict[str, ContainerdRecord]:
        records: dict[str, ContainerdRecord] = {}
        v1 = root.bucket("v1")
        namespace = v1.bucket(self.namespace) if v1 is not None else None
        containers = namespace.bucket("containers") if namespace is not None else None
        if containers is None:
            return records
        for key, bucket in containers.buckets():
            labels_bucket = bucket.bucket("labels")
            labels = {}
            if labels_bucket is not None:
                for name, value, is_bucket in labels_bucket.items():
                    if not is_bucket:
                        labels[name.decode(errors="replace")] = value.decode(errors="replace")
            image = (bucket.get("image") or b"").decode(errors="replace")
            records[key.decode(errors="replace")] = ContainerdRecord(labels, image, go_time(bucket.get("createdat")))
        return records

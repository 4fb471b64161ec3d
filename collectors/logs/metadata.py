"""Container metadata for a log source: Docker's (its API's cache, else the container's ``config.v2.json``), a
Podman container's (libpod's database), or a CRI container's (the runtime's bundle annotations, found through
kubelet's ``/var/log/containers`` links, else what the pod log path tells); for the journal spool's sources
(collectors.logs.journal) the container's by its id, or a ``--journal-units`` unit's own."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from agent.model import ContainerInfo, Runtime
from collectors.cri import CriMetadata
from collectors.discovery import CgroupRef
from collectors.docker import DockerMetadata, info_from_inspect, network_mode
from collectors.logs.sources import SourceSpec

CRI_METADATA_TTL = 30.0
MISSING_RETRY = 5.0  # seconds before a container's unreadable config.v2.json is read again
PODMAN_RETRY = 0.5  # seconds before a runtime's record is looked for again while a new container has none
# How long a CRI source's lines wait for its container's link and runtime record (less than the follower's
# METADATA_WAIT, after which it would ship them with no metadata at all).
CRI_RECORD_WAIT = 3.0


class LogMetadata:
    """Container metadata for a log source: the Docker API cache, else config.v2.json; for CRI files the
    runtime's bundle annotations (via the /var/log/containers link naming the container id), else the path."""

    def __init__(self, docker: DockerMetadata, env_prefixes: tuple[str, ...], host_root: Path) -> None:
        self.docker = docker
        self.env_prefixes = env_prefixes
        self.links_dir = host_root / "var/log/containers"
        self.cri = CriMetadata(host_root, env_prefixes)
        self._disk: dict[str, tuple[float, ContainerInfo | None]] = {}  # id -> (retry after, info or None)
        self._cri_cache: dict[str, tuple[float, ContainerInfo | None]] = {}
        self._podman: dict[str, tuple[float, ContainerInfo | None]] = {}
        self._units: dict[str, ContainerInfo] = {}  # a --journal-units unit's own metadata (journal spool)
        self._cri_first: dict[str, float] = {}  # pod log directory -> when its container's record was first missed

    def _cri_id(self, spec: SourceSpec) -> str:
        """The id of the newest container writing into ``spec.directory`` (kubelet's legacy symlinks)."""
        newest, best = "", -1.0
        try:
            names = os.listdir(self.links_dir)
        except OSError:
            return ""
        suffix_len = len("-") + 64 + len(".log")
        for name in names:
            if not name.startswith(f"{spec.pod}_{spec.namespace}_{spec.container}-") or len(name) < suffix_len:
                continue
            link = self.links_dir / name
            try:
                if os.path.dirname(os.readlink(link)).rstrip("/").endswith(spec.directory.split("/var/log/pods/")[-1]):
                    mtime = link.lstat().st_mtime
                    if mtime > best:
                        newest, best = name[-suffix_len + 1 : -4], mtime
            except OSError:
                continue
        return newest

    def __call__(self, spec: SourceSpec) -> ContainerInfo | None:
        if spec.source_id.startswith("journal:"):
            return self._journal_info(spec)
        if spec.format == "json-file":
            return self._docker_info(spec.container_id, spec.directory)
        if spec.source_id.startswith("podman:"):
            return self._podman_info(spec.container_id)
        entry = self._cri_cache.get(spec.directory)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        info, complete, pending = self._cri_info(spec)
        if len(self._cri_cache) > 10_000:
            self._cri_cache.clear()
            self._cri_first.clear()
        if complete:
            self._cri_first.pop(spec.directory, None)
            # Same object until it expires: a restart's new container id is picked up within 30 s.
            self._cri_cache[spec.directory] = (now + CRI_METADATA_TTL, info)
            return info
        # The container's link or the runtime's record of it is not there yet (the kubelet makes the pod's log
        # directory before the container, and its link after it started): the follower holds the source's lines
        # (None) while it is being made, then they go with what the path tells, and the record is asked for again.
        first = self._cri_first.setdefault(spec.directory, now)
        if pending and now - first < CRI_RECORD_WAIT:
            self._cri_cache[spec.directory] = (now + PODMAN_RETRY, None)
            return None
        self._cri_cache[spec.directory] = (now + MISSING_RETRY, info)
        return info

    def _journal_info(self, spec: SourceSpec) -> ContainerInfo | None:
        """A journal spool's source (collectors.logs.journal): a Docker or Podman container's metadata by its id, as
        for its json-file or k8s-file log; a ``--journal-units`` unit's own: its name is the unit's."""
        kind = spec.source_id.split(":", 2)[1]
        if kind == "podman":
            return self._podman_info(spec.container_id)
        if kind == "docker":
            return self._docker_info(spec.container_id,
                                     os.path.join(self.docker.docker_root, "containers", spec.container_id))
        info = self._units.get(spec.container_id)
        if info is None:
            info = self._units[spec.container_id] = ContainerInfo(cgroup="", runtime=Runtime.RAW,
                                                                  name=spec.container_id)
        return info

    def _docker_info(self, container_id: str, directory: str) -> ContainerInfo | None:
        """The API's cache, else config.v2.json in ``directory`` (a string, made a Path only here: the reader asks on
        every visit of every source: 0.5 us a lookup, 4.5 with a Path built each time)."""
        info = self.docker.get(container_id) or self.docker.removed(container_id)
        if info is not None:
            return info
        now = time.monotonic()
        cached = self._disk.get(container_id)
        if cached is None or (cached[1] is None and cached[0] <= now):
            if len(self._disk) > 10_000:
                self._disk.clear()
            # Unreadable metadata is asked for again only after a while: the reader asks on every read.
            cached = self._disk[container_id] = (now + MISSING_RETRY, self._from_disk(Path(directory)))
        return cached[1]

    def _podman_info(self, container_id: str) -> ContainerInfo | None:
        """libpod's record, looked at again (a few stats; the database is read only when it changed) at most every
        ``MISSING_RETRY`` seconds while unknown, every ``CRI_METADATA_TTL`` once known (a restart's new pid and
        start time do not matter to the records)."""
        now = time.monotonic()
        cached = self._podman.get(container_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        podman = self.cri.podman
        podman.refresh()
        info = podman.get(container_id)
        if len(self._podman) > 10_000:
            self._podman.clear()
        self._podman[container_id] = (now + (CRI_METADATA_TTL if info is not None else PODMAN_RETRY), info)
        return info

    def _from_disk(self, base: Path) -> ContainerInfo | None:
        """A container's metadata from its ``config.v2.json``; without ``hostconfig.json`` (or with a damaged one)
        only the network mode is unknown."""
        try:
            doc = orjson.loads((base / "config.v2.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(doc, dict):
            return None
        return info_from_inspect(doc, self.env_prefixes, network_mode=network_mode(str(base)))

    def _cri_info(self, spec: SourceSpec) -> tuple[ContainerInfo, bool, bool]:
        """The container's metadata; whether the runtime's own record of it was found (else only what the pod log
        path and the link tell); whether it may still come (a host whose kubelet makes links, the link without
        the record)."""
        cid = self._cri_id(spec)
        if cid:
            self.cri.refresh()
            info = self.cri.get(CgroupRef("", Runtime.CONTAINERD, cid, spec.pod_uid))
            if info is not None and info.pod:
                known = self.cri.known(cid)
                return info, known, not known
        labels = {"io.kubernetes.pod.name": spec.pod, "io.kubernetes.pod.namespace": spec.namespace,
                  "io.kubernetes.pod.uid": spec.pod_uid, "io.kubernetes.container.name": spec.container}
        return ContainerInfo(cgroup="", runtime=Runtime.CONTAINERD, container_id=cid, name=cid or spec.container,
                             labels=labels, pod=spec.pod, namespace=spec.namespace, container=spec.container), \
            False, bool(cid) or self.links_dir.is_dir()

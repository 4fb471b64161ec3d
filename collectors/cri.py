"""Metadata for containerd/CRI, CRI-O and Podman containers, read from the runtimes' own files.

No gRPC client is needed: the OCI bundle's ``config.json`` carries the CRI annotations (pod,
namespace, container name, image, sandbox or not), ``/var/log/containers`` symlinks name every
Kubernetes container, ``/var/log/pods`` names every pod by uid, and Podman keeps names and
images in ``containers.json``. Kubernetes containers get the ``io.kubernetes.*`` labels cAdvisor
users query (``container_label_io_kubernetes_pod_name``), synthesized from these sources.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

from agent.model import ContainerInfo, Runtime
from collectors.discovery import CgroupRef

_LOG_LINK = re.compile(r"^([^_]+)_([^_]+)_(.+)-([0-9a-f]{64})\.log$")

# Annotation keys (containerd's CRI plugin, CRI-O).
_POD = ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name")
_NAMESPACE = ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace")
_CONTAINER = ("io.kubernetes.cri.container-name", "io.kubernetes.container.name")
_IMAGE = ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName",
          "io.kubernetes.cri.podsandbox.image-name")
_CRIO_NAME = "io.kubernetes.cri-o.Name"
_TYPE = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")


def _first(annotations: dict[str, str], keys: tuple[str, ...]) -> str:
    for key in keys:
        if annotations.get(key):
            return annotations[key]
    return ""


class CriMetadata:
    def __init__(self, host_root: Path) -> None:
        self.host_root = host_root
        self._bundles = (
            host_root / "run/containerd/io.containerd.runtime.v2.task/k8s.io",
            host_root / "var/lib/containers/storage/overlay-containers",
            host_root / "run/containers/storage/overlay-containers",
        )
        self._by_id: dict[str, ContainerInfo] = {}
        self._links: dict[str, tuple[str, str, str]] = {}
        self._pods: dict[str, tuple[str, str]] = {}
        self._podman: dict[str, dict[str, Any]] = {}
        self._podman_mtime = 0.0

    def refresh(self) -> None:
        """Re-read the cheap directory listings; bundle files are read once per new container."""
        links: dict[str, tuple[str, str, str]] = {}
        try:
            for name in os.listdir(self.host_root / "var/log/containers"):
                m = _LOG_LINK.match(name)
                if m:
                    links[m.group(4)] = (m.group(1), m.group(2), m.group(3))
        except OSError:
            pass
        self._links = links
        pods: dict[str, tuple[str, str]] = {}
        try:
            for name in os.listdir(self.host_root / "var/log/pods"):
                parts = name.split("_")
                if len(parts) == 3:
                    pods[parts[2]] = (parts[0], parts[1])
        except OSError:
            pass
        self._pods = pods
        podman_db = self.host_root / "var/lib/containers/storage/overlay-containers/containers.json"
        try:
            mtime = podman_db.stat().st_mtime
            if mtime != self._podman_mtime:
                self._podman = {c["id"]: c for c in orjson.loads(podman_db.read_bytes())}
                self._podman_mtime = mtime
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            pass

    def pod_of(self, pod_uid: str) -> tuple[str, str]:
        """(namespace, pod) for a pod uid, or empty strings."""
        return self._pods.get(pod_uid, ("", ""))

    def _annotations(self, cid: str) -> dict[str, str]:
        for base in self._bundles:
            for path in (base / cid / "config.json", base / cid / "userdata/config.json"):
                try:
                    return dict(orjson.loads(path.read_bytes()).get("annotations") or {})
                except (OSError, orjson.JSONDecodeError, AttributeError):
                    continue
        return {}

    def get(self, ref: CgroupRef) -> ContainerInfo | None:
        cached = self._by_id.get(ref.container_id)
        if cached is not None:
            return cached
        ann = self._annotations(ref.container_id)
        link = self._links.get(ref.container_id)
        pod, namespace, container = _first(ann, _POD), _first(ann, _NAMESPACE), _first(ann, _CONTAINER)
        if link and not pod:
            pod, namespace, container = link
        if not pod and ref.pod_uid:
            namespace, pod = self.pod_of(ref.pod_uid)
        sandbox = _first(ann, _TYPE) == "sandbox" or container == "POD"
        # cAdvisor's name: the container id for containerd, CRI-O's own container name for CRI-O.
        name, image, labels = ann.get(_CRIO_NAME) or ref.container_id, _first(ann, _IMAGE), {}
        podman = self._podman.get(ref.container_id)
        if podman is not None:
            names = podman.get("names") or []
            name = names[0] if names else name
            try:
                meta = orjson.loads(podman.get("metadata") or "{}")
                image = meta.get("image-name") or image
            except orjson.JSONDecodeError:
                pass
        if pod:
            labels = {"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": namespace}
            if ref.pod_uid:
                labels["io.kubernetes.pod.uid"] = ref.pod_uid
            if container and not sandbox:
                labels["io.kubernetes.container.name"] = container
        if not (ann or link or podman or pod):
            return None  # nothing known yet; try again next cycle
        info = ContainerInfo(
            cgroup="",
            runtime=ref.runtime,
            container_id=ref.container_id,
            name=name,
            image=image,
            labels=labels,
            pod=pod,
            namespace=namespace,
            container="" if sandbox and ref.runtime is Runtime.CONTAINERD else container,
            # Only the sandbox owns a pod's network namespace; plain (non-k8s) containers own theirs.
            owns_network=sandbox or not pod,
        )
        if ann or podman:
            self._by_id[ref.container_id] = info
        return info

    def forget(self, live_ids: set[str]) -> None:
        for cid in self._by_id.keys() - live_ids:
            del self._by_id[cid]

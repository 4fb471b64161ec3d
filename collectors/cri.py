"""Metadata for containerd/CRI, CRI-O and Podman containers, read from the runtimes' own files.

No gRPC client or API socket is needed:
- containerd: the OCI bundle's ``config.json`` (``/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>``)
  carries the CRI annotations (pod, namespace, container name, image, sandbox or not) and the environment;
  containerd's metadata database carries the container's labels and image (collectors/containerd.py).
- CRI-O: the bundle under containers/storage (``overlay-containers/<id>/userdata/config.json``), and the writable
  layer from containers/storage's ``containers.json``.
- Podman: libpod's database and containers/storage (collectors/podman.py).
- Kubernetes: ``/var/log/containers`` symlinks name every container, ``/var/log/pods`` every pod by uid.
Kubernetes containers get the ``io.kubernetes.*`` labels cAdvisor users query
(``container_label_io_kubernetes_pod_name``): the runtime's own labels where it keeps them, else synthesized
from these sources. Env vars by ``--env-metadata-allowlist`` come from the bundle's ``process.env``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import orjson

from agent.model import ContainerInfo, Runtime
from collectors.containerd import ContainerdMetadata, ContainerdRecord
from collectors.discovery import CgroupRef
from collectors.docker import filter_env
from collectors.podman import PodmanMetadata

_LOG_LINK = re.compile(r"^([^_]+)_([^_]+)_(.+)-([0-9a-f]{64})\.log$")

# Annotation keys (containerd's CRI plugin, CRI-O) and label keys (kubelet's, on every CRI container).
_POD = ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name")
_NAMESPACE = ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace")
_CONTAINER = ("io.kubernetes.cri.container-name", "io.kubernetes.container.name")
_IMAGE = ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName",
          "io.kubernetes.cri.podsandbox.image-name")
_CRIO_NAME = "io.kubernetes.cri-o.Name"
_TYPE = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
_KIND = "io.cri-containerd.kind"  # containerd's label: "sandbox" or "container"


def _first(annotations: dict[str, str], keys: tuple[str, ...]) -> str:
    for key in keys:
        if annotations.get(key):
            return annotations[key]
    return ""


# Pod annotations that choose a container's multiline mode (as the labels of the same name do on Docker). They
# are in the container's bundle when the runtime passes them through: containerd's ``pod_annotations`` and
# CRI-O's ``allowed_annotations`` put them in the OCI annotations, and CRI-O keeps the container's own annotations
# as JSON under ``io.kubernetes.cri-o.Annotations``.
_MULTILINE_KEYS = ("lookout.multiline", "lookout.multiline_start")
_CRIO_ANNOTATIONS = "io.kubernetes.cri-o.Annotations"


def _multiline_annotations(ann: dict[str, str]) -> dict[str, str]:
    found = {key: ann[key] for key in _MULTILINE_KEYS if isinstance(ann.get(key), str)}
    nested = ann.get(_CRIO_ANNOTATIONS)
    if isinstance(nested, str) and "lookout.multiline" in nested:
        try:
            inner = orjson.loads(nested)
        except orjson.JSONDecodeError:
            inner = None
        if isinstance(inner, dict):
            for key in _MULTILINE_KEYS:
                if isinstance(inner.get(key), str):
                    found.setdefault(key, inner[key])
    return found


class CriMetadata:
    """Container id -> ``ContainerInfo`` template for every runtime but Docker (collectors/docker.py)."""

    def __init__(self, host_root: Path, env_prefixes: Sequence[str] = ()) -> None:
        self.host_root = host_root
        self.env_prefixes = tuple(env_prefixes)
        self.podman = PodmanMetadata(host_root, self.env_prefixes)
        self.containerd = ContainerdMetadata(host_root)
        self._bundles = (
            host_root / "run/containerd/io.containerd.runtime.v2.task/k8s.io",
            self.podman.root / "overlay-containers",  # CRI-O (containers/storage)
            host_root / "run/containers/storage/overlay-containers",
        )
        # id -> (containerd's record it was made with, the info); a bundle is read once per container.
        self._by_id: dict[str, tuple[ContainerdRecord | None, ContainerInfo]] = {}
        self._links: dict[str, tuple[str, str, str]] = {}
        self._pods: dict[str, tuple[str, str]] = {}

    def refresh(self) -> None:
        """Re-read the cheap directory listings and the runtimes' databases that changed."""
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
        self.podman.refresh()
        self.containerd.refresh()

    def pod_of(self, pod_uid: str) -> tuple[str, str]:
        """(namespace, pod) for a pod uid, or empty strings."""
        return self._pods.get(pod_uid, ("", ""))

    def _bundle(self, cid: str) -> tuple[dict[str, str], list[str]] | None:
        """(annotations, environment) of the container's OCI bundle; None when there is none (yet)."""
        for base in self._bundles:
            for path in (base / cid / "config.json", base / cid / "userdata/config.json"):
                try:
                    doc = orjson.loads(path.read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue
                if not isinstance(doc, dict):
                    continue
                annotations = doc.get("annotations")
                env = (doc.get("process") or {}).get("env")
                return (dict(annotations) if isinstance(annotations, dict) else {},
                        [e for e in env if isinstance(e, str)] if isinstance(env, list) else [])
        return None

    def get(self, ref: CgroupRef) -> ContainerInfo | None:
        cid = ref.container_id
        podman = self.podman.get(cid)
        if podman is not None:
            return podman  # libpod's own record: replaced (a new object) whenever its database changes
        record = self.containerd.get(cid)
        cached = self._by_id.get(cid)
        if cached is not None and cached[0] is record:
            return cached[1]
        bundle = self._bundle(cid)
        ann, env = bundle if bundle is not None else ({}, [])
        labels = dict(record.labels) if record is not None else {}
        link = self._links.get(cid)
        pod = _first(labels, _POD[1:]) or _first(ann, _POD)
        namespace = _first(labels, _NAMESPACE[1:]) or _first(ann, _NAMESPACE)
        container = _first(labels, _CONTAINER[1:]) or _first(ann, _CONTAINER)
        if link and not pod:
            pod, namespace, container = link
        if not pod and ref.pod_uid:
            namespace, pod = self.pod_of(ref.pod_uid)
        sandbox = labels.get(_KIND) == "sandbox" or _first(ann, _TYPE) == "sandbox" or container == "POD"
        # cAdvisor's name: the container id for containerd, CRI-O's own container name for CRI-O.
        name = ann.get(_CRIO_NAME) or cid
        image = (record.image if record is not None else "") or _first(ann, _IMAGE)
        layer, storage_dir, names, meta = self.podman.storage.by_id.get(cid, ("", "", [], {}))
        if names and not ann.get(_CRIO_NAME) and ref.runtime is Runtime.PODMAN:
            # A Podman container whose libpod database could not be read: containers/storage still names it.
            name, image = names[0], meta.get("image-name") or image
        if pod:
            # kubelet's labels, where the runtime's own record is not there to give them.
            labels.setdefault("io.kubernetes.pod.name", pod)
            labels.setdefault("io.kubernetes.pod.namespace", namespace)
            if ref.pod_uid:
                labels.setdefault("io.kubernetes.pod.uid", ref.pod_uid)
            if container and not sandbox:
                labels.setdefault("io.kubernetes.container.name", container)
        for key, value in _multiline_annotations(ann).items():
            labels.setdefault(key, value)  # the log shipper's multiline mode (collectors.logs.multiline)
        if not (bundle or record or link or names or pod):
            return None  # nothing known yet; try again next cycle
        info = ContainerInfo(
            cgroup="",
            runtime=ref.runtime,
            container_id=cid,
            name=name,
            image=image,
            labels=labels,
            env=filter_env(env, self.env_prefixes),
            pod=pod,
            namespace=namespace,
            container="" if sandbox and ref.runtime is Runtime.CONTAINERD else container,
            created_at=record.created if record is not None else None,
            # Only the sandbox owns a pod's network namespace; plain (non-k8s) containers own theirs.
            owns_network=sandbox or not pod,
            # The writable layer in containers/storage (CRI-O, Podman), measured as cAdvisor does; containerd's
            # snapshots are not (nor are they by cAdvisor).
            rw_layer=layer if ref.runtime in (Runtime.CRIO, Runtime.PODMAN) else "",
            storage_dir=storage_dir if ref.runtime is Runtime.PODMAN else "",
        )
        if bundle is not None or record is not None or names:
            self._by_id[cid] = (record, info)
        return info

    def known(self, container_id: str) -> bool:
        """Whether the runtime's own record of the container (bundle, containerd's or containers/storage's) was
        found, rather than only what Kubernetes' log paths tell."""
        return container_id in self._by_id or self.podman.get(container_id) is not None

    def forget(self, live_ids: set[str]) -> None:
        for cid in self._by_id.keys() - live_ids:
            del self._by_id[cid]

"""The paths provider: every container log source on the host and its files in reading order.

- Docker json-file: ``<docker-root>/containers/<id>/<id>-json.log`` with rotated ``.1``, ``.2``, …
  (oldest first: ``.N`` … ``.1``, then the live file).
- CRI: ``<host-root>/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`` with kubelet's
  rotated ``<restart>.log.<YYYYMMDD-hhmmss>`` siblings (by restart count, rotated before live).
- Podman's ``k8s-file`` driver: ``<graphroot>/<driver>-containers/<id>/userdata/ctr.log``, CRI's line format
  written by conmon. One file: at ``--log-opt max-size`` conmon writes a new ``ctr.log`` over the old one, which
  is read to its end as any file whose name now names another. A log path moved elsewhere with
  ``--log-opt path=`` is not found.
- The journal spool (collectors.logs.journal): ``<state-dir>/journal/{docker,podman,units}/<id or unit>/`` with
  ``<id or unit>-json.log`` and its rotated siblings, Docker's json-file format and naming, written from the journal
  for containers run with the ``journald`` log driver and the ``--journal-units`` units.
Compressed (``.gz``) and temporary (``.tmp``) files are not read: a rotated file the agent already
holds open is drained before it is compressed away.

The directories to watch for new sources are ``parents`` (collectors.logs.watch watches them and the sources'
own directories); a periodic rescan is the safety net for missed events.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CRI_FILE = re.compile(r"^(\d+)\.log(?:\.(\d{8}-\d{6}))?$")
PODMAN_LOG = "ctr.log"
JOURNAL_KINDS = ("docker", "podman", "units")  # the journal spool's directories (collectors.logs.journal.KINDS)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    # "docker:<id>", "cri:<ns>_<pod>_<uid>/<container>", "podman:<id>" or "journal:<docker|podman|units>:<id or unit>"
    source_id: str
    format: str  # "json-file" | "cri"
    directory: str
    container_id: str = ""
    namespace: str = ""
    pod: str = ""
    pod_uid: str = ""
    container: str = ""
    file_name: str = ""  # the one file of the source (Podman's ctr.log); "" for the formats' own naming

    def files(self) -> list[str]:
        """Existing log files, oldest first; the last one is the live file."""
        if self.file_name:
            path = os.path.join(self.directory, self.file_name)
            return [path] if os.path.exists(path) else []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        if self.format == "json-file":
            base = f"{self.container_id}-json.log"
            rotated = sorted(
                (int(n[len(base) + 1 :]), n) for n in names
                if n.startswith(base + ".") and n[len(base) + 1 :].isdigit()
            )
            ordered = [n for _, n in reversed(rotated)]
            if base in names:
                ordered.append(base)
            return [os.path.join(self.directory, n) for n in ordered]
        keyed = []
        for name in names:
            m = _CRI_FILE.match(name)
            if m:
                # (restart count, rotated files first in time order, live file last)
                keyed.append(((int(m.group(1)), 0 if m.group(2) else 1, m.group(2) or ""), name))
        return [os.path.join(self.directory, n) for _, n in sorted(keyed)]


def scan(docker_root: Path, pods_root: Path, podman_root: Path | None = None,
         journal_root: Path | None = None) -> dict[str, SourceSpec]:
    specs: dict[str, SourceSpec] = _journal_specs(journal_root) if journal_root is not None else {}
    for storage_dir in _podman_dirs(podman_root):
        try:
            entries = [e for e in os.scandir(storage_dir) if _HEX64.match(e.name)]
        except OSError:
            continue
        for entry in entries:
            userdata = os.path.join(entry.path, "userdata")
            # CRI-O's containers live here too, without a ctr.log (their logs are in /var/log/pods).
            if os.path.exists(os.path.join(userdata, PODMAN_LOG)):
                sid = f"podman:{entry.name}"
                specs[sid] = SourceSpec(sid, "cri", userdata, container_id=entry.name, file_name=PODMAN_LOG)
    containers = docker_root / "containers"
    try:
        for entry in os.scandir(containers):
            if _HEX64.match(entry.name) and entry.is_dir():
                specs[f"docker:{entry.name}"] = SourceSpec(f"docker:{entry.name}", "json-file", entry.path,
                                                          container_id=entry.name)
    except OSError:
        pass
    try:
        for pod in os.scandir(pods_root):
            parts = pod.name.split("_")
            if len(parts) != 3 or not pod.is_dir():
                continue
            namespace, pod_name, uid = parts
            for cont in os.scandir(pod.path):
                if cont.is_dir():
                    sid = f"cri:{pod.name}/{cont.name}"
                    specs[sid] = SourceSpec(sid, "cri", cont.path, namespace=namespace, pod=pod_name,
                                            pod_uid=uid, container=cont.name)
    except OSError:
        pass
    return specs


def _journal_specs(journal_root: Path) -> dict[str, SourceSpec]:
    """The journal spool's sources: json-file files named after the container id or the unit (``<name>-json.log``);
    their metadata is looked up by the source id (collectors.logs.metadata)."""
    specs = {}
    for kind in JOURNAL_KINDS:
        with contextlib.suppress(OSError):
            for entry in os.scandir(journal_root / kind):
                if entry.is_dir():
                    sid = f"journal:{kind}:{entry.name}"
                    specs[sid] = SourceSpec(sid, "json-file", entry.path, container_id=entry.name)
    return specs


def _podman_dirs(podman_root: Path | None) -> list[str]:
    """containers/storage's ``<driver>-containers`` directories."""
    if podman_root is None:
        return []
    try:
        return [e.path for e in os.scandir(podman_root) if e.name.endswith("-containers") and e.is_dir()]
    except OSError:
        return []


def parents(docker_root: Path, pods_root: Path, podman_root: Path | None = None,
            journal_root: Path | None = None) -> list[str]:
    """The directories in which new log sources appear: Docker's containers directory, the pod log root and each
    pod's directory (a new container of a pod is a new directory there), containers/storage's containers
    directories (a new Podman container's directory appears there; its ``ctr.log`` a moment later, when it
    starts, found by the next scan)."""
    found = [str(docker_root / "containers"), str(pods_root), *_podman_dirs(podman_root)]
    if journal_root is not None:
        found += [str(journal_root / kind) for kind in JOURNAL_KINDS]
    with contextlib.suppress(OSError):
        found += [pod.path for pod in os.scandir(pods_root) if pod.is_dir() and len(pod.name.split("_")) == 3]
    return found

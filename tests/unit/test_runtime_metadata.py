"""collectors/bolt.py, podman.py, containerd.py and cri.py on the runtimes' real databases.

``tests/fixtures/data/runtime-db`` holds a Podman 4.3.1 ``bolt_state.db`` and a containerd 1.6.20 ``meta.db``
with 60 containers each (branch pages; every libpod config spans overflow pages), taken with
``tests/fixtures/capture_runtime_dbs.py``, beside what ``podman inspect`` and ``ctr containers info`` said about
the same containers: the reader must agree with the runtimes' own CLIs.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import pytest

from agent.model import ContainerInfo, Runtime
from collectors import bolt
from collectors.containerd import META_DB, ContainerdMetadata, go_time
from collectors.cri import CriMetadata
from collectors.discovery import CgroupRef
from collectors.docker import parse_time
from collectors.host import HostFilesystems
from collectors.manager import FsUsage
from collectors.podman import PodmanMetadata, graph_root

DATA = Path(__file__).resolve().parent.parent / "fixtures/data/runtime-db"
PODMAN_DB = DATA / "podman-4.3.1-bolt_state.db.gz"
PODMAN_INSPECT = json.loads((DATA / "podman-4.3.1-inspect.json").read_text())
CONTAINERD_DB = DATA / "containerd-1.6.20-meta.db.gz"
CONTAINERD_INFO = json.loads((DATA / "containerd-1.6.20-info.json").read_text())
UID = "11111111-2222-3333-4444-555555555555"


def unpack(gz: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(gzip.decompress(gz.read_bytes()))
    return dest


@pytest.fixture
def podman_root(tmp_path: Path) -> Path:
    unpack(PODMAN_DB, tmp_path / "var/lib/containers/storage/libpod/bolt_state.db")
    return tmp_path


@pytest.fixture
def containerd_root(tmp_path: Path) -> Path:
    unpack(CONTAINERD_DB, tmp_path / "var/lib/containerd" / META_DB)
    return tmp_path


# --- Podman -----------------------------------------------------------------------------------------------------


def test_podman_bolt_db_agrees_with_podman_inspect(podman_root: Path) -> None:
    meta = PodmanMetadata(podman_root, ["LOOKOUT_", "Mixed"])
    meta.refresh()
    assert set(meta.containers) == set(PODMAN_INSPECT)
    for cid, want in PODMAN_INSPECT.items():
        info = meta.containers[cid]
        assert (info.runtime, info.container_id, info.name, info.image) == (
            Runtime.PODMAN, cid, want["name"], want["image"])
        assert info.labels == want["labels"]
        # cAdvisor's Podman handler lower-cases the keys of the allowlisted env vars
        index = want["labels"]["idx"]
        assert info.env == {"lookout_i": index, "mixed_case": "x"}
        assert {f"LOOKOUT_I={index}", "Mixed_Case=x"} <= set(want["env"])
        assert info.created_at == pytest.approx(parse_time(want["created"]), abs=1e-6)
        assert want["state"] == "created" and not info.running and info.pid == 0 and info.started_at is None
        assert info.log_path.endswith(f"/vfs-containers/{cid}/userdata/ctr.log")


def test_podman_db_read_again_only_when_it_changes(podman_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = PodmanMetadata(podman_root)
    meta.refresh()
    first = dict(meta.containers)
    calls = []
    monkeypatch.setattr(bolt, "read", lambda *a, **k: calls.append(a) or [])
    meta.refresh()
    assert calls == [] and meta.containers == first
    db = podman_root / "var/lib/containers/storage/libpod/bolt_state.db"
    db.write_bytes(db.read_bytes())  # same content, a new mtime: read again
    monkeypatch.undo()
    meta.refresh()
    # unchanged containers keep their objects (downstream caches by identity)
    assert all(meta.containers[cid] is first[cid] for cid in first)


def test_podman_unreadable_db_keeps_the_last_state(podman_root: Path) -> None:
    meta = PodmanMetadata(podman_root)
    meta.refresh()
    known = dict(meta.containers)
    db = podman_root / "var/lib/containers/storage/libpod/bolt_state.db"
    db.write_bytes(b"\0" * 8192)
    meta.refresh()
    assert meta.containers == known


def test_graph_root_from_storage_conf(tmp_path: Path) -> None:
    assert graph_root(tmp_path) == tmp_path / "var/lib/containers/storage"
    conf = tmp_path / "etc/containers/storage.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[storage]\ndriver = "overlay"\ngraphroot = "/srv/containers"\nrunroot = "/run/containers"\n')
    assert graph_root(tmp_path) == tmp_path / "srv/containers"


# --- containerd -------------------------------------------------------------------------------------------------


def test_containerd_meta_db_agrees_with_ctr_info(containerd_root: Path) -> None:
    meta = ContainerdMetadata(containerd_root)
    meta.refresh()
    assert set(meta.records) == set(CONTAINERD_INFO)
    for cid, want in CONTAINERD_INFO.items():
        record = meta.records[cid]
        assert (record.labels, record.image) == (want["labels"], want["image"])
        assert record.created == pytest.approx(parse_time(want["created"]), abs=1e-6)


def test_go_time() -> None:
    # time.Date(2026, 12, 4, 14, 8, 22, 19493313, time.UTC).MarshalBinary()
    raw = struct.pack(">BqihB", 1, 1796392102 + 62135596800, 19493313, -1, 0)[:15]
    assert go_time(raw) == pytest.approx(1796392102.019493313)
    assert go_time(b"") is None and go_time(None) is None and go_time(b"\x09" + bytes(14)) is None


def test_cri_metadata_takes_containerd_labels_image_and_bundle_env(containerd_root: Path) -> None:
    cid = next(iter(sorted(CONTAINERD_INFO)))
    want = CONTAINERD_INFO[cid]
    bundle = containerd_root / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid / "config.json"
    bundle.parent.mkdir(parents=True)
    bundle.write_text(json.dumps({"process": {"env": ["PATH=/bin", "LOOKOUT_I=0", "SECRET=x"]},
                                  "annotations": {"io.kubernetes.pod.namespace": "shop"}}))
    cri = CriMetadata(containerd_root, ["LOOKOUT_"])
    cri.refresh()
    info = cri.get(CgroupRef(f"/kubepods/besteffort/pod{UID}/{cid}", Runtime.CONTAINERD, cid, UID))
    assert info is not None
    # containerd's own labels first; kubelet's io.kubernetes.* filled in from the other sources where missing
    assert info.labels == {**want["labels"], "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": UID}
    assert (info.name, info.image, info.pod, info.namespace, info.container) == (
        cid, want["image"], "web-0", "shop", want["labels"]["io.kubernetes.container.name"])
    assert info.env == {"LOOKOUT_I": "0"}  # as Docker's and cAdvisor's containerd handler: the key as it is
    assert info.owns_network is False  # a pod's app container shares the sandbox's network namespace
    assert info.created_at == pytest.approx(parse_time(want["created"]), abs=1e-6)
    assert cri.get(CgroupRef("", Runtime.CONTAINERD, cid, UID)) is info  # cached while the record is the same


# --- bbolt ------------------------------------------------------------------------------------------------------


def test_bolt_rejects_what_is_not_a_bolt_file(tmp_path: Path) -> None:
    for content in (b"", b"\0" * 16384, b"SQLite format 3\0" + bytes(8192)):
        path = tmp_path / "x.db"
        path.write_bytes(content)
        with pytest.raises(bolt.BoltError):
            bolt.read(str(path), lambda root: list(root.items()))
    with pytest.raises(OSError):
        bolt.read(str(tmp_path / "missing.db"), lambda root: None)


def test_bolt_falls_back_to_the_other_meta_page(podman_root: Path) -> None:
    path = podman_root / "var/lib/containers/storage/libpod/bolt_state.db"
    data = bytearray(path.read_bytes())
    txids = [struct.unpack_from("<Q", data, page * 4096 + 16 + 48)[0] for page in (0, 1)]
    newest = txids.index(max(txids))
    data[newest * 4096 + 16 + 8] ^= 0xFF  # the newest meta's page size: its checksum no longer matches
    path.write_bytes(bytes(data))
    names = bolt.read(str(path), lambda root: [k for k, _ in root.buckets()])
    assert b"ctr" in names


def test_bolt_reads_again_when_the_writer_commits_twice_meanwhile(podman_root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(podman_root / "var/lib/containers/storage/libpod/bolt_state.db")
    real = bolt._Pages.metas
    bump = {"n": 0}

    def metas(self: bolt._Pages) -> list[tuple[int, int, int]]:
        bump["n"] += 1
        return [(txid + 2 * bump["n"], root, size) for txid, root, size in real(self)]

    monkeypatch.setattr(bolt._Pages, "metas", metas)
    with pytest.raises(bolt.BoltError, match="committed"):
        bolt.read(path, lambda root: [k for k, _ in root.buckets()])
    calls = {"n": 0}

    def one_commit(self: bolt._Pages) -> list[tuple[int, int, int]]:
        calls["n"] += 1
        return [(txid + (calls["n"] > 1), root, size) for txid, root, size in real(self)]

    monkeypatch.setattr(bolt._Pages, "metas", one_commit)
    assert b"ctr" in bolt.read(path, lambda root: [k for k, _ in root.buckets()])  # one commit meanwhile is fine


def test_bolt_get_finds_every_key_through_the_branches(podman_root: Path) -> None:
    path = str(podman_root / "var/lib/containers/storage/libpod/bolt_state.db")

    def visit(root: bolt.Bucket) -> tuple[list[bytes], list[bool]]:
        ctr = root.bucket("ctr")
        assert ctr is not None
        keys = [k for k, _ in ctr.buckets()]
        found = [(b := ctr.bucket(k)) is not None and b.get("config") is not None for k in keys]
        assert ctr.get(keys[0]) is None  # a bucket, not a value
        assert ctr.bucket(b"0" * 64) is None and ctr.bucket(b"\xff") is None
        return keys, found

    keys, found = bolt.read(path, visit)
    assert len(keys) == 60 and keys == sorted(keys) and all(found)


# --- writable layers (container_fs_usage_bytes) -------------------------------------------------------------------


def test_fs_usage_measures_containers_storage_layers(tmp_path: Path) -> None:
    layer = tmp_path / "var/lib/containers/storage/overlay/abc/diff"
    own = tmp_path / "var/lib/containers/storage/overlay-containers/c1"
    (layer / "tmp").mkdir(parents=True)
    (layer / "tmp/f").write_bytes(b"x" * 40960)
    own.mkdir(parents=True)
    (own / "ctr.log").write_bytes(b"y" * 8192)
    fs = FsUsage(HostFilesystems(tmp_path), tmp_path / "var/lib/docker")
    fs.measure([ContainerInfo("", Runtime.PODMAN, "c1", rw_layer=str(layer), storage_dir=str(own)),
                ContainerInfo("", Runtime.CRIO, "c2", rw_layer=str(layer)),
                ContainerInfo("", Runtime.CONTAINERD, "c3"),  # no layer known: not measured
                ContainerInfo("", Runtime.CRIO, "c4", rw_layer=str(tmp_path / "gone"))])
    podman, crio = fs.get("c1"), fs.get("c2")
    assert podman is not None and crio is not None and fs.get("c3") is None and fs.get("c4") is None
    assert podman.usage >= 40960 + 8192 and crio.usage >= 40960
    assert podman.usage - crio.usage >= 8192
    assert (podman.inodes_total, crio.inodes_total) == (3, 2)  # tmp, tmp/f, and Podman's own directory's ctr.log


def test_podman_db_in_a_copied_tree_is_found_by_graphroot(podman_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(podman_root / "var/lib/containers/storage", other / "srv/storage")
    conf = other / "etc/containers/storage.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[storage]\ngraphroot = "/srv/storage"\n')
    meta = PodmanMetadata(other)
    meta.refresh()
    assert set(meta.containers) == set(PODMAN_INSPECT)

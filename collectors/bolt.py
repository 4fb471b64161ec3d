"""A read-only reader of bbolt database files (go.etcd.io/bbolt), for runtimes that keep metadata in one.

Podman 4.x keeps every container's configuration (name, labels, image name, OCI spec) and state (pid, start
time) in ``libpod/bolt_state.db``; containerd keeps its containers' labels and image in
``io.containerd.metadata.v1.bolt/meta.db``. Neither offers it through a file of its own, and no Python library
for the format is needed for a few lookups: the file is a B+tree of fixed-size pages.

- Page header (16 bytes): id u64, flags u16 (branch 0x01, leaf 0x02, meta 0x04, freelist 0x10), count u16,
  overflow u32 (the page spans ``1 + overflow`` pages).
- Pages 0 and 1 are meta pages: magic, version, page size, flags, root bucket (root pgid, sequence), freelist,
  high-water pgid, txid and an FNV-1a checksum of the fields before it. The valid one with the higher txid is
  the current state.
- Branch elements (16 bytes): pos u32, ksize u32, pgid u64; leaf elements (16 bytes): flags u32 (0x01: the value
  is a bucket), pos u32, ksize u32, vsize u32. ``pos`` is relative to the element itself.
- A bucket value is its root pgid u64 and sequence u64; root 0 means an inline bucket, whose page follows.
- Byte order is the writer's own (bbolt casts memory): little-endian, as on every host it runs on here.

The writer may commit while this reads, in another process. bbolt writes a transaction's pages only into pages
that no committed state since the previous one refers to, and frees the pages of state N no earlier than
transaction N+2. So a tree read from meta N is intact as long as the txid is at most N+1 when the read ends:
``read`` checks that and tries again otherwise. Pages are read with ``pread`` (no mmap: a file truncated under
a mapping would kill the process with SIGBUS).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from typing import TypeVar

MAGIC = 0xED0CDAED
_BRANCH, _LEAF, _META = 0x01, 0x02, 0x04
_BUCKET_LEAF = 0x01
_PAGE_HEADER = struct.Struct("<QHHI")
_META_STRUCT = struct.Struct("<IIIIQQQQQQ")  # magic version page_size flags root seq freelist pgid txid checksum
_ELEMENT = struct.Struct("<IIII")  # leaf: flags pos ksize vsize; branch: pos ksize pgid(lo, hi)
_BUCKET = struct.Struct("<QQ")
_MAX_DEPTH = 64  # a real tree is a few levels deep; deeper means a damaged file (or one changing under us)

T = TypeVar("T")


class BoltError(Exception):
    """The file is not a bbolt database, is damaged, or kept changing while it was read."""


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _meta(raw: bytes) -> tuple[int, int, int] | None:
    """(txid, root pgid, page size) of a valid meta page, else None."""
    if len(raw) < _PAGE_HEADER.size + _META_STRUCT.size:
        return None
    flags = _PAGE_HEADER.unpack_from(raw)[1]
    magic, version, size, _, root, _, _, _, txid, checksum = _META_STRUCT.unpack_from(raw, _PAGE_HEADER.size)
    body = raw[_PAGE_HEADER.size : _PAGE_HEADER.size + _META_STRUCT.size - 8]
    if flags & _META and magic == MAGIC and version == 2 and size >= 512 and _fnv1a64(body) == checksum:
        return txid, root, size
    return None


class _Pages:
    """Pages of an open file, read on demand and kept for the duration of one read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.page_size = 4096
        self._cache: dict[int, bytes] = {}

    def metas(self) -> list[tuple[int, int, int]]:
        """The valid meta pages as (txid, root pgid, page size)."""
        found = []
        offset = 0
        for _ in range(2):
            raw = os.pread(self.fd, _PAGE_HEADER.size + _META_STRUCT.size, offset)
            meta = _meta(raw)
            if meta is not None:
                found.append(meta)
            # Page 1 follows page 0; when page 0 is being rewritten its size is the usual one, as bbolt assumes.
            offset = found[0][2] if found else os.sysconf("SC_PAGE_SIZE")
        return found

    def page(self, pgid: int) -> bytes:
        """The page ``pgid`` with its overflow pages."""
        data = self._cache.get(pgid)
        if data is None:
            size = self.page_size
            head = os.pread(self.fd, size, pgid * size)
            if len(head) < _PAGE_HEADER.size:
                raise BoltError(f"page {pgid} is beyond the end of the file")
            overflow = _PAGE_HEADER.unpack_from(head)[3]
            data = head if not overflow else os.pread(self.fd, size * (overflow + 1), pgid * size)
            if len(data) < size * (overflow + 1) and len(data) < _PAGE_HEADER.size:
                raise BoltError(f"page {pgid} is cut short")
            self._cache[pgid] = data
        return data


class Bucket:
    """A bucket of one consistent read: nested buckets and byte values by key."""

    def __init__(self, pages: _Pages, root: int, inline: bytes = b"") -> None:
        self._pages = pages
        self._root = root
        self._inline = inline

    def _leaves(self) -> Iterator[tuple[bytes, int]]:
        """Every leaf page of the bucket in key order, as (page bytes, offset of its header)."""
        if self._root == 0:
            yield self._inline, 0
            return
        stack: list[tuple[int, int]] = [(self._root, 0)]
        while stack:
            pgid, depth = stack.pop()
            if depth > _MAX_DEPTH:
                raise BoltError("the tree is deeper than any real one")
            page = self._pages.page(pgid)
            _, flags, count, _ = _PAGE_HEADER.unpack_from(page)
            if flags & _LEAF:
                yield page, 0
            elif flags & _BRANCH:
                children = []
                for i in range(count):
                    at = _PAGE_HEADER.size + i * _ELEMENT.size
                    _, _, lo, hi = _ELEMENT.unpack_from(page, at)
                    children.append((lo | hi << 32, depth + 1))
                stack.extend(reversed(children))
            else:
                raise BoltError(f"page {pgid} is neither a branch nor a leaf (flags {flags:#x})")

    def items(self) -> Iterator[tuple[bytes, bytes, bool]]:
        """(key, value, value is a bucket) for every entry, in key order."""
        for page, base in self._leaves():
            _, flags, count, _ = _PAGE_HEADER.unpack_from(page, base)
            if not flags & _LEAF:
                raise BoltError(f"an inline bucket page has flags {flags:#x}")
            for i in range(count):
                at = base + _PAGE_HEADER.size + i * _ELEMENT.size
                eflags, pos, ksize, vsize = _ELEMENT.unpack_from(page, at)
                start = at + pos
                if start + ksize + vsize > len(page):
                    raise BoltError("an element runs past its page")
                yield page[start : start + ksize], page[start + ksize : start + ksize + vsize], bool(
                    eflags & _BUCKET_LEAF)

    def _find(self, key: bytes) -> tuple[bytes, bool] | None:
        """The value stored under ``key`` (found by descending the branches), and whether it is a bucket."""
        if self._root == 0:
            pages: Iterator[tuple[bytes, int]] = iter([(self._inline, 0)])
        else:
            pages = self._descend(key)
        for page, base in pages:
            _, _, count, _ = _PAGE_HEADER.unpack_from(page, base)
            for i in range(count):
                at = base + _PAGE_HEADER.size + i * _ELEMENT.size
                eflags, pos, ksize, vsize = _ELEMENT.unpack_from(page, at)
                start = at + pos
                if page[start : start + ksize] == key:
                    return page[start + ksize : start + ksize + vsize], bool(eflags & _BUCKET_LEAF)
        return None

    def _descend(self, key: bytes) -> Iterator[tuple[bytes, int]]:
        pgid = self._root
        for _ in range(_MAX_DEPTH):
            page = self._pages.page(pgid)
            _, flags, count, _ = _PAGE_HEADER.unpack_from(page)
            if flags & _LEAF:
                yield page, 0
                return
            if not flags & _BRANCH or count == 0:
                raise BoltError(f"page {pgid} is neither a branch nor a leaf (flags {flags:#x})")
            chosen = None
            for i in range(count):  # the last element whose key is <= the key sought
                at = _PAGE_HEADER.size + i * _ELEMENT.size
                pos, ksize, lo, hi = _ELEMENT.unpack_from(page, at)
                if i and page[at + pos : at + pos + ksize] > key:
                    break
                chosen = lo | hi << 32
            assert chosen is not None
            pgid = chosen
        raise BoltError("the tree is deeper than any real one")

    def get(self, key: bytes | str) -> bytes | None:
        """A plain value, or None (no such key, or a bucket there)."""
        found = self._find(key.encode() if isinstance(key, str) else key)
        return found[0] if found is not None and not found[1] else None

    def bucket(self, key: bytes | str) -> Bucket | None:
        found = self._find(key.encode() if isinstance(key, str) else key)
        if found is None or not found[1]:
            return None
        return self._child(found[0])

    def buckets(self) -> Iterator[tuple[bytes, Bucket]]:
        """Every nested bucket with its key."""
        for key, value, is_bucket in self.items():
            if is_bucket:
                yield key, self._child(value)

    def _child(self, value: bytes) -> Bucket:
        if len(value) < _BUCKET.size:
            raise BoltError("a bucket header is cut short")
        root, _ = _BUCKET.unpack_from(value)
        return Bucket(self._pages, root, value[_BUCKET.size :] if root == 0 else b"")


def read(path: str, visit: Callable[[Bucket], T], attempts: int = 3) -> T:
    """``visit(root bucket)`` on a consistent state of the database at ``path``.

    ``visit`` must do all its reading before it returns (the pages are gone afterwards). Raises ``OSError``
    when the file cannot be opened and ``BoltError`` when it is not a bbolt file, is damaged, or kept changing.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        last = ""
        for _ in range(attempts):
            pages = _Pages(fd)
            metas = pages.metas()
            if not metas:
                raise BoltError(f"{path}: no valid meta page (not a bbolt database?)")
            txid, root, page_size = max(metas)
            pages.page_size = page_size
            try:
                result = visit(Bucket(pages, root))
            except (BoltError, struct.error, IndexError) as exc:
                result, last = None, str(exc)
                ok = False
            else:
                ok = True
            after = max((m[0] for m in _Pages(fd).metas()), default=txid)
            if after <= txid + 1 and ok:
                return result  # type: ignore[return-value]
            if after <= txid + 1:
                raise BoltError(f"{path}: {last}")  # damaged, not merely changing
            last = last or f"committed {after - txid} times while being read"
        raise BoltError(f"{path}: {last}")
    finally:
        os.close(fd)

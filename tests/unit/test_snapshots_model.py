"""Snapshots and subvolumes against an in-memory model (bcachefs' subvol tests,
xfstests' snapshot groups), through the Python API on memory devices.

The model holds, per live subvolume, what every path in it must read back:
directories, files (hard links share one model inode), file bytes and xattrs,
and which subvolume dirents it shows. A snapshot copies its source's model;
from then on each side is changed independently and every version is compared
with the image after every step, and `check -n` (the check passes run through
bfs_tools.fsck.runner on the same device) must find nothing.

    BFS_SNAPSHOT_FULL=1 pytest tests/unit/test_snapshots_model.py   # long sweeps
"""

from __future__ import annotations

import copy
import itertools
import os
import random
import stat
from dataclasses import dataclass, field

import pytest
from bfs_tools.formats.ids import AccountingType, BtreeId, DataType, KeyType, SnapshotFlags
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bfs_tools.alloc.accounting import read_counters
from bfs_tools.errors import BfsError, NoSpaceError, ReadOnlyError
from bfs_tools.fs import strhash
from bfs_tools.fs.filesystem import Filesystem
from bfs_tools.fsck.context import CheckContext
from bfs_tools.fsck.runner import run_passes
from bfs_tools.snapshots import cleanup
from bfs_tools.snapshots.subvolume import (
    NotSubvolumeError,
    SubvolumeBusyError,
    create_snapshot,
    create_subvolume,
    delete_subvolume,
    list_snapshots,
    list_subvolumes,
)
from bfs_tools.snapshots.table import SnapshotTable
from bfs_tools.store import Store
from tests.engine_checks import check_alloc_consistency, mkdev

FULL = bool(os.environ.get("BFS_SNAPSHOT_FULL"))
REG, DIR = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755


# ---------------------------------------------------------------------- the model


@dataclass
class Vol:
    """What one subvolume must show. Paths are relative ('' is its root)."""

    path: str                                   # where it is in the image ("/" for the root)
    ro: bool = False
    dirs: set[str] = field(default_factory=lambda: {""})
    names: dict[str, int] = field(default_factory=dict)          # file path -> model inode
    data: dict[int, bytearray] = field(default_factory=dict)
    xattrs: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    subvols: set[str] = field(default_factory=set)               # subvolume dirents it shows
    reserved: set[str] = field(default_factory=set)              # dirs tests leave alone

    def snapshot(self, path: str, ro: bool) -> Vol:
        """The model of a snapshot of this subvolume: same contents, no subvolume
        dirents (a snapshot hides the ones it inherits)."""
        return Vol(path, ro, set(self.dirs), dict(self.names),
                   {i: bytearray(d) for i, d in self.data.items()},
                   copy.deepcopy(self.xattrs), set(), set())

    def abs(self, rel: str) -> str:
        if not rel:
            return self.path
        return self.path.rstrip("/") + "/" + rel

    def files(self) -> list[str]:
        return sorted(self.names)

    def free_dirs(self) -> list[str]:
        return sorted(d for d in self.dirs
                      if not any(d == r or d.startswith(r + "/") for r in self.reserved))

    def taken(self, rel: str) -> bool:
        return rel in self.dirs or rel in self.names or rel in self.subvols


_inos = itertools.count(1)


def join(d: str, name: str) -> str:
    return f"{d}/{name}" if d else name


def parent_of(rel: str) -> tuple[str, str]:
    if "/" in rel:
        d, n = rel.rsplit("/", 1)
        return d, n
    return "", rel


def blob(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------------- the harness


def run_check(dev) -> list[str]:
    """`bfs check -n` on the device as committed so far: the findings."""
    store = Store.open(dev, strict_journal=False, lenient=True)
    try:
        ctx = CheckContext(store, "no")
        run_passes(ctx)
    finally:
        store.close()
    return [f"{f.error.name} {f.location}: {f.message}" for f in ctx.findings]


class Harness:
    """A filesystem on a memory device plus its model; every operation is applied
    to both (or, for a read-only subvolume, must be refused and change nothing)."""

    def __init__(self, size: int = 48 << 20, block: int = 4096):
        self.dev = mkdev(size, node=16384, bucket=65536, block=block)
        self.fs = Filesystem.open(self.dev, write=True)
        self.vols: dict[str, Vol] = {"/": Vol("/")}
        self.nsnap = 0
        self.mkdir(self.vols["/"], "snaps")         # where the snapshots go
        self.vols["/"].reserved.add("snaps")

    # plumbing

    def commit(self) -> None:
        self.fs.store.commit()

    def reopen(self) -> None:
        self.fs.close()
        self.fs = Filesystem.open(self.dev, write=True)

    def close(self) -> None:
        self.fs.close()

    def where(self, path: str):
        return self.fs.resolve(path, follow=False).where

    def _do(self, vol: Vol, fn, apply) -> bool:
        """Run fn on the image; on a read-only subvolume it must raise ReadOnlyError."""
        if vol.ro:
            with pytest.raises(ReadOnlyError):
                fn()
            return False
        fn()
        apply()
        self.commit()
        return True

    # operations (rel paths inside vol)

    def create_file(self, vol: Vol, rel: str, data: bytes) -> None:
        d, name = parent_of(rel)

        def apply():
            ino = next(_inos)
            vol.names[rel] = ino
            vol.data[ino] = bytearray(data)
            vol.xattrs[ino] = {}
        self._do(vol, lambda: self.fs.create(self.where(vol.abs(d)), name.encode(), REG,
                                              data=data), apply)

    def mkdir(self, vol: Vol, rel: str) -> None:
        d, name = parent_of(rel)
        self._do(vol, lambda: self.fs.create(self.where(vol.abs(d)), name.encode(), DIR),
                 lambda: vol.dirs.add(rel))

    def write(self, vol: Vol, rel: str, offset: int, data: bytes) -> None:
        def apply():
            buf = vol.data[vol.names[rel]]
            if len(buf) < offset:
                buf.extend(bytes(offset - len(buf)))
            buf[offset:offset + len(data)] = data
        self._do(vol, lambda: self.fs.write(self.where(vol.abs(rel)), offset, data, rel), apply)

    def replace(self, vol: Vol, rel: str, data: bytes) -> None:
        """What `put` over an existing file does: new data, switched in at once."""
        def apply():
            vol.data[vol.names[rel]][:] = data
        self._do(vol, lambda: self.fs.replace_contents(self.where(vol.abs(rel)),
                                                       [data[i:i + 100_000] for i in range(
                                                           0, len(data), 100_000)], rel),
                 apply)

    def truncate(self, vol: Vol, rel: str, size: int) -> None:
        def apply():
            buf = vol.data[vol.names[rel]]
            if size < len(buf):
                del buf[size:]
            else:
                buf.extend(bytes(size - len(buf)))
        self._do(vol, lambda: self.fs.truncate(self.where(vol.abs(rel)), size, rel), apply)

    def unlink(self, vol: Vol, rel: str) -> None:
        d, name = parent_of(rel)
        is_dir = rel in vol.dirs

        def apply():
            if is_dir:
                vol.dirs.discard(rel)
                return
            ino = vol.names.pop(rel)
            if ino not in vol.names.values():
                vol.data.pop(ino)
                vol.xattrs.pop(ino)
        self._do(vol, lambda: self.fs.unlink(self.where(vol.abs(d)), name.encode(),
                                              allow_dir=is_dir), apply)

    def link(self, vol: Vol, target: str, rel: str) -> None:
        d, name = parent_of(rel)
        self._do(vol, lambda: self.fs.link(self.where(vol.abs(target)), self.where(vol.abs(d)),
                                            name.encode()),
                 lambda: vol.names.__setitem__(rel, vol.names[target]))

    def rename(self, vol: Vol, src: str, dst: str) -> None:
        sd, sn = parent_of(src)
        dd, dn = parent_of(dst)

        def apply():
            if src in vol.dirs:
                moved = sorted(x for x in vol.dirs if x == src or x.startswith(src + "/"))
                for x in moved:
                    vol.dirs.discard(x)
                    vol.dirs.add(dst + x[len(src):])
                files = [x for x in vol.names if x.startswith(src + "/")]
                for x in files:
                    vol.names[dst + x[len(src):]] = vol.names.pop(x)
                return
            ino = vol.names.pop(src)
            old = vol.names.get(dst)
            vol.names[dst] = ino
            if old is not None and old != ino and old not in vol.names.values():
                vol.data.pop(old)
                vol.xattrs.pop(old)
            if old == ino:      # rename(2) between two links of one file does nothing
                vol.names[src] = ino
        self._do(vol, lambda: self.fs.rename(self.where(vol.abs(sd)), sn.encode(),
                                              self.where(vol.abs(dd)), dn.encode()), apply)

    def setxattr(self, vol: Vol, rel: str, name: bytes, value: bytes) -> None:
        self._do(vol, lambda: self.fs.setxattr(self.where(vol.abs(rel)), name, value),
                 lambda: vol.xattrs[vol.names[rel]].__setitem__(name, value))

    def removexattr(self, vol: Vol, rel: str, name: bytes) -> None:
        self._do(vol, lambda: self.fs.removexattr(self.where(vol.abs(rel)), name),
                 lambda: vol.xattrs[vol.names[rel]].pop(name))

    def snapshot(self, src: Vol, ro: bool = False, dest: str | None = None) -> Vol:
        self.nsnap += 1
        dest = dest or f"/snaps/s{self.nsnap}"
        create_snapshot(self.fs, src.path, dest, read_only=ro)
        self.commit()
        new = src.snapshot(dest, ro)
        self.vols[dest] = new
        self.vols["/"].subvols.add(dest.lstrip("/"))
        return new

    def subvolume(self, path: str) -> Vol:
        create_subvolume(self.fs, path)
        self.commit()
        vol = self.vols[path] = Vol(path)
        self.vols["/"].subvols.add(path.lstrip("/"))
        return vol

    def move(self, vol: Vol, dest: str) -> None:
        """mv of a subvolume's dirent (in the root subvolume)."""
        sd, sn = parent_of(vol.path.lstrip("/"))
        dd, dn = parent_of(dest.lstrip("/"))
        self.fs.rename(self.where("/" + sd), sn.encode(), self.where("/" + dd), dn.encode())
        self.commit()
        del self.vols[vol.path]
        self.vols["/"].subvols.discard(vol.path.lstrip("/"))
        vol.path = dest
        self.vols[dest] = vol
        self.vols["/"].subvols.add(dest.lstrip("/"))

    def delete(self, vol: Vol) -> None:
        delete_subvolume(self.fs, vol.path)
        self.commit()
        del self.vols[vol.path]
        self.vols["/"].subvols.discard(vol.path.lstrip("/"))

    # verification

    def verify(self, vol: Vol | None = None) -> None:
        for v in [vol] if vol else list(self.vols.values()):
            self._verify_vol(v)

    def _verify_vol(self, vol: Vol) -> None:
        fs = self.fs
        seen_dirs, seen_files, seen_subvols = set(), {}, set()
        stack = [""]
        while stack:
            rel = stack.pop()
            seen_dirs.add(rel)
            r = fs.resolve(vol.abs(rel), follow=False)
            assert r.inode.is_dir, (vol.path, rel)
            nsub = 0
            for e in fs.readdir(r.where):
                child = join(rel, e.name.decode())
                if e.dirent.is_subvol:
                    seen_subvols.add(child)     # not a subdirectory for nlink
                    continue
                ino = fs.inode(e.where)
                if ino.is_dir:
                    nsub += 1
                    stack.append(child)
                else:
                    seen_files[child] = (e.where, ino)
            assert r.inode.nlink == 2 + nsub, (vol.path, rel, r.inode.nlink, nsub)
        assert seen_dirs == vol.dirs, (vol.path, seen_dirs ^ vol.dirs)
        assert set(seen_files) == set(vol.names), (vol.path, set(seen_files) ^ set(vol.names))
        assert seen_subvols == {p for p in vol.subvols}, (vol.path, seen_subvols, vol.subvols)
        by_ino: dict[int, set[int]] = {}
        for rel, (where, ino) in seen_files.items():
            m = vol.names[rel]
            by_ino.setdefault(m, set()).add(where.inum)
            want = bytes(vol.data[m])
            assert ino.size == len(want), (vol.path, rel, ino.size, len(want))
            got = fs.read_all(where, ino, rel)
            if got != want:
                diff = next(i for i in range(len(want)) if got[i] != want[i])
                raise AssertionError(f"{vol.path} {rel}: contents differ from byte {diff} "
                                     f"(size {len(want)})")
            assert ino.nlink == list(vol.names.values()).count(m), (vol.path, rel, ino.nlink)
            got_x = {x.full_name: x.value for x in fs.listxattr(where)}
            assert got_x == vol.xattrs[m], (vol.path, rel, got_x, vol.xattrs[m])
        for m, inums in by_ino.items():
            assert len(inums) == 1, (vol.path, m, inums)   # hard links: one inode

    def verify_listing(self) -> None:
        """`snapshot list`'s data: every live subvolume with its path and flag."""
        listed = {s.path: s for s in list_subvolumes(self.fs) if not s.unlinked}
        assert set(listed) == set(self.vols), (set(listed), set(self.vols))
        for path, vol in self.vols.items():
            assert listed[path].read_only == vol.ro, path

    def check(self) -> None:
        self.commit()
        findings = run_check(self.dev)
        assert not findings, findings


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.verify()
    harness.check()
    harness.close()


# ---------------------------------------------------------------------- scenarios


def test_snapshot_then_modify_both_sides(h):
    """Overwrite, truncate, partial overwrite in the middle of an extent, append,
    delete, rename, new files, xattrs, hard links: on the original and on the
    snapshot independently; every version reads back exactly."""
    root = h.vols["/"]
    big = blob(1, 700_000)                  # several extents (128 KiB each at most)
    h.create_file(root, "big", big)
    h.create_file(root, "small", b"tiny file\n")
    h.create_file(root, "mid", blob(2, 9000))
    h.mkdir(root, "d")
    h.create_file(root, "d/f", blob(3, 20_000))
    h.setxattr(root, "mid", b"user.colour", b"blue")
    h.link(root, "mid", "d/mid-link")
    h.check()
    s1 = h.snapshot(root)
    h.check()
    h.verify()
    # the original
    h.write(root, "big", 200_000, b"O" * 5000)               # middle of an extent
    h.write(root, "big", 700_000, b"appended")               # append
    h.truncate(root, "mid", 3000)
    h.write(root, "small", 0, b"TINY")
    h.replace(root, "d/f", blob(11, 50_000))                 # put over an existing file
    h.unlink(root, "d/f")
    h.rename(root, "small", "d/small-moved")
    h.create_file(root, "new-in-root", blob(4, 130_000))
    h.setxattr(root, "mid", b"user.colour", b"red")
    h.check()
    h.verify()
    # the snapshot, over the same ranges and others
    h.write(s1, "big", 198_000, b"S" * 9000)                 # straddles the original's write
    h.write(s1, "big", 131_072 - 100, b"edge" * 100)         # across an extent boundary
    h.truncate(s1, "big", 650_001)
    h.write(s1, "mid", 8000, b"grow" * 1000)                 # extends via the hard link's file
    h.unlink(s1, "d/mid-link")
    h.rename(s1, "d", "dir-renamed")
    h.create_file(s1, "dir-renamed/g", b"g" * 100)
    h.link(s1, "dir-renamed/g", "g2")
    h.setxattr(s1, "mid", b"user.shape", b"round")
    h.removexattr(s1, "mid", b"user.colour")
    h.check()
    h.verify()
    # and back to the original after the snapshot's writes
    h.write(root, "big", 190_000, b"R" * 30_000)
    h.unlink(root, "d/mid-link")
    h.unlink(root, "mid")
    h.check()
    h.verify()
    h.reopen()
    h.verify()


def test_overwrite_patterns_in_one_extent(h):
    """Sector-granular edits of one extent from both sides, several generations."""
    root = h.vols["/"]
    h.create_file(root, "f", blob(5, 128 * 1024))
    snaps = []
    for gen in range(4):
        s = h.snapshot(root)
        snaps.append(s)
        for i, v in enumerate([root, s]):
            off = (gen * 7 + i * 13) * 4096 + 512 * gen
            h.write(v, "f", off, bytes([65 + gen + 5 * i]) * (4096 * (1 + i) + 17))
        h.verify()
        h.check()
    h.write(snaps[0], "f", 0, b"Z" * 128 * 1024)             # the whole range
    h.truncate(snaps[1], "f", 0)
    h.truncate(snaps[2], "f", 100_000)
    h.check()


def test_nested_snapshots_five_levels(h):
    """A snapshot of a snapshot, five deep, with writes at every level between."""
    root = h.vols["/"]
    h.create_file(root, "f", blob(6, 400_000))
    h.create_file(root, "keep", b"unchanged")
    chain = [root]
    for level in range(5):
        s = h.snapshot(chain[-1])
        chain.append(s)
        for depth, v in enumerate(chain):
            h.write(v, "f", (level * 50_000 + depth * 3000) % 390_000, bytes([48 + level]) * 7000)
        h.create_file(s, f"only-{level}", blob(level, 5000 + level))
        h.truncate(chain[-2], "f", 400_000 - level * 1000)
        h.verify()
        h.check()
    table = SnapshotTable.load(h.fs.btrees)
    sv = {s.path: s for s in list_subvolumes(h.fs)}
    assert table.get(sv[chain[-1].path].snapshot).depth == 5


def _snapshot_space(h) -> tuple[int, int, int]:
    """(user sectors, user buckets, inodes) from the accounting counters."""
    bt = h.fs.btrees
    user = read_counters(bt, AccountingType.data_type, DataType.user)
    inodes = read_counters(bt, AccountingType.nr_inodes)[0]
    return user[1], user[0], inodes


def _alloc_user_sectors(h) -> int:
    from bfs_tools.alloc.alloc_key import decode_alloc

    return sum(a.dirty_sectors for a in (decode_alloc(k) for k in h.fs.btrees.iter(BtreeId.alloc))
               if a.data_type == DataType.user)


def _populate_for_delete(h) -> None:
    root = h.vols["/"]
    h.create_file(root, "a", blob(7, 300_000))
    h.create_file(root, "b", blob(8, 5000))
    h.mkdir(root, "d")
    h.create_file(root, "d/c", blob(9, 1000))


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_delete_snapshots_in_every_order(order):
    """Three snapshots with overwrites on every side; delete them in each of the 6
    orders: the others stay intact, check is clean, and space returns to what it
    was before the snapshots were taken (btree nodes aside)."""
    h = Harness()
    root = h.vols["/"]
    _populate_for_delete(h)
    h.commit()
    before = _snapshot_space(h)
    snaps = []
    for i in range(3):
        s = h.snapshot(root if i != 2 else snaps[0])        # the third: of the first
        snaps.append(s)
        h.write(s, "a", 50_000 * i, bytes([97 + i]) * 40_000)
        h.create_file(s, f"own{i}", blob(20 + i, 70_000))
        if "b" in s.names:
            h.unlink(s, "b")
    h.write(root, "a", 10_000, b"R" * 100_000)
    h.check()
    root_data = bytes(root.data[root.names["a"]])
    for n, i in enumerate(order):
        h.delete(snaps[i])
        h.verify()
        h.check()
        if n == 0:
            h.reopen()
    table = SnapshotTable.load(h.fs.btrees)
    assert len(table.snapshots) == 1, table.snapshots      # all folded back into one node
    # the root's own overwrite stays allocated; nothing else of the snapshots does
    user_sectors, _, inodes = _snapshot_space(h)
    assert inodes == before[2]
    data_sectors = sum(k.size for k in h.fs.btrees.iter(BtreeId.extents)
                       if k.type == KeyType.extent)
    assert user_sectors == data_sectors == _alloc_user_sectors(h)
    assert user_sectors == before[0]
    assert bytes(root.data[root.names["a"]]) == root_data
    (only,) = list_snapshots(h.fs)
    assert only.own_sectors == sum(k.size for k in h.fs.btrees.iter(BtreeId.extents)
                                   if k.type == KeyType.extent)
    assert only.shared_sectors == 0
    h.close()
    check_alloc_consistency(Store.open(h.dev))
    assert run_check(h.dev) == []


def test_space_returns_after_deleting_all_snapshots():
    """Accounting and alloc back to exactly what they were before any snapshot
    (the data the original did not change stays; the snapshots' own goes)."""
    h = Harness()
    root = h.vols["/"]
    _populate_for_delete(h)
    h.commit()
    before = _snapshot_space(h)
    free_before = h.fs.store.allocator.free_buckets()
    snaps = [h.snapshot(root) for _ in range(4)]
    for i, s in enumerate(snaps):
        h.write(s, "a", 4096 * 10 * i, blob(30 + i, 60_000))
        h.create_file(s, "x", blob(40 + i, 200_000))
    after_writes = _snapshot_space(h)
    assert after_writes[0] > before[0]
    for s in reversed(snaps):
        h.delete(s)
    h.check()
    assert _snapshot_space(h) == before
    assert _alloc_user_sectors(h) == before[0]
    # buckets: user data back to the same count; btree nodes may differ
    assert abs(h.fs.store.allocator.free_buckets() - free_before) <= 4
    h.close()


def test_many_snapshots_of_one_subvolume(h):
    """>= 100 snapshots of one subvolume, a few overwrites in each; all read back."""
    root = h.vols["/"]
    h.create_file(root, "f", blob(50, 64 * 1024))
    h.create_file(root, "g", b"small file")
    n = 120 if not FULL else 300
    snaps = []
    for i in range(n):
        s = h.snapshot(root, ro=(i % 10 == 9))
        snaps.append(s)
        if not s.ro:
            h.write(s, "f", (i * 4096) % (60 * 1024), i.to_bytes(2, "little") * 1000)
        h.write(root, "f", (i * 1237) % 60_000, bytes([i % 251]) * 300)
    h.verify()
    h.check()
    assert len(list_subvolumes(h.fs)) == n + 1
    # delete every other one, check, then the rest
    for s in snaps[::2]:
        h.delete(s)
    h.verify()
    h.check()
    for s in snaps[1::2]:
        h.delete(s)
    assert len(SnapshotTable.load(h.fs.btrees).snapshots) == 1


def test_subvolume_with_snapshots_and_root_snapshot(h):
    """A subvolume inside the root, snapshots of both: a snapshot of the root hides
    the subvolume dirents it inherits (bcachefs), so it can neither reach nor
    delete them, and a name it reuses does not collide."""
    root = h.vols["/"]
    vol = h.subvolume("/vol")
    h.create_file(vol, "a", blob(60, 10_000))
    h.create_file(root, "r", blob(61, 10_000))
    vs = h.snapshot(vol)
    rs = h.snapshot(root)
    assert rs.dirs == {"", "snaps"}
    h.create_file(rs, "vol", b"a file named like the subvolume")
    h.unlink(rs, "snaps")                       # empty in the snapshot's view
    h.write(vs, "a", 100, b"snap")
    h.verify()
    h.check()
    h.delete(rs)
    h.delete(vol)
    h.verify()
    h.check()
    h.delete(vs)


def test_read_only_snapshot_refuses_every_write(h):
    root = h.vols["/"]
    h.create_file(root, "f", blob(70, 10_000))
    h.mkdir(root, "d")
    h.setxattr(root, "f", b"user.k", b"v")
    ro = h.snapshot(root, ro=True)
    assert ro.ro
    before = {k.pos: k.val for b in (BtreeId.extents, BtreeId.inodes, BtreeId.dirents,
                                     BtreeId.xattrs) for k in h.fs.btrees.iter(b)}
    h.write(ro, "f", 0, b"x")
    h.truncate(ro, "f", 1)
    h.create_file(ro, "new", b"x")
    h.mkdir(ro, "d2")
    h.unlink(ro, "f")
    h.unlink(ro, "d")
    h.rename(ro, "f", "g")
    h.link(ro, "f", "f2")
    h.setxattr(ro, "f", b"user.k", b"w")
    h.removexattr(ro, "f", b"user.k")
    with pytest.raises(ReadOnlyError):
        h.fs.setattr(h.where("/snaps/s1/f"), mode=0o600)
    with pytest.raises(ReadOnlyError):
        create_snapshot(h.fs, "/", "/snaps/s1/inner")
    with pytest.raises(ReadOnlyError):
        create_subvolume(h.fs, "/snaps/s1/sub")
    after = {k.pos: k.val for b in (BtreeId.extents, BtreeId.inodes, BtreeId.dirents,
                                    BtreeId.xattrs) for k in h.fs.btrees.iter(b)}
    assert after == before
    # a writable snapshot of the read-only one is writable
    w = h.snapshot(ro)
    h.write(w, "f", 0, b"writable again")
    h.verify()


# ---------------------------------------------------------------------- interrupted deletion


class Stop(Exception):
    pass


def _interrupting(monkeypatch, batches: int):
    """Make cleanup stop (as a crash would) after `batches` committed batches."""
    real = cleanup._run
    count = [0]

    def run(store, batch, fn):
        if count[0] >= batches:
            raise Stop()
        real(store, batch, fn)
        count[0] += 1

    monkeypatch.setattr(cleanup, "BATCH", 3)
    monkeypatch.setattr(cleanup, "_run", run)
    return count


def _interrupted_setup(h):
    root = h.vols["/"]
    for i in range(6):
        h.create_file(root, f"f{i}", blob(80 + i, 20_000 + 4096 * i))
    a = h.snapshot(root)
    b = h.snapshot(root)
    for i in range(6):
        h.write(a, f"f{i}", 1000 * i, b"A" * 9000)
        h.write(b, f"f{i}", 3000 * i, b"B" * 5000)
        h.write(root, f"f{i}", 500, b"R" * 100)
    h.create_file(a, "a-only", blob(90, 50_000))
    return a, b


@pytest.mark.parametrize("batches", [0, 1, 2, 5])
@pytest.mark.parametrize("finish", ["open", "check"])
def test_interrupted_deletion_resumes(monkeypatch, batches, finish):
    h = Harness()
    a, b = _interrupted_setup(h)
    h.check()
    count = _interrupting(monkeypatch, batches)
    with pytest.raises(Stop):
        h.delete(a)
    assert count[0] == batches
    h.fs.abort()
    monkeypatch.undo()
    # what was committed: the snapshot is unlinked and marked deleted
    del h.vols[a.path]
    h.vols["/"].subvols.discard(a.path.lstrip("/"))
    st_ = Store.open(h.dev)
    table = SnapshotTable.load(st_.btrees)
    st_.close()
    assert cleanup.pending_work(Store.open(h.dev).btrees)
    assert any(s.flags & SnapshotFlags.deleted for s in table.snapshots.values()) or batches
    if finish == "check":
        # a deletion in progress (the superblock says so) is not a finding
        findings = run_check(h.dev)
        assert findings == [], findings
        store = Store.open(h.dev, write=True, strict_journal=False, lenient=True)
        ctx = CheckContext(store, "yes")
        run_passes(ctx)
        from bfs_tools.fsck.runner import finish as fin

        fin(ctx)
        assert ctx.exit_code() in (0, 1)
        h.fs = Filesystem(Store.open(h.dev, write=True))
    else:
        h.fs = Filesystem.open(h.dev, write=True)        # the writable open finishes it
    assert not cleanup.pending_work(h.fs.btrees)
    h.verify()
    h.check()
    h.delete(b)
    assert len(SnapshotTable.load(h.fs.btrees).snapshots) == 1
    h.verify()
    h.check()
    h.close()


def test_deletion_interrupted_at_every_batch(monkeypatch):
    """Crash after each possible number of committed batches of one deletion (and
    of the fold that follows): the next open always finishes it identically."""
    h0 = Harness()
    a, b = _interrupted_setup(h0)
    h0.delete(a)
    h0.close()
    want = {bt: [(k.pos, k.type, k.val) for k in Store.open(h0.dev).btrees.iter(bt)]
            for bt in (BtreeId.extents, BtreeId.inodes, BtreeId.dirents, BtreeId.snapshots)}
    for n in itertools.count():
        h = Harness()
        a, b = _interrupted_setup(h)
        count = _interrupting(monkeypatch, n)
        try:
            h.delete(a)
            done = True
        except Stop:
            done = False
            h.fs.abort()
        monkeypatch.undo()
        h.fs = Filesystem.open(h.dev, write=True)
        h.vols.pop(a.path, None)
        h.vols["/"].subvols.discard(a.path.lstrip("/"))
        h.verify()
        h.check()
        got = {bt: [(k.pos, k.type, k.val) for k in h.fs.btrees.iter(bt)] for bt in want}
        for bt in (BtreeId.extents, BtreeId.snapshots):
            assert got[bt] == want[bt], (n, bt)
        h.close()
        if done:
            assert count[0] >= 1
            break
        assert n < 200


# ---------------------------------------------------------------------- bad input


def test_snapshot_bad_input(h):
    root = h.vols["/"]
    h.mkdir(root, "d")
    h.create_file(root, "f", b"x")
    with pytest.raises(NotSubvolumeError, match="not a subvolume root"):
        create_snapshot(h.fs, "/d", "/s")
    with pytest.raises(NotSubvolumeError, match="not a subvolume root"):
        create_snapshot(h.fs, "/f", "/s")
    with pytest.raises(BfsError, match="exists"):
        create_snapshot(h.fs, "/", "/d")
    with pytest.raises(BfsError, match="exists"):
        create_snapshot(h.fs, "/", "/f")
    with pytest.raises(BfsError):
        create_snapshot(h.fs, "/", "/nodir/s")
    with pytest.raises(SubvolumeBusyError, match="root subvolume"):
        delete_subvolume(h.fs, "/")
    with pytest.raises(NotSubvolumeError, match="not a subvolume"):
        delete_subvolume(h.fs, "/d")
    h.snapshot(root)
    with pytest.raises(NotSubvolumeError, match="not a snapshot"):
        create_subvolume(h.fs, "/vol")
        h.vols["/vol"] = Vol("/vol")
        h.vols["/"].subvols.add("vol")
        delete_subvolume(h.fs, "/vol", expect_snapshot=True)


def test_snapshot_ids_exhausted(h):
    """With a snapshot id 2 in the table only id 1 is left: a snapshot needs two,
    so it fails with a clear error and changes nothing; a subvolume needs one."""
    from bfs_tools.snapshots.values import Snapshot, SnapshotTree, Subvolume

    root = h.vols["/"]
    h.create_file(root, "f", b"x")
    # a separate tree whose single node has id 2 (as if ids had run down)
    t = h.fs.store.transaction()
    t.update(BtreeId.snapshot_trees, SnapshotTree(7, 0, 2).key())
    t.update(BtreeId.snapshots, Snapshot(2, 0, 0, 0, 0, 0, 7, 0).key())
    t.commit()
    h.commit()
    before = {bt: [(k.pos, k.val) for k in h.fs.btrees.iter(bt)] for bt in BtreeId}
    with pytest.raises(NoSpaceError, match="snapshot ids exhausted"):
        create_snapshot(h.fs, "/", "/s")
    h.commit()
    after = {bt: [(k.pos, k.val) for k in h.fs.btrees.iter(bt)] for bt in BtreeId}
    assert after == before
    # drop the crafted node again (cleanup would treat it as dead anyway)
    t = h.fs.store.transaction()
    t.delete(BtreeId.snapshots, (0, 2, 0))
    t.delete(BtreeId.snapshot_trees, (0, 7, 0))
    t.commit()
    h.commit()
    assert Subvolume  # (imported for readers: the value types involved)


# ---------------------------------------------------------------------- the state machine


class SnapshotMachine(RuleBasedStateMachine):
    """Random operations on random subvolumes, compared with the model after every
    step; check -n after every step."""

    collide = False

    @initialize()
    def setup(self):
        if self.collide:
            # every name hashes to one of 3 slots: long probe chains, hash whiteouts
            # in them, ancestors' entries shadowed and revealed along a chain
            self._real_h = strhash._h
            strhash._h = lambda name, seed: (1000 + self._real_h(name, seed) % 3) << 1
        self.h = Harness(size=40 << 20)
        self.h.create_file(self.h.vols["/"], "seed", blob(0, 10_000))

    def teardown(self):
        try:
            if hasattr(self, "h"):
                self.h.check()
                self.h.close()
        finally:
            if self.collide:
                strhash._h = self._real_h

    def _vol(self, data, writable_only=False) -> Vol:
        vols = [v for v in self.h.vols.values() if not (writable_only and v.ro)]
        return self.h.vols[data.draw(st.sampled_from(sorted(v.path for v in vols)))]

    @rule(data=st.data(), size=st.integers(0, 150_000), seed=st.integers(0, 1 << 16))
    def create_file(self, data, size, seed):
        vol = self._vol(data)
        d = data.draw(st.sampled_from(vol.free_dirs()))
        name = data.draw(st.sampled_from(["a", "b", "c", "d", "e"]))
        rel = join(d, name)
        if vol.taken(rel):
            return
        self.h.create_file(vol, rel, blob(seed, size))

    @rule(data=st.data())
    def mkdir(self, data):
        vol = self._vol(data)
        d = data.draw(st.sampled_from(vol.free_dirs()))
        rel = join(d, data.draw(st.sampled_from(["x", "y", "z"])))
        if vol.taken(rel) or rel.count("/") > 3:
            return
        self.h.mkdir(vol, rel)

    @rule(data=st.data(), offset=st.integers(0, 400_000), size=st.integers(1, 140_000),
          seed=st.integers(0, 1 << 16))
    def write(self, data, offset, size, seed):
        vol = self._vol(data)
        files = vol.files()
        if not files:
            return
        rel = data.draw(st.sampled_from(files))
        self.h.write(vol, rel, offset, blob(seed, size))

    @rule(data=st.data(), size=st.integers(0, 300_000), seed=st.integers(0, 1 << 16))
    def replace(self, data, size, seed):
        vol = self._vol(data)
        files = vol.files()
        if not files:
            return
        self.h.replace(vol, data.draw(st.sampled_from(files)), blob(seed, size))

    @rule(data=st.data(), frac=st.floats(0, 1.3))
    def truncate(self, data, frac):
        vol = self._vol(data)
        files = vol.files()
        if not files:
            return
        rel = data.draw(st.sampled_from(files))
        size = int(len(vol.data[vol.names[rel]]) * frac)
        self.h.truncate(vol, rel, size)

    @rule(data=st.data())
    def unlink(self, data):
        vol = self._vol(data)
        cands = vol.files() + [d for d in vol.free_dirs() if d and not any(
            x.startswith(d + "/") for x in list(vol.names) + list(vol.dirs) + list(vol.subvols))]
        if not cands:
            return
        self.h.unlink(vol, data.draw(st.sampled_from(sorted(cands))))

    @rule(data=st.data())
    def link(self, data):
        vol = self._vol(data)
        files = vol.files()
        if not files:
            return
        target = data.draw(st.sampled_from(files))
        rel = join(data.draw(st.sampled_from(vol.free_dirs())), "l" + data.draw(
            st.sampled_from("12")))
        if vol.taken(rel):
            return
        self.h.link(vol, target, rel)

    @rule(data=st.data())
    def rename(self, data):
        vol = self._vol(data)
        cands = vol.files() + [d for d in vol.free_dirs() if d]
        if not cands:
            return
        src = data.draw(st.sampled_from(sorted(cands)))
        dd = data.draw(st.sampled_from(vol.free_dirs()))
        dst = join(dd, data.draw(st.sampled_from(["a", "b", "m", "n"])))
        if dst == src or dd == src or dd.startswith(src + "/"):
            return
        if src in vol.dirs:
            if vol.taken(dst):
                return
        elif dst in vol.dirs or dst in vol.subvols:
            return
        self.h.rename(vol, src, dst)

    @rule(data=st.data(), value=st.binary(max_size=40))
    def setxattr(self, data, value):
        vol = self._vol(data)
        files = vol.files()
        if not files:
            return
        rel = data.draw(st.sampled_from(files))
        name = b"user." + data.draw(st.sampled_from([b"p", b"q"]))
        self.h.setxattr(vol, rel, name, value)

    @rule(data=st.data())
    def removexattr(self, data):
        vol = self._vol(data)
        cands = [(rel, n) for rel in vol.files() for n in vol.xattrs[vol.names[rel]]]
        if not cands:
            return
        rel, n = data.draw(st.sampled_from(sorted(cands)))
        self.h.removexattr(vol, rel, n)

    @precondition(lambda self: len(self.h.vols) < 7)
    @rule(data=st.data(), ro=st.booleans())
    def snapshot(self, data, ro):
        self.h.snapshot(self._vol(data), ro=ro)

    @precondition(lambda self: len(self.h.vols) < 7)
    @rule()
    def create_subvolume(self):
        self.h.nsnap += 1
        self.h.subvolume(f"/snaps/v{self.h.nsnap}")

    @precondition(lambda self: len(self.h.vols) > 1)
    @rule(data=st.data())
    def move_snapshot(self, data):
        victim = data.draw(st.sampled_from(sorted(p for p in self.h.vols if p != "/")))
        self.h.nsnap += 1
        self.h.move(self.h.vols[victim], f"/snaps/m{self.h.nsnap}")

    @precondition(lambda self: len(self.h.vols) > 1)
    @rule(data=st.data())
    def delete_snapshot(self, data):
        victim = data.draw(st.sampled_from(sorted(p for p in self.h.vols if p != "/")))
        self.h.delete(self.h.vols[victim])

    @rule()
    def reopen(self):
        self.h.reopen()

    @invariant()
    def matches_model_and_checks_clean(self):
        self.h.verify()
        self.h.verify_listing()
        self.h.check()


SnapshotMachine.TestCase.settings = settings(
    max_examples=300 if FULL else 20, stateful_step_count=40 if FULL else 20, deadline=None,
    suppress_health_check=list(HealthCheck))
test_snapshot_state_machine = SnapshotMachine.TestCase


class CollidingSnapshotMachine(SnapshotMachine):
    collide = True


CollidingSnapshotMachine.TestCase.settings = SnapshotMachine.TestCase.settings
test_snapshot_state_machine_hash_collisions = CollidingSnapshotMachine.TestCase


# ---------------------------------------------------------------------- crash states


def _crash_workload(monkeypatch):
    """A filesystem with two snapshots, then, recorded: delete one (cleanup in
    batches of 3 keys), snapshot the root. Returns (harness model, base, log)."""
    from bfs_tools.io.device import RecordingDevice

    h = Harness(size=24 << 20)
    a, b = _interrupted_setup(h)
    h.close()
    base = h.dev.clone()
    rec = RecordingDevice(h.dev.clone())
    monkeypatch.setattr(cleanup, "BATCH", 3)
    fs = Filesystem.open(rec, write=True)
    delete_subvolume(fs, a.path)
    create_snapshot(fs, "/", "/snaps/new")
    fs.close()
    monkeypatch.undo()
    return h, a, base, rec.log


def _check_crash_state(h, a, dev) -> str:
    """The image a crash left: opens (the writable open finishes any deletion),
    checks clean, and shows each operation either done or not done."""
    fs = Filesystem.open(dev, write=True)
    paths = {s.path for s in list_subvolumes(fs) if not s.unlinked}
    view = Harness.__new__(Harness)
    view.dev, view.fs = dev, fs
    view.vols = {p: v for p, v in h.vols.items() if p != a.path or p in paths}
    root = view.vols["/"] = copy.deepcopy(h.vols["/"])
    if a.path not in paths:
        root.subvols.discard(a.path.lstrip("/"))
    if "/snaps/new" in paths:
        assert a.path not in paths          # the operations happened in order
        view.vols["/snaps/new"] = h.vols["/"].snapshot("/snaps/new", False)
        root.subvols.add("snaps/new")
    assert set(view.vols) == paths, (paths, set(view.vols))
    assert not cleanup.pending_work(fs.btrees)
    view.verify()
    fs.close()
    findings = run_check(dev)
    assert not findings, findings
    return "deleted" if a.path not in paths else "kept"


def test_crash_during_snapshot_delete_and_create(monkeypatch):
    """Crash at every flush (and, with BFS_SNAPSHOT_FULL=1, with pending writes
    dropped, reordered and torn): each state opens, finishes the deletion, is
    clean, and shows the deleted snapshot either whole or gone."""
    from bfs_tools.io.crash import CrashLimits, crash_states

    h, a, base, log = _crash_workload(monkeypatch)
    limits = CrashLimits(prefixes=4, drops=2, subsets=4, torn=2) if FULL else CrashLimits()
    select = None if FULL else (lambda ep: False)
    seen = {}
    for state, dev in crash_states(base, log, seed=1, limits=limits, select=select):
        try:
            outcome = _check_crash_state(h, a, dev)
        except Exception as e:
            raise AssertionError(f"crash state {state.describe()}: {e}") from e
        seen[outcome] = seen.get(outcome, 0) + 1
    assert seen.get("kept") and seen.get("deleted"), seen

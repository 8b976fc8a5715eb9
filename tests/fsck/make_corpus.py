"""The golden fsck corpus: one function per corruption class.

    python tests/fsck/make_corpus.py --update          # regenerate every fixture
    python tests/fsck/make_corpus.py --update 23 41    # only these classes
    python tests/fsck/make_corpus.py --list

Each class builds the base image (tests/fsck/lib.py build_base: files, dirs,
links, xattrs, a snapshot, a subvolume, a reflinked file), injects ONE precise
corruption through the format declarations (record types of bfs_tools/codec.py,
keys of bfs_tools/keys.py, node encoders), re-reads what it wrote to prove the
damage is on disk, and returns the paths the damage touches. The generator then
requires `check -n` to exit 4 naming the class's error ids, runs `check -y`
(exit 1) and `check -n` (exit 0), and writes fixtures/fsck/NNN-name/:

    image.xz   the damaged image
    expect.1   normalised output of `bfs check -y` (first line: the exit code)
    expect.2   normalised output of `bfs check -n` after it
    sha256     files the damage did not touch: they must read back identical
    args       extra `check` arguments (only when the class needs some)
    README     what was damaged, and the error ids it must produce

Generation runs under lib.deterministic(), so a regenerated fixture differs
only where the code that writes or checks images changed (reviewable diffs).
The same class functions drive tests/fsck/test_inject.py on fresh images.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import stat
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bfs_tools.formats.constants import (  # noqa: E402
    LAYOUT_OFFSET,
    SB_OFFSET,
    U32_MAX,
)
from bfs_tools.formats.ids import (  # noqa: E402
    AccountingType,
    BtreeId,
    DataType,
    DirentType,
    KeyType,
    SnapshotFlags,
)

from bfs_tools.alloc.alloc_key import Alloc, alloc_key, decode_alloc  # noqa: E402
from bfs_tools.alloc.freespace import range_key  # noqa: E402
from bfs_tools.btree.ptr import decode_ptr  # noqa: E402
from bfs_tools.checksum import checksum  # noqa: E402
from bfs_tools.extents import Extent, decode_extent, extent_key  # noqa: E402
from bfs_tools.fs.dirent import Dirent, decode_dirent, dirent_key  # noqa: E402
from bfs_tools.fs.inode import decode_inode  # noqa: E402
from bfs_tools.fs.strhash import name_hash  # noqa: E402
from bfs_tools.fs.xattr import decode_xattr  # noqa: E402
from bfs_tools.keys import Key, encode_keys  # noqa: E402
from bfs_tools.snapshots.values import (  # noqa: E402
    Snapshot,
    decode_snapshot,
    decode_subvolume,
)
from tests.fsck import lib  # noqa: E402

ROOT_DIR = Path(__file__).resolve().parents[2]
FIXTURES = ROOT_DIR / "fixtures" / "fsck"
E, INO, D, X = BtreeId.extents, BtreeId.inodes, BtreeId.dirents, BtreeId.xattrs
A, FSP, ACC, R = BtreeId.alloc, BtreeId.freespace, BtreeId.accounting, BtreeId.reflink
S, SV, ST = BtreeId.snapshots, BtreeId.subvolumes, BtreeId.snapshot_trees


@dataclass
class Class:
    num: int
    name: str
    fn: Callable
    ids: list[str]                 # error names `check -n` must report
    args: list[str] = field(default_factory=list)
    unclean: bool = False          # start from an image that needs journal replay
    doc: str = ""

    @property
    def dirname(self) -> str:
        return f"{self.num:03d}-{self.name}"


CLASSES: list[Class] = []


def corruption(num: int, name: str, ids: list[str], *, args=(), unclean=False):
    def deco(fn):
        CLASSES.append(Class(num, name, fn, list(ids), list(args), unclean,
                             (fn.__doc__ or "").strip()))
        return fn
    return deco


# ---------------------------------------------------------------- helpers

class Ctx:
    """What a class function gets: the image and its manifest."""

    def __init__(self, img: Path, m: lib.Manifest):
        self.img = img
        self.m = m

    # paths <-> inodes
    def inum(self, path: str) -> int:
        return self.m.inums[path]

    def paths_of(self, *inums: int) -> set[str]:
        return {p for p, i in self.m.inums.items() if i in inums}

    def both(self, path: str) -> set[str]:
        """A path in the live tree and its twin in /snap."""
        return {path, "/snap" + path}

    # the filesystem, read-only
    def fs(self):
        from bfs_tools.fs.filesystem import Filesystem

        return Filesystem.open(str(self.img))

    def resolve(self, path: str):
        fs = self.fs()
        try:
            return fs.resolve(path, follow=False)
        finally:
            fs.close()

    def inode_key(self, path: str) -> Key:
        """The inode key the path's view reads (maybe an ancestor snapshot's)."""
        r = self.resolve(path)
        ino = r.inode
        k = lib.get_key(self.img, INO, (0, ino.inum, ino.key_snapshot))
        assert k is not None
        return k

    def dirent_key(self, path: str) -> Key:
        r = self.resolve(path)
        assert r.entry is not None
        return r.entry.key

    def live_snapshot(self) -> int:
        return lib.snapshot_of(self.img, 1)

    def put(self, *updates, deletes=()):
        lib.put_keys(self.img, list(updates), deletes=list(deletes))
        for btree, k in updates:
            got = lib.get_key(self.img, btree, k.pos)
            assert got == k, f"injection not on disk: {btree} {k} read back {got}"
        for btree, pos in deletes:
            assert lib.get_key(self.img, btree, pos) is None, f"{pos} still present"

    def params(self):
        return lib.store_params(self.img)


def with_inode(k: Key, **changes) -> Key:
    ino = decode_inode(k)
    for n, v in changes.items():
        setattr(ino, n, v)
    return Key(k.pos, KeyType.inode, ino.pack())


def file_extents(c: Ctx, path: str) -> list[Key]:
    inum = c.inum(path)
    return [k for k in lib.keys_of(c.img, E, (inum, 0, 0), (inum, (1 << 64) - 1, U32_MAX))]


def data_extent(c: Ctx, path: str) -> Key:
    for k in file_extents(c, path):
        if k.type == KeyType.extent:
            return k
    raise RuntimeError(f"{path} has no data extent")


def flip(img: Path, offset: int, mask: int = 0xFF) -> None:
    old = lib.read_raw(img, offset, 1)
    lib.write_raw(img, offset, bytes([old[0] ^ mask]))
    assert lib.read_raw(img, offset, 1) != old


def set_bytes(img: Path, offset: int, data: bytes) -> None:
    lib.write_raw(img, offset, data)
    assert lib.read_raw(img, offset, len(data)) == data


def paths_of_node_keys(c: Ctx, n: lib.NodeInfo) -> set[str]:
    inums = set()
    for k in n.keys:
        if n.btree in (E, X):
            inums.add(k.pos[0])
        elif n.btree == INO:
            inums.add(k.pos[1])
        elif n.btree == D:
            inums.add(k.pos[0])
            try:
                inums.add(decode_dirent(k.val).target)
            except Exception:
                pass
    return c.paths_of(*inums)


def sb_copies(img: Path):
    from bfs_tools.io.device import FileDevice
    from bfs_tools.superblock import read_superblock

    with FileDevice(str(img)) as dev:
        return read_superblock(dev)


# ---------------------------------------------------------------- 0xx: control, superblock

@corruption(1, "clean", [])
def c_clean(c: Ctx):
    """The control: an undamaged image. check -y changes nothing (exit 0)."""
    return set()


@corruption(2, "sb-primary-csum", ["sb_primary_bad"])
def c_sb_primary_csum(c: Ctx):
    """One byte of the primary superblock's header flipped: its checksum fails; a
    copy is used and every copy is rewritten."""
    flip(c.img, SB_OFFSET + 120)
    assert sb_copies(c.img).copies[0].status != "ok"
    return set()


@corruption(3, "sb-primary-zeroed", ["sb_primary_bad"])
def c_sb_primary_zeroed(c: Ctx):
    """The primary superblock is zeroes: the layout record leads to the copies."""
    set_bytes(c.img, SB_OFFSET, b"\0" * 4096)
    return set()


@corruption(4, "sb-second-copy-bad", ["sb_backup_bad"])
def c_sb_second(c: Ctx):
    """The second superblock copy (right after the primary) has a bad checksum."""
    off = sb_copies(c.img).sb.offsets[1]
    flip(c.img, off + 130)
    assert any(x.offset == off and x.status != "ok" for x in sb_copies(c.img).copies)
    return set()


@corruption(5, "sb-end-backup-bad", ["sb_backup_bad"])
def c_sb_end(c: Ctx):
    """The backup superblock at the start of the last bucket has a bad checksum."""
    off = sb_copies(c.img).sb.offsets[-1]
    flip(c.img, off + 200)
    assert any(x.offset == off and x.status != "ok" for x in sb_copies(c.img).copies)
    return set()


@corruption(6, "sb-primary-stale", ["sb_primary_bad"])
def c_sb_stale(c: Ctx):
    """The primary copy is valid but older (lower seq) than the other copies."""
    from tests.helpers import rewrite_superblock

    def older(sb):
        sb.seq -= 1
        sb.label = b"older"

    rewrite_superblock(c.img, older, offsets=[SB_OFFSET])
    assert sb_copies(c.img).copies[0].status == "stale"
    return set()


@corruption(7, "sb-layout-csum", ["sb_layout_bad"])
def c_sb_layout(c: Ctx):
    """The layout record (byte 3584) has a bad checksum."""
    flip(c.img, LAYOUT_OFFSET + 40)
    return set()


@corruption(8, "sb-layout-wrong", ["sb_layout_bad"])
def c_sb_layout_wrong(c: Ctx):
    """A valid layout record that lists a wrong backup offset."""
    from bfs_tools.superblock import LayoutRec

    raw = bytearray(lib.read_raw(c.img, LAYOUT_OFFSET, LayoutRec.SIZE))
    rec = LayoutRec.unpack(bytes(raw))
    new = bytearray(rec._replace(csum=0, layout_offsets_1=rec.layout_offsets_1 + 4096).pack())
    new[16:24] = checksum(1, bytes(new[24:])).to_bytes(8, "little")
    set_bytes(c.img, LAYOUT_OFFSET, bytes(new))
    return set()


@corruption(9, "sb-csum-type-wrong", ["sb_metadata_mismatch"])
def c_sb_csum_type(c: Ctx):
    """Every superblock copy says the metadata checksum type is crc64 (resealed
    with crc64), but the nodes and journal use crc32c: no btree root opens. The
    type the metadata agrees on is taken, nothing is lost."""
    from bfs_tools.formats.ids import ChecksumType

    from tests.helpers import rewrite_superblock

    def crc64(sb):
        sb.csum_type = ChecksumType.crc64

    rewrite_superblock(c.img, crc64)
    assert sb_copies(c.img).sb.csum_type == ChecksumType.crc64
    return set()


# ---------------------------------------------------------------- 1xx: journal (unclean images)

def make_unclean(img: Path) -> dict:
    """Three committed-to-journal transactions after the base, then a crash: the
    image needs replay. Returns the jsets of the replay range by role."""
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.store import Store

    store = Store.open(str(img), write=True)
    fs = Filesystem(store)
    root = fs.root()
    reg = stat.S_IFREG | 0o644
    fs.create(root, b"j1", reg, data=b"journal one\n")
    store.journal.write_entry()
    fs.create(root, b"j2", reg, data=b"journal two\n")
    store.journal.write_entry()
    fs.create(root, b"j3", reg, data=b"journal three\n")
    store.commit()
    store.dev.close()          # crash: no clean superblock
    return journal_info(img)


def journal_info(img: Path) -> dict:
    from bfs_tools.io.device import FileDevice
    from bfs_tools.journal.reader import scan_journal
    from bfs_tools.superblock import read_superblock

    with FileDevice(str(img)) as dev:
        sb = read_superblock(dev).sb
        scan = scan_journal(dev, buckets=sb.journal_buckets, bucket_size=sb.bucket_size,
                            block_size=sb.block_size, magic64=sb.magic64(),
                            csum_type=sb.csum_type)
    flushes = [j for j in scan.jsets if j.is_flush]
    last = max(flushes, key=lambda j: j.seq)
    replay = [j for j in scan.jsets if last.last_seq <= j.seq <= last.seq]
    older = [j for j in scan.jsets if j.seq < last.last_seq]
    return {"sb": sb, "last": last, "replay": replay, "older": older, "scan": scan}


def jset_offset(info, j) -> int:
    sb = info["sb"]
    return sb.journal_buckets[j.ring_idx] * sb.bucket_size + j.offset


@corruption(10, "journal-old-entry-csum", ["journal_entry_bad_csum"], unclean=True)
def c_journal_old(c: Ctx):
    """A journal entry older than the replay range has a bad checksum (harmless:
    reported as a warning)."""
    info = journal_info(c.img)
    j = info["older"][-1]
    flip(c.img, jset_offset(info, j) + 48)
    return set()


@corruption(11, "journal-entry-missing", ["journal_entries_missing"], unclean=True)
def c_journal_missing(c: Ctx):
    """A journal entry inside the replay range is unreadable: its updates (the
    creation of /j2) are lost; replay applies the rest."""
    info = journal_info(c.img)
    j = [x for x in info["replay"] if not x.is_flush][-1]
    flip(c.img, jset_offset(info, j) + 60)
    return {"/j1", "/j2", "/j3"}


@corruption(12, "journal-key-bad", ["journal_key_bad"], unclean=True)
def c_journal_key(c: Ctx):
    """A key inside a journal entry of the replay range has an invalid value
    (resealed): replay drops that key."""
    from bfs_tools.journal.entries import encode_jset, entry

    info = journal_info(c.img)
    sb = info["sb"]
    j = [x for x in info["replay"] if not x.is_flush][0]
    entries = []
    done = False
    for e in j.entries:
        payload = e.payload
        if not done and e.type == 0 and e.btree_id == INO:
            keys = e.keys()
            for n, k in enumerate(keys):
                if k.type == KeyType.inode:
                    keys[n] = Key(k.pos, k.type, k.val[:-8], size=k.size)
                    done = True
                    break
            payload = encode_keys(keys)
        entries.append(entry(e.type, payload, e.btree_id, e.level))
    assert done
    raw = encode_jset(j.seq, j.last_seq, j.flags, entries, sb.magic64(), sb.csum_type,
                      sb.block_size)
    assert len(raw) <= -(-j.length // sb.block_size) * sb.block_size
    set_bytes(c.img, jset_offset(info, j), raw)
    return {"/j1", "/j2", "/j3"}


@corruption(13, "journal-flush-entry-lost", ["journal_entry_bad_csum"], unclean=True)
def c_journal_flush_lost(c: Ctx):
    """The newest flush entry is unreadable: the image opens as of the previous
    commit point (the clean state) and the later updates are gone."""
    info = journal_info(c.img)
    flip(c.img, jset_offset(info, info["last"]) + 44)
    return {"/j1", "/j2", "/j3"}


@corruption(14, "journal-last-seq-after-seq", ["journal_seq_backwards"], unclean=True)
def c_journal_seq(c: Ctx):
    """A journal entry of the replay range says its last_seq is after its own seq
    (resealed)."""
    from bfs_tools.journal.entries import encode_jset, entry

    info = journal_info(c.img)
    sb = info["sb"]
    j = [x for x in info["replay"] if not x.is_flush][0]
    raw = encode_jset(j.seq, j.seq + 5, j.flags,
                      [entry(e.type, e.payload, e.btree_id, e.level) for e in j.entries],
                      sb.magic64(), sb.csum_type, sb.block_size)
    set_bytes(c.img, jset_offset(info, j), raw)
    return set()


# ---------------------------------------------------------------- 2xx: btree nodes

def leaf(c: Ctx, btree, pick=0) -> lib.NodeInfo:
    cands = [n for n in lib.nodes(c.img, btree) if n.level == 0]
    return cands[pick]


def interior(c: Ctx, btree) -> lib.NodeInfo:
    return [n for n in lib.nodes(c.img, btree) if n.level > 0][0]


@corruption(20, "node-bad-csum", ["btree_node_unreadable"])
def c_node_csum(c: Ctx):
    """A byte inside the keys of an extents leaf flipped: the bset checksum fails;
    the node's keys are lost (their files lose data), the rest is repaired."""
    n = leaf(c, E, 1)
    flip(c.img, n.offset + 72 + 40 + 30)
    return paths_of_node_keys(c, n)


@corruption(21, "node-header-csum", ["btree_node_unreadable"])
def c_node_header(c: Ctx):
    """A byte of an inodes leaf's header flipped: the header checksum fails."""
    n = leaf(c, INO, 2)
    flip(c.img, n.offset + 20)
    return paths_of_node_keys(c, n)


@corruption(22, "node-zeroed", ["btree_node_unreadable"])
def c_node_zeroed(c: Ctx):
    """An inodes leaf is all zeroes (a lost write)."""
    n = leaf(c, INO, 3)
    set_bytes(c.img, n.offset, b"\0" * c.params()["node_size"])
    return paths_of_node_keys(c, n)


@corruption(23, "node-keys-unsorted", ["btree_node_keys_unsorted"])
def c_node_unsorted(c: Ctx):
    """Two keys of an inodes leaf swapped (checksums resealed)."""
    n = leaf(c, INO, 1)
    keys = list(n.keys)
    keys[3], keys[4] = keys[4], keys[3]
    lib.rewrite_node(c.img, n, keys=keys)
    return set()


@corruption(24, "node-key-outside-range", ["btree_node_keys_unsorted"])
def c_node_outside(c: Ctx):
    """An inodes leaf holds, last, a key beyond its max_key (resealed)."""
    n = leaf(c, INO, 1)
    k = n.keys[-1]
    stray = Key((0, n.max_key[1] + 1, 7), k.type, k.val)
    lib.rewrite_node(c.img, n, keys=n.keys + [stray])
    return set()


@corruption(25, "node-bad-level", ["btree_node_bad_level"])
def c_node_level(c: Ctx):
    """An inodes leaf's header says level 1 (resealed)."""
    n = leaf(c, INO, 2)
    lib.rewrite_node(c.img, n, header_changes={"level": 1})
    return paths_of_node_keys(c, n)


@corruption(26, "node-bad-range", ["btree_node_bad_range"])
def c_node_range(c: Ctx):
    """An inodes leaf's header max_key differs from its parent pointer (resealed)."""
    n = leaf(c, INO, 2)
    lib.rewrite_node(c.img, n, header_changes={"max_key_offset": n.max_key[1] - 1})
    return paths_of_node_keys(c, n)


@corruption(27, "node-referenced-twice", ["btree_node_referenced_twice"])
def c_node_twice(c: Ctx):
    """The inodes root's second pointer leads to the node its first pointer
    leads to (resealed): one node referenced twice, the second range lost."""
    root = interior(c, INO)
    p0 = decode_ptr(root.keys[0])
    k1 = root.keys[1]
    p1 = decode_ptr(k1)
    keys = list(root.keys)
    keys[1] = Key(k1.pos, k1.type, p1._replace(sector=p0.sector, node_seq=p0.node_seq,
                                               gen=p0.gen).pack())
    lib.rewrite_node(c.img, root, keys=keys)
    lost_inums = range(root.keys[0].pos[1] + 1, k1.pos[1] + 1)
    return c.paths_of(*lost_inums)


@corruption(28, "btree-ptr-to-free-bucket", ["btree_ptr_to_free_bucket"])
def c_btree_free(c: Ctx):
    """The alloc key of a bucket holding btree nodes says free."""
    n = leaf(c, D)
    bucket = n.sector * 512 // c.params()["bucket_size"]
    a = decode_alloc(lib.get_key(c.img, A, (0, bucket, 0)))
    assert a.data_type == DataType.btree
    c.put((A, alloc_key(bucket, Alloc(a.gen, DataType.free, 0))))
    return set()


@corruption(29, "btree-ptr-stale", ["btree_ptr_stale"])
def c_btree_stale(c: Ctx):
    """The alloc key of a btree bucket has a newer generation than the pointers
    to the nodes in it."""
    n = leaf(c, D)
    bucket = n.sector * 512 // c.params()["bucket_size"]
    a = decode_alloc(lib.get_key(c.img, A, (0, bucket, 0)))
    c.put((A, alloc_key(bucket, Alloc((a.gen + 1) & 0xFF, a.data_type, a.dirty_sectors))))
    return set()


@corruption(30, "node-seq-mismatch", ["btree_node_seq_mismatch"])
def c_node_seq(c: Ctx):
    """An inodes leaf carries another node_seq than its parent pointer expects (a
    stale node; resealed)."""
    n = leaf(c, INO, -1)   # any leaf below the root
    lib.rewrite_node(c.img, n, header_changes={"node_seq": n.node_seq ^ 0x10})
    return paths_of_node_keys(c, n)


@corruption(31, "root-unreadable", ["btree_root_bad"])
def c_root(c: Ctx):
    """The root node of the xattrs btree has a bad checksum: the btree is rebuilt
    empty (the xattrs are lost, file contents are not)."""
    n = lib.nodes(c.img, X)[0]
    flip(c.img, n.offset + 40)
    return set()


@corruption(32, "bset-bad-csum", ["btree_bset_bad_csum"])
def c_bset(c: Ctx):
    """An inodes leaf of three bsets: the middle one has a bad checksum; the
    third is still read (only the damaged bset's updates are lost)."""
    from bfs_tools.btree.node import encode_bset

    n = leaf(c, INO, 1)
    p = c.params()
    bs = p["block_size"]
    first = lib.encode_node(btree=n.btree, level=n.level, node_seq=n.node_seq,
                            min_key=n.min_key, max_key=n.max_key, keys=n.keys[:-2],
                            magic64=p["magic64"], csum_type=p["csum_type"], block_size=bs)
    mid = bytearray(encode_bset([n.keys[-2]], n.node_seq, p["magic64"], p["csum_type"], 2))
    mid[60] ^= 0x01
    mid += b"\0" * (-len(mid) % bs)
    last = encode_bset([n.keys[-1]], n.node_seq, p["magic64"], p["csum_type"], 3)
    last += b"\0" * (-len(last) % bs)
    raw = first + bytes(mid) + last
    set_bytes(c.img, n.offset, raw + b"\0" * (p["node_size"] - len(raw)))
    return c.paths_of(n.keys[-2].pos[1])


@corruption(33, "node-bad-btree-id", ["btree_node_bad_level"])
def c_node_btree_id(c: Ctx):
    """An extents leaf's header names the dirents btree (resealed)."""
    n = leaf(c, E, 0)
    lib.rewrite_node(c.img, n, header_changes={"btree_id": int(D)})
    return paths_of_node_keys(c, n)


# ---------------------------------------------------------------- 4xx: key validation

@corruption(40, "key-type-not-allowed", ["key_type_not_allowed"])
def c_key_type(c: Ctx):
    """A dirent key inside the inodes btree."""
    k = Key((0, 50000, U32_MAX), KeyType.dirent, Dirent(4098, DirentType.reg, b"x").pack())
    c.put((INO, k))
    return set()


@corruption(41, "key-bad-value-inode", ["key_bad_value"])
def c_key_inode(c: Ctx):
    """An inode value 8 bytes short: the inode is unusable and goes; its dirent,
    data and xattrs go with it."""
    k = c.inode_key("/xattr.txt")
    c.put((INO, Key(k.pos, k.type, k.val[:-8])))
    return c.both("/xattr.txt")


@corruption(42, "dirent-invalid-type", ["dirent_type_wrong"])
def c_key_dirent_type(c: Ctx):
    """A dirent with d_type 99 (no such type): it gets its target's type."""
    k = c.dirent_key("/docs/b.txt")
    d = decode_dirent(k.val)
    c.put((D, dirent_key(k.pos, d._replace(d_type=99))))
    return c.both("/docs/b.txt")


@corruption(43, "key-bad-value-extent", ["key_bad_value"])
def c_key_extent(c: Ctx):
    """A data extent with an unknown checksum type: dropped (a hole)."""
    k = data_extent(c, "/sparse")
    e = decode_extent(k.val)
    c.put((E, Key(k.pos, k.type, e._replace(csum_type=77).pack(), size=k.size)))
    return c.both("/sparse")


@corruption(44, "key-bad-value-xattr", ["key_bad_value"])
def c_key_xattr(c: Ctx):
    """An xattr whose lengths overrun its value."""
    k = lib.keys_of(c.img, X)[0]
    c.put((X, Key(k.pos, k.type, k.val[:2] + b"\xff\x00" + k.val[4:])))
    return set()


@corruption(45, "key-bad-value-alloc", ["key_bad_value"])
def c_key_alloc(c: Ctx):
    """An alloc key of 5 bytes: dropped, then rebuilt by the alloc pass."""
    k = lib.keys_of(c.img, A)[-1]
    c.put((A, Key(k.pos, k.type, k.val[:5])))
    return set()


@corruption(46, "key-bad-value-accounting", ["key_bad_value"])
def c_key_acct(c: Ctx):
    """An accounting key whose value is not a whole number of counters."""
    k = lib.keys_of(c.img, ACC)[0]
    c.put((ACC, Key(k.pos, k.type, k.val + b"\x01")))
    return set()


@corruption(47, "key-bad-pos-extent-size", ["key_bad_pos"])
def c_key_size(c: Ctx):
    """An inline-data key whose size reaches before offset 0."""
    k = [x for x in file_extents(c, "/docs/b.txt") if x.type == KeyType.inline_data][0]
    c.put((E, Key(k.pos, k.type, k.val, size=k.pos[1] + 5)))
    return c.both("/docs/b.txt")


@corruption(48, "key-bad-pos-subvolume", ["key_bad_pos"])
def c_key_pos(c: Ctx):
    """A subvolume key with a nonzero snapshot field in its position."""
    k = lib.get_key(c.img, SV, (0, 1, 0))
    c.put((SV, Key((0, 40, 3), k.type, k.val)))
    return set()


@corruption(49, "inode-bad-mode", ["inode_bad_mode"])
def c_inode_mode(c: Ctx):
    """A regular file's inode has no file type in its mode: it is a regular file
    again (its data and dirent say so)."""
    k = c.inode_key("/docs/a.txt")
    ino = decode_inode(k)
    c.put((INO, with_inode(k, mode=stat.S_IMODE(ino.mode))))
    return set()


@corruption(50, "dirent-bad-name", ["dirent_bad_name"])
def c_dirent_name(c: Ctx):
    """A dirent whose name contains '/': renamed (the '/' becomes '_'), so the file
    stays reachable."""
    k = c.dirent_key("/many/f007")
    d = decode_dirent(k.val)
    c.put((D, dirent_key(k.pos, d._replace(name=b"f0/7"))))
    return c.both("/many/f007")


# ---------------------------------------------------------------- 5xx: allocation & accounting

def user_bucket(c: Ctx, path: str) -> tuple[int, Alloc, Key]:
    k = data_extent(c, path)
    e = decode_extent(k.val)
    bucket = e.sector * 512 // c.params()["bucket_size"]
    return bucket, decode_alloc(lib.get_key(c.img, A, (0, bucket, 0))), k


@corruption(51, "alloc-key-wrong", ["alloc_key_wrong"])
def c_alloc_wrong(c: Ctx):
    """A user bucket's alloc key counts 8 sectors too many."""
    b, a, _k = user_bucket(c, "/vol/in-vol.txt")
    c.put((A, alloc_key(b, a._replace(dirty_sectors=a.dirty_sectors + 8))))
    return set()


@corruption(52, "alloc-key-missing", ["alloc_key_missing"])
def c_alloc_missing(c: Ctx):
    """A bucket holding file data has no alloc key."""
    b, _a, _k = user_bucket(c, "/hard1")
    c.put(deletes=[(A, (0, b, 0))])
    return set()


@corruption(53, "freespace-wrong", ["freespace_wrong"])
def c_freespace(c: Ctx):
    """The freespace index lost its range and lists a used bucket as free."""
    keys = lib.keys_of(c.img, FSP)
    b, _a, _k = user_bucket(c, "/hard1")
    c.put((FSP, range_key(b, b + 1)), deletes=[(FSP, keys[-1].pos)])
    return set()


@corruption(54, "accounting-wrong-inodes", ["accounting_wrong"])
def c_acct_inodes(c: Ctx):
    """The nr_inodes counter is 5 too high."""
    pos = (int(AccountingType.nr_inodes), 0, 0)
    k = lib.get_key(c.img, ACC, pos)
    (n,) = struct.unpack("<Q", k.val[:8])
    c.put((ACC, Key(pos, KeyType.accounting, struct.pack("<Q", n + 5))))
    return set()


@corruption(55, "accounting-wrong-user", ["accounting_wrong"])
def c_acct_user(c: Ctx):
    """The user-data counter (buckets, sectors) is wrong, and a stray counter for
    a snapshot that holds nothing exists."""
    pos = (int(AccountingType.data_type), int(DataType.user), 0)
    k = lib.get_key(c.img, ACC, pos)
    b, s = struct.unpack("<QQ", k.val[:16])
    c.put((ACC, Key(pos, KeyType.accounting, struct.pack("<QQ", b + 1, s + 100))),
          (ACC, Key((int(AccountingType.snapshot), 77, 0), KeyType.accounting,
                    struct.pack("<Q", 8))))
    return set()


@corruption(56, "ptr-stale", ["ptr_stale"])
def c_ptr_stale(c: Ctx):
    """The bucket of a file's data was reused (its generation is newer than the
    extent's pointer): the extent's data is gone; the range reads as lost."""
    b, a, _k = user_bucket(c, "/hard1")
    bsec = c.params()["bucket_size"] // 512
    users = {p for p, i in c.m.inums.items()
             if any(decode_extent(x.val).sector // bsec == b
                    for x in lib.keys_of(c.img, E, (i, 0, 0), (i, (1 << 64) - 1, U32_MAX))
                    if x.type == KeyType.extent)}
    from bfs_tools.reflink import decode_reflink_v

    if any(decode_reflink_v(x.val).extent.sector // bsec == b for x in lib.keys_of(c.img, R)
           if x.type == KeyType.reflink_v):
        users |= c.both("/docs/sub/deep.bin") | c.both("/docs/deep.copy")
    c.put((A, alloc_key(b, a._replace(gen=(a.gen + 1) & 0xFF))))
    return users | c.both("/hard1") | c.both("/docs/hard2")


@corruption(57, "ptr-beyond-device", ["ptr_beyond_device"])
def c_ptr_beyond(c: Ctx):
    """A data extent points past the end of the device."""
    k = data_extent(c, "/vol/in-vol.txt")
    e = decode_extent(k.val)
    c.put((E, Key(k.pos, k.type, e._replace(sector=1 << 40).pack(), size=k.size)))
    return {"/vol/in-vol.txt"}


@corruption(58, "ptr-to-free-bucket", ["ptr_to_free_bucket"])
def c_ptr_free(c: Ctx):
    """The alloc key of a bucket holding file data says free."""
    b, a, _k = user_bucket(c, "/vol/in-vol.txt")
    c.put((A, alloc_key(b, Alloc(a.gen, DataType.free, 0))))
    return set()


@corruption(59, "bucket-data-type-mismatch", ["bucket_data_type_mismatch"])
def c_bucket_mismatch(c: Ctx):
    """A data extent points into a bucket of btree nodes."""
    n = leaf(c, D)
    bucket = n.sector * 512 // c.params()["bucket_size"]
    a = decode_alloc(lib.get_key(c.img, A, (0, bucket, 0)))
    k = data_extent(c, "/vol/in-vol.txt")
    e = decode_extent(k.val)
    bsec = c.params()["bucket_size"] // 512
    c.put((E, Key(k.pos, k.type, e._replace(sector=bucket * bsec + 1, gen=a.gen).pack(),
                  size=k.size)))
    return {"/vol/in-vol.txt"}


@corruption(60, "journal-bucket-not-marked", ["sb_journal_bucket_not_marked"])
def c_journal_bucket(c: Ctx):
    """The alloc key of a journal bucket is missing."""
    b = sb_copies(c.img).sb.journal_buckets[1]
    c.put(deletes=[(A, (0, b, 0))])
    return set()


# ---------------------------------------------------------------- 6xx: snapshots & subvolumes

def snaps(c: Ctx) -> dict[int, Snapshot]:
    return {k.pos[1]: decode_snapshot(k) for k in lib.keys_of(c.img, S)}


@corruption(61, "snapshot-parent-forgot-child", ["snapshot_bad_links"])
def c_snap_links(c: Ctx):
    """The root snapshot node no longer lists one of its children."""
    s = snaps(c)[U32_MAX]
    s.children_1 = 0
    c.put((S, s.key()))
    return set()


@corruption(62, "snapshot-child-missing", ["snapshot_bad_links"])
def c_snap_child(c: Ctx):
    """A leaf snapshot lists a child that does not exist."""
    live = c.live_snapshot()
    s = snaps(c)[live]
    s.children_0 = 1000
    c.put((S, s.key()))
    return set()


@corruption(63, "snapshot-tree-missing", ["snapshot_tree_bad"])
def c_snap_tree(c: Ctx):
    """The snapshot_trees entry of the root's tree is missing."""
    k = lib.keys_of(c.img, ST)[0]
    c.put(deletes=[(ST, k.pos)])
    return set()


@corruption(64, "subvol-on-interior-snapshot", ["subvol_bad_snapshot"])
def c_subvol_interior(c: Ctx):
    """The root subvolume points at the interior snapshot node U32_MAX instead of
    its leaf."""
    k = lib.get_key(c.img, SV, (0, 1, 0))
    sv = decode_subvolume(k)
    sv.snapshot = U32_MAX
    c.put((SV, sv.key()))
    return set()


@corruption(65, "subvol-root-missing", ["subvol_root_missing"])
def c_subvol_root(c: Ctx):
    """The root directory inode of subvolume /vol is missing: recreated, and its
    file reattached under its /lost+found."""
    k = c.inode_key("/vol")
    c.put(deletes=[(INO, k.pos)])
    return {"/vol"}


@corruption(66, "key-in-missing-snapshot", ["key_in_missing_snapshot"])
def c_missing_snap(c: Ctx):
    """An inode key (a second version of /README) in snapshot 12345, which does not
    exist."""
    k = c.inode_key("/README")
    c.put((INO, Key((0, k.pos[1], 12345), k.type, k.val)))
    return set()


@corruption(67, "snapshot-deletion-unfinished", ["snapshot_deletion_unfinished"])
def c_snap_deletion(c: Ctx):
    """A snapshot was deleted but the cleanup of its keys was interrupted (the
    committed first step of `snapshot delete` only), and the superblock lost the
    flag that says a deletion is in progress (with the flag, this is the state a
    crash during `snapshot delete` leaves: not a finding, tests/crash)."""
    import bfs_tools.snapshots.cleanup as cleanup
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.snapshots.subvolume import create_snapshot, delete_subvolume

    with Filesystem.open(str(c.img), write=True) as fs:
        create_snapshot(fs, "/", "/snap2")
        a = fs.resolve("/snap2/docs/b.txt").where
        fs.write(a, 0, b"written in snap2 only", "b.txt")
    real = cleanup.cleanup_dead_snapshots
    cleanup.cleanup_dead_snapshots = lambda fs, **kw: 0
    try:
        fs = Filesystem(lib.Store.open(str(c.img), write=True))
        delete_subvolume(fs, "/snap2")
        fs.store.close()
    finally:
        cleanup.cleanup_dead_snapshots = real
    from bfs_tools.formats.ids import SbFlags

    from tests.helpers import rewrite_superblock

    rewrite_superblock(c.img, lambda sb: setattr(sb, "flags", sb.flags & ~SbFlags.deleting_snapshots))
    assert any(s.flags & SnapshotFlags.deleted for s in snaps(c).values())
    assert not sb_copies(c.img).sb.flags & SbFlags.deleting_snapshots
    return set()


@corruption(68, "extents-overlap-across-snapshots", ["extents_overlap_across_snapshots"])
def c_snap_overlap(c: Ctx):
    """The live snapshot holds an extent of /hard1 that partly overlaps the
    snapshot-root's version of the same file (the split was not done)."""
    live = c.live_snapshot()
    ks = [k for k in file_extents(c, "/hard1") if k.pos[2] == U32_MAX
          and k.type == KeyType.extent]
    k = ks[0]
    e = decode_extent(k.val)
    # covers [start+1, end+1): partial overlap with k, copy of its data pointer
    new = extent_key((k.pos[0], k.end + 1, live), k.size,
                     Extent(e.sector, e.gen, e.csum_type, e.region_sectors, e.offset, e.csum))
    others = [x for x in file_extents(c, "/hard1") if x.pos[2] == live
              and x.start < new.end and x.end > new.start]
    assert not others, others
    c.put((E, new))
    return {"/hard1", "/docs/hard2"}


@corruption(69, "snapshot-bad-depth", ["snapshot_bad_depth"])
def c_snap_depth(c: Ctx):
    """A leaf snapshot's depth is 5 instead of 1."""
    live = c.live_snapshot()
    s = snaps(c)[live]
    s.depth = 5
    c.put((S, s.key()))
    return set()


# ---------------------------------------------------------------- 7xx: reflink

def reflink_v(c: Ctx) -> Key:
    return [k for k in lib.keys_of(c.img, R) if k.type == KeyType.reflink_v][0]


@corruption(71, "reflink-refcount-wrong", ["reflink_refcount_wrong"])
def c_refcount(c: Ctx):
    """An indirect extent's refcount is 5; two reflink_p keys refer to it."""
    k = reflink_v(c)
    c.put((R, Key(k.pos, k.type, struct.pack("<Q", 5) + k.val[8:], size=k.size)))
    return set()


@corruption(72, "reflink-p-to-missing", ["reflink_p_to_missing"])
def c_refp_missing(c: Ctx):
    """An indirect extent two files refer to is missing: their ranges read as lost."""
    k = reflink_v(c)
    c.put(deletes=[(R, k.pos)])
    return c.both("/docs/sub/deep.bin") | c.both("/docs/deep.copy")


@corruption(73, "reflink-v-unreferenced", ["reflink_v_unreferenced"])
def c_refv_unref(c: Ctx):
    """An indirect inline-data key that nothing refers to."""
    k = Key((0, 900008, 0), KeyType.indirect_inline_data,
            struct.pack("<Q", 1) + b"orphaned indirect data", size=8)
    c.put((R, k))
    return set()


# ---------------------------------------------------------------- 8xx: inodes

@corruption(81, "inode-size-wrong", ["inode_size_wrong"])
def c_inode_size(c: Ctx):
    """A file's size is 100 bytes but its data reaches much further."""
    k = c.inode_key("/docs/sub/deep.bin")
    c.put((INO, with_inode(k, size=100)))
    return c.both("/docs/sub/deep.bin")


@corruption(82, "inode-sectors-wrong", ["inode_sectors_wrong"])
def c_inode_sectors(c: Ctx):
    """A file's sector count is 3 too high."""
    k = c.inode_key("/hard1")
    c.put((INO, with_inode(k, sectors=decode_inode(k).sectors + 3)))
    return set()


@corruption(83, "inode-orphan", ["inode_unlinked_unreferenced"])
def c_orphan(c: Ctx):
    """An unlinked inode (nlink 0, no dirent) with data: what a crash between
    the last unlink and the deletion would leave. Deleted, its data freed."""
    from bfs_tools.fs.filesystem import Filesystem

    with Filesystem.open(str(c.img), write=True) as fs:
        w = fs.create(fs.resolve("/many").where, b"orphan", stat.S_IFREG | 0o600,
                      data=b"orphan data " * 100)
        r = fs.resolve("/many/orphan")
        key = r.entry.key
        ino = fs.inode(w)
        inum = w.inum
    k = lib.get_key(c.img, INO, (0, inum, ino.key_snapshot))
    c.put((INO, with_inode(k, nlink=0)), deletes=[(D, key.pos)])
    return set()


@corruption(84, "inode-backpointer-wrong", ["inode_dir_backpointer_wrong"])
def c_backptr(c: Ctx):
    """A file's dirent backpointer names the wrong slot."""
    k = c.inode_key("/docs/b.txt")
    c.put((INO, with_inode(k, dir_offset=decode_inode(k).dir_offset + 1)))
    return set()


@corruption(85, "symlink-extent-past-eof", ["extent_past_eof"])
def c_past_eof(c: Ctx):
    """A symlink has data past its size (an extent after its target)."""
    inum = c.inum("/link")
    k = file_extents(c, "/link")[0]
    new = Key((inum, k.end + 8, k.pos[2]), KeyType.inline_data, b"junk" * 100, size=8)
    c.put((E, new))
    return set()


# ---------------------------------------------------------------- 9xx: extents

@corruption(90, "extent-no-inode", ["extent_no_inode"])
def c_extent_orphan(c: Ctx):
    """Inline data of inode 99999, which does not exist."""
    c.put((E, Key((99999, 8, U32_MAX), KeyType.inline_data, b"nobody's data", size=8)))
    return set()


@corruption(91, "extents-overlap", ["extents_overlap"])
def c_extents_overlap(c: Ctx):
    """Two extents of one file in one snapshot overlap (a copy of the first,
    shifted by one sector)."""
    ks = [k for k in file_extents(c, "/docs/sub/deep.bin") if k.type == KeyType.extent]
    if not ks:
        ks = [k for k in file_extents(c, "/vol/in-vol.txt") if k.type == KeyType.extent]
    k = ks[0]
    e = decode_extent(k.val)
    assert k.size > 2
    new = Key((k.pos[0], k.end - 1, k.pos[2]), k.type, e.pack(), size=k.size - 2)
    c.put((E, new))
    return c.paths_of(k.pos[0])


@corruption(92, "extent-in-directory", ["extent_in_non_regular"])
def c_extent_dir(c: Ctx):
    """A directory has a data extent."""
    inum = c.inum("/docs/sub")
    c.put((E, Key((inum, 8, U32_MAX), KeyType.inline_data, b"dir data?", size=8)))
    return set()


@corruption(93, "data-checksum-bad", ["data_checksum_bad"], args=["--verify-data"])
def c_data_csum(c: Ctx):
    """A byte of a file's data on the device flipped (found with --verify-data):
    the range is marked lost, reads fail cleanly."""
    k = data_extent(c, "/vol/in-vol.txt")
    e = decode_extent(k.val)
    flip(c.img, e.sector * 512 + 100)
    return {"/vol/in-vol.txt"}


# ---------------------------------------------------------------- 10x: dirents

@corruption(100, "dirent-target-missing", ["dirent_target_missing"])
def c_dirent_dangling(c: Ctx):
    """A dirent in /docs names inode 77777, which does not exist."""
    from bfs_tools.fs import hashed

    r = c.resolve("/docs")
    name = b"ghost"
    h = name_hash(name, r.inode.hash_seed)
    fs = c.fs()
    try:
        slot = hashed.find_slot(fs.btrees, D, r.where.inum, h, fs.visible(r.where.snapshot))
    finally:
        fs.close()
    c.put((D, dirent_key((r.where.inum, slot, r.where.snapshot),
                         Dirent(77777, DirentType.reg, name))))
    return set()


@corruption(101, "dirent-type-wrong", ["dirent_type_wrong"])
def c_dirent_type(c: Ctx):
    """The dirent of a regular file says it is a symlink."""
    k = c.dirent_key("/hard1")
    d = decode_dirent(k.val)
    c.put((D, dirent_key(k.pos, d._replace(d_type=DirentType.lnk))))
    return set()


@corruption(102, "dirent-bad-hash", ["dirent_bad_hash"])
def c_dirent_hash(c: Ctx):
    """A dirent moved to a slot its name does not hash to (lookups miss it)."""
    k = c.dirent_key("/docs/a.txt")
    r = c.resolve("/docs")
    slot = 12345
    assert lib.get_key(c.img, D, (r.where.inum, slot, k.pos[2])) is None
    c.put((D, Key((k.pos[0], slot, k.pos[2]), k.type, k.val)), deletes=[(D, k.pos)])
    return c.both("/docs/a.txt")


@corruption(103, "dirent-in-non-dir", ["dirent_in_non_dir"])
def c_dirent_nondir(c: Ctx):
    """A dirent whose directory is a regular file."""
    inum = c.inum("/README")
    c.put((D, dirent_key((inum, 77, U32_MAX), Dirent(c.inum("/hard1"), DirentType.reg,
                                                     b"inside-a-file"))))
    return set()


@corruption(105, "dirent-duplicate", ["dirent_duplicate"])
def c_dirent_dup(c: Ctx):
    """Two dirents with the same name in one directory (the second one, later in
    the probe chain, names another file)."""
    from bfs_tools.fs import hashed

    k = c.dirent_key("/many/f010")
    fs = c.fs()
    try:
        r = fs.resolve("/many")
        d = decode_dirent(k.val)
        slot = hashed.find_slot(fs.btrees, D, k.pos[0], k.pos[1], fs.visible(r.where.snapshot))
    finally:
        fs.close()
    c.put((D, dirent_key((k.pos[0], slot, k.pos[2]),
                         d._replace(target=c.inum("/many/f011")))))
    return set()


@corruption(106, "dirent-to-missing-subvol", ["dirent_to_subvol_bad"])
def c_dirent_subvol(c: Ctx):
    """A subvolume dirent names subvolume 55, which does not exist."""
    k = c.dirent_key("/vol")
    d = decode_dirent(k.val)
    c.put((D, dirent_key(k.pos, d._replace(target=(1 << 32) | 55))))
    return {"/vol"}


# ---------------------------------------------------------------- 11x: xattrs

@corruption(110, "xattr-no-inode", ["xattr_no_inode"])
def c_xattr_orphan(c: Ctx):
    """An xattr of inode 88888, which does not exist."""
    k = lib.keys_of(c.img, X)[0]
    c.put((X, Key((88888, k.pos[1], k.pos[2]), k.type, k.val)))
    return set()


@corruption(111, "xattr-bad-hash", ["xattr_bad_hash"])
def c_xattr_hash(c: Ctx):
    """An xattr at a slot its name does not hash to."""
    k = lib.keys_of(c.img, X)[0]
    decode_xattr(k.val)
    c.put((X, Key((k.pos[0], 4242, k.pos[2]), k.type, k.val)), deletes=[(X, k.pos)])
    return set()


# ---------------------------------------------------------------- 12x: root and directory structure

@corruption(120, "root-dir-missing", ["root_dir_missing"])
def c_root_missing(c: Ctx):
    """The live root directory's inode is missing (the snapshot's is not): a new
    root is made and everything is reattached under /lost+found."""
    live = c.live_snapshot()
    inum = c.inum("/docs") and 4096
    vers = [k for k in lib.keys_of(c.img, INO, (0, inum, 0), (0, inum, U32_MAX))
            if k.pos[2] in (live, U32_MAX)]
    assert vers
    c.put(deletes=[(INO, k.pos) for k in vers])
    return set()


@corruption(121, "root-not-dir", ["root_not_dir"])
def c_root_not_dir(c: Ctx):
    """The root inode's mode says regular file."""
    k = c.inode_key("/")
    ino = decode_inode(k)
    c.put((INO, with_inode(k, mode=stat.S_IFREG | stat.S_IMODE(ino.mode))))
    return {p for p in c.m.files if not p.startswith("/snap/")}


@corruption(122, "dir-unreachable", ["dir_unreachable"])
def c_dir_unreachable(c: Ctx):
    """The dirent naming /docs is gone: /docs (with its subtree) goes to
    /lost+found/#<inum>."""
    k = c.dirent_key("/docs")
    c.put(deletes=[(D, k.pos)])
    return c.both("/docs")


@corruption(123, "dir-loop", ["dir_loop"])
def c_dir_loop(c: Ctx):
    """/docs is no longer named by /, but /docs/sub names it: docs -> sub -> docs,
    a loop cut off from the root."""
    from bfs_tools.fs import hashed

    k = c.dirent_key("/docs")
    fs = c.fs()
    try:
        sub = fs.resolve("/docs/sub")
        name = b"back"
        h = name_hash(name, sub.inode.hash_seed)
        slot = hashed.find_slot(fs.btrees, D, sub.where.inum, h, fs.visible(sub.where.snapshot))
    finally:
        fs.close()
    c.put((D, dirent_key((sub.where.inum, slot, k.pos[2]),
                         Dirent(c.inum("/docs"), DirentType.dir, name))), deletes=[(D, k.pos)])
    return c.both("/docs")


@corruption(124, "dir-multiple-links", ["dir_multiple_links"])
def c_dir_multi(c: Ctx):
    """/many also names /docs/sub (a hard link to a directory)."""
    from bfs_tools.fs import hashed

    fs = c.fs()
    try:
        many = fs.resolve("/many")
        name = b"sub-again"
        h = name_hash(name, many.inode.hash_seed)
        slot = hashed.find_slot(fs.btrees, D, many.where.inum, h,
                                fs.visible(many.where.snapshot))
    finally:
        fs.close()
    c.put((D, dirent_key((many.where.inum, slot, many.inode.key_snapshot),
                         Dirent(c.inum("/docs/sub"), DirentType.dir, name))))
    return set()


@corruption(125, "inode-unreachable", ["inode_unreachable"])
def c_inode_unreachable(c: Ctx):
    """The dirent naming /README is gone: the file goes to /lost+found/#<inum>."""
    k = c.dirent_key("/README")
    c.put(deletes=[(D, k.pos)])
    return c.both("/README")


@corruption(130, "nlink-wrong-file", ["nlink_wrong"])
def c_nlink_file(c: Ctx):
    """A file with two names says nlink 5."""
    k = c.inode_key("/hard1")
    c.put((INO, with_inode(k, nlink=5)))
    return set()


@corruption(131, "nlink-wrong-dir", ["nlink_wrong"])
def c_nlink_dir(c: Ctx):
    """A directory with one subdirectory says nlink 7."""
    k = c.inode_key("/docs")
    c.put((INO, with_inode(k, nlink=7)))
    return set()


# ---------------------------------------------------------------- generation

def by_num(n: int) -> Class:
    for cl in CLASSES:
        if cl.num == n:
            return cl
    raise KeyError(n)


def make_damaged(cl: Class, img: Path, *, seed: int | None = None) -> tuple[lib.Manifest, set]:
    """Build the base image at `img`, inject the class; (manifest, touched paths)."""
    m = lib.build_base(img, seed=seed or 1)
    if cl.unclean:
        make_unclean(img)
    touched = cl.fn(Ctx(img, m)) or set()
    return m, set(touched)


def ids_reported(run: lib.Run) -> set[str]:
    out = set()
    for line in run.out.splitlines():
        parts = line.split(": ")
        if len(parts) >= 3:
            out.add(parts[1])
    return out


def generate(cl: Class, dest: Path, work: Path) -> list[str]:
    """Generate one fixture; returns problems (empty: ok)."""
    img = work / f"{cl.dirname}.img"
    with lib.deterministic(1000 + cl.num):
        m, touched = make_damaged(cl, img, seed=cl.num)
    damaged = work / f"{cl.dirname}.damaged"
    shutil.copyfile(img, damaged)
    problems = []
    r0 = lib.run_cli("check", "-n", *cl.args, img)
    if cl.ids:
        if r0.rc != 4 and not _warnings_only(cl):
            problems.append(f"check -n exited {r0.rc}, expected 4: {r0}")
        missing = set(cl.ids) - ids_reported(r0)
        if missing:
            problems.append(f"check -n did not report {sorted(missing)}: {r0}")
    r1, r2 = lib.corpus_runs(img, cl.args)
    want1 = 0 if not cl.ids else 1
    if r1.rc != want1:
        problems.append(f"check -y exited {r1.rc}, expected {want1}: {r1}")
    if r2.rc != 0:
        problems.append(f"check -n after -y exited {r2.rc}: {r2}")
    bad = lib.lost(img, m.files, touched)
    if bad:
        problems.append(f"files the damage did not touch changed: {bad}")
    dest.mkdir(parents=True, exist_ok=True)
    with open(damaged, "rb") as f, lzma.open(dest / "image.xz", "wb", preset=9) as out:
        shutil.copyfileobj(f, out)
    (dest / "expect.1").write_text(lib.render(r1, img))
    (dest / "expect.2").write_text(lib.render(r2, img))
    keep = {p: h for p, h in sorted(m.files.items()) if not _is_touched(p, touched)}
    (dest / "sha256").write_text("".join(f"{h}  {p}\n" for p, h in keep.items()))
    if cl.args:
        (dest / "args").write_text(" ".join(cl.args) + "\n")
    elif (dest / "args").exists():
        (dest / "args").unlink()
    readme = [f"# {cl.dirname}", "", cl.doc, "",
              f"Error ids `check -n` reports: {', '.join(cl.ids) or '(none: the clean control)'}",
              f"Made by tests/fsck/make_corpus.py ({cl.fn.__name__}); regenerate with",
              f"`python tests/fsck/make_corpus.py --update {cl.num}`.", ""]
    if touched:
        readme += ["Paths the damage touches (not required to survive):", ""]
        readme += [f"    {p}" for p in sorted(touched)] + [""]
    (dest / "README").write_text("\n".join(readme))
    return problems


def _warnings_only(cl: Class) -> bool:
    from bfs_tools.formats.fsck_errors import BY_NAME

    return all(BY_NAME[n].severity == "warning" for n in cl.ids)


def _is_touched(p: str, touched: set) -> bool:
    return p in touched or any(p.startswith(t.rstrip("/") + "/") for t in touched)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="regenerate fixtures")
    ap.add_argument("--list", action="store_true", help="list the classes")
    ap.add_argument("--out", default=str(FIXTURES), help="fixtures directory")
    ap.add_argument("nums", nargs="*", type=int, help="only these class numbers")
    a = ap.parse_args(argv)
    todo = [cl for cl in CLASSES if not a.nums or cl.num in a.nums]
    if a.list or not a.update:
        for cl in todo:
            print(f"{cl.dirname:40s} {', '.join(cl.ids)}")
        return 0
    out = Path(a.out)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for cl in todo:
            for old in out.glob(f"{cl.num:03d}-*"):
                if old.name != cl.dirname:
                    shutil.rmtree(old)
            problems = generate(cl, out / cl.dirname, Path(tmp))
            status = "ok" if not problems else "FAILED"
            print(f"{cl.dirname}: {status}")
            for p in problems:
                print("    " + p.replace("\n", "\n    "))
            failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

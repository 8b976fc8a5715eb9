"""The reads of a tree copy (remap.py Copier._read_tree), each against the
general reader it stands in for, on a real image with snapshots, subvolume
entries, hard links, xattrs, symlinks and a fifo:

  * Filesystem.read_dirs (many directories in one walk) == readdir of each;
  * remap._per_inode, on dense inode numbers (one pass over their span) and on
    sparse ones (a range read each), with a number repeated == a range read of
    each number through the transaction;
  * remap._copy_fields, packed positionally, names the InodeValue fields it means;
  * the bulk path's inode value, packed from byte runs of the source's, is the
    value _copy_fields gives; _inode_head reads the fields it names.
"""

from __future__ import annotations

from bfs_tools.formats.constants import U32_MAX, U64_MAX
from bfs_tools.formats.ids import BtreeId

from bfs_tools import remap
from bfs_tools.fs.filesystem import Filesystem
from bfs_tools.fs.inode import InodeValue
from bfs_tools.remap import _copy_fields, _per_inode
from tests.cli.test_reflink import _tree, needs_snapshots


def _image(bfs, formatted, tmp_path):
    img = formatted("64M")
    host = tmp_path / "tree"
    _tree(host)
    for i in range(40):     # enough inode numbers for a sparse pick to be sparse
        (host / "d1" / f"n{i}").write_bytes(b"x" * (i * 300))
    bfs("put", img, host, "/src", "-r")
    bfs("subvolume", "create", img, "/sv")
    bfs("put", img, host, "/sv/t", "-r")
    bfs("snapshot", "create", img, "/sv", "/snap")
    bfs("rm", img, "/snap/t/small")     # the snapshot's view differs from /sv's
    return img


def _all_dirs(fs, t):
    """Every directory reachable from the root (subvolumes and snapshots too)."""
    out, stack = [], [fs.root()]
    while stack:
        w = stack.pop()
        out.append(w)
        for e in fs.readdir(w, t):
            if fs.inode(e.where, t).is_dir:
                stack.append(e.where)
    return out


@needs_snapshots
def test_read_dirs_is_readdir_of_each(bfs, formatted, tmp_path):
    img = _image(bfs, formatted, tmp_path)
    with Filesystem.open(str(img), write=True) as fs:
        t = fs.store.transaction()
        dirs = sorted(_all_dirs(fs, t), key=lambda w: (w.inum, w.snapshot))
        # /sv and /snap share their root's inode number: a repeated range
        assert len({w.inum for w in dirs}) < len(dirs)
        got = list(fs.read_dirs(dirs, t))
        want = [[(e.where, e.name) for e in fs.readdir(w, t)] for w in dirs]
        assert got == want
        assert any(w.subvol != fs.root().subvol for entries in got for w, _ in entries)


def _ranges(btree_id, i):
    if btree_id == BtreeId.inodes:
        return (0, i, 0), (0, i, U32_MAX)
    return (i, 0, 0), (i, U64_MAX, U32_MAX)


@needs_snapshots
def test_per_inode_dense_and_sparse(bfs, formatted, tmp_path):
    img = _image(bfs, formatted, tmp_path)
    with Filesystem.open(str(img), write=True) as fs:
        t = fs.store.transaction()
        inums = sorted({k.pos[1] for k in t.iter(BtreeId.inodes)})
        dense = inums[:3] + [inums[3]] + inums[3:]          # every number, one twice
        assert len(dense) * 4 >= dense[-1] - dense[0]       # one pass over the span
        for btree_id in (BtreeId.inodes, BtreeId.extents, BtreeId.xattrs):
            # the lowest and highest numbers with keys there, the lowest twice
            owners = sorted({k.pos[1] if btree_id == BtreeId.inodes else k.pos[0]
                             for k in t.iter(btree_id)} & set(inums))
            sparse = [owners[0], owners[0], owners[-1]]
            assert len(sparse) * 4 < sparse[-1] - sparse[0]     # a range read each
            for pick in (dense, sparse):
                want = [list(t.iter(btree_id, *_ranges(btree_id, i))) for i in pick]
                assert any(want) and (pick is dense or want[0] and want[-1])
                assert list(_per_inode(t, btree_id, pick)) == want, (btree_id, pick)


def test_copy_fields_names_the_fields_it_sets():
    src = InodeValue(*range(100, 100 + len(InodeValue._fields)))
    copy = InodeValue(*_copy_fields(src, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
    assert copy == src._replace(
        flags=0, nlink=1, generation=0, size=2, sectors=3, ctime_sec=4, ctime_nsec=5,
        btime_sec=4, btime_nsec=5, hash_seed=6, str_hash=7, data_csum=8, pad=0, subvol=0,
        dir=9, dir_offset=10)


def test_a_whole_clone_packs_the_value_copy_fields_gives():
    src = InodeValue(0o100640, 7, 1001, 1002, 1, 9, 123_456_789, 241_153, -5, 6, 1_700_000_000,
                     999_999_999, 11, 12, 13, 14, 0x0803, 77, 3, 2, 1, 4, 15, 16)
    raw = src.pack()
    assert remap._inode_head(raw) == (src.mode, src.nlink, src.size)
    sec, nsec = 1_800_000_000, 123
    spliced = remap._pack_clone_value(
        raw[remap._MODE], raw[remap._IDS], 1, raw[remap._SIZE], 241_160, raw[remap._AM_TIMES],
        remap._pack_times(sec, nsec, sec, nsec), raw[remap._RDEV], 2**64 - 3, 1, 2, 4097, 2**40)
    assert spliced == InodeValue(*_copy_fields(src, 1, src.size, 241_160, sec, nsec, 2**64 - 3,
                                               1, 2, 4097, 2**40)).pack()

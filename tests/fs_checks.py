"""A light consistency check of a whole image, for file-command tests (until
`bfs check` exists, and as an independent second opinion after it does).

verify_image(path) returns a list of problems (empty: consistent):
  * the engine's alloc consistency (btree nodes, accounting, freespace index);
  * data regions: every extent's region lies in one bucket of type user with the
    pointer's gen, distinct regions never overlap, and each user bucket's live
    sectors equal the sum of the extents pointing into it;
  * namespace (root subvolume, no snapshots): every dirent names an existing
    inode of the dirent's type, link counts match the dirents, directory link
    counts are 2 + subdirectories, inode `sectors` equal their extents' sizes,
    every inode is reachable, and each inode's size covers its data.
"""

from __future__ import annotations

import stat
from collections import Counter

from bfs_tools.formats.ids import BtreeId, DataType, KeyType

from bfs_tools.alloc.alloc_key import decode_alloc
from bfs_tools.extents import decode_extent
from bfs_tools.fs.dirent import decode_dirent
from bfs_tools.fs.filesystem import dtype_of
from bfs_tools.fs.inode import decode_inode
from bfs_tools.store import Store

try:   # the storage-engine tests' own check of btree nodes, accounting and freespace
    from tests.engine_checks import check_alloc_consistency
except ImportError:  # pragma: no cover
    check_alloc_consistency = None


def verify_image(path) -> list[str]:
    problems: list[str] = []
    store = Store.open(str(path))
    try:
        try:
            if check_alloc_consistency is not None:
                check_alloc_consistency(store)
        except AssertionError as e:
            problems.append(f"alloc: {e}")
        bt = store.btrees
        bucket_sectors = store.sb.bucket_size // 512
        alloc = {k.pos[1]: decode_alloc(k) for k in bt.iter(BtreeId.alloc)}
        regions: dict[tuple[int, int], tuple[int, int]] = {}
        live: Counter = Counter()
        sectors_of: Counter = Counter()
        data_end: dict[int, int] = {}
        for k in bt.iter(BtreeId.extents):
            if k.type in (KeyType.extent, KeyType.inline_data, KeyType.reflink_p):
                sectors_of[k.pos[0]] += k.size
                data_end[k.pos[0]] = max(data_end.get(k.pos[0], 0), k.pos[1])
            if k.type != KeyType.extent:
                continue
            e = decode_extent(k.val)
            b = e.sector // bucket_sectors
            if (e.sector + e.region_sectors - 1) // bucket_sectors != b:
                problems.append(f"extent {k.pos}: region spans buckets")
            a = alloc.get(b)
            if a is None or a.data_type != DataType.user or a.gen != e.gen:
                problems.append(f"extent {k.pos}: bucket {b} is {a}")
            live[b] += k.size
            regions[(e.sector, e.region_sectors)] = k.pos
        ordered = sorted(regions)
        for (s1, n1), (s2, n2) in zip(ordered, ordered[1:], strict=False):
            if s1 + n1 > s2:
                problems.append(f"data regions overlap: {regions[(s1, n1)]} at {s1}+{n1} and "
                                f"{regions[(s2, n2)]} at {s2}+{n2}")
        for b, a in alloc.items():
            if a.data_type == DataType.user and a.dirty_sectors != live.get(b, 0):
                problems.append(f"bucket {b}: {a.dirty_sectors} live sectors, extents say "
                                f"{live.get(b, 0)}")
        inodes = {k.pos[1]: decode_inode(k) for k in bt.iter(BtreeId.inodes)
                  if k.type == KeyType.inode}
        links: Counter = Counter()
        subdirs: Counter = Counter()
        for k in bt.iter(BtreeId.dirents):
            if k.type != KeyType.dirent:
                continue
            d = decode_dirent(k.val)
            if d.is_subvol:
                continue
            ino = inodes.get(d.target)
            if ino is None:
                problems.append(f"dirent {d.name!r} in {k.pos[0]}: no inode {d.target}")
                continue
            if dtype_of(ino.mode) != d.d_type:
                problems.append(f"dirent {d.name!r}: type {d.d_type}, inode mode {ino.mode:o}")
            links[d.target] += 1
            if ino.is_dir:
                subdirs[k.pos[0]] += 1
        for inum, ino in inodes.items():
            if ino.is_dir:
                want = 2 + subdirs[inum]
                if inum != 4096 and links[inum] != 1:
                    problems.append(f"directory {inum}: {links[inum]} dirents name it")
            else:
                want = links[inum]
                if want == 0:
                    problems.append(f"inode {inum}: unreachable")
            if ino.nlink != want:
                problems.append(f"inode {inum}: nlink {ino.nlink}, dirents say {want}")
            if ino.sectors != sectors_of.get(inum, 0):
                problems.append(f"inode {inum}: sectors {ino.sectors}, extents say "
                                f"{sectors_of.get(inum, 0)}")
            if stat.S_ISREG(ino.mode) and data_end.get(inum, 0) * 512 > max(
                    -(-ino.size // store.sb.block_size) * store.sb.block_size, 0) + 512:
                problems.append(f"inode {inum}: data beyond its size {ino.size}")
        for inum in set(sectors_of) - set(inodes):
            problems.append(f"extents of missing inode {inum}")
    finally:
        store.close()
    return problems

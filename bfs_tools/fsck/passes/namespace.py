"""Passes root, directory structure and nlinks, one walk per live subvolume.

Root: the root subvolume exists, its root directory exists and is a directory
(recreated empty if not); every subvolume's root directory exists.

Directory structure: from each subvolume's root, in that subvolume's view, walk
every directory. A directory named by two dirents keeps the first (the other
dirent goes: no loops, no hard-linked directories). Every inode the view sees
but the walk did not reach is reattached under /lost+found of that subvolume
as "#<inum>" — or, when nothing links to it any more (nlink 0), deleted.

Nlinks: a file's nlink equals the dirents naming it; a directory's is 2 plus
its subdirectories (subvolume dirents count as subdirectories); a directory's
(and a single-link file's) parent backpointer names the directory holding it.
"""

from __future__ import annotations

import os
import stat

from ...errors import BfsError
from ...formats.constants import ROOT_SUBVOL
from ...formats.ids import BtreeId, KeyType, SubvolumeFlags
from ...fs import hashed
from ...fs.filesystem import Filesystem, Where, dtype_of
from ...fs.inode import Inode
from ...snapshots.values import decode_subvolume
from ..util import drop_inode_cache, inode_versions, loc, visible_set

D, INODES, SV = BtreeId.dirents, BtreeId.inodes, BtreeId.subvolumes
LOST_FOUND = b"lost+found"


def run_root(ctx) -> None:
    bt = ctx.store.btrees
    fs = Filesystem(ctx.store)
    subvols = {k.pos[1]: decode_subvolume(k) for k in bt.iter(SV)}
    if ROOT_SUBVOL not in subvols:
        ctx.report("subvol_bad_snapshot", loc(SV, (0, ROOT_SUBVOL, 0)),
                   "the root subvolume is missing", can_fix=False)
        return
    for sv in subvols.values():
        if sv.flags & SubvolumeFlags.unlinked:
            continue
        where = Where(sv.id, sv.snapshot, sv.inode)
        try:
            ino = fs.get_inode(where)
        except BfsError:
            continue
        name = "root_dir_missing" if sv.id == ROOT_SUBVOL else "subvol_root_missing"
        if ino is None:
            if ctx.report(name, loc(INODES, (0, sv.inode, sv.snapshot)),
                          f"subvolume {sv.id}: root directory inode {sv.inode} missing"):
                _new_dir(fs, where, sv.id)
        elif not ino.is_dir:
            if ctx.report("root_not_dir", loc(INODES, (0, sv.inode, sv.snapshot)),
                          f"subvolume {sv.id}: root inode {sv.inode} is not a directory"):
                _new_dir(fs, where, sv.id)
    drop_inode_cache(ctx)


def _new_dir(fs, where: Where, subvol: int) -> None:
    import time

    sec, nsec = divmod(time.time_ns(), 1_000_000_000)
    ino = Inode(where.inum, mode=stat.S_IFDIR | 0o755, nlink=2, atime_sec=sec, atime_nsec=nsec,
                mtime_sec=sec, mtime_nsec=nsec, ctime_sec=sec, ctime_nsec=nsec, btime_sec=sec,
                btime_nsec=nsec, hash_seed=int.from_bytes(os.urandom(8), "little"),
                subvol=subvol, snapshot=where.snapshot)
    t = fs.store.transaction()
    t.update(INODES, ino.key(where.snapshot))
    t.commit()


def run_structure(ctx) -> None:
    bt = ctx.store.btrees
    fs = Filesystem(ctx.store)
    for k in list(bt.iter(SV)):
        sv = decode_subvolume(k)
        if sv.flags & SubvolumeFlags.unlinked:
            continue
        for _round in range(8):
            if not _walk_subvolume(ctx, fs, sv):
                break
            drop_inode_cache(ctx)


def _walk_subvolume(ctx, fs: Filesystem, sv) -> bool:
    """One walk of subvolume `sv`. Returns True if it changed something (walk again)."""
    snap = sv.snapshot
    visible = visible_set(ctx, snap)
    root = Where(sv.id, snap, sv.inode)
    root_ino = fs.get_inode(root)
    if root_ino is None or not root_ino.is_dir:
        return False
    links: dict[int, int] = {}
    parent_of: dict[int, tuple[int, int]] = {sv.inode: (0, 0)}   # dir -> (parent dir, slot)
    subdirs: dict[int, int] = {}
    first_link: dict[int, tuple[int, int]] = {}
    changed = False
    queue = [sv.inode]
    t = None
    while queue:
        dnum = queue.pop()
        count = 0
        for k in list(hashed.iter_entries(fs.btrees, D, dnum, visible)):
            if k.type != KeyType.dirent:
                continue
            try:
                from ...fs.dirent import decode_dirent

                d = decode_dirent(k.val)
            except BfsError:
                continue
            if d.is_subvol:
                count += 1
                continue
            target = fs.get_inode(Where(sv.id, snap, d.target))
            if target is None:
                continue   # the dirents pass reports (and repairs) dangling dirents
            if target.is_dir:
                if d.target in parent_of:
                    if ctx.report("dir_multiple_links", loc(D, k.pos),
                                  f"directory {d.target} already named elsewhere; this dirent "
                                  "goes"):
                        t = t or fs.store.transaction()
                        hashed.delete(t, D, k, snap, visible)
                        changed = True
                    continue
                parent_of[d.target] = (dnum, k.pos[1])
                count += 1
                queue.append(d.target)
            else:
                links[d.target] = links.get(d.target, 0) + 1
                first_link.setdefault(d.target, (dnum, k.pos[1]))
        subdirs[dnum] = count
    if t is not None:
        t.commit()
        return True
    versions = inode_versions(ctx)
    lost: list[tuple[int, Inode]] = []
    fixes = fs.store.transaction() if ctx.writable else None
    for inum, vers in versions.items():
        ino = None
        for s, i in vers:
            if s in visible:
                ino = i
                break
        if ino is None:
            continue
        where_k = loc(INODES, (0, inum, snap))
        if ino.is_dir:
            if inum not in parent_of:
                if inum == sv.inode:
                    continue
                if _foreign_root(fs, inum, sv):
                    continue
                if ctx.report("dir_unreachable", where_k,
                              f"directory {inum} is not reachable from the root of subvolume "
                              f"{sv.id}; moving it to /lost+found"):
                    lost.append((inum, ino))
                continue
            want = 2 + subdirs.get(inum, 0)
            pdir, pslot = parent_of[inum]
            fix = False
            if ino.nlink != want:
                if ctx.report("nlink_wrong", where_k, f"directory nlink {ino.nlink}, should be "
                              f"{want}"):
                    ino.nlink = want
                    fix = True
            if inum != sv.inode and (ino.dir, ino.dir_offset) != (pdir, pslot):
                if ctx.report("inode_dir_backpointer_wrong", where_k,
                              f"parent {ino.dir}:{ino.dir_offset}, should be {pdir}:{pslot}"):
                    ino.dir, ino.dir_offset = pdir, pslot
                    fix = True
            if fix:
                fixes.update(INODES, ino.key(snap))
            continue
        n = links.get(inum, 0)
        if n == 0:
            if ino.nlink == 0:
                if ctx.report("inode_unlinked_unreferenced", where_k,
                              f"inode {inum} has no links; deleting it"):
                    lost.append((inum, None))
            elif ctx.report("inode_unreachable", where_k,
                            f"inode {inum} ({stat.filemode(ino.mode)}) has no dirent; moving "
                            "it to /lost+found"):
                lost.append((inum, ino))
            continue
        fix = False
        if ino.nlink != n:
            if ctx.report("nlink_wrong", where_k, f"nlink {ino.nlink}, {n} dirents name it"):
                ino.nlink = n
                fix = True
        if n == 1 and (ino.dir, ino.dir_offset) != first_link[inum]:
            if ctx.report("inode_dir_backpointer_wrong", where_k,
                          f"parent {ino.dir}:{ino.dir_offset}, should be "
                          f"{first_link[inum][0]}:{first_link[inum][1]}"):
                ino.dir, ino.dir_offset = first_link[inum]
                fix = True
        if fix:
            fixes.update(INODES, ino.key(snap))
    if fixes is not None and fixes.nr_updates:
        fixes.commit()
        changed = True
    if lost and ctx.writable:
        _reattach(fs, sv, snap, lost)
        changed = True
    return changed


def _foreign_root(fs, inum: int, sv) -> bool:
    """Is inum the root of another subvolume seen through this view? (A snapshot's
    root shares its inode number with the source's root.)"""
    for k in fs.btrees.iter(SV):
        other = decode_subvolume(k)
        if other.inode == inum and other.id != sv.id:
            return True
    return False


def _reattach(fs: Filesystem, sv, snap: int, lost) -> None:
    root = Where(sv.id, snap, sv.inode)
    root_ino = fs.inode(root)
    lf = fs.lookup(root, root_ino, LOST_FOUND)
    if lf is None:
        lf_where = fs.create(root, LOST_FOUND, stat.S_IFDIR | 0o700, uid=0, gid=0)
    else:
        lf_where = lf.where
    for inum, ino in lost:
        where = Where(sv.id, snap, inum)
        t = fs.store.transaction()
        if ino is None:
            fs._drop_inode(t, where, fs.inode(where, t))
            t.commit()
            continue
        lf_ino = fs.inode(lf_where, t)
        name = f"#{inum}".encode()
        slot = fs._add_dirent(t, lf_where, lf_ino, name, inum, dtype_of(ino.mode))
        ino = fs.inode(where, t)
        ino.dir, ino.dir_offset = lf_where.inum, slot
        if not ino.is_dir:
            ino.nlink = max(ino.nlink, 1)
        fs.put_inode(t, where, ino)
        fs._touch_dir(t, lf_where, lf_ino, 1 if ino.is_dir else 0)
        t.commit()


"""Passes root, directory structure and nlinks, one walk per live subvolume.

Root: the root subvolume exists, its root directory exists and is a directory
(a missing one is recreated from another snapshot's version of it when there
is one, so the dirents they share stay where lookups find them).

Directory structure: from each subvolume's root, in that subvolume's view, walk
every directory. A directory named by several dirents keeps the one its
backpointer names (the others go: no loops, no hard-linked directories). Of
what the walk did not reach, only the tops go to /lost+found of that subvolume
as "#<inum>", with everything below them: a directory no lost directory names
(dir_unreachable), one member of each loop of lost directories (dir_loop, the
dirent closing the loop goes), and files no dirent names at all
(inode_unreachable; deleted instead when their nlink is 0).

Nlinks: a file's nlink equals the dirents naming it (reachable or not); a
directory's is 2 plus its subdirectories (subvolume dirents do not count, as in
bcachefs); a directory's (and a single-link file's) parent backpointer names
the directory holding it.
"""

from __future__ import annotations

import stat

from ...errors import BfsError
from ...formats.constants import ROOT_INODE, ROOT_SUBVOL, U32_MAX, U64_MAX
from ...formats.ids import BtreeId, DirentType, KeyType, SubvolumeFlags
from ...fs import hashed
from ...fs.dirent import DirentHead
from ...fs.inode import Inode, decode_inode
from ...keys import Key, filter_visible
from ...snapshots.table import snapshot_table
from ...snapshots.values import decode_subvolume
from ..util import Batch, drop_inode_cache, inode_versions, loc, visible_set

D, INODES, SV = BtreeId.dirents, BtreeId.inodes, BtreeId.subvolumes
LOST_FOUND = b"lost+found"


def run_root(ctx) -> None:
    bt = ctx.store.btrees
    subvols = {}
    for k in bt.iter(SV):
        try:
            subvols[k.pos[1]] = decode_subvolume(k)
        except BfsError:
            continue
    if ROOT_SUBVOL not in subvols:
        ctx.report("subvol_bad_snapshot", loc(SV, (0, ROOT_SUBVOL, 0)),
                   "the root subvolume is missing", can_fix=False)
        return
    from .dirents_xattrs import recreate_dir

    batch = Batch(ctx)
    for sv in subvols.values():
        if sv.flags & SubvolumeFlags.unlinked:
            continue
        try:
            ino = _inode_in_view(ctx.store, sv.inode, sv.snapshot)
        except BfsError:
            continue
        name = "root_dir_missing" if sv.id == ROOT_SUBVOL else "subvol_root_missing"
        if ino is None or not ino.is_dir or ino.subvol not in (0, sv.id):
            real = _root_named(ctx, bt, sv)
            if real is not None and real != sv.inode:
                if ctx.act(name, loc(SV, (0, sv.id, 0)),
                           f"subvolume {sv.id} names inode {sv.inode} as its root directory, "
                           f"but its root directory is inode {real}; fixed"):
                    sv.inode = real
                    batch.t().update(SV, sv.key())
                    batch.flush()
                    continue
        if ino is None:
            like = _other_version(bt, sv.inode)
            how = ("recreated from its version in snapshot "
                   f"{like.key_snapshot}" if like is not None else
                   "recreated, its entries rehashed")
            if ctx.act(name, loc(INODES, (0, sv.inode, sv.snapshot)),
                       f"subvolume {sv.id}: root directory inode {sv.inode} missing; {how}"):
                recreate_dir(ctx, batch, sv.inode, [sv.snapshot], like=like, subvol=sv.id,
                             top=sv.id == ROOT_SUBVOL)
        elif not ino.is_dir:
            if ctx.act("root_not_dir", loc(INODES, (0, sv.inode, sv.snapshot)),
                       f"subvolume {sv.id}: root inode {sv.inode} is not a directory "
                       f"(mode {ino.mode:o}); made a directory again"):
                recreate_dir(ctx, batch, sv.inode, [sv.snapshot], like=ino, subvol=sv.id)
        batch.flush()   # (drops the inode cache if it changed anything)


def _root_named(ctx, bt, sv) -> int | None:
    """The directory that says it is the root of subvolume `sv`, in its view."""
    if sv.id == ROOT_SUBVOL:
        return ROOT_INODE
    visible = visible_set(ctx, sv.snapshot)
    for k in bt.iter(INODES):
        if k.type != KeyType.inode or k.pos[2] not in visible:
            continue
        try:
            ino = decode_inode(k)
        except BfsError:
            continue
        if ino.subvol == sv.id and ino.is_dir:
            return k.pos[1]
    return None


def _other_version(bt, inum: int) -> Inode | None:
    """A directory version of inode `inum` in some snapshot (its hash seed still
    places the dirents the snapshots share)."""
    for k in bt.iter(INODES, (0, inum, 0), (0, inum, 0xFFFFFFFF)):
        if k.type != KeyType.inode:
            continue
        try:
            ino = decode_inode(k)
        except BfsError:
            continue
        if ino.is_dir:
            return ino
    return None


def run_structure(ctx) -> None:
    bt = ctx.store.btrees
    for k in list(bt.iter(SV)):
        try:
            sv = decode_subvolume(k)
        except BfsError:
            continue
        if sv.flags & SubvolumeFlags.unlinked:
            continue
        for _round in range(8):
            if not _walk_subvolume(ctx, sv):
                break
            drop_inode_cache(ctx)


class _Walk:
    """What one walk of a subvolume's view found."""

    def __init__(self):
        self.dir_links: dict[int, list[tuple[int, Key]]] = {}  # dir -> dirents naming it
        # file -> (dir, slot) of the dirent naming it; of those naming it, when
        # several do (most files have one: no list made for each)
        self.link: dict[int, tuple[int, int]] = {}
        self.more_links: dict[int, list[tuple[int, int]]] = {}
        self.subdirs: dict[int, int] = {}                      # dir -> subdirectories
        self.reached: set[int] = set()                         # directories walked

    def links(self, inum: int) -> list[tuple[int, int]]:
        """(dir, slot) of every dirent naming file `inum`, in walk order."""
        more = self.more_links.get(inum)
        if more is not None:
            return more
        one = self.link.get(inum)
        return [one] if one is not None else []


def _scan_dir(bt, w: _Walk, dnum: int, seen, visible) -> list[int]:
    """Record the entries of directory dnum; returns the directories it names.
    seen(inum): the inode the view sees (from the cached versions: no lookups)."""
    count = 0
    out = []
    dirent_t, subvol_t = KeyType.dirent, DirentType.subvol
    dir_links, link, more = w.dir_links, w.link, w.more_links
    head, unpack_head = DirentHead.SIZE, DirentHead.STRUCT.unpack_from
    last_slot = None
    # hashed.iter_entries(), inline (every dirent of the view goes through here):
    # at each slot the first version the view sees wins (keys.filter_visible)
    for k in bt.iter(D, (dnum, 0, 0), (dnum, U64_MAX, U32_MAX)):
        _, slot, snap = k.pos
        if slot == last_slot or snap not in visible:
            continue
        last_slot = slot
        val = k.val
        if k.type != dirent_t or len(val) < head:
            continue   # (also whiteouts: a deleted name hides older versions)
        inum, d_type = unpack_head(val)
        if d_type == subvol_t:
            continue   # not a subdirectory for nlink (a snapshot inherits it hidden)
        target = seen(inum)
        if target is None:
            continue   # the dirents pass reports (and repairs) dangling dirents
        if target.mode & 0o170000 == 0o040000:
            dir_links.setdefault(inum, []).append((dnum, k))
            count += 1
            out.append(inum)
        elif inum in link:
            more.setdefault(inum, [link[inum]]).append((dnum, slot))
        else:
            link[inum] = (dnum, slot)
    w.subdirs[dnum] = count
    return out


def _walk_subvolume(ctx, sv) -> bool:
    """One walk of subvolume `sv`. Returns True if it changed something (walk again)."""
    store = ctx.store
    bt = store.btrees
    snap = sv.snapshot
    visible = visible_set(ctx, snap)
    try:
        root_ino = _inode_in_view(store, sv.inode, snap)
    except BfsError:
        return False
    if root_ino is None or not root_ino.is_dir:
        return False
    versions = inode_versions(ctx)

    # what the view sees of every inode, once (the walk asks several times each),
    # and which of them are directories
    view: dict[int, Inode] = {}
    view_dirs: list[int] = []
    for inum, vers in versions.items():
        for s, i in vers:
            if s in visible:
                if i is not None:
                    view[inum] = i
                    if i.mode & 0o170000 == stat.S_IFDIR:
                        view_dirs.append(inum)
                break
    seen = view.get

    w = _Walk()
    queue = [sv.inode]
    while queue:
        dnum = queue.pop()
        if dnum in w.reached:
            continue
        w.reached.add(dnum)
        queue.extend(c for c in _scan_dir(bt, w, dnum, seen, visible) if c not in w.reached)

    # a directory named by several dirents keeps the one its backpointer names
    extra = []
    for dnum, named in sorted(w.dir_links.items()):
        ino = seen(dnum)
        if dnum == sv.inode:
            keep = None   # the root is named by nothing in its own view
        else:
            keep = next((x for x in named if ino is not None
                         and (x[0], x[1].pos[1]) == (ino.dir, ino.dir_offset)), named[0])
        for x in named:
            if x is not keep:
                extra.append((dnum, x))
    if extra:
        t = store.transaction() if ctx.writable else None
        for dnum, x in extra:
            parent, k = x
            if ctx.report("dir_multiple_links", loc(D, k.pos),
                          f"directory {dnum} is named elsewhere too; this dirent goes"):
                hashed.delete(t, D, k, snap, visible)
            # judge the rest as if it went
            w.dir_links[dnum].remove(x)
            w.subdirs[parent] -= 1
        if t is not None and t.nr_updates:
            t.commit()
            return True
    # what the walk did not reach: directories (with what hangs below them), files
    lost_dirs = {}
    for inum in view_dirs:
        if inum in w.reached or inum == sv.inode:
            continue
        if _foreign_root(bt, inum, sv):
            continue
        lost_dirs[inum] = view[inum]
    lw = _Walk()
    for dnum in lost_dirs:
        _scan_dir(bt, lw, dnum, seen, visible)
    parent_in_lost = {c: named[0] for c, named in lw.dir_links.items() if c in lost_dirs}
    lost: list[tuple[int, Inode | None]] = []
    cut: list[Key] = []
    for inum, ino in sorted(lost_dirs.items()):
        where_k = loc(INODES, (0, inum, snap))
        if inum not in parent_in_lost:
            if ctx.report("dir_unreachable", where_k,
                          f"directory {inum} is not reachable from the root of subvolume "
                          f"{sv.id}; moved to /lost+found"):
                lost.append((inum, ino))
            continue
        # is it on a cycle? follow its parents among the lost directories
        path = [inum]
        cur = parent_in_lost[inum][0]
        while cur in parent_in_lost and cur not in path and cur != inum:
            path.append(cur)
            cur = parent_in_lost[cur][0]
        if cur == inum and inum == min(path):
            parent, k = parent_in_lost[inum]
            if ctx.report("dir_loop", where_k,
                          f"directories {' -> '.join(map(str, reversed(path)))} -> {path[-1]} form "
                          "a loop cut off from the root; the dirent naming "
                          f"{inum} in {parent} goes, {inum} is moved to /lost+found"):
                cut.append(k)
                lost.append((inum, ino))
    named_in_lost = set(lw.link)
    fixes = Batch(ctx)
    link, more = w.link, w.more_links
    for inum, ino in view.items():
        if ino.mode & 0o170000 == stat.S_IFDIR:
            if inum not in w.reached:
                continue
            want = 2 + w.subdirs.get(inum, 0)
            back = None
            if inum != sv.inode and inum in w.dir_links:
                parent, k = _kept(w.dir_links[inum], ino)
                back = (parent, k.pos[1])
            if ino.nlink == want and (back is None or (ino.dir, ino.dir_offset) == back):
                continue
            ino = _Lazy(ino)   # copied before the first change: the cache is shared
            where_k = loc(INODES, (0, inum, snap))
            fix = False
            if ino.nlink != want:
                if ctx.act("nlink_wrong", where_k, f"directory nlink {ino.nlink}, should be "
                           f"{want}"):
                    ino.nlink = want
                    fix = True
            if back is not None and (ino.dir, ino.dir_offset) != back:
                if ctx.act("inode_dir_backpointer_wrong", where_k,
                           f"parent {ino.dir}:{ino.dir_offset}, should be "
                           f"{back[0]}:{back[1]}"):
                    ino.dir, ino.dir_offset = back
                    fix = True
            if fix:
                fixes.t().update(INODES, ino.key(snap))
            continue
        one = link.get(inum)
        if one is not None and ino.nlink == 1 and ino.dir == one[0] and (
                ino.dir_offset == one[1]) and inum not in more and inum not in named_in_lost:
            continue   # most files: one link, the dirent its backpointer names
        named = w.links(inum)
        if inum in named_in_lost:
            named = named + lw.links(inum)
        n = len(named)
        if n == 0:
            where_k = loc(INODES, (0, inum, snap))
            if ino.nlink == 0:
                if ctx.report("inode_unlinked_unreferenced", where_k,
                              f"inode {inum} has no links and no dirent; deleted"):
                    lost.append((inum, None))
            elif ctx.report("inode_unreachable", where_k,
                            f"inode {inum} ({stat.filemode(ino.mode)}) has no dirent; moved to "
                            "/lost+found"):
                lost.append((inum, ino))
            continue
        back = None
        if n == 1 and inum not in named_in_lost:
            back = named[0]
        if ino.nlink == n and (back is None or (ino.dir, ino.dir_offset) == back):
            continue
        ino = _Lazy(ino)
        where_k = loc(INODES, (0, inum, snap))
        fix = False
        if ino.nlink != n:
            if ctx.act("nlink_wrong", where_k, f"nlink {ino.nlink}, {n} dirents name it"):
                ino.nlink = n
                fix = True
        if back is not None and (ino.dir, ino.dir_offset) != back:
            if ctx.act("inode_dir_backpointer_wrong", where_k,
                       f"parent {ino.dir}:{ino.dir_offset}, should be {back[0]}:{back[1]}"):
                ino.dir, ino.dir_offset = back
                fix = True
        if fix:
            fixes.t().update(INODES, ino.key(snap))
    changed = fixes.trans is not None and ctx.writable
    fixes.flush()
    if (lost or cut) and ctx.writable:
        if cut:
            t = store.transaction()
            for k in cut:
                hashed.delete(t, D, k, snap, visible)
            t.commit()
        _reattach(store, sv, snap, lost)
        changed = True
    return changed


def _inode_in_view(store, inum: int, snap: int) -> Inode | None:
    """Filesystem.get_inode of inode `inum` in snapshot `snap` (BfsError alike),
    without the filesystem layer, whose import (~3 ms, part of every check's
    start-up) only repairs need."""
    visible = snapshot_table(store).ancestors(snap)
    for k in filter_visible(store.btrees.iter(INODES, (0, inum, 0), (0, inum, U32_MAX)),
                            visible):
        if k.type != KeyType.inode:
            return None
        ino = decode_inode(k)
        ino.snapshot = snap   # (seen from snap, whichever key it came from)
        return ino
    return None


class _Lazy:
    """An inode from the shared cache, copied on the first attribute set."""

    __slots__ = ("_ino", "_own")

    def __init__(self, ino: Inode):
        object.__setattr__(self, "_ino", ino)
        object.__setattr__(self, "_own", False)

    def __getattr__(self, name):
        return getattr(self._ino, name)

    def __setattr__(self, name, value):
        if not self._own:
            object.__setattr__(self, "_ino", self._ino.copy())
            object.__setattr__(self, "_own", True)
        setattr(self._ino, name, value)


def _kept(named, ino) -> tuple[int, Key]:
    for parent, k in named:
        if (parent, k.pos[1]) == (ino.dir, ino.dir_offset):
            return parent, k
    return named[0]


def _foreign_root(bt, inum: int, sv) -> bool:
    """Is inum the root of another subvolume seen through this view? (A snapshot's
    root shares its inode number with the source's root.)"""
    for k in bt.iter(SV):
        try:
            other = decode_subvolume(k)
        except BfsError:
            continue
        if other.inode == inum and other.id != sv.id:
            return True
    return False


def _reattach(store, sv, snap: int, lost) -> None:
    if not lost:
        return
    # (the filesystem layer only for repairs: a clean check does without its import)
    from ...fs.filesystem import Filesystem, Where, dtype_of

    fs = Filesystem(store)
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
        if fs.lookup(lf_where, lf_ino, name, t) is not None:
            name = f"#{inum}.{snap}".encode()
        slot = fs._add_dirent(t, lf_where, lf_ino, name, inum, dtype_of(ino.mode))
        ino = fs.inode(where, t)
        ino.dir, ino.dir_offset = lf_where.inum, slot
        if not ino.is_dir:
            ino.nlink = max(ino.nlink, 1)
        fs.put_inode(t, where, ino)
        fs._touch_dir(t, lf_where, lf_ino, 1 if ino.is_dir else 0)
        t.commit()

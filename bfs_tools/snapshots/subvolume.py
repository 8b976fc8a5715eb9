"""Subvolumes and snapshots: create, delete, list (bcachefs semantics).

Creating a snapshot of a subvolume whose current snapshot is N allocates two
ids below the lowest existing id: the source subvolume moves to one, the new
snapshot subvolume gets the other, and N becomes an interior node. Nothing is
copied: both see N's keys through ancestry, and each writes at its own id.
A subvolume appears in its parent directory as a dirent of type subvol that
records the parent subvolume (bcachefs' d_parent_subvol). A snapshot of that
parent inherits the key but does not show it (Filesystem._hidden_subvol): the
snapshot can neither reach nor delete the original's child subvolumes. For the
same reason a subvolume dirent is not a subdirectory for the directory's nlink
(bcachefs' is_subdir_for_nlink), and removing one from its parent's view turns
the inherited copies of older snapshots into hash whiteouts.

Deleting unlinks the subvolume and marks its snapshot deleted in one commit
(the user-visible part); cleanup.py then drops the dead snapshot's keys and
folds away interior nodes left with one child, in committed batches that a
later open or `check` resumes if interrupted.
"""

from __future__ import annotations

import stat

from ..errors import CorruptionError, ExistsError, NoSpaceError, NotADirError, PathError
from ..formats.constants import ROOT_SUBVOL, U32_MAX
from ..formats.fsck_errors import BY_NAME as ERR
from ..formats.ids import BtreeId, DirentType, KeyType, SbFlags, SnapshotFlags, SubvolumeFlags
from ..superblock import write_superblock
from .table import SnapshotTable, invalidate
from .values import (
    Snapshot,
    SnapshotTree,
    Subvolume,
    decode_snapshot,
    decode_snapshot_tree,
    decode_subvolume,
)

S, SV, ST = BtreeId.snapshots, BtreeId.subvolumes, BtreeId.snapshot_trees


class NotSubvolumeError(PathError, ValueError):
    """The path is not what the command works on (a subvolume root, a snapshot)."""


class SubvolumeBusyError(PathError, OSError):
    """The subvolume cannot go: it is the root, or other subvolumes live in it."""


def _lowest_snapshot_id(trans) -> int:
    k = trans.peek(S, (0, 1, 0))
    return k.pos[1] if k is not None else U32_MAX + 1


def _new_snapshot_ids(trans, n: int) -> list[int]:
    """n ids below every existing id, largest first (children < parents)."""
    lowest = _lowest_snapshot_id(trans)
    ids = [lowest - i for i in range(1, n + 1)]
    if ids[-1] < 1:
        raise NoSpaceError(f"snapshot ids exhausted: {n} new ids are needed below the lowest "
                           f"existing id ({lowest}); nothing was changed")
    return ids


def _next_id(trans, btree: int) -> int:
    last = trans.peek_prev(btree, (0, U32_MAX, 0))
    nxt = (last.pos[1] + 1) if last is not None else 1
    if nxt > U32_MAX - 1:
        raise NoSpaceError(f"{BtreeId(btree).name} ids exhausted; nothing was changed")
    return nxt


def _use_pending_table(fs, trans) -> None:
    """Snapshot ids queued in `trans` become visible to path/ancestry code now;
    the cached table is dropped again when the transaction ends."""
    fs.store.cache["snapshot_table"] = SnapshotTable.load(trans)
    trans.on_commit.append(lambda: invalidate(fs.store))


def is_subvolume_root(fs, resolved) -> bool:
    sv = fs.subvolume(resolved.where.subvol)
    return resolved.where.inum == sv.inode


def _dest(fs, dest_path: str, src_trans):
    parent, name = fs.resolve_parent(dest_path, src=src_trans)
    if not parent.inode.is_dir:
        raise NotADirError(f"{parent.path}: not a directory")
    if fs.lookup(parent.where, parent.inode, name, src_trans) is not None:
        raise ExistsError(f"{dest_path}: already exists")
    return parent, name


def _link_subvol(fs, trans, parent_where, name: bytes, subvol_id: int) -> int:
    """The dirent naming subvolume `subvol_id` in directory parent_where."""
    dir_inode = fs.inode(parent_where, trans)
    slot = fs._add_dirent(trans, parent_where, dir_inode, name,
                          subvol_id | (parent_where.subvol << 32), DirentType.subvol)
    # a subvolume is not a subdirectory for nlink (bcachefs' is_subdir_for_nlink): its
    # dirent is inherited, hidden, by snapshots of the parent, whose nlink must not count it
    fs._touch_dir(trans, parent_where, dir_inode, 0)
    return slot


def create_snapshot(fs, source_path: str, dest_path: str, *, read_only: bool = False) -> int:
    """Snapshot the subvolume rooted at source_path as dest_path. Returns the new subvol id."""
    from ..fs.filesystem import Where, now

    t = fs.store.transaction()
    src = fs.resolve(source_path, follow=True, src=t)
    if not src.inode.is_dir or not is_subvolume_root(fs, src):
        raise NotSubvolumeError(f"{source_path}: not a subvolume root (snapshot a subvolume: / or "
                         "one made by `bfs subvolume create` or `bfs snapshot create`)")
    parent, name = _dest(fs, dest_path, t)
    fs.check_writable(parent.where, t)
    sv = fs.subvolume(src.where.subvol, t)
    node = decode_snapshot(t.get(S, (0, sv.snapshot, 0)))
    if node.children:
        raise CorruptionError(f"subvolume {sv.id} points at interior snapshot {node.id}; run "
                              "bfs check", ERR["subvol_bad_snapshot"].id)
    keep_id, snap_id = _new_snapshot_ids(t, 2)
    new_sv = _next_id(t, SV)
    sec, nsec = now()
    # the tree: N gets two children; the source moves to one, the snapshot gets the other
    t.update(S, Snapshot(node.id, node.flags, node.parent, keep_id, snap_id, 0, node.tree,
                         node.depth).key())
    t.update(S, Snapshot(keep_id, 0, node.id, 0, 0, sv.id, node.tree, node.depth + 1).key())
    t.update(S, Snapshot(snap_id, 0, node.id, 0, 0, new_sv, node.tree, node.depth + 1).key())
    t.update(SV, Subvolume(sv.id, sv.flags, keep_id, sv.inode, sv.parent, 0, sv.otime_sec,
                           sv.otime_nsec).key())
    flags = SubvolumeFlags.snapshot | (SubvolumeFlags.read_only if read_only else 0)
    t.update(SV, Subvolume(new_sv, int(flags), snap_id, sv.inode, parent.where.subvol, 0,
                           sec, nsec).key())
    _use_pending_table(fs, t)
    # the dirent goes in after the snapshot point: if the destination is inside the
    # source subvolume it must be written at the source's new id, not at N
    pw = parent.where
    if pw.subvol == sv.id:
        pw = Where(pw.subvol, keep_id, pw.inum)
    try:
        slot = _link_subvol(fs, t, pw, name, new_sv)
        # the snapshot's root inode knows its own subvolume and where it is named
        root = fs.inode(Where(new_sv, snap_id, sv.inode), t)
        root.subvol, root.dir, root.dir_offset = new_sv, pw.inum, slot
        root.ctime_sec, root.ctime_nsec = sec, nsec
        fs.put_inode(t, Where(new_sv, snap_id, sv.inode), root)
        t.commit()
    except BaseException:
        invalidate(fs.store)
        raise
    return new_sv


def create_subvolume(fs, path: str, *, mode: int = 0o755) -> int:
    """A new, empty subvolume (its own snapshot tree) at path."""
    from ..fs.filesystem import Where, now

    t = fs.store.transaction()
    parent, name = _dest(fs, path, t)
    fs.check_writable(parent.where, t)
    (snap_id,) = _new_snapshot_ids(t, 1)
    sv_id = _next_id(t, SV)
    tree_id = _next_id(t, ST)
    sec, nsec = now()
    t.update(ST, SnapshotTree(tree_id, sv_id, snap_id).key())
    t.update(S, Snapshot(snap_id, 0, 0, 0, 0, sv_id, tree_id, 0).key())
    _use_pending_table(fs, t)
    try:
        inode = fs.new_inode(t, Where(sv_id, snap_id, 0), stat.S_IFDIR | mode)
        t.update(SV, Subvolume(sv_id, 0, snap_id, inode.inum, parent.where.subvol, 0,
                               sec, nsec).key())
        slot = _link_subvol(fs, t, parent.where, name, sv_id)
        inode.subvol, inode.dir, inode.dir_offset = sv_id, parent.where.inum, slot
        fs.put_inode(t, Where(sv_id, snap_id, inode.inum), inode)
        t.commit()
    except BaseException:
        invalidate(fs.store)
        raise
    return sv_id


def delete_subvolume(fs, path: str, *, expect_snapshot: bool | None = None) -> int:
    """Unlink the subvolume at path and mark its snapshot dead (committed), then
    clean up. Returns the deleted subvolume id."""
    from .cleanup import cleanup_dead_snapshots

    t = fs.store.transaction()
    r = fs.resolve(path, follow=False, src=t)
    if r.entry is None or not r.entry.dirent.is_subvol:
        if r.parent is None:
            raise SubvolumeBusyError("the root subvolume cannot be deleted")
        raise NotSubvolumeError(f"{path}: not a subvolume")
    sv = fs.subvolume(r.entry.dirent.child_subvol, t)
    if sv.id == ROOT_SUBVOL:
        raise SubvolumeBusyError("the root subvolume cannot be deleted")
    is_snap = bool(sv.flags & SubvolumeFlags.snapshot)
    if expect_snapshot is True and not is_snap:
        raise NotSubvolumeError(f"{path}: a subvolume, not a snapshot (use `bfs subvolume "
                                "delete`)")
    for k in t.iter(SV):
        child = decode_subvolume(k)
        if child.parent == sv.id and not child.flags & SubvolumeFlags.unlinked:
            raise SubvolumeBusyError(f"{path}: contains subvolume {child.id}; delete it first")
    fs.check_writable(r.parent, t)
    dir_inode = fs.inode(r.parent, t)
    fs._remove_entry(t, r.parent, dir_inode, r.entry)
    fs._touch_dir(t, r.parent, dir_inode, 0)
    t.update(SV, Subvolume(sv.id, sv.flags | SubvolumeFlags.unlinked, sv.snapshot, sv.inode,
                           sv.parent, 0, sv.otime_sec, sv.otime_nsec).key())
    node = decode_snapshot(t.get(S, (0, sv.snapshot, 0)))
    t.update(S, Snapshot(node.id, node.flags | SnapshotFlags.deleted, node.parent,
                         node.children_0, node.children_1, node.subvol, node.tree,
                         node.depth).key())
    t.on_commit.append(lambda: invalidate(fs.store))
    t.commit()
    sb = fs.store.sb
    sb.flags |= SbFlags.deleting_snapshots
    write_superblock(fs.store.dev, sb)
    fs.store.commit()
    cleanup_dead_snapshots(fs)
    return sv.id


class SubvolInfo:
    __slots__ = ("id", "snapshot", "parent", "inode", "read_only", "is_snapshot", "unlinked",
                 "path", "otime_sec")

    def __init__(self, id: int, snapshot: int, parent: int, inode: int, read_only: bool,
                 is_snapshot: bool, unlinked: bool, path: str | None, otime_sec: int):
        self.id = id
        self.snapshot = snapshot
        self.parent = parent
        self.inode = inode
        self.read_only = read_only
        self.is_snapshot = is_snapshot
        self.unlinked = unlinked
        self.path = path
        self.otime_sec = otime_sec


def list_subvolumes(fs) -> list[SubvolInfo]:
    out = []
    for k in fs.btrees.iter(SV):
        sv = decode_subvolume(k)
        out.append(SubvolInfo(sv.id, sv.snapshot, sv.parent, sv.inode, sv.read_only,
                              bool(sv.flags & SubvolumeFlags.snapshot),
                              bool(sv.flags & SubvolumeFlags.unlinked),
                              subvolume_path(fs, sv.id), sv.otime_sec))
    return out


def subvolume_path(fs, subvol_id: int) -> str | None:
    """The path naming a subvolume, found through its root inode's backpointer."""
    from ..fs.dirent import decode_dirent
    from ..fs.filesystem import Where
    from ..keys import filter_visible

    parts: list[bytes] = []
    cur = subvol_id
    for _ in range(4096):
        if cur == ROOT_SUBVOL:
            return "/" + "/".join(p.decode("utf-8", "backslashreplace") for p in reversed(parts))
        try:
            sv = fs.subvolume(cur)
        except Exception:
            return None
        if sv.flags & SubvolumeFlags.unlinked:
            return None
        root = fs.get_inode(Where(sv.id, sv.snapshot, sv.inode))
        if root is None or not root.dir or not sv.parent:
            return None
        parent_sv = fs.subvolume(sv.parent)
        # walk up inside the parent subvolume from the directory holding the dirent
        dir_inum, slot = root.dir, root.dir_offset
        visible = fs.visible(parent_sv.snapshot)
        for _ in range(1 << 16):
            k = None
            for k2 in filter_visible(fs.btrees.iter(BtreeId.dirents, (dir_inum, slot, 0),
                                                    (dir_inum, slot, U32_MAX)), visible):
                k = k2
                break
            if k is None or k.type != KeyType.dirent:
                return None
            parts.append(decode_dirent(k.val).name)
            if dir_inum == parent_sv.inode:
                break
            d = fs.get_inode(Where(parent_sv.id, parent_sv.snapshot, dir_inum))
            if d is None or not d.dir:
                return None
            dir_inum, slot = d.dir, d.dir_offset
        cur = parent_sv.id
    return None


class SnapshotInfo:
    __slots__ = ("id", "parent", "children", "subvol", "tree", "depth", "deleted", "own_sectors",
                 "shared_sectors")

    def __init__(self, id: int, parent: int, children: list[int], subvol: int, tree: int,
                 depth: int, deleted: bool, own_sectors: int, shared_sectors: int):
        self.id = id
        self.parent = parent
        self.children = children
        self.subvol = subvol
        self.tree = tree
        self.depth = depth
        self.deleted = deleted
        self.own_sectors = own_sectors          # keys at this snapshot id
        self.shared_sectors = shared_sectors    # keys at its ancestors (shared with others)


def list_snapshots(fs) -> list[SnapshotInfo]:
    from ..alloc.accounting import read_counters
    from ..formats.ids import AccountingType

    table = SnapshotTable.load(fs.btrees)
    own = {sid: read_counters(fs.btrees, AccountingType.snapshot, sid)[0]
           for sid in table.snapshots}
    out = []
    for sid, s in sorted(table.snapshots.items(), reverse=True):
        shared = sum(own.get(a, 0) for a in table.ancestors(sid) if a != sid) if not (
            s.flags & SnapshotFlags.deleted) else 0
        out.append(SnapshotInfo(sid, s.parent, s.children, s.subvol, s.tree, s.depth,
                                bool(s.flags & SnapshotFlags.deleted), own.get(sid, 0), shared))
    return out


def snapshot_trees(fs) -> list[SnapshotTree]:
    return [decode_snapshot_tree(k) for k in fs.btrees.iter(ST)]

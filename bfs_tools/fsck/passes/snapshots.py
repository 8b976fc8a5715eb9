"""Pass snapshots: the snapshot tree, snapshot trees and subvolumes agree.

In this order, each step on the state the previous ones left (in memory as if
repaired, so -n reports what -y would do):
  1. links both ways: a parent lists its children, a child names its parent,
     ids below their parent's (snapshot_id_order cannot be repaired);
  2. every subvolume on an existing leaf: one pointing at a missing or
     interior node moves to the leaf that names it as its subvolume, or to a
     new leaf below that node (bcachefs), or to a new tree root;
  3. every leaf owned by the subvolume on it, interior nodes by none (a leaf
     no subvolume is on is dead: the cleanup below drops its keys);
  4. depth and tree id inherited from the parent; each tree root has its
     snapshot_trees entry, and no entry names anything else;
  5. leftovers of an interrupted deletion (dead or single-child interior
     nodes) are cleaned up after the alloc pass, as `snapshot delete` would;
     they are a finding only when no deletion is in progress (the superblock
     flag deleting_snapshots: a crash during `snapshot delete` is not damage).
"""

from __future__ import annotations

from ...errors import BfsError
from ...formats.constants import ROOT_INODE, ROOT_SUBVOL
from ...formats.ids import BtreeId, KeyType, SbFlags, SnapshotFlags, SubvolumeFlags
from ...keys import deleted_key
from ...snapshots.table import invalidate
from ...snapshots.values import (
    Snapshot,
    SnapshotTree,
    decode_snapshot,
    decode_snapshot_tree,
    decode_subvolume,
)
from ..util import Batch, loc

S, SV, ST = BtreeId.snapshots, BtreeId.subvolumes, BtreeId.snapshot_trees


def _load(bt, btree, decode) -> dict:
    out = {}
    for k in bt.iter(btree):
        try:
            v = decode(k)
        except BfsError:
            continue   # the keys pass reported it
        out[k.pos[1]] = v
    return out


class _State:
    def __init__(self, ctx):
        bt = ctx.store.btrees
        self.ctx = ctx
        self.snaps: dict[int, Snapshot] = _load(bt, S, decode_snapshot)
        self.subvols = _load(bt, SV, decode_subvolume)
        self.trees: dict[int, SnapshotTree] = _load(bt, ST, decode_snapshot_tree)
        self.batch = Batch(ctx, triggers=False)

    def _write(self, btree: int, key, fix: bool) -> None:
        """Queue a repair; with -n, apply it to the tree in memory only, so the
        later passes see what -y would leave."""
        if fix:
            self.batch.t().update(btree, key)
        elif not self.ctx.writable:
            self.ctx.store.btrees.apply(btree, key, 0, False)

    def put_snap(self, s: Snapshot, fix: bool) -> None:
        kids = sorted(s.children, reverse=True)
        s.children_0 = kids[0] if kids else 0
        s.children_1 = kids[1] if len(kids) > 1 else 0
        self.snaps[s.id] = s
        self._write(S, s.key(), fix)

    def put_subvol(self, sv, fix: bool) -> None:
        self.subvols[sv.id] = sv
        self._write(SV, sv.key(), fix)

    def put_tree(self, tree: SnapshotTree, fix: bool) -> None:
        self.trees[tree.id] = tree
        self._write(ST, tree.key(), fix)

    def drop_tree(self, tid: int, fix: bool) -> None:
        self.trees.pop(tid, None)
        self._write(ST, deleted_key((0, tid, 0)), fix)

    def new_id(self) -> int:
        return min(self.snaps) - 1 if self.snaps else 0xFFFFFFFF

    def new_tree_id(self) -> int:
        return max([0, *self.trees, *(s.tree for s in self.snaps.values())]) + 1


def run(ctx) -> None:
    st = _State(ctx)
    ctx.state["_snap_state"] = st
    _links(st)
    _missing_subvols(st)
    _subvolumes(st)
    _owners(st)
    _depth_and_trees(st)
    st.batch.flush()
    ctx.state.pop("_snap_state", None)
    ctx.state.pop("table", None)
    invalidate(ctx.store)
    if ctx.writable:
        from ...snapshots.cleanup import pending_work

        pending = pending_work(ctx.store.btrees)
    else:
        pending = any(_dead(s) or _redundant(s) for s in st.snaps.values())
    if pending and ctx.store.sb.flags & SbFlags.deleting_snapshots:
        # Fix (check -n after a crash in `snapshot delete` exited 4): the superblock
        # says a deletion is in progress (set, and flushed, before its first commit;
        # cleared after its last), so dead nodes are its unfinished cleanup, the state
        # a crash leaves, not damage. Finished like a writable open does, no finding.
        ctx.state["cleanup_pending"] = True
    elif pending:
        if ctx.report("snapshot_deletion_unfinished", "snapshots",
                      "a snapshot deletion was interrupted (or left a dead snapshot node); "
                      "finishing it"):
            # finished after the alloc pass, when triggers can be trusted
            ctx.state["cleanup_pending"] = True


def _dead(s: Snapshot) -> bool:
    return bool(s.flags & SnapshotFlags.deleted) or (not s.subvol and not s.children)


def _redundant(s: Snapshot) -> bool:
    return not s.subvol and len(s.children) == 1 and not s.flags & SnapshotFlags.deleted


def _links(st: _State) -> None:
    """Parent and child links are redundant: each side repairs the other. A child
    whose parent is missing (or does not list it) takes the node that lists it
    as a child, if one does; a parent listing a child that names another
    existing parent loses it."""
    ctx, snaps = st.ctx, st.snaps
    listed_by: dict[int, list[int]] = {}
    for sid, s in snaps.items():
        for c in s.children:
            listed_by.setdefault(c, []).append(sid)
    for sid in sorted(snaps, reverse=True):
        s = snaps[sid]
        where = loc(S, (0, sid, 0))
        p = snaps.get(s.parent) if s.parent else None
        claims = [x for x in listed_by.get(sid, ()) if x in snaps and x > sid]
        if s.parent and (p is None or sid not in p.children) and claims \
                and s.parent not in claims:
            new = claims[0]
            fix = ctx.report("snapshot_bad_links", where,
                             f"parent {s.parent} {'does not exist' if p is None else 'does not list it'}"
                             f", snapshot {new} lists it as a child: that is its parent")
            s.parent = new
            st.put_snap(s, fix)
            p = snaps[new]
        elif not s.parent and claims:
            new = claims[0]
            fix = ctx.report("snapshot_bad_links", where,
                             f"has no parent, snapshot {new} lists it as a child: that is its "
                             "parent")
            s.parent = new
            st.put_snap(s, fix)
            p = snaps[new]
        if s.parent:
            if p is None:
                fix = ctx.report("snapshot_bad_links", where,
                                 f"parent {s.parent} does not exist; it becomes a tree root")
                s.parent = 0
                st.put_snap(s, fix)
            elif s.parent <= sid:
                ctx.report("snapshot_id_order", where, f"parent {s.parent} is not above {sid}")
            elif sid not in p.children:
                if len(p.children) >= 2:
                    ctx.report("snapshot_bad_links", where,
                               f"parent {p.id} does not list it and has two children",
                               can_fix=False)
                else:
                    fix = ctx.report("snapshot_bad_links", where,
                                     f"parent {p.id} does not list it; added")
                    p.children_1, p.children_0 = p.children_0, sid
                    st.put_snap(p, fix)
    for sid in sorted(snaps, reverse=True):
        s = snaps[sid]
        for c in list(s.children):
            child = snaps.get(c)
            if child is None or child.parent != sid:
                what = 'does not exist' if child is None else f"names parent {child.parent}"
                fix = ctx.report("snapshot_bad_links", loc(S, (0, sid, 0)),
                                 f"child {c} {what}; removed")
                kids = [x for x in s.children if x != c]
                s.children_0, s.children_1 = (kids + [0, 0])[:2]
                st.put_snap(s, fix)


def _root_inode_of(ctx, vid: int, snap: int) -> int | None:
    """The inode that says it is the root directory of subvolume `vid`, as seen
    from `snap` (the root subvolume's is ROOT_INODE)."""
    from ...fs.inode import decode_inode

    if vid == ROOT_SUBVOL:
        return ROOT_INODE
    bt = ctx.store.btrees
    anc = _ancestors(ctx, snap)
    best = None
    for k in bt.iter(BtreeId.inodes):
        if k.type != KeyType.inode or k.pos[2] not in anc:
            continue
        try:
            ino = decode_inode(k)
        except BfsError:
            continue
        if ino.subvol == vid and ino.is_dir:
            best = k.pos[1]
            break
    return best


def _ancestors(ctx, snap: int) -> set[int]:
    st = ctx.state.get("_snap_state")
    out = set()
    while snap and snap not in out and st is not None:
        out.add(snap)
        s = st.snaps.get(snap)
        snap = s.parent if s is not None else 0
    return out


def _missing_subvols(st: _State) -> None:
    """A leaf naming a subvolume that does not exist (its key was lost): the
    subvolume is made again, on that leaf, with the root directory that names it."""
    from ...snapshots.values import Subvolume

    ctx, snaps = st.ctx, st.snaps
    on = {sv.snapshot for sv in st.subvols.values()}
    for sid in sorted(snaps, reverse=True):
        s = snaps[sid]
        vid = s.subvol
        if not vid or s.children or vid in st.subvols or sid in on:
            continue   # (a subvolume on the leaf: its field is what is wrong, _owners)
        inum = _root_inode_of(ctx, vid, sid)
        where = loc(SV, (0, vid, 0))
        if inum is None:
            ctx.report("snapshot_bad_links", where, f"snapshot {sid} names subvolume {vid}, "
                       "which does not exist, and no root directory names it", can_fix=False)
            continue
        tree = st.trees.get(s.tree)
        flags = 0 if (tree is not None and tree.master_subvol == vid) or vid == ROOT_SUBVOL \
            else int(SubvolumeFlags.snapshot)
        fix = ctx.report("snapshot_bad_links", where,
                         f"snapshot {sid} names subvolume {vid}, which does not exist: made "
                         f"again (root directory {inum})")
        st.put_subvol(Subvolume(vid, flags, sid, inum, 0 if vid == ROOT_SUBVOL else ROOT_SUBVOL),
                      fix)


def _subvolumes(st: _State) -> None:
    ctx, snaps = st.ctx, st.snaps
    for vid in sorted(st.subvols):
        sv = st.subvols[vid]
        s = snaps.get(sv.snapshot)
        other = st.subvols.get(s.subvol) if s is not None and s.subvol != vid else None
        taken = other is not None and other.snapshot == sv.snapshot
        if s is not None and not s.children and not taken:
            continue
        where = loc(SV, (0, vid, 0))
        what = ("does not exist" if s is None else "is an interior node" if s.children
                else f"is subvolume {s.subvol}'s")
        named = [x for x in snaps.values() if x.subvol == vid and not x.children]
        if named:
            leaf = named[0]
            fix = ctx.report("subvol_bad_snapshot", where,
                             f"snapshot {sv.snapshot} {what}; leaf {leaf.id} names this "
                             "subvolume: moved there")
        elif s is not None and len(s.children) < 2 and not taken:
            leaf = Snapshot(st.new_id(), 0, s.id, 0, 0, vid, s.tree, s.depth + 1)
            fix = ctx.report("subvol_bad_snapshot", where,
                             f"snapshot {sv.snapshot} {what}; a new leaf {leaf.id} below it "
                             "is the subvolume's")
            s.children_1, s.children_0 = s.children_0, leaf.id
            st.put_snap(s, fix)
            st.put_snap(leaf, fix)
        elif s is None:
            tid = st.new_tree_id()
            leaf = Snapshot(st.new_id(), 0, 0, 0, 0, vid, tid, 0)
            fix = ctx.report("subvol_bad_snapshot", where,
                             f"snapshot {sv.snapshot} {what}; a new snapshot tree {tid} (root "
                             f"{leaf.id}) is the subvolume's")
            st.put_snap(leaf, fix)
            st.put_tree(SnapshotTree(tid, vid, leaf.id), fix)
        else:
            ctx.report("subvol_bad_snapshot", where,
                       f"snapshot {sv.snapshot} {what}, and no leaf names this subvolume",
                       can_fix=False)
            continue
        sv.snapshot = leaf.id
        st.put_subvol(sv, fix)


def _owners(st: _State) -> None:
    ctx, snaps = st.ctx, st.snaps
    owner: dict[int, int] = {}
    for sv in st.subvols.values():
        s = snaps.get(sv.snapshot)
        if s is not None and not s.children:
            owner.setdefault(sv.snapshot, sv.id)
    for sid in sorted(snaps, reverse=True):
        s = snaps[sid]
        want = 0 if s.children else owner.get(sid, 0)
        if s.subvol == want:
            continue
        if want:
            msg = f"names subvolume {s.subvol}, but subvolume {want} is on it; fixed"
        elif s.children:
            msg = f"interior node names subvolume {s.subvol}; cleared"
        else:
            msg = (f"subvolume {s.subvol} is missing or on another snapshot: no subvolume is "
                   "on this leaf; it is dead (its keys go)")
        fix = ctx.report("snapshot_bad_links", loc(S, (0, sid, 0)), msg)
        s.subvol = want
        st.put_snap(s, fix)


def _depth_and_trees(st: _State) -> None:
    ctx, snaps = st.ctx, st.snaps
    roots = sorted((sid for sid, s in snaps.items() if not s.parent), reverse=True)
    claimed: set[int] = set()
    for rid in roots:
        root = snaps[rid]
        tree = st.trees.get(root.tree)
        tid = root.tree
        if tree is None or tree.root_snapshot != rid or tid in claimed:
            members = _subtree(snaps, rid)
            masters = sorted(sv.id for sv in st.subvols.values()
                             if sv.snapshot in members
                             and not sv.flags & SubvolumeFlags.snapshot)
            others = sorted(sv.id for sv in st.subvols.values() if sv.snapshot in members)
            master = (masters or others or [0])[0]
            if tid == 0 or tid in claimed or (tree is not None and tree.root_snapshot in snaps
                                              and tree.root_snapshot != rid):
                tid = st.new_tree_id()
            fix = ctx.report("snapshot_tree_bad", loc(S, (0, rid, 0)),
                             f"tree {root.tree} does not have it as root; snapshot tree {tid} "
                             f"(master subvolume {master}) written")
            st.put_tree(SnapshotTree(tid, master, rid), fix)
        claimed.add(tid)
        # depth and tree id, down from the root
        stack = [(rid, 0, tid)]
        seen = set()
        while stack:
            sid, depth, t = stack.pop()
            if sid in seen or sid not in snaps:
                continue
            seen.add(sid)
            s = snaps[sid]
            if s.depth != depth or s.tree != t:
                fix = ctx.report("snapshot_bad_depth", loc(S, (0, sid, 0)),
                                 f"depth {s.depth} tree {s.tree}, should be depth {depth} tree "
                                 f"{t}")
                s.depth, s.tree = depth, t
                st.put_snap(s, fix)
            for c in s.children:
                stack.append((c, depth + 1, t))
    for tid in sorted(st.trees):
        tree = st.trees[tid]
        r = snaps.get(tree.root_snapshot)
        if tid in claimed and r is not None and not r.parent and r.tree == tid:
            continue
        fix = ctx.report("snapshot_tree_bad", loc(ST, (0, tid, 0)),
                         f"root snapshot {tree.root_snapshot} is missing or not this tree's "
                         "root; deleted")
        st.drop_tree(tid, fix)


def _subtree(snaps: dict[int, Snapshot], rid: int) -> set[int]:
    out = set()
    stack = [rid]
    while stack:
        sid = stack.pop()
        if sid in out or sid not in snaps:
            continue
        out.add(sid)
        stack.extend(snaps[sid].children)
    return out

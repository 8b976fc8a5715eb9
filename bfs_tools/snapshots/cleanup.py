"""Cleaning up after deleted snapshots (bcachefs' delete_dead_snapshots).

A deleted subvolume leaves its leaf snapshot marked `deleted`. Cleanup works
from a plan of the snapshot tree:
  * dead: marked deleted, or an interior node without a subvolume whose
    children are all dead (so a node left with no children is dead too);
  * redundant: a live node without a subvolume with exactly one live child:
    it is folded into the first node below it that is not redundant (its
    *terminal*), in one hop however long the chain.
Then, in one pass over the keys of the snapshot-aware btrees, in committed
batches: a key at a dead node is dropped (the data trigger frees its space); a
key at a redundant node moves down to the terminal unless the terminal already
has a version at that position (which shadows it; within a position keys come
in ascending snapshot order, so the nearest of a chain of folded nodes moves
first and the farther ones then find it there). Finally one transaction
rewrites the tree: dead and redundant nodes go, the others get their new
parent, children and depth, and the snapshot trees their new root (and master
subvolume, if it was deleted).

Every intermediate state reads the same from every live snapshot: dead nodes
are seen by no live leaf, and every live leaf below a redundant node is below
its terminal. An interruption loses nothing: the tree is rewritten last, so the
next writable open (or `check -y`) makes the same plan and finishes the pass.
"""

from __future__ import annotations

from ..formats.ids import SNAPSHOT_BTREES, BtreeId, SbFlags, SnapshotFlags, SubvolumeFlags
from ..keys import Key
from ..superblock import write_superblock
from .table import SnapshotTable, invalidate
from .values import Snapshot, decode_snapshot_tree, decode_subvolume

BATCH = 5000
S, SV, ST = BtreeId.snapshots, BtreeId.subvolumes, BtreeId.snapshot_trees


class Plan:
    __slots__ = ("dead", "terminal")

    def __init__(self) -> None:
        self.dead: set[int] = set()
        self.terminal: dict[int, int] = {}    # redundant node -> terminal

    def __bool__(self) -> bool:
        return bool(self.dead or self.terminal)

    @property
    def doomed(self) -> set[int]:
        """Nodes whose keys cleanup has yet to drop or move."""
        return self.dead | set(self.terminal)


def plan(table: SnapshotTable) -> Plan:
    snaps = table.snapshots
    p = Plan()
    # dead: deleted, or no subvolume and every child dead (children first: ids ascend)
    for sid in sorted(snaps):
        s = snaps[sid]
        if s.flags & SnapshotFlags.deleted or (
                not s.subvol and all(c in p.dead or c not in snaps for c in s.children)):
            p.dead.add(sid)
    redundant = {}
    for sid, s in snaps.items():
        if sid in p.dead or s.subvol:
            continue
        live = [c for c in s.children if c in snaps and c not in p.dead]
        if len(live) == 1:
            redundant[sid] = live[0]
    for sid in redundant:
        cur = redundant[sid]
        for _ in range(len(redundant) + 1):
            if cur not in redundant:
                break
            cur = redundant[cur]
        p.terminal[sid] = cur
    return p


def pending_work(btrees) -> bool:
    return bool(plan(SnapshotTable.load(btrees)))


def _is_dead(s: Snapshot) -> bool:
    """(Per node, without looking at its children's state.)"""
    return bool(s.flags & SnapshotFlags.deleted) or (not s.subvol and not s.children)


def _is_redundant(s: Snapshot) -> bool:
    return not s.subvol and len(s.children) == 1 and not s.flags & SnapshotFlags.deleted


def cleanup_dead_snapshots(fs, *, progress=None) -> int:
    """Run cleanup to the end. Returns the number of snapshot nodes removed."""
    store = fs.store
    table = SnapshotTable.load(store.btrees)
    p = plan(table)
    removed = 0
    if p:
        _batched(store, _doomed_keys(store, p), _key_fn(p))
        _rewrite_tree(store, table, p)
        removed = len(p.dead) + len(p.terminal)
    if store.sb.flags & SbFlags.deleting_snapshots:
        store.sb.flags &= ~SbFlags.deleting_snapshots
        write_superblock(store.dev, store.sb)
    invalidate(store)
    return removed


def _doomed_keys(store, p: Plan) -> list[tuple[int, Key]]:
    """(btree, key) of every key at a dead or redundant node (a full scan, as
    bcachefs), in position order."""
    doomed = p.doomed
    return [(b, k) for b in sorted(SNAPSHOT_BTREES) for k in store.btrees.iter(b)
            if k.pos[2] in doomed]


def _key_fn(p: Plan):
    def fn(t, bk) -> None:
        b, k = bk
        t.delete(b, k.pos)
        target = p.terminal.get(k.pos[2])
        if target is not None:
            pos = (k.pos[0], k.pos[1], target)
            if t.get(b, pos) is None:
                t.update(b, Key(pos, k.type, k.val, k.size, k.version))
    return fn


def _batched(store, items, fn) -> None:
    """Apply fn(trans, item) in transactions of BATCH items, committing each."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            _run(store, batch, fn)
            batch = []
    if batch:
        _run(store, batch, fn)


def _run(store, batch, fn) -> None:
    t = store.transaction()
    for item in batch:
        fn(t, item)
    t.commit()
    store.commit()


def _rewrite_tree(store, table: SnapshotTable, p: Plan) -> None:
    """The snapshot tree without its dead and redundant nodes, in one commit."""
    snaps = table.snapshots
    gone = p.doomed
    kept = {sid: s for sid, s in snaps.items() if sid not in gone}

    def new_parent(s: Snapshot) -> int:
        cur = s.parent
        while cur and cur in gone:
            cur = snaps[cur].parent if cur in snaps else 0
        return cur

    parent = {sid: new_parent(s) for sid, s in kept.items()}
    children: dict[int, list[int]] = {sid: [] for sid in kept}
    for sid, par in parent.items():
        if par:
            children[par].append(sid)
    depth: dict[int, int] = {}
    for sid in sorted(kept, reverse=True):       # parents (larger ids) first
        depth[sid] = depth[parent[sid]] + 1 if parent[sid] else 0
    t = store.transaction()
    for sid, s in kept.items():
        kids = sorted(children[sid], reverse=True)
        new = Snapshot(sid, s.flags, parent[sid], kids[0] if kids else 0,
                       kids[1] if len(kids) > 1 else 0, s.subvol, s.tree, depth[sid])
        if new != s:
            t.update(S, new.key())
    for sid in gone:
        t.delete(S, (0, sid, 0))
        s = snaps[sid]
        if s.subvol and sid in p.dead:
            svk = t.get(SV, (0, s.subvol, 0))
            if svk is not None and decode_subvolume(svk).flags & SubvolumeFlags.unlinked:
                t.delete(SV, svk.pos)
    for tree_id in sorted({s.tree for s in snaps.values()}):
        _update_tree(t, tree_id, kept, parent, p)
    t.commit()
    store.commit()
    invalidate(store)


def _update_tree(t, tree_id: int, kept, parent, p: Plan) -> None:
    tk = t.get(ST, (0, tree_id, 0))
    if tk is None:
        return
    members = [sid for sid, s in kept.items() if s.tree == tree_id]
    if not members:
        t.delete(ST, tk.pos)
        return
    tree = decode_snapshot_tree(tk)
    old = (tree.root_snapshot, tree.master_subvol)
    roots = [sid for sid in members if not parent[sid]]
    if tree.root_snapshot not in kept and roots:
        tree.root_snapshot = max(roots)
    subvols = sorted(kept[sid].subvol for sid in members if kept[sid].subvol)
    if tree.master_subvol not in subvols and subvols:
        tree.master_subvol = subvols[0]
    if (tree.root_snapshot, tree.master_subvol) != old:
        t.update(ST, tree.key())

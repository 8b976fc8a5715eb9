"""Cleaning up after deleted snapshots (bcachefs' delete_dead_snapshots).

A deleted subvolume leaves its leaf snapshot marked `deleted`. Cleanup, in
committed batches so an interruption loses nothing and the next writable open
or `check -y` simply continues:
  1. drop every key written at a dead snapshot (the data trigger frees space);
  2. unlink the dead node from its parent and delete it (and its subvolume);
  3. an interior node left with no children and no subvolume is dead too;
  4. an interior node left with exactly one child is folded into it: each of
     its keys moves down to the child unless the child has its own version at
     that position (which already shadows it), then the node is spliced out.
Every intermediate state reads the same from every live snapshot.
"""

from __future__ import annotations

from ..formats.ids import SNAPSHOT_BTREES, BtreeId, SbFlags, SnapshotFlags, SubvolumeFlags
from ..keys import Key
from ..superblock import write_superblock
from .table import SnapshotTable, invalidate
from .values import Snapshot, decode_snapshot_tree, decode_subvolume

BATCH = 5000
S, SV, ST = BtreeId.snapshots, BtreeId.subvolumes, BtreeId.snapshot_trees


def pending_work(btrees) -> bool:
    table = SnapshotTable.load(btrees)
    return any(_is_dead(s) or _is_redundant(s) for s in table.snapshots.values())


def _is_dead(s: Snapshot) -> bool:
    return bool(s.flags & SnapshotFlags.deleted) or (not s.subvol and not s.children)


def _is_redundant(s: Snapshot) -> bool:
    return not s.subvol and len(s.children) == 1 and not s.flags & SnapshotFlags.deleted


def cleanup_dead_snapshots(fs, *, progress=None) -> int:
    """Run cleanup to the end. Returns the number of snapshot nodes removed."""
    store = fs.store
    removed = 0
    for _ in range(1 << 20):
        table = SnapshotTable.load(store.btrees)
        dead = sorted(s for s, v in table.snapshots.items() if _is_dead(v))
        if dead:
            _drop_snapshot(store, table, dead[0])
            removed += 1
            continue
        redundant = sorted(s for s, v in table.snapshots.items() if _is_redundant(v))
        if redundant:
            _fold(store, table, redundant[0])
            removed += 1
            continue
        break
    if store.sb.flags & SbFlags.deleting_snapshots:
        store.sb.flags &= ~SbFlags.deleting_snapshots
        write_superblock(store.dev, store.sb)
    invalidate(store)
    return removed


def _keys_at(store, snap: int):
    """(btree, key) of every key at snapshot `snap` (a full scan, as bcachefs)."""
    for b in sorted(SNAPSHOT_BTREES):
        for k in store.btrees.iter(b):
            if k.pos[2] == snap:
                yield b, k


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


def _drop_snapshot(store, table: SnapshotTable, snap: int) -> None:
    keys = list(_keys_at(store, snap))
    _batched(store, keys, lambda t, bk: t.delete(bk[0], bk[1].pos))
    node = table.get(snap)
    t = store.transaction()
    if node.parent:
        parent = table.get(node.parent)
        kids = [c for c in parent.children if c != snap]
        t.update(S, Snapshot(parent.id, parent.flags, parent.parent,
                             kids[0] if kids else 0, kids[1] if len(kids) > 1 else 0,
                             parent.subvol, parent.tree, parent.depth).key())
    else:
        tk = t.get(ST, (0, node.tree, 0))
        if tk is not None and decode_snapshot_tree(tk).root_snapshot == snap:
            t.delete(ST, tk.pos)
    if node.subvol:
        svk = t.get(SV, (0, node.subvol, 0))
        if svk is not None and decode_subvolume(svk).flags & SubvolumeFlags.unlinked:
            t.delete(SV, svk.pos)
        _new_master(t, table, node)
    t.delete(S, (0, snap, 0))
    t.commit()
    store.commit()
    invalidate(store)


def _new_master(t, table: SnapshotTable, node: Snapshot) -> None:
    """If the tree's master subvolume goes, another live subvolume of the tree takes over."""
    tk = t.get(ST, (0, node.tree, 0))
    if tk is None:
        return
    tree = decode_snapshot_tree(tk)
    if tree.master_subvol != node.subvol:
        return
    others = sorted(s.subvol for s in table.snapshots.values()
                    if s.tree == node.tree and s.subvol and s.id != node.id
                    and not s.flags & SnapshotFlags.deleted)
    if others:
        tree.master_subvol = others[0]
        t.update(ST, tree.key())


def _fold(store, table: SnapshotTable, snap: int) -> None:
    """Move the keys of interior node `snap` into its only child, then splice it out."""
    node = table.get(snap)
    child_id = node.children[0]

    def move(t, bk) -> None:
        b, k = bk
        mine = t.get(b, (k.pos[0], k.pos[1], child_id))
        t.delete(b, k.pos)
        if mine is None:
            t.update(b, Key((k.pos[0], k.pos[1], child_id), k.type, k.val, k.size, k.version))

    _batched(store, list(_keys_at(store, snap)), move)
    t = store.transaction()
    child = table.get(child_id)
    t.update(S, Snapshot(child.id, child.flags, node.parent, child.children_0,
                         child.children_1, child.subvol, child.tree, node.depth).key())
    for d in table.descendants(child_id):
        ds = table.get(d)
        t.update(S, Snapshot(ds.id, ds.flags, ds.parent, ds.children_0, ds.children_1,
                             ds.subvol, ds.tree, ds.depth - 1).key())
    if node.parent:
        parent = table.get(node.parent)
        kids = sorted((child_id if c == snap else c for c in parent.children), reverse=True)
        t.update(S, Snapshot(parent.id, parent.flags, parent.parent, kids[0],
                             kids[1] if len(kids) > 1 else 0, parent.subvol, parent.tree,
                             parent.depth).key())
    else:
        tk = t.get(ST, (0, node.tree, 0))
        if tk is not None:
            tree = decode_snapshot_tree(tk)
            tree.root_snapshot = child_id
            t.update(ST, tree.key())
    t.delete(S, (0, snap, 0))
    t.commit()
    store.commit()
    invalidate(store)

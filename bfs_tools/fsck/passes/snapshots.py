"""Pass snapshots: the snapshot tree, snapshot trees and subvolumes agree.

Links both ways (parent <-> children), ids below their parent's, depth and
tree id inherited, every leaf owned by a subvolume whose snapshot it is, every
subvolume on an existing leaf. Leftovers of an interrupted deletion (dead or
single-child interior nodes) are cleaned up, as `snapshot delete` would have.
"""

from __future__ import annotations

from ...formats.ids import BtreeId, SnapshotFlags, SubvolumeFlags
from ...snapshots.table import SnapshotTable
from ...snapshots.values import Snapshot, decode_snapshot_tree, decode_subvolume
from ..util import Batch, loc

S, SV, ST = BtreeId.snapshots, BtreeId.subvolumes, BtreeId.snapshot_trees


def run(ctx) -> None:
    bt = ctx.store.btrees
    table = SnapshotTable.load(bt)
    snaps = table.snapshots
    subvols = {k.pos[1]: decode_subvolume(k) for k in bt.iter(SV)}
    trees = {k.pos[1]: decode_snapshot_tree(k) for k in bt.iter(ST)}
    batch = Batch(ctx, triggers=False)
    for sid, s in sorted(snaps.items(), reverse=True):
        where = loc(S, (0, sid, 0))
        if s.parent:
            p = snaps.get(s.parent)
            if s.parent <= sid:
                ctx.report("snapshot_id_order", where, f"parent {s.parent} is not above {sid}")
            if p is None:
                ctx.report("snapshot_bad_links", where, f"parent {s.parent} does not exist",
                           can_fix=False)
            elif sid not in p.children:
                if ctx.report("snapshot_bad_links", where, f"parent {p.id} does not list it"):
                    kids = sorted([c for c in p.children if c in snaps] + [sid], reverse=True)[:2]
                    _put(batch, p, children=kids)
            elif p.tree != s.tree or s.depth != p.depth + 1:
                if ctx.report("snapshot_bad_depth", where,
                              f"depth {s.depth} tree {s.tree}, parent {p.id} has depth "
                              f"{p.depth} tree {p.tree}"):
                    _put(batch, s, depth=p.depth + 1, tree=p.tree)
        for c in s.children:
            child = snaps.get(c)
            if child is None or child.parent != sid:
                if ctx.report("snapshot_bad_links", where, f"child {c} missing or not its child"):
                    kids = [x for x in s.children if x != c and x in snaps
                            and snaps[x].parent == sid]
                    _put(batch, s, children=kids)
        if s.subvol:
            sv = subvols.get(s.subvol)
            if sv is None or sv.snapshot != sid:
                if ctx.report("snapshot_bad_links", where,
                              f"subvolume {s.subvol} missing or on another snapshot"):
                    _put(batch, s, subvol=0)
        if not s.parent:
            tree = trees.get(s.tree)
            if tree is None or tree.root_snapshot != sid:
                ctx.report("snapshot_tree_bad", where,
                           f"tree {s.tree} does not have it as root", can_fix=False)
    for vid, sv in subvols.items():
        s = snaps.get(sv.snapshot)
        if s is None or s.children:
            ctx.report("subvol_bad_snapshot", loc(SV, (0, vid, 0)),
                       f"snapshot {sv.snapshot} missing or interior", can_fix=False)
        elif s.subvol != vid and not sv.flags & SubvolumeFlags.unlinked:
            if ctx.report("subvol_bad_snapshot", loc(SV, (0, vid, 0)),
                          f"snapshot {sv.snapshot} names subvolume {s.subvol}"):
                _put(batch, s, subvol=vid)
    batch.flush()
    from ...snapshots.cleanup import pending_work

    if pending_work(bt) or any(s.flags & SnapshotFlags.deleted for s in snaps.values()):
        if ctx.report("snapshot_deletion_unfinished", "snapshots",
                      "a snapshot deletion was interrupted"):
            # finished after the alloc pass, when triggers can be trusted
            ctx.state["cleanup_pending"] = True
    ctx.state.pop("table", None)


def _put(batch, s: Snapshot, **changes) -> None:
    fields = dict(flags=s.flags, parent=s.parent, subvol=s.subvol, tree=s.tree, depth=s.depth)
    kids = changes.pop("children", None)
    if kids is None:
        kids = s.children
    fields.update(changes)
    kids = sorted(kids, reverse=True)
    new = Snapshot(s.id, fields["flags"], fields["parent"], kids[0] if kids else 0,
                   kids[1] if len(kids) > 1 else 0, fields["subvol"], fields["tree"],
                   fields["depth"])
    batch.t().update(BtreeId.snapshots, new.key())

"""Helpers shared by the check passes."""

from __future__ import annotations

from ..errors import BfsError
from ..formats.constants import U32_MAX
from ..formats.ids import BtreeId, KeyType
from ..fs.inode import Inode, decode_inode
from ..keys import fmt_pos
from ..snapshots.table import SnapshotTable

BATCH = 2000


def loc(btree: int, pos) -> str:
    try:
        name = BtreeId(btree).name
    except ValueError:
        name = f"btree{btree}"
    return f"{name}:{fmt_pos(pos)}"


def table(ctx) -> SnapshotTable:
    t = ctx.state.get("table")
    if t is None:
        t = ctx.state["table"] = SnapshotTable.load(ctx.store.btrees)
    return t


def visible_set(ctx, snap: int) -> frozenset[int]:
    try:
        return table(ctx).ancestors(snap)
    except BfsError:
        return frozenset({snap})


def inode_versions(ctx) -> dict[int, list[tuple[int, Inode | None]]]:
    """inum -> [(snapshot, Inode or None for a whiteout)] in ascending snapshot order."""
    cached = ctx.state.get("inodes")
    if cached is not None:
        return cached
    out: dict[int, list[tuple[int, Inode | None]]] = {}
    for k in ctx.store.btrees.iter(BtreeId.inodes):
        try:
            ino = decode_inode(k) if k.type == KeyType.inode else None
        except BfsError:
            continue
        out.setdefault(k.pos[1], []).append((k.pos[2], ino))
    ctx.state["inodes"] = out
    return out


def drop_inode_cache(ctx) -> None:
    ctx.state.pop("inodes", None)


def inode_seen_from(versions, visible) -> Inode | None:
    """The inode version a snapshot sees (None: none, or a whiteout)."""
    for snap, ino in versions or ():
        if snap in visible:
            return ino
    return None


def range_of(inum: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (inum, 0, 0), (inum, (1 << 64) - 1, U32_MAX)


class Batch:
    """Repairs queued into transactions of at most BATCH updates."""

    def __init__(self, ctx, *, triggers: bool = True):
        self.ctx = ctx
        self.triggers = triggers
        self.trans = None
        self.n = 0

    def t(self):
        if self.trans is None:
            self.trans = self.ctx.store.transaction()
        self.n += 1
        if self.n >= BATCH:
            self.flush()
            self.trans = self.ctx.store.transaction()
            self.n = 1
        return self.trans

    def flush(self) -> None:
        if self.trans is not None:
            self.trans.commit(run_triggers=self.triggers, journal=False if not self.triggers else None)
            self.trans = None
            self.n = 0

"""The in-memory snapshot table: ancestry tests for reads filtered by snapshot.

Built from the snapshots btree when first needed (the btree is small: one key
per snapshot id) and dropped whenever a transaction changes it. Reading from
snapshot S sees keys whose snapshot is S or one of S's ancestors; with ids
descending from the root (U32_MAX), the nearest version of a key is the first
visible one in ascending snapshot order.
"""

from __future__ import annotations

from ..errors import CorruptionError
from ..formats.fsck_errors import BY_NAME as ERR
from ..formats.ids import BtreeId
from .values import Snapshot, decode_snapshot

MAX_DEPTH = 1 << 16


class SnapshotTable:
    def __init__(self, snapshots: dict[int, Snapshot]):
        self.snapshots = snapshots
        self._ancestors: dict[int, frozenset[int]] = {}

    @classmethod
    def load(cls, btrees) -> SnapshotTable:
        snaps = {}
        for k in btrees.iter(BtreeId.snapshots):
            s = decode_snapshot(k)
            snaps[s.id] = s
        return cls(snaps)

    def __contains__(self, snap_id: int) -> bool:
        return snap_id in self.snapshots

    def get(self, snap_id: int) -> Snapshot | None:
        return self.snapshots.get(snap_id)

    def ancestors(self, snap_id: int) -> frozenset[int]:
        """snap_id and all its ancestors (the snapshots whose keys it sees)."""
        cached = self._ancestors.get(snap_id)
        if cached is not None:
            return cached
        chain = []
        cur = snap_id
        seen = set()
        while cur:
            if cur in seen or len(chain) > MAX_DEPTH:
                raise CorruptionError(f"snapshot {snap_id}: parent chain loops",
                                      ERR["snapshot_bad_links"].id)
            s = self.snapshots.get(cur)
            if s is None:
                if cur == snap_id:
                    raise CorruptionError(f"snapshot {snap_id} does not exist",
                                          ERR["key_in_missing_snapshot"].id)
                raise CorruptionError(f"snapshot {snap_id}: ancestor {cur} missing",
                                      ERR["snapshot_bad_links"].id)
            seen.add(cur)
            chain.append(cur)
            if s.parent and s.parent <= cur:
                raise CorruptionError(f"snapshot {cur}: parent {s.parent} has a smaller id",
                                      ERR["snapshot_id_order"].id)
            cur = s.parent
        result = frozenset(chain)
        self._ancestors[snap_id] = result
        return result

    def is_ancestor(self, ancestor: int, snap_id: int) -> bool:
        """Does snapshot `snap_id` see keys written in `ancestor` (or is it it)?"""
        return ancestor in self.ancestors(snap_id)

    def descendants(self, snap_id: int) -> list[int]:
        out, stack = [], [snap_id]
        while stack:
            cur = stack.pop()
            s = self.snapshots.get(cur)
            if s is None:
                continue
            for c in s.children:
                out.append(c)
                stack.append(c)
        return out

    def leaves(self) -> list[int]:
        return [i for i, s in self.snapshots.items() if not s.children]


def snapshot_table(store) -> SnapshotTable:
    """The store's snapshot table (rebuilt after the snapshots btree changes)."""
    table = store.cache.get("snapshot_table")
    if table is None:
        table = store.cache["snapshot_table"] = SnapshotTable.load(store.btrees)
    return table


def invalidate(store) -> None:
    store.cache.pop("snapshot_table", None)

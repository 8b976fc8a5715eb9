"""Hashed btrees (dirents, xattrs) under snapshots: lookup, insert, delete.

A name lives at (owner inum, slot, snapshot) where slot is its hash, or the
next slot after a collision (linear probing). A lookup from snapshot S walks
the slots from the hash: at each slot the key S sees (filter_visible) is
either nothing (stop: not found), a hash_whiteout (a deleted entry: keep
probing), or an entry (found if the name matches, else keep probing).

Deleting in S writes a hash_whiteout at S when the slot must keep a probe
chain alive or hide an ancestor snapshot's entry; otherwise it just removes
S's key. Inserting takes the first slot S sees as empty or whiteout.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import CorruptionError
from ..formats.constants import U32_MAX
from ..formats.ids import KeyType
from ..keys import Key, Pos, filter_visible

MAX_PROBE = 1 << 16


def _slot_keys(trans, btree_id: int, inum: int, slot: int, visible) -> Key | None:
    """The key snapshot-view `visible` sees at (inum, slot): entry, hash_whiteout or None."""
    for k in filter_visible(trans.iter(btree_id, (inum, slot, 0), (inum, slot, U32_MAX)),
                            visible, whiteouts=True):
        return k
    return None


def lookup(trans, btree_id: int, inum: int, h: int, visible,
           matches: Callable[[Key], bool]) -> Key | None:
    slot = h
    for _ in range(MAX_PROBE):
        k = _slot_keys(trans, btree_id, inum, slot, visible)
        if k is None:
            return None
        if k.type not in (KeyType.hash_whiteout, KeyType.whiteout) and matches(k):
            return k
        slot += 1
    raise CorruptionError(f"probe chain of {MAX_PROBE} slots in inode {inum}: run bfs check")


def find_slot(trans, btree_id: int, inum: int, h: int, visible) -> int:
    """First slot from h that the snapshot sees as free (empty or a whiteout)."""
    slot = h
    for _ in range(MAX_PROBE):
        k = _slot_keys(trans, btree_id, inum, slot, visible)
        if k is None or k.type in (KeyType.hash_whiteout, KeyType.whiteout):
            return slot
        slot += 1
    raise CorruptionError(f"probe chain of {MAX_PROBE} slots in inode {inum}: run bfs check")


def delete(trans, btree_id: int, key: Key, snapshot: int, visible) -> None:
    """Remove the entry `key` (as seen from `snapshot`) from that snapshot's view."""
    inum, slot, _ = key.pos
    pos: Pos = (inum, slot, snapshot)
    older = any(k.pos[2] != snapshot and k.pos[2] in visible
                for k in trans.iter(btree_id, (inum, slot, 0), (inum, slot, U32_MAX)))
    nxt = _slot_keys(trans, btree_id, inum, slot + 1, visible)
    if older or nxt is not None:
        trans.update(btree_id, Key(pos, KeyType.hash_whiteout))
    else:
        trans.delete(btree_id, pos)


def iter_entries(trans_or_btrees, btree_id: int, inum: int, visible):
    """Every live entry of `inum` the snapshot sees, in slot order."""
    it = trans_or_btrees.iter(btree_id, (inum, 0, 0), (inum, (1 << 64) - 1, U32_MAX))
    yield from filter_visible(it, visible)

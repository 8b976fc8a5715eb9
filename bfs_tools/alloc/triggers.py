"""Triggers that tie data and btree-node pointers to the alloc keys.

Every extent (in the extents btree) and every indirect extent (reflink_v, in
the reflink btree) adds its size to the live sectors of the bucket its data is
in; every btree node adds the node size to its bucket. A pointer whose gen
differs from the bucket's is stale: an error, not a silent update.
"""

from __future__ import annotations

from ..extents import decode_extent
from ..formats.ids import AccountingType, BtreeId, DataType, KeyType
from ..keys import Key, register_trigger
from ..reflink import decode_reflink_v
from .accounting import acct_pos
from .alloc_key import mark_bucket


def _extent_value(k: Key):
    if k.type == KeyType.extent:
        return decode_extent(k.val)
    if k.type == KeyType.reflink_v:
        return decode_reflink_v(k.val).extent
    return None


def data_trigger(trans, btree_id: int, old: Key | None, new: Key | None) -> None:
    """Queue the key's sectors against its bucket; netted per (bucket, gen) and
    applied to the alloc keys once, just before the alloc btree's triggers run
    (a transaction writing many extents into one bucket updates its alloc key once)."""
    bucket_sectors = trans.store.sb.bucket_size // 512
    deltas = trans.deferred_state.get("bucket_deltas")
    if deltas is None:
        deltas = trans.deferred_state["bucket_deltas"] = {}
        trans.before(BtreeId.alloc, _apply_bucket_deltas)
    for k, sign in ((old, -1), (new, 1)):
        if k is None:
            continue
        e = _extent_value(k)
        if e is None:
            continue
        sectors = sign * k.size
        slot = (e.sector // bucket_sectors, e.gen)
        d = deltas.get(slot)
        if d is None:
            deltas[slot] = [sectors, f"{BtreeId(btree_id).name} key at {k.pos}"]
        else:
            d[0] += sectors
        if btree_id == BtreeId.extents:
            trans.acct(acct_pos(AccountingType.snapshot, k.pos[2]), [sectors])
        else:
            trans.acct(acct_pos(AccountingType.reflink), [sectors, 0])


def _apply_bucket_deltas(trans) -> None:
    deltas = trans.deferred_state.pop("bucket_deltas", {})
    # removals first, so a bucket emptied and refilled in one transaction nets out
    for (bucket, gen), (sectors, what) in sorted(deltas.items(), key=lambda i: i[1][0]):
        if sectors:
            mark_bucket(trans, bucket, DataType.user, sectors, gen, what)


register_trigger(KeyType.extent, data_trigger)
register_trigger(KeyType.reflink_v, data_trigger)


def node_moves_transaction(store, moves) -> None:
    """Account btree nodes that moved: (btree_id, level, old, new) with (sector, gen)."""
    t = store.transaction()
    node_sectors = store.sb.btree_node_size // 512
    bucket_sectors = store.sb.bucket_size // 512
    for btree_id, _level, old, new in moves:
        for loc, sign in ((old, -1), (new, 1)):
            if loc is None:
                continue
            sector, gen = loc
            mark_bucket(t, sector // bucket_sectors, DataType.btree, sign * node_sectors, gen,
                        f"btree {BtreeId(btree_id).name} node at sector {sector}")
            t.acct(acct_pos(AccountingType.btree, btree_id), [sign * node_sectors])
    t.commit()

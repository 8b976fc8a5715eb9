"""Triggers that tie data and btree-node pointers to the alloc keys.

Every extent (in the extents btree) and every indirect extent (reflink_v, in
the reflink btree) adds its size to the live sectors of the bucket its data is
in; every btree node adds the node size to its bucket. A pointer whose gen
differs from the bucket's is stale: an error, not a silent update.
"""

from __future__ import annotations

import struct

from ..codec import field_unpacker
from ..extents import decode_extent
from ..formats.ids import AccountingType, BtreeId, DataType, KeyType
from ..keys import Key, register_trigger
from ..reflink import decode_reflink_v
from .accounting import acct_pos
from .alloc_key import mark_bucket

# sector and gen of an extent value (only those: this runs for every data key a
# transaction writes or replaces)
_sector_gen = field_unpacker("ExtentValue", "sector", "gen")


def _sector_and_gen(k: Key) -> tuple[int, int] | None:
    """The bucket pointer of an extent or reflink_v key (None: other types)."""
    if k.type == KeyType.extent:
        offset = 0
    elif k.type == KeyType.reflink_v:
        offset = 8          # after the refcount
    else:
        return None
    try:
        return _sector_gen(k.val, offset)
    except struct.error:    # too short: the full decoder says what is wrong
        decode_extent(k.val) if offset == 0 else decode_reflink_v(k.val)
        raise


def data_trigger(trans, btree_id: int, old: Key | None, new: Key | None) -> None:
    """Queue the key's sectors against its bucket; netted per (bucket, gen) and
    applied to the alloc keys once, just before the alloc btree's triggers run
    (a transaction writing many extents into one bucket updates its alloc key
    once). The accounting deltas (per snapshot, or the reflink counter) are
    summed there too, not passed to the transaction one key at a time."""
    state = trans.deferred_state
    deltas = state.get("bucket_deltas")
    if deltas is None:
        deltas = state["bucket_deltas"] = {}
        state["data_acct"] = {}
        trans.before(BtreeId.alloc, _apply_bucket_deltas)
    acct = state["data_acct"]
    bucket_sectors = trans.store.sb.bucket_size // 512
    for k, sign in ((old, -1), (new, 1)):
        if k is None:
            continue
        ptr = _sector_and_gen(k)
        if ptr is None:
            continue
        sectors = sign * k.size
        slot = (ptr[0] // bucket_sectors, ptr[1])
        d = deltas.get(slot)
        if d is None:
            deltas[slot] = [sectors, f"{BtreeId(btree_id).name} key at {k.pos}"]
        else:
            d[0] += sectors
        pos = acct_pos(AccountingType.snapshot, k.pos[2]) if btree_id == BtreeId.extents \
            else _REFLINK_ACCT
        acct[pos] = acct.get(pos, 0) + sectors


_REFLINK_ACCT = acct_pos(AccountingType.reflink)


def _apply_bucket_deltas(trans) -> None:
    deltas = trans.deferred_state.pop("bucket_deltas", {})
    for pos, sectors in trans.deferred_state.pop("data_acct", {}).items():
        # reflink: counter 0 (indirect sectors); snapshot: its only counter
        trans.acct(pos, [sectors, 0] if pos == _REFLINK_ACCT else [sectors])
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

"""btree_ptr keys: an interior node's (or a root's) pointer to a child node.

The key's position is the child's max_key; the value says where the child lives
(device sector, bucket generation), which node instance it must be (node_seq),
its level and its min_key. Value layout: formats/btree_node.py BtreePtrValue.
"""

from __future__ import annotations

from ..codec import record
from ..formats.ids import KeyType
from ..keys import Key, Pos, fmt_pos, register

PtrValue = record("BtreePtrValue")


def make_ptr_key(max_key: Pos, min_key: Pos, sector: int, node_seq: int, gen: int,
                 level: int, sectors_written: int = 0) -> Key:
    val = PtrValue(sector, node_seq, gen, level, 0, sectors_written, *min_key).pack()
    return Key(max_key, KeyType.btree_ptr, val)


def decode_ptr(k: Key):
    return PtrValue.unpack(k.val)


def ptr_min_key(p) -> Pos:
    return (p.min_key_inode, p.min_key_offset, p.min_key_snapshot)


def _validate(btree_id: int, k: Key) -> str | None:
    if len(k.val) != PtrValue.SIZE:
        return f"btree_ptr value of {len(k.val)} bytes, expected {PtrValue.SIZE}"
    p = decode_ptr(k)
    if ptr_min_key(p) > k.pos:
        return "btree_ptr min_key after max_key"
    return None


def _to_text(k: Key) -> str:
    p = decode_ptr(k)
    return (f"sector {p.sector} gen {p.gen} seq {p.node_seq:016x} level {p.level} "
            f"min_key {fmt_pos(ptr_min_key(p))}")


def _to_json(k: Key) -> dict:
    p = decode_ptr(k)
    return {"sector": p.sector, "gen": p.gen, "node_seq": p.node_seq, "level": p.level,
            "sectors_written": p.sectors_written,
            "min_key": {"inode": p.min_key_inode, "offset": p.min_key_offset,
                        "snapshot": p.min_key_snapshot}}


register(KeyType.btree_ptr, validate=_validate, to_text=_to_text, to_json=_to_json)

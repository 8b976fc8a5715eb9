"""Alloc keys: per-bucket allocation state (gen, data type, live sectors).

alloc btree, key at (0, bucket, 0). A bucket with no key is free with gen 0.
The alloc key trigger keeps the freespace index and the per-data-type
accounting (buckets, sectors) in step with every alloc key change.
"""

from __future__ import annotations

from collections import namedtuple
from functools import partial

from ..codec import record
from ..errors import CorruptionError
from ..formats.ids import AccountingType, BtreeId, DataType, KeyType
from ..keys import Key, register, register_trigger
from . import freespace
from .accounting import acct_pos

AllocValue = record("AllocValue")


# collections.namedtuple rather than typing.NamedTuple: typing costs ~3 ms of
# every command's start-up.
Alloc = namedtuple("Alloc", "gen data_type dirty_sectors")


FREE = Alloc(0, DataType.free, 0)


def alloc_pos(bucket: int) -> tuple[int, int, int]:
    return (0, bucket, 0)


def decode_alloc(k: Key | None) -> Alloc:
    if k is None:
        return FREE
    v = AllocValue.unpack(k.val)
    return Alloc(v.gen, v.data_type, v.dirty_sectors)


def alloc_key(bucket: int, a: Alloc) -> Key:
    return Key(alloc_pos(bucket), KeyType.alloc,
               AllocValue(a.gen, a.data_type, 0, a.dirty_sectors).pack())


def get_alloc(trans, bucket: int) -> Alloc:
    return decode_alloc(trans.get(BtreeId.alloc, alloc_pos(bucket)))


def _data_type_name(t: int) -> str:
    try:
        return DataType(t).name
    except ValueError:
        return f"unknown({t})"


def alloc_trigger(trans, btree_id: int, old: Key | None, new: Key | None) -> None:
    """Freespace index and data-type accounting follow the alloc key.
    (The allocator's callbacks do not refer to the transaction: a closure over
    it would make it a reference cycle, which only the cyclic collector frees,
    walking every key the transaction queued.)"""
    a_old = decode_alloc(old)
    a_new = decode_alloc(new)
    bucket = (old or new).pos[1]
    was_free = a_old.data_type == DataType.free
    is_free = a_new.data_type == DataType.free
    if was_free and not is_free:
        freespace.remove_bucket(trans, bucket)
        trans.on_commit.append(partial(trans.store.allocator.bucket_used, bucket))
        trans.acct(acct_pos(AccountingType.data_type, a_new.data_type), [1, 0])
    elif is_free and not was_free:
        freespace.add_bucket(trans, bucket)
        trans.acct(acct_pos(AccountingType.data_type, a_old.data_type), [-1, 0])
        trans.on_commit.append(partial(trans.store.allocator.bucket_freed, bucket))
    elif not is_free and a_old.data_type != a_new.data_type:
        trans.acct(acct_pos(AccountingType.data_type, a_old.data_type), [-1, 0])
        trans.acct(acct_pos(AccountingType.data_type, a_new.data_type), [1, 0])
    if a_old.dirty_sectors and not was_free:
        trans.acct(acct_pos(AccountingType.data_type, a_old.data_type), [0, -a_old.dirty_sectors])
    if a_new.dirty_sectors and not is_free:
        trans.acct(acct_pos(AccountingType.data_type, a_new.data_type), [0, a_new.dirty_sectors])


# membership of the enum's values: a set lookup, where `x in iter(Enum)` walks every member
_DATA_TYPES = frozenset(DataType)


def _validate(btree_id: int, k: Key) -> str | None:
    if len(k.val) != AllocValue.SIZE:
        return f"alloc value of {len(k.val)} bytes"
    a = decode_alloc(k)
    if a.data_type not in _DATA_TYPES:
        return f"unknown data type {a.data_type}"
    if a.data_type == DataType.free and a.dirty_sectors:
        return "free bucket with dirty sectors"
    if k.pos[0] != 0 or k.pos[2] != 0:
        return "alloc key outside device 0"
    return None


def _to_text(k: Key) -> str:
    a = decode_alloc(k)
    return f"gen {a.gen} {_data_type_name(a.data_type)} dirty_sectors {a.dirty_sectors}"


def _to_json(k: Key) -> dict:
    a = decode_alloc(k)
    return {"bucket": k.pos[1], "gen": a.gen, "data_type": _data_type_name(a.data_type),
            "dirty_sectors": a.dirty_sectors}


register(KeyType.alloc, validate=_validate, to_text=_to_text, to_json=_to_json)
register_trigger(KeyType.alloc, alloc_trigger)


def mark_bucket(trans, bucket: int, data_type: int, delta: int, gen: int, what: str) -> None:
    """Add `delta` live sectors of `data_type` to `bucket`, checking the pointer gen."""
    store = trans.store
    if not store.sb.first_bucket <= bucket < store.sb.nbuckets:
        raise CorruptionError(f"{what}: pointer to bucket {bucket} outside the device")
    a = get_alloc(trans, bucket)
    if delta > 0 and a.data_type == DataType.free:
        a = Alloc(gen, data_type, 0)
    elif a.data_type != data_type:
        raise CorruptionError(
            f"{what}: bucket {bucket} holds {_data_type_name(a.data_type)}, not "
            f"{_data_type_name(data_type)}; run bfs check")
    elif a.gen != gen:
        raise CorruptionError(f"{what}: stale pointer into bucket {bucket} (gen {gen}, bucket "
                              f"gen {a.gen}); run bfs check")
    sectors = a.dirty_sectors + delta
    if sectors < 0:
        raise CorruptionError(f"{what}: bucket {bucket} live sectors would go negative; "
                              "run bfs check")
    trans.update(BtreeId.alloc, alloc_key(bucket, Alloc(
        a.gen, data_type if sectors else DataType.free, sectors)))

"""The freespace index: extent-like `set` keys over free buckets.

A key at (0, end, 0) with size n says buckets [end - n, end) are free. Ranges
never touch or overlap (adjacent free buckets are one key). Maintained by the
alloc key trigger; read by the allocator to find free buckets in O(log n).
"""

from __future__ import annotations

from ..formats.ids import BtreeId, KeyType
from ..keys import Key, register

FS = BtreeId.freespace


def range_key(start: int, end: int) -> Key:
    return Key((0, end, 0), KeyType.set, b"", size=end - start)


def containing(trans, bucket: int) -> Key | None:
    """The freespace key whose range holds `bucket`, if any."""
    k = trans.peek(FS, (0, bucket + 1, 0))
    if k is not None and k.pos[0] == 0 and k.start <= bucket < k.end:
        return k
    return None


def remove_bucket(trans, bucket: int) -> bool:
    """Take `bucket` out of the index. False if it was not listed as free."""
    k = containing(trans, bucket)
    if k is None:
        return False
    start, end = k.start, k.end
    if bucket + 1 != end:
        trans.update(FS, range_key(bucket + 1, end))
    else:
        trans.delete(FS, k.pos)
    if start < bucket:
        trans.update(FS, range_key(start, bucket))
    return True


def add_bucket(trans, bucket: int) -> bool:
    """Put `bucket` into the index, joining neighbouring ranges. False if present."""
    if containing(trans, bucket) is not None:
        return False
    start, end = bucket, bucket + 1
    before = trans.get(FS, (0, bucket, 0))
    if before is not None:
        start = before.start
        trans.delete(FS, before.pos)
    after = trans.peek(FS, (0, bucket + 2, 0))
    if after is not None and after.pos[0] == 0 and after.start == bucket + 1:
        end = after.end
    trans.update(FS, range_key(start, end))
    return True


def free_ranges(btrees, start: int = 0):
    """(start, end) of each free range at or after bucket `start`, ascending."""
    for k in btrees.iter(FS, (0, start + 1, 0), (0, (1 << 64) - 1, 0)):
        yield k.start, k.end


def _validate(btree_id: int, k: Key) -> str | None:
    if k.val:
        return "set key with a value"
    if btree_id == BtreeId.freespace and k.pos[0] != 0:
        return "freespace key outside device 0"
    return None


register(KeyType.set, validate=_validate, to_text=lambda k: (
    f"buckets {k.start}..{k.end - 1}" if k.size else ""),
    to_json=lambda k: {"start": k.start, "end": k.end} if k.size else {})

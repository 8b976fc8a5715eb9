"""Reflink: refcounted indirect extents shared between files.

reflink btree (extent-like, key at (0, end index, 0)): `reflink_v` holds a
refcount then an extent value; `indirect_inline_data` a refcount then bytes.
The refcount is the number of `reflink_p` keys (in any file, any snapshot)
whose padded range covers the indirect key.
extents btree: `reflink_p` covers [pos.offset - size, pos.offset) of a file and
maps it to indexes [idx, idx + size) of the reflink btree.
"""

from construct import GreedyBytes, Int32ul, Int64ul, Struct

from .extents import ExtentValue

ReflinkPValue = Struct(
    "idx" / Int64ul * "reflink index of the first sector this key maps",
    "front_pad" / Int32ul * "sectors before idx still counted as referenced (splits never leak refs)",
    "back_pad" / Int32ul * "sectors after idx + size still counted as referenced",
)

ReflinkVValue = Struct(
    "refcount" / Int64ul * "number of reflink_p keys referencing this indirect extent",
    "extent" / ExtentValue * "where the data lives",
)

IndirectInlineDataValue = Struct(
    "refcount" / Int64ul * "number of reflink_p keys referencing this indirect data",
    "data" / GreedyBytes * "the data",
)
